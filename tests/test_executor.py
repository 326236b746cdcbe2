"""Units of work and executors: stored under a hash, skipped when done, failures retried, the
same results from every executor (serial, process pool, a local Ray cluster), and a run killed
mid-grid that resumes with only the missing units."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prunelab.base import files
from prunelab.base.executor import Executor, Unit, UnitError, run_units
from prunelab.studies import node_criteria
from prunelab.studies.base import make_config


def noisy(n: int, seed: int, out: str = "") -> torch.Tensor:
    """A unit: seeded noise (module-level, so process and Ray workers can import it)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def flaky(seed: int, fail: bool) -> int:
    if fail:
        raise ValueError(f"seed {seed} cannot be studied")
    return seed


def _units(seeds=(0, 1, 2)):
    return [Unit(f"seed{s}", noisy, dict(n=4, seed=s, out="ignored")) for s in seeds]


def kept(store, kind="serial", **kw) -> Executor:
    return Executor(kind, store=str(store), **kw)


def stored(store: Path, pattern: str = "*") -> list[Path]:
    """The finished units in ``store`` (folders holding result.pt)."""
    return [p.parent for p in store.glob(f"{pattern}/result.pt")]


def writer(seed: int, out: str) -> int:
    """A unit that writes a checkpoint-like file (and a nested one) into its own folder."""
    (Path(out) / f"net{seed}.txt").write_text(str(seed))
    (Path(out) / "sub").mkdir()
    (Path(out) / "sub" / f"deep{seed}.txt").write_text("x")
    return seed


def test_name_is_a_hash_of_what_determines_the_result():
    a, b = _units((0, 1))
    assert a.filename().startswith("seed0_") and a.filename() != b.filename()
    same = Unit("seed0", noisy, dict(seed=0, n=4, out="elsewhere"))  # out is not hashed
    assert same.filename() == a.filename()
    config = node_criteria.Config()
    one = Unit("u", noisy, dict(config=config))
    two = Unit("u", noisy, dict(config=dataclasses.replace(config, seeds=3)))
    assert one.digest() != two.digest()
    assert one.digest() == Unit("u", noisy, dict(config=node_criteria.Config())).digest()


def test_stored_units_are_not_computed_again(tmp_path):
    first = run_units(_units(), executor=kept(tmp_path), progress=False)
    assert all(torch.equal(r, noisy(4, s)) for r, s in zip(first, (0, 1, 2), strict=True))
    stamps = {p.name: (p / "result.pt").stat().st_mtime_ns for p in stored(tmp_path)}
    assert len(stamps) == 3 and len(list(tmp_path.iterdir())) == 3  # no temporary leftovers
    again = run_units(_units(), executor=kept(tmp_path), progress=False)
    assert {p.name: (p / "result.pt").stat().st_mtime_ns for p in stored(tmp_path)} == stamps
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_without_a_store_nothing_is_kept_and_written_files_reach_out(tmp_path):
    units = [Unit(f"w{s}", writer, dict(seed=s), writes=True) for s in (0, 1)]
    assert run_units(units, tmp_path / "run", progress=False) == [0, 1]
    got = sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*.txt"))
    assert got == ["net0.txt", "net1.txt", "sub/deep0.txt", "sub/deep1.txt"]
    # with a store: the files stay with the unit, and a re-render from the store gathers them
    store = tmp_path / "store"
    run_units(units, tmp_path / "a", executor=kept(store), progress=False)
    run_units(units, tmp_path / "b", executor=kept(store), progress=False)  # nothing computed
    assert (tmp_path / "b" / "net1.txt").read_text() == "1"
    assert len(stored(store)) == 2
    # a killed run's half-written unit folder (its PID gone) is removed by the next run
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (store / f".other_0123.new-{dead}-x").mkdir()
    run_units(units, tmp_path / "c", executor=kept(store), progress=False)
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in stored(store))


@pytest.mark.parametrize("kind", ["serial", "process"])
def test_a_failed_unit_is_reported_the_others_go_on_and_a_rerun_retries_it(tmp_path, kind):
    units = [Unit(f"seed{s}", flaky, dict(seed=s, fail=s == 1)) for s in range(3)]
    with pytest.raises(UnitError) as caught:
        run_units(units, executor=kept(tmp_path, kind, workers=2), progress=False)
    assert list(caught.value.failures) == ["seed1"]
    assert "cannot be studied" in caught.value.failures["seed1"]
    assert "'fail': True" in caught.value.failures["seed1"]  # its config
    assert len(stored(tmp_path)) == 2 and len(list(tmp_path.iterdir())) == 2  # no leftovers
    # the failure is fixed (here: a different argument) and the rerun computes only it
    units[1] = Unit("seed1", flaky, dict(seed=1, fail=False))
    assert run_units(units, executor=kept(tmp_path), progress=False) == [0, 1, 2]


