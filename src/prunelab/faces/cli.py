"""The ``prunelab`` command line.

    prunelab list
    prunelab run STUDY|all [--quick] [--seed N] [--out DIR] [--config FILE.toml] [--OPTION ...]
        [--executor serial|process|ray] [--ray-address HOST:PORT]
    prunelab train --data NAME --widths 2,20,2 --out FILE
    prunelab report RUN_DIR
    prunelab explore [--checkpoint FILE | --run RUN_DIR] [--data NAME] [--out FILE] [--no-open]

Each study's options are generated from its ``Config`` dataclass (``prunelab run STUDY --help``).
Precedence: defaults, then ``--quick`` presets, then the TOML file, then options on the line.
"""

from __future__ import annotations

import inspect
import math
import tomllib
import typing
import webbrowser
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import torch
import typer
from typer.core import TyperCommand, TyperGroup

from ..base import checkpoint, data, models, train
from ..base.executor import EXECUTORS, Executor, UnitError
from ..studies import STUDIES
from ..studies.base import config_fields, make_config
from ..studies.units import run_study
from . import report
from .web import explorer


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


THREADS_HELP = (
    "torch CPU threads (0: torch's default). The toy nets are tiny: on a busy machine "
    "--threads 1 is much faster"
)


def _set_threads(threads: int) -> None:
    """The command line owns its process, so it may set torch's thread count (the library never
    does)."""
    if threads < 0:
        raise _fail(f"--threads must be >= 0; got {threads}")
    if threads:
        torch.set_num_threads(threads)


class _StudyGroup(TyperGroup):
    """``prunelab run``: an unknown study is an error that lists the valid ones."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise _fail(f"unknown study {name!r}; choose from {', '.join([*STUDIES, 'all'])}")
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*STUDIES, "all"]


class _StudyCommand(TyperCommand):
    """A study subcommand: an unknown option is an error that lists the valid ones."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as e:
            # click's NoSuchOption (typer vendors click privately, so match it by name)
            if type(e).__name__ != "NoSuchOption":
                raise
            valid = sorted(o for p in self.params for o in p.opts if o.startswith("--"))
            raise _fail(
                f"unknown option {getattr(e, 'option_name', '?')!r} for "
                f"{ctx.info_name}; valid options: {', '.join(valid)}"
            ) from None


app = typer.Typer(
    help="prunelab: take parts out of neural networks and understand what happens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_app = typer.Typer(
    cls=_StudyGroup,
    no_args_is_help=True,
    help="Run a study (or all) and write results.json, figures and report.html.",
)
app.add_typer(run_app, name="run")


ARCHITECTURES = models.ARCHITECTURES
DEVICE_HELP = "cpu, cuda, or auto (cuda when available)"
EXECUTOR_HELP = (
    "how the units of work (seeds x arms) run: serial (in this process), process (a pool, one "
    "worker per core, --threads torch threads each, default 1) or ray (Ray tasks). Stored "
    "units are never computed again: a rerun resumes an interrupted run"
)
RAY_ADDRESS_HELP = "join this Ray cluster (ray start --head prints it); default: a local one"


def _executor(kind: str, ray_address: str | None, threads: int) -> Executor:
    """The executor for ``--executor``/``--ray-address``; workers get ``--threads`` (or 1)."""
    if kind not in EXECUTORS:
        raise _fail(f"--executor {kind!r}: choose from {', '.join(EXECUTORS)}")
    if ray_address is not None and kind != "ray":
        raise _fail(f"--ray-address needs --executor ray; got --executor {kind}")
    return Executor(kind, threads=threads or 1, ray_address=ray_address)


