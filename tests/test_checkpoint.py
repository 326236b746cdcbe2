import json
from collections import OrderedDict

import pytest
import safetensors.torch
import torch
from torch import nn

from prunelab import checkpoint, models, ops, surgery


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_reproduces_outputs_exactly(tmp_path, dtype):
    shared = nn.Linear(4, 4)
    m = (
        nn.Sequential(
            nn.Flatten(),
            nn.Linear(6, 4),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.2),
            shared,
            nn.GELU(),
            shared,
            nn.Tanh(),
            nn.Linear(4, 3),
        )
        .to(dtype)
        .eval()
    )
    path = checkpoint.save(
        tmp_path / "m.safetensors", m, data="circle", seed=3, train={"epochs": 2, "lr": 0.01}
    )
    loaded, meta = checkpoint.load(path)
    x = torch.randn(5, 2, 3, dtype=dtype)
    assert torch.equal(loaded(x), m(x))
    assert loaded[4] is loaded[6]  # weight sharing survives
    assert not loaded.training
    assert meta["data"] == "circle" and meta["seed"] == 3 and meta["train"]["epochs"] == 2
    assert meta["versions"]["torch"] == torch.__version__
    assert next(loaded.parameters()).dtype == dtype


def test_file_is_plain_safetensors_with_json_header(tmp_path):
    m = models.mlp((2, 3, 2), seed=0)
    path = checkpoint.save(tmp_path / "m.safetensors", m, data="circle")
    tensors = safetensors.torch.load_file(path)
    assert set(tensors) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    meta = json.loads(header["__metadata__"]["prunelab"])
    assert meta["architecture"][1] == {"type": "ReLU"}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path):
    path = checkpoint.save(tmp_path / "m.safetensors", models.mlp((2, 3, 2)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        checkpoint.load(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no prunelab header"):
        checkpoint.load(path)


def _rewrite(path, tensors, header):
    safetensors.torch.save_file(tensors, path, metadata={"prunelab": json.dumps(header)})


def test_mismatched_tensors_are_named(tmp_path):
    path = checkpoint.save(tmp_path / "m.safetensors", models.mlp((2, 3, 2)))
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), "pt") as f:
        header = json.loads(f.metadata()["prunelab"])
    bad = dict(tensors, **{"2.weight": torch.zeros(2, 5)})
    _rewrite(path, bad, header)
    with pytest.raises(ValueError, match=r"'2.weight' has shape \[2, 5\]"):
        checkpoint.load(path)
    _rewrite(path, {k: v for k, v in tensors.items() if k != "0.bias"}, header)
    with pytest.raises(ValueError, match=r"missing \['0.bias'\]"):
        checkpoint.load(path)
    _rewrite(path, tensors, dict(header, format="other/9"))
    with pytest.raises(ValueError, match="format"):
        checkpoint.load(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convnet_round_trip_is_exact(tmp_path, dtype):
    model = models.vgg("vgg11", width=0.125, seed=0, dtype=dtype)
    model.train()
    model(torch.randn(8, 3, 32, 32, dtype=dtype))  # BatchNorm running statistics move
    model.eval()
    path = checkpoint.save(tmp_path / "vgg.safetensors", model, data="cifar10")
    same, meta = checkpoint.load(path)
    x = torch.randn(4, 3, 32, 32, dtype=dtype)
    assert torch.equal(same(x), model(x)) and meta["data"] == "cifar10"
    assert same[0][1].num_batches_tracked.item() == 1
    assert next(same.parameters()).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_pruned_convnet_with_offsets_round_trips_exactly(tmp_path, dtype):
    """Exact border compensation inserts Offsets ("4_offset", ...): their shapes, buffers and
    names survive, and the loaded model can be pruned again."""
    model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=dtype)
    model.train()
    model(torch.randn(8, 3, 16, 16, dtype=dtype))
    model.eval()
    x = torch.rand(16, 3, 16, 16, dtype=dtype)
    small = surgery.remove_nodes(model, {0: [1, 5], 1: [0, 3], 4: [1]}, x=x)
    assert sum(isinstance(m, ops.Offset) for m in small.modules()) == 3
    loaded, _ = checkpoint.load(checkpoint.save(tmp_path / "pruned.safetensors", small))
    assert torch.equal(loaded(x), small(x))
    assert [n for n, _ in loaded.named_modules()] == [n for n, _ in small.named_modules()]
    assert models.spec(loaded) == models.spec(small)
    again = surgery.remove_nodes(loaded, {0: [0], 1: [2]}, x=x)
    assert sum(isinstance(m, ops.Offset) for m in again.modules()) == 3


def test_module_names_survive(tmp_path):
    m = nn.Sequential(
        OrderedDict(flat=nn.Flatten(), fc1=nn.Linear(4, 3), act=nn.ReLU(), out=nn.Linear(3, 2))
    ).eval()
    loaded, _ = checkpoint.load(checkpoint.save(tmp_path / "named.safetensors", m))
    assert [n for n, _ in loaded.named_children()] == ["flat", "fc1", "act", "out"]
    x = torch.randn(5, 2, 2)
    assert torch.equal(loaded(x), m(x))
