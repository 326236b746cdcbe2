import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

from prunelab import files


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    files.atomic_write(path, "first")
    files.atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_interrupted_write_leaves_old_file_and_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.atomic_write(path, "old")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, "new" * 1000)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@dataclass
class Inner:
    values: Tensor
    names: list[str]


@dataclass
class Outer:
    inner: Inner
    table: dict[str, Tensor]
    widths: tuple[int, ...]
    score: float
    maybe: Tensor | None = None


def test_json_round_trip_of_nested_dataclasses_with_tensors_and_nan():
    value = Outer(
        Inner(torch.tensor([[1.0, float("nan")], [float("inf"), -2.5]]), ["a", "b"]),
        {"w": torch.tensor([1.0, 2.0])},
        (2, 20, 2),
        float("-inf"),
    )
    raw = files.to_jsonable(value)
    back = files.from_jsonable(Outer, raw)
    assert torch.equal(back.inner.values.nan_to_num(7.0), value.inner.values.nan_to_num(7.0))
    assert back.inner.names == ["a", "b"] and back.widths == (2, 20, 2)
    assert torch.equal(back.table["w"], value.table["w"]) and math.isinf(back.score)
    assert back.maybe is None


def test_write_json_never_emits_bare_nan(tmp_path):
    path = files.write_json(tmp_path / "r.json", {"x": float("nan"), "t": torch.tensor([1.5])})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"x":"nan","t":[1.5]}'


def test_to_cpu_reaches_every_tensor_and_keeps_the_containers():
    @dataclass(frozen=True)
    class Inner:
        t: Tensor
        n: int

    value = {"a": [Inner(torch.ones(2), 3), (torch.zeros(1), "x")], "b": torch.arange(3)}
    out = files.to_cpu(value)
    assert isinstance(out["a"][0], Inner) and out["a"][0].n == 3
    assert torch.equal(out["a"][0].t, torch.ones(2)) and out["a"][1][1] == "x"
    assert all(t.device.type == "cpu" for t in (out["a"][0].t, out["a"][1][0], out["b"]))


# --- run folders: one whole run, always ----------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def test_fresh_folder_swaps_a_whole_run_in(tmp_path):
    run = tmp_path / "study"
    for k in range(2):
        with files.fresh_folder(run) as work:
            assert work.parent == tmp_path and not any(work.iterdir())
            (work / "results.json").write_text(str(k))
            if k == 0:
                (work / "only-in-first.png").write_text("")
            assert (run / "results.json").read_text() == "0" if k else not run.exists()
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]  # nothing mixed in
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no debris


def test_a_failed_run_leaves_the_previous_one_and_no_debris(tmp_path):
    run = tmp_path / "study"
    run.mkdir()
    (run / "results.json").write_text("old")
    with pytest.raises(RuntimeError), files.fresh_folder(run) as work:
        (work / "results.json").write_text("new")
        raise RuntimeError("killed")
    assert (run / "results.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["study"]


def test_stale_folders_of_dead_runs_are_cleaned_and_a_moved_run_restored(tmp_path):
    pid = _dead_pid()
    (tmp_path / f".study.new-{pid}-x").mkdir()
    (tmp_path / f".study.old-{pid}-y").mkdir()
    (tmp_path / f".study.old-{pid}-y" / "results.json").write_text("previous")
    (tmp_path / f".study.new-{os.getpid()}-z").mkdir()  # a live process's: left alone
    files.clean_stale(tmp_path / "study")
    assert (tmp_path / "study" / "results.json").read_text() == "previous"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".study.new-{os.getpid()}-z", "study"]


def test_a_process_killed_while_writing_leaves_the_previous_run_whole(tmp_path):
    run = tmp_path / "study"
    run.mkdir()
    (run / "results.json").write_text("previous")
    script = (
        "import sys, time; from prunelab.base import files\n"
        f"with files.fresh_folder({str(run)!r}) as work:\n"
        "    (work / 'model.safetensors').write_text('half')\n"
        "    print('writing', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(files.__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in run.iterdir()] == ["results.json"]
    assert (run / "results.json").read_text() == "previous"
    with files.fresh_folder(run) as work:  # the next run: the dead run's folder is cleaned
        (work / "results.json").write_text("next")
    assert [p.name for p in tmp_path.iterdir()] == ["study"]
    assert (run / "results.json").read_text() == "next"
