"""The ``prunelab`` command line.

    prunelab list
    prunelab run STUDY|all [--quick] [--seed N] [--out DIR] [--config FILE.toml] [--OPTION ...]
        [--executor serial|process|ray] [--ray-address HOST:PORT]
    prunelab train --data NAME --widths 2,20,2 --out FILE
    prunelab report RUN_DIR
    prunelab findings RUN_DIR...
    prunelab explore [--checkpoint FILE | --run RUN_DIR] [--data NAME] [--out FILE] [--no-open]

Each study's options are generated from its ``Config`` dataclass (``prunelab run STUDY --help``).
Precedence: defaults, then ``--quick`` presets, then the TOML file, then options on the line.

Every user error (a bad option value, a missing or corrupt file, a config key no study has) is
one line on stderr naming the option or file and what is accepted, with exit code 2 and no
traceback (``--debug`` anywhere on the line shows it). Options are checked before any work
starts. Help and ``list`` import neither torch nor matplotlib: the studies' options are read
from their sources (:mod:`prunelab.studies.catalogue`) and each command imports what it needs.
"""

from __future__ import annotations

import inspect
import math
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..studies.catalogue import Entry, entries

if TYPE_CHECKING:
    import torch

    from ..base.executor import Executor

# what `train --help` lists, without importing torch (tests/test_cli_errors.py checks them against
# models.ARCHITECTURES, models.ACTIVATIONS, data.LOADERS, data.FOLDER_SETS, train.OPTIMIZERS)
ARCHITECTURES = ("mlp", "lenet5", "vgg11", "vgg13", "vgg16")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "identity")
LOADERS = ("circle", "spirals", "digits", "mnist5k", "mnist1d")
FOLDER_SETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
OPTIMIZERS = ("adam", "sgd")
POOLS = ("max", "avg")

RUN_ALL = tuple(entries())  # the studies `run all` runs, in order
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)  # what a caller's input can cause
DEBUG_FLAG = "--debug"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def _message(e: BaseException) -> str:
    """The text of an exception (a KeyError's without the quotes ``str`` adds), on one line."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return " ".join(text.split()) or type(e).__name__


def _click_error(e: BaseException) -> str:
    """A click usage error on one line, with the command it belongs to."""
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{where}{' '.join(e.format_message().split())}{hint}"


class _App(TyperGroup):
    """The top-level command: every error a user can cause ends as one line and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        debug = DEBUG_FLAG in argv
        argv = [a for a in argv if a != DEBUG_FLAG]
        click_error = _click_base(typer.BadParameter)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click_error as e:
            if debug:
                raise
            typer.secho(f"error: {_click_error(e)}", fg="red", err=True)
            code = e.exit_code
        except USER_ERRORS as e:
            if debug:
                raise
            typer.secho(f"error: {_message(e)}", fg="red", err=True)
            code = 2
        except (KeyboardInterrupt, _click_base(typer.Abort, "Abort")):
            typer.secho("error: interrupted", fg="red", err=True)
            code = 130
        except Exception as e:  # a bug, not the user's doing: still one line, unless --debug
            if debug:
                raise
            typer.secho(
                f"error: internal error {type(e).__name__}: {_message(e)} (please report it; "
                f"{DEBUG_FLAG} shows the traceback)",
                fg="red",
                err=True,
            )
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def _click_base(cls: type, name: str = "ClickException") -> type:
    """click's base class ``name`` from the MRO of one of typer's exports (typer vendors click
    privately)."""
    return next(c for c in cls.__mro__ if c.__name__ == name)


THREADS_HELP = (
    "torch CPU threads (0: torch's default). The toy nets are tiny: on a busy machine "
    "--threads 1 is much faster"
)


def _set_threads(threads: int) -> None:
    """The command line owns its process, so it may set torch's thread count (the library never
    does)."""
    import torch

    if threads < 0:
        raise _fail(f"--threads must be an int >= 0; got {threads}")
    if threads:
        torch.set_num_threads(threads)