def _device(name: str) -> torch.device:
    """The torch device for ``--device``: cpu, cuda (an error without one) or auto."""
    if name not in ("cpu", "cuda", "auto"):
        raise _fail(f"--device {name!r}: choose from cpu, cuda, auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise _fail("--device cuda: this machine has no CUDA device (torch sees none)")
    return torch.device(name)


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise _fail(f"--config {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise _fail(f"--config {str(path)!r} is not valid TOML: {e}") from None


def _study_overrides(study: ModuleType, toml: dict[str, Any]) -> dict[str, Any]:
    """Top-level scalar keys that are fields of the study, then its own ``[study]`` table."""
    fields = config_fields(study.Config)
    top = {
        k: v for k, v in toml.items() if not isinstance(v, dict) and k.replace("-", "_") in fields
    }
    return top | dict(toml.get(study.NAME, {}))


def _run_study(
    study: ModuleType,
    *,
    quick: bool,
    out: Path,
    overrides: dict[str, Any],
    progress: bool,
    device: torch.device,
    executor: Executor,
) -> Path:
    try:
        config = make_config(study.Config, quick=quick, overrides=overrides)
    except (KeyError, ValueError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    run_dir = out / study.NAME
    where = "" if device.type == "cpu" else f" on {device}"
    typer.echo(f"running {study.NAME}{' (quick)' if quick else ''}{where} -> {run_dir}")
    try:
        results = run_study(
            study, config, run_dir, progress=progress, device=device, executor=executor
        )
    except UnitError as e:
        raise _fail(f"{study.NAME}: {e}") from None
    except (FileNotFoundError, ValueError) as e:  # a checkpoint or data set it cannot take
        raise _fail(f"{study.NAME}: {e.args[0] if e.args else e}") from None
    path = report.write_run(study, config, results, run_dir, device=str(device))
    for key, value in study.headline(results).items():
        typer.echo(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    typer.echo(f"  report: {path}")
    return run_dir


def _option_type(kind: Any) -> Any:
    return str if typing.get_origin(kind) is tuple else kind


def _make_study_command(study: ModuleType):
    """A typer command whose options mirror ``study.Config``'s fields."""
    params = [
        inspect.Parameter(
            "quick",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--quick", help="small, fast settings (a smoke run)")
            ],
        ),
        inspect.Parameter(
            "out",
            inspect.Parameter.KEYWORD_ONLY,
            default=Path("runs"),
            annotation=Annotated[
                Path, typer.Option("--out", help="parent folder of the run folder")
            ],
        ),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    "--config", help=f"TOML file of options (top level or a [{study.NAME}] table)"
                ),
            ],
        ),
        inspect.Parameter(
            "progress",
            inspect.Parameter.KEYWORD_ONLY,
            default=True,
            annotation=Annotated[
                bool, typer.Option("--progress/--no-progress", help="show progress bars")
            ],
        ),
        inspect.Parameter(
            "threads",
            inspect.Parameter.KEYWORD_ONLY,
            default=0,
            annotation=Annotated[int, typer.Option("--threads", help=THREADS_HELP)],
        ),
        inspect.Parameter(
            "device",
            inspect.Parameter.KEYWORD_ONLY,
            default="cpu",
            annotation=Annotated[str, typer.Option("--device", help=DEVICE_HELP)],
        ),
        inspect.Parameter(
            "executor",
            inspect.Parameter.KEYWORD_ONLY,
            default="serial",
            annotation=Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)],
        ),
        inspect.Parameter(
            "ray_address",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[str | None, typer.Option("--ray-address", help=RAY_ADDRESS_HELP)],
        ),
    ]
    for name, (kind, f) in config_fields(study.Config).items():
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    _option_type(kind) | None,
                    typer.Option(flag, help=f"{help_text} [default: {shown}]", show_default=False),
                ],
            )
        )

    def command(**kwargs: Any) -> None:
        quick, out, config, progress = (
            kwargs.pop(k) for k in ("quick", "out", "config", "progress")
        )
        threads = kwargs.pop("threads")
        _set_threads(threads)
        device = _device(kwargs.pop("device"))
        executor = _executor(kwargs.pop("executor"), kwargs.pop("ray_address"), threads)
        overrides = _study_overrides(study, _read_toml(config))
        overrides |= {k: v for k, v in kwargs.items() if v is not None}
        _run_study(
            study, quick=quick, out=out, overrides=overrides, progress=progress, device=device,
            executor=executor,
        )  # fmt: skip

    command.__signature__ = inspect.Signature(params)  # typer reads options from here
    command.__doc__ = f"{study.SUMMARY}"
    return command