def test_process_pool_gives_the_serial_results(tmp_path):
    serial = run_units(_units(), progress=False)
    pooled = run_units(_units(), executor=kept(tmp_path, "process"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(serial, pooled, strict=True))


def test_executor_names_the_valid_choices():
    with pytest.raises(ValueError, match="serial, process, ray"):
        Executor("threads")


# --- node-criteria through the executors ------------------------------------------------------

TINY = dict(
    seeds=2,
    criteria=("random", "activation_std", "taylor"),
    fractions=(0.25, 0.5),
    mnist_widths=(784, 12, 8, 10),
    mnist_train=200,
    mnist_epochs=1,
    spirals_widths=(2, 10, 8, 2),
    spirals_train=200,
    spirals_epochs=3,
    lenet5_train=200,
    lenet5_epochs=1,
    n_test=100,
    score_points=100,
    finetune_fractions=(0.5,),
    finetune_epochs=1,
)


def _numbers(results) -> dict:
    """Every number of the results but the wall-clock times."""
    plain = files.to_jsonable(results)
    for net in plain["nets"]:
        net.pop("score_seconds")
    return plain


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    config = node_criteria.Config(**TINY)
    out = tmp_path_factory.mktemp("serial")
    return config, node_criteria.run(config, out, progress=False), out  # one torch thread


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_node_criteria_quick_grid_on_ray_gives_the_serial_results(ray_cluster, tmp_path):
    config = make_config(node_criteria.Config, quick=True)
    serial = node_criteria.run(config, tmp_path / "serial", progress=False)  # one torch thread
    executor = kept(tmp_path / "units", "ray", threads=torch.get_num_threads())
    on_ray = node_criteria.run(config, tmp_path / "ray", progress=False, executor=executor)
    assert _numbers(on_ray) == _numbers(serial)
    assert len(stored(tmp_path / "units")) == len(config.nets)
    # the checkpoints the units wrote reach the run folder as they do serially
    names = sorted(p.name for p in (tmp_path / "serial").rglob("*.safetensors"))
    assert names and sorted(p.name for p in (tmp_path / "ray").rglob("*.safetensors")) == names


def test_a_failed_ray_task_is_reported_with_its_config(ray_cluster, tmp_path):
    config = node_criteria.Config(**TINY)
    bad = Unit(
        "bad", node_criteria.net_unit, dict(name="bogus", config=config, device="cpu"), writes=True
    )
    good = Unit("good", noisy, dict(n=2, seed=0))  # a test-module function: pickled by value
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.raises(UnitError) as caught:
        run_units([bad, good], executor=kept(tmp_path, "ray"), progress=False)
    assert list(caught.value.failures) == ["bad"]
    assert "KeyError" in caught.value.failures["bad"] and "bogus" in caught.value.failures["bad"]
    assert len(stored(tmp_path, "good_*")) == 1


def _cli(out: Path, *extra: str) -> list[str]:
    options = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
               for k, v in TINY.items()]  # fmt: skip
    return [sys.executable, "-m", "prunelab", "run", "node-criteria", "--no-progress",
            "--threads", "1", "--out", str(out), *options, *extra]  # fmt: skip


def test_a_run_killed_mid_grid_resumes_with_only_the_missing_units(tmp_path, serial_run):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    store = tmp_path / ".units"
    run = subprocess.Popen(_cli(tmp_path), env=env, stdout=subprocess.DEVNULL)
    try:
        while not stored(store) and run.poll() is None:
            time.sleep(0.02)
        os.kill(run.pid, signal.SIGKILL)  # killed by its own PID once the first unit is stored
    finally:
        run.wait()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stored(store)}
    assert 1 <= len(before) < 3, "the run was not killed mid-grid"
    assert not (tmp_path / "node-criteria" / "results.json").exists()
    subprocess.run(_cli(tmp_path), env=env, check=True, stdout=subprocess.DEVNULL)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stored(store)}
    assert len(after) == 3 and {k: after[k] for k in before} == before  # only the missing ones
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # the killed one's is gone
    # the run folder is whole: the checkpoints of the units stored before the kill are in it
    names = sorted(p.name for p in serial_run[2].rglob("*.safetensors"))
    assert sorted(p.name for p in (tmp_path / "node-criteria").rglob("*.safetensors")) == names
    written = json.loads((tmp_path / "node-criteria" / "results.json").read_text())["results"]
    for net in written["nets"]:
        net.pop("score_seconds")
    assert written == json.loads(json.dumps(_numbers(serial_run[1])))


def test_cli_refuses_an_unknown_executor_and_a_ray_address_without_ray(tmp_path):
    from typer.testing import CliRunner

    from prunelab.faces.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["run", "toy-nets", "--executor", "threads", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and not list(tmp_path.iterdir())
    lone = ["run", "toy-nets", "--ray-address", "localhost:6379", "--out", str(tmp_path)]
    assert runner.invoke(app, lone).exit_code == 2 and not list(tmp_path.iterdir())


def test_other_code_never_reuses_a_stored_unit(tmp_path, monkeypatch):
    from prunelab.base import executor

    (unit,) = _units((0,))
    run_units([unit], executor=kept(tmp_path), progress=False)
    before = unit.filename()
    monkeypatch.setattr(executor, "code_digest", lambda: "other code")
    assert unit.filename() != before  # a changed prunelab (or torch) computes it again
    run_units([unit], executor=kept(tmp_path), progress=False)
    assert len(stored(tmp_path)) == 2