class _StudyGroup(TyperGroup):
    """``prunelab run``: an unknown study is an error that lists the valid ones."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise _fail(f"unknown study {name!r}; choose from {', '.join([*entries(), 'all'])}")
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*entries(), "all"]


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
    cls=_App,
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


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            DEBUG_FLAG, help="show the Python traceback of an error (anywhere on the line)"
        ),
    ] = False,
) -> None:
    """prunelab: take parts out of neural networks and understand what happens."""


DEVICE_HELP = "cpu, cuda, or auto (cuda when available)"
EXECUTORS = ("serial", "process", "ray")  # base.executor.EXECUTORS (tests check they agree)
EXECUTOR_HELP = (
    "how the units of work (seeds x arms) run: serial (in this process), process (a pool, one "
    "worker per core, --threads torch threads each, default 1) or ray (Ray tasks). Finished "
    "units are kept in OUT/.units and never computed again: a rerun resumes an interrupted run"
)
RAY_ADDRESS_HELP = "join this Ray cluster (ray start --head prints it); default: a local one"


def _executor(kind: str, ray_address: str | None, threads: int, out: Path) -> Executor:
    """The executor for ``--executor``/``--ray-address``, keeping units in ``OUT/.units``;
    workers get ``--threads`` torch threads (or 1)."""
    if kind not in EXECUTORS:
        raise _fail(f"--executor {kind!r}: choose from {', '.join(EXECUTORS)}")
    if ray_address is not None and kind != "ray":
        raise _fail(f"--ray-address needs --executor ray; got --executor {kind}")
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise _fail('--executor ray needs Ray: pip install "prunelab[ray]"')
    from ..base.executor import Executor
    from ..studies.units import store

    return Executor(kind, threads=threads or 1, ray_address=ray_address, store=str(store(out)))


def _device(name: str) -> torch.device:
    """The torch device for ``--device``: cpu, cuda (an error without one) or auto."""
    import torch

    if name not in ("cpu", "cuda", "auto"):
        raise _fail(f"--device {name!r}: choose from cpu, cuda, auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise _fail("--device cuda: this machine has no CUDA device (torch sees none)")
    return torch.device(name)


def _read_toml(path: Path | None) -> dict[str, Any]:
    """The ``--config`` file, checked: every table a study, every key an option of a study."""
    if path is None:
        return {}
    if path.is_dir():
        raise _fail(f"--config {str(path)!r} is a folder; give a TOML file")
    if not path.is_file():
        raise _fail(f"--config {str(path)!r} does not exist")
    try:
        toml = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise _fail(f"--config {str(path)!r} is not valid TOML: {e}") from None
    studies = entries()
    known = {o.name for e in studies.values() for o in e.options}
    for key, value in toml.items():
        if isinstance(value, dict):
            if key not in studies:
                raise _fail(
                    f"--config {str(path)!r}: table [{key}] is not a study; studies: "
                    f"{', '.join(studies)}"
                )
            fields = {o.name for o in studies[key].options}
            for name in value:
                if name.replace("-", "_") not in fields:
                    raise _fail(
                        f"--config {str(path)!r}: [{key}] has {name!r}, not an option of "
                        f"{key}; options: {', '.join(sorted(fields))}"
                    )
        elif key.replace("-", "_") not in known:
            raise _fail(
                f"--config {str(path)!r}: {key!r} is not an option of any study "
                f"(`prunelab run STUDY --help` lists each study's options)"
            )
    return toml


def _study_overrides(entry: Entry, toml: dict[str, Any]) -> dict[str, Any]:
    """Top-level scalar keys that are fields of the study, then its own ``[study]`` table."""
    fields = {o.name for o in entry.options}
    top = {
        k: v for k, v in toml.items() if not isinstance(v, dict) and k.replace("-", "_") in fields
    }
    return top | dict(toml.get(entry.name, {}))


def _config(entry: Entry, *, quick: bool, overrides: dict[str, Any]) -> tuple[ModuleType, Any]:
    """The study module and its checked config (before any work starts)."""
    from ..studies.base import make_config

    study = entry.load()
    try:
        config = make_config(study.Config, quick=quick, overrides=overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise _fail(f"{entry.name}: {_message(e)}") from None
    path = getattr(config, "checkpoint", "")  # a study that reads the user's own network
    if path and not Path(path).is_file():
        what = "is a folder" if Path(path).is_dir() else "does not exist"
        raise _fail(f"{entry.name}: --checkpoint {path!r} {what}; give a .safetensors file")
    return study, config


def _check_out(out: Path, names: list[str]) -> None:
    """``--out`` must be a folder (or not exist yet), and each run folder in it too."""
    for path, what in [(out, "--out"), *((out / n, f"--out {str(out)!r}: its {n}") for n in names)]:
        if path.exists() and not path.is_dir():
            raise _fail(f"{what} {str(path)!r} is a file; --out names the parent folder of runs")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise _fail(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")


def _run_study(
    study: ModuleType,
    config: Any,
    *,
    quick: bool,
    out: Path,
    progress: bool,
    device: torch.device,
    executor: Executor,
) -> Path:
    """Run one study into a fresh folder that replaces ``out/NAME`` only once it is whole; its
    finished units stay in ``out/.units`` (so a killed run resumes)."""
    from ..base import files
    from ..base.executor import UnitError
    from ..studies.units import run_study
    from . import report

    run_dir = out / study.NAME
    where = "" if device.type == "cpu" else f" on {device}"
    typer.echo(f"running {study.NAME}{' (quick)' if quick else ''}{where} -> {run_dir}")
    with files.fresh_folder(run_dir) as work:
        try:
            results = run_study(
                study, config, work, progress=progress, device=device, executor=executor
            )
        except UnitError as e:
            raise _fail(f"{study.NAME}: {e}") from None
        except (OSError, ValueError) as e:  # a checkpoint or data set it cannot take
            raise _fail(f"{study.NAME}: {_message(e)}") from None
        report.write_run(study, config, results, work, device=str(device))
    for key, value in study.headline(results).items():
        typer.echo(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    typer.echo(f"  report: {run_dir / 'report.html'}")
    return run_dir


def _common_options(entry_name: str) -> list[inspect.Parameter]:
    """``--quick --out --config --progress --threads --device`` of a study command."""
    options = [
        ("quick", False, bool, typer.Option("--quick", help="small, fast settings (a smoke run)")),
        ("out", Path("runs"), Path, typer.Option("--out", help="parent folder of the run folder")),
        (
            "config",
            None,
            Path | None,
            typer.Option(
                "--config", help=f"TOML file of options (top level or a \\[{entry_name}] table)"
            ),
        ),
        (
            "progress",
            True,
            bool,
            typer.Option("--progress/--no-progress", help="show progress bars"),
        ),
        ("threads", 0, int, typer.Option("--threads", help=THREADS_HELP)),
        ("device", "cpu", str, typer.Option("--device", help=DEVICE_HELP)),
        ("executor", "serial", str, typer.Option("--executor", help=EXECUTOR_HELP)),
        ("ray_address", None, str | None, typer.Option("--ray-address", help=RAY_ADDRESS_HELP)),
    ]
    return [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, opt]
        )
        for name, default, kind, opt in options
    ]


def _make_study_command(entry: Entry):
    """A typer command whose options mirror the study's ``Config`` fields (read from its source:
    no import until it runs)."""
    params = _common_options(entry.name)
    for option in entry.options:
        default = option.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        params.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    option.cli_type | None,
                    typer.Option(
                        "--" + option.name.replace("_", "-"),
                        help=f"{option.help} [default: {shown}]",
                        show_default=False,
                    ),
                ],
            )
        )

    def command(**kwargs: Any) -> None:
        quick, out, config, progress, threads, device, executor, ray_address = (
            kwargs.pop(k)
            for k in (
                "quick", "out", "config", "progress", "threads", "device", "executor",
                "ray_address",
            )
        )  # fmt: skip
        overrides = _study_overrides(entry, _read_toml(config))
        overrides |= {k: v for k, v in kwargs.items() if v is not None}
        study, cfg = _config(entry, quick=quick, overrides=overrides)
        _check_out(out, [entry.name])
        _set_threads(threads)
        where = _device(device)
        runner = _executor(executor, ray_address, threads, out)
        _run_study(
            study, cfg, quick=quick, out=out, progress=progress, device=where, executor=runner
        )

    command.__signature__ = inspect.Signature(params)  # typer reads options from here
    command.__doc__ = entry.summary
    return command


for _entry in entries().values():
    run_app.command(_entry.name, cls=_StudyCommand, help=_entry.summary)(
        _make_study_command(_entry)
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
            "\\[study-name] tables to one study",
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
    """Run every study in order and write index.html, opening with the scoreboard of findings."""
    toml = _read_toml(config)
    studies = entries()
    runs = []
    for name in RUN_ALL:  # every config checked before the first study starts
        overrides = _study_overrides(studies[name], toml)
        if seed is not None:
            overrides["seed"] = seed
        runs.append(_config(studies[name], quick=quick, overrides=overrides))
    _check_out(out, list(RUN_ALL))
    _set_threads(threads)
    where = _device(device)
    runner = _executor(executor, ray_address, threads, out)
    run_dirs = [
        _run_study(
            study, cfg, quick=quick, out=out, progress=progress, device=where, executor=runner
        )
        for study, cfg in runs
    ]
    from . import report

    index = report.write_index(out, run_dirs)
    typer.echo(f"index: {index}")


def _run_folders(paths: list[Path]) -> list[Path]:
    """Run folders named on the line: a run folder itself, or a folder of runs (``run all``'s
    ``--out``: each subfolder holding results.json, in ``run all``'s order)."""
    found = []
    for path in paths:
        if (path / "results.json").is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise _fail(f"findings: {str(path)!r} does not exist")
        inside = sorted(p.parent for p in path.glob("*/results.json"))
        if not inside:
            raise _fail(f"findings: {str(path)!r} holds no run (no results.json in it or below)")
        order = {name: i for i, name in enumerate(RUN_ALL)}
        found += sorted(inside, key=lambda p: (order.get(p.name, len(order)), p.name))
    return found


@app.command("findings")
def findings_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="run folders, or a folder of runs (the --out of run all)"),
    ],
) -> None:
    """Print the scoreboard: every finding of the runs, with the source's figure, ours and the
    verdict (the table that opens run all's index.html)."""
    from rich.console import Console
    from rich.table import Table

    from . import report

    board = report.scoreboard(_run_folders(run_dirs))
    colours = {"holds": "green", "differs": "red", "not measured": "dim"}
    table = Table(show_lines=False, expand=False)
    for column in ("study", "claim of the source", "source", "ours", "verdict"):
        table.add_column(column, overflow="fold")
    for r in board:
        v = r["verdict"]
        table.add_row(
            r["study"], r["claim"], r["source"] or "-", r["ours"], f"[{colours[v]}]{v}[/]"
        )
    console = Console(width=max(Console().width, 120) if sys.stdout.isatty() else 160)
    console.print(table)
    counts = {v: sum(r["verdict"] == v for r in board) for v in colours}
    console.print(", ".join(f"{n} {v}" for v, n in counts.items()))