for _study in STUDIES.values():
    run_app.command(_study.NAME, cls=_StudyCommand, help=_study.SUMMARY)(
        _make_study_command(_study)
    )


@run_app.command("all", cls=_StudyCommand)
def run_all(
    quick: Annotated[bool, typer.Option("--quick", help="small, fast settings")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="seed for every study")] = None,
    out: Annotated[Path, typer.Option("--out", help="parent folder of the run folders")] = Path(
        "runs"
    ),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file: top-level options apply to every study that has them, "
            "[study-name] tables to one study",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    threads: Annotated[
        int, typer.Option("--threads", help="torch CPU threads (0: torch's default)")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    executor: Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)] = "serial",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Run every study in order and write index.html linking the reports."""
    _set_threads(threads)
    where = _device(device)
    runner = _executor(executor, ray_address, threads)
    toml = _read_toml(config)
    unknown = [k for k, v in toml.items() if isinstance(v, dict) and k not in STUDIES]
    if unknown:
        raise _fail(
            f"--config has tables {unknown} that are not studies; studies: {', '.join(STUDIES)}"
        )
    run_dirs = []
    for study in STUDIES.values():
        overrides = _study_overrides(study, toml)
        if seed is not None:
            overrides["seed"] = seed
        run_dirs.append(
            _run_study(
                study,
                quick=quick,
                out=out,
                overrides=overrides,
                progress=progress,
                device=where,
                executor=runner,
            )
        )
    index = report.write_index(out, run_dirs)
    typer.echo(f"index: {index}")


@app.command("list")
def list_studies() -> None:
    """List the studies, one line each."""
    width = max(map(len, STUDIES))
    for name, study in STUDIES.items():
        typer.echo(f"{name:<{width}}  {study.SUMMARY}")


def _build(arch: str, widths: str | None, shape: tuple[int, ...], classes: int, opts: dict):
    """The untrained model of ``--arch`` for samples of ``shape`` and ``classes`` classes."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r}: choose from {', '.join(ARCHITECTURES)}")
    if arch == "mlp":
        if not widths:
            raise ValueError("--arch mlp needs --widths, e.g. 784,300,100,10")
        try:
            sizes = [int(w) for w in widths.replace(" ", "").split(",") if w]
        except ValueError:
            raise ValueError(f"--widths {widths!r}: give integers separated by commas") from None
        d_in = math.prod(shape)
        if sizes[0] != d_in:
            raise ValueError(
                f"--widths {widths!r} starts with {sizes[0]} but the data has {d_in} input features"
            )
    elif len(shape) != 3:
        raise ValueError(
            f"--arch {arch} takes images [C, H, W]; the data has samples of shape {list(shape)}"
        )
    else:
        sizes = None
    return models.build(
        arch,
        in_shape=shape,
        classes=classes,
        widths=sizes,
        **{k: opts[k] for k in ("activation", "dropout", "batchnorm", "pool", "width", "seed")},
    )


