import math
import os
from dataclasses import dataclass

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