@app.command("list")
def list_studies() -> None:
    """List the studies, one line each."""
    studies = entries()
    width = max(map(len, studies))
    for name, entry in studies.items():
        typer.echo(f"{name:<{width}}  {entry.summary}")


def _parse_widths(widths: str | None, arch: str) -> list[int] | None:
    """``--widths`` as positive ints (``--arch mlp`` only)."""
    if arch != "mlp":
        return None
    if not widths:
        raise _fail("--arch mlp needs --widths, e.g. 784,300,100,10")
    try:
        sizes = [int(w) for w in widths.replace(" ", "").split(",") if w]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or any(w < 1 for w in sizes):
        raise _fail(
            f"--widths {widths!r}: give at least two positive integers separated by commas, "
            "e.g. 2,20,2"
        )
    return sizes


def _build(arch: str, sizes: list[int] | None, shape: tuple[int, ...], classes: int, opts: dict):
    """The untrained model of ``--arch`` for samples of ``shape`` and ``classes`` classes."""
    from ..base import models

    if arch == "mlp":
        d_in = math.prod(shape)
        if sizes[0] != d_in:
            raise _fail(
                f"--widths {','.join(map(str, sizes))} starts with {sizes[0]} but the data has "
                f"{d_in} input features"
            )
    elif len(shape) != 3:
        raise _fail(
            f"--arch {arch} takes images [C, H, W]; the data has samples of shape {list(shape)}"
        )
    return models.build(
        arch,
        in_shape=shape,
        classes=classes,
        widths=sizes,
        **{k: opts[k] for k in ("activation", "dropout", "batchnorm", "pool", "width", "seed")},
    )