@app.command("train")
def train_command(
    data_name: Annotated[
        str,
        typer.Option(
            "--data",
            help=f"one of {', '.join(data.LOADERS)}, or with --data-root one of "
            f"{', '.join(data.FOLDER_SETS)}",
        ),
    ],
    out: Annotated[Path, typer.Option(help="checkpoint file to write (.safetensors)")],
    arch: Annotated[str, typer.Option(help=f"one of {', '.join(ARCHITECTURES)}")] = "mlp",
    widths: Annotated[
        str | None,
        typer.Option(
            help="--arch mlp: all widths, e.g. 784,300,100,10 (the input width is checked "
            "against the data)"
        ),
    ] = None,
    width: Annotated[float, typer.Option(help="--arch vgg*: channel multiplier")] = 1.0,
    pool: Annotated[str, typer.Option(help="--arch lenet5: max or avg")] = "max",
    batchnorm: Annotated[
        bool | None,
        typer.Option(
            "--batchnorm/--no-batchnorm",
            help="convnets: BatchNorm after each layer [default: vgg yes, lenet5 no]",
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="folder of a full-size set (mnist, cifar10, ...)"),
    ] = None,
    activation: Annotated[
        str, typer.Option(help=f"one of {', '.join(models.ACTIVATIONS)}")
    ] = "relu",
    dropout: Annotated[
        float | None,
        typer.Option(help="dropout after each hidden layer [default: vgg 0.5, else 0]"),
    ] = None,
    epochs: Annotated[int, typer.Option()] = 20,
    lr: Annotated[float, typer.Option()] = 0.01,
    batch_size: Annotated[int, typer.Option()] = 32,
    optimizer: Annotated[str, typer.Option(help="adam or sgd")] = "adam",
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    threads: Annotated[
        int, typer.Option("--threads", help="torch CPU threads (0: torch's default)")
    ] = 0,
) -> None:
    """Train a model (an MLP, LeNet-5 or a VGG) on a data set and save a checkpoint."""
    _set_threads(threads)
    where = _device(device)
    vgg = arch.startswith("vgg")
    opts = dict(
        activation=activation,
        dropout=(0.5 if vgg else 0.0) if dropout is None else dropout,
        batchnorm=vgg if batchnorm is None else batchnorm,
        seed=seed,
        pool=pool,
        width=width,
    )
    if data_name in data.FOLDER_SETS and data_root is None:
        raise _fail(
            f"--data {data_name} is read from a folder you have (prunelab never downloads): "
            "pass --data-root DIR"
        )
    try:
        split = data.load(data_name, seed=seed, root=data_root)
        shape = tuple(split.train.x.shape[1:])
        model = _build(arch, widths, shape, split.train.classes, opts).to(where)
        history = train.fit(
            model,
            split.train,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            weight_decay=weight_decay,
            seed=seed,
            progress=progress,
        )
    except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    scores = train.evaluate(model, split.test)
    checkpoint.save(
        out,
        model.cpu(),
        data=data_name,
        seed=seed,
        arch=arch,
        **({"widths": [int(w) for w in widths.split(",") if w.strip()]} if arch == "mlp" else {}),
        train=dict(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            weight_decay=weight_decay,
            **{k: v for k, v in opts.items() if k != "seed"},
        ),
    )
    typer.echo(
        f"train loss {history.loss[-1]:.4f}; test loss {scores['loss']:.4f}, "
        f"test accuracy {scores['accuracy']:.4f}"
    )
    typer.echo(f"saved {out}")


@app.command("report")
def report_command(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """Re-render report.html (and figures) of a run folder from its results.json."""
    try:
        path = report.rerender(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(f"report: {path}")


@app.command("explore")
def explore_command(
    checkpoint_file: Annotated[
        Path | None, typer.Option("--checkpoint", help="a checkpoint file (.safetensors)")
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run", help="a run folder: its explorer.safetensors (or its only checkpoint)"
        ),
    ] = None,
    data_name: Annotated[
        str | None,
        typer.Option(
            "--data",
            help=f"data to embed: one of {', '.join(data.LOADERS)} (its test part) or a data "
            "file; default the data named in the checkpoint",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="page to write; default RUN_DIR/explorer.html, or the checkpoint's name with .html"
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(help="data points to embed (default 1000 for 2-D inputs, else 500)"),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open/--no-open", help="open the page in a web browser")
    ] = True,
) -> None:
    """Write the interactive explorer (one self-contained HTML page) for a network and open it."""
    if (checkpoint_file is None) == (run_dir is None):
        raise _fail("explore: pass exactly one of --checkpoint FILE or --run RUN_DIR")
    try:
        if run_dir is not None:
            checkpoint_file = explorer.run_checkpoint(run_dir)
            out = run_dir / explorer.EXPLORER_PAGE if out is None else out
        path = explorer.from_checkpoint(checkpoint_file, out, data_name=data_name, samples=samples)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    typer.echo(f"explorer: {path}")
    if open_page:
        webbrowser.open(path.resolve().as_uri())


def main() -> None:
    app()