def _check_train_options(o: dict[str, Any]) -> None:
    """``prunelab train``'s option values, each against what it accepts (before any work)."""
    choices = {
        "--arch": (o["arch"], ARCHITECTURES),
        "--activation": (o["activation"], ACTIVATIONS),
        "--optimizer": (o["optimizer"], OPTIMIZERS),
        "--pool": (o["pool"], POOLS),
    }
    for flag, (value, valid) in choices.items():
        if value not in valid:
            raise _fail(f"{flag} {value!r}: choose from {', '.join(valid)}")
    if o["data"] not in LOADERS + FOLDER_SETS:
        raise _fail(
            f"--data {o['data']!r}: choose from {', '.join(LOADERS)}, or with --data-root one "
            f"of {', '.join(FOLDER_SETS)}"
        )
    ranges = [
        ("--epochs", o["epochs"], o["epochs"] >= 1, "an int >= 1"),
        ("--batch-size", o["batch_size"], o["batch_size"] >= 1, "an int >= 1"),
        ("--seed", o["seed"], 0 <= o["seed"] < 2**63, "an int in 0..2**63-1"),
        ("--lr", o["lr"], math.isfinite(o["lr"]) and o["lr"] > 0, "a finite number > 0"),
        ("--weight-decay", o["weight_decay"], 0 <= o["weight_decay"] < math.inf, "a number >= 0"),
        ("--width", o["width"], math.isfinite(o["width"]) and o["width"] > 0, "a number > 0"),
    ]
    if o["dropout"] is not None:
        ranges.append(("--dropout", o["dropout"], 0 <= o["dropout"] < 1, "a number in [0, 1)"))
    for flag, value, ok, accepted in ranges:
        if not ok:
            raise _fail(f"{flag} must be {accepted}; got {value}")
    out = o["out"]
    if out.is_dir():
        raise _fail(f"--out {str(out)!r} is a folder; give the checkpoint file to write")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise _fail(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if o["data"] in FOLDER_SETS and o["data_root"] is None:
        raise _fail(
            f"--data {o['data']} is read from a folder you have (prunelab never downloads): "
            "pass --data-root DIR"
        )


@app.command("train")
def train_command(
    data_name: Annotated[
        str,
        typer.Option(
            "--data",
            help=f"one of {', '.join(LOADERS)}, or with --data-root one of "
            f"{', '.join(FOLDER_SETS)}",
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
    activation: Annotated[str, typer.Option(help=f"one of {', '.join(ACTIVATIONS)}")] = "relu",
    dropout: Annotated[
        float | None,
        typer.Option(help="dropout after each hidden layer [default: vgg 0.5, else 0]"),
    ] = None,
    epochs: Annotated[int, typer.Option(help="an int >= 1")] = 20,
    lr: Annotated[float, typer.Option(help="learning rate, > 0")] = 0.01,
    batch_size: Annotated[int, typer.Option(help="an int >= 1")] = 32,
    optimizer: Annotated[str, typer.Option(help="adam or sgd")] = "adam",
    weight_decay: Annotated[float, typer.Option(help=">= 0")] = 0.0,
    seed: Annotated[int, typer.Option(help="an int in 0..2**63-1")] = 0,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    threads: Annotated[
        int, typer.Option("--threads", help="torch CPU threads (0: torch's default)")
    ] = 0,
) -> None:
    """Train a model (an MLP, LeNet-5 or a VGG) on a data set and save a checkpoint."""
    _check_train_options({**locals(), "data": data_name})
    sizes = _parse_widths(widths, arch)
    _set_threads(threads)
    where = _device(device)
    from ..base import checkpoint, data, train

    vgg = arch.startswith("vgg")
    opts = dict(
        activation=activation,
        dropout=(0.5 if vgg else 0.0) if dropout is None else dropout,
        batchnorm=vgg if batchnorm is None else batchnorm,
        seed=seed,
        pool=pool,
        width=width,
    )
    split = data.load(data_name, seed=seed, root=data_root)
    shape = tuple(split.train.x.shape[1:])
    model = _build(arch, sizes, shape, split.train.classes, opts).to(where)
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
    scores = train.evaluate(model, split.test)
    checkpoint.save(
        out,
        model.cpu(),
        data=data_name,
        seed=seed,
        arch=arch,
        **({"widths": sizes} if arch == "mlp" else {}),
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
    from . import report

    path = report.rerender(run_dir)
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
            help=f"data to embed: one of {', '.join(LOADERS)} (its test part) or a data "
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
    if samples is not None and samples < 1:
        raise _fail(f"--samples must be an int >= 1; got {samples}")
    if out is not None and out.is_dir():
        raise _fail(f"--out {str(out)!r} is a folder; give the HTML file to write")
    from .web import explorer

    if run_dir is not None:
        checkpoint_file = explorer.run_checkpoint(run_dir)
        out = run_dir / explorer.EXPLORER_PAGE if out is None else out
    path = explorer.from_checkpoint(checkpoint_file, out, data_name=data_name, samples=samples)
    typer.echo(f"explorer: {path}")
    if open_page:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def main() -> None:
    app()
