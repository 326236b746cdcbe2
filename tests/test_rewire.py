"""The one remove-and-rewire routine on convnets, against hooks on the original model."""

import pytest
import torch
from torch import nn

from prunelab import models, ops

F64 = torch.float64


def _held(model: nn.Sequential, view: ops.View, remove: dict, x: torch.Tensor, mode: str):
    """``model(x)`` with the removed units held at their means (or 0) after their activation.

    The hooks run in layer order on the same forward, so each mean is taken in the network as
    modified so far: the sequential means of mean compensation.
    """
    modules = {op.position: op.module for op in view.ops}
    flat = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    handles = []
    for ell, k in enumerate(view.unit_ops):
        R = remove.get(ell)
        if R is None:
            continue
        module = flat[view.ops[k].position]
        assert module is modules[view.ops[k].position]

        def hook(m, inputs, out, R=R):
            out = out.clone()
            dims = [d for d in range(out.dim()) if d != 1]
            value = out[:, R].mean(dim=dims) if mode == "mean" else torch.zeros(len(R), dtype=F64)
            out[:, R] = value.view(-1, *[1] * (out.dim() - 2))
            return out

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def _model(kind: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    if kind == "lenet5_max":
        return models.lenet5(seed=0, dtype=F64).eval(), (1, 28, 28)
    if kind == "lenet5_avg_bn":
        m = models.lenet5(pool="avg", batchnorm=True, seed=0, dtype=F64)
    else:  # a thin VGG whose last conv is read through the average pool and Flatten
        m = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=F64)
    m.train()
    with torch.no_grad():
        m(torch.randn(16, *((1, 28, 28) if kind.startswith("lenet") else (3, 16, 16)), dtype=F64))
    return m.eval(), ((1, 28, 28) if kind.startswith("lenet") else (3, 16, 16))


PLANS = {  # hidden layer -> removed units; conv channels read by an unpadded conv or a Flatten
    "lenet5_max": {0: [1, 4], 1: [0, 3, 15], 2: list(range(0, 120, 7))},
    "lenet5_avg_bn": {0: [2], 1: [5, 6], 3: [0, 83]},
    "vgg11": {7: [0, 3, 9], 8: [1, 2]},
}


@pytest.mark.parametrize("kind", sorted(PLANS))
@pytest.mark.parametrize("mode", ["mean", "none"])
def test_removal_equals_holding_units_at_their_mean_or_zero(kind, mode):
    model, shape = _model(kind)
    view = ops.parse(model)
    x = torch.rand(40, *shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    remove = {ell: torch.tensor(R) for ell, R in PLANS[kind].items()}
    small, mask = ops.remove_units(
        model, view, remove, x=x if mode == "mean" else None, method="test"
    )
    want = _held(model, view, remove, x, mode)
    torch.testing.assert_close(small(x), want, rtol=0, atol=1e-10)
    sizes = ops.parse(small).hidden_sizes
    assert sizes == [h - len(PLANS[kind].get(ell, [])) for ell, h in enumerate(view.hidden_sizes)]
    assert int((mask == 0).sum()) == sum(len(R) for R in PLANS[kind].values())
    # keep_shape: the same function from the full-size copy under the mask
    full, mask2 = ops.remove_units(
        model, view, remove, x=x if mode == "mean" else None, keep_shape=True
    )
    blocks = dict(enumerate(mask2.split(view.hidden_sizes)))
    out = ops.forward(ops.parse(full), x, scales=blocks)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    assert all(sum(p.numel() for p in m.parameters()) for m in (full, model))


def test_batchnorm_entries_and_block_columns_are_sliced():
    model, _ = _model("lenet5_avg_bn")
    small, _ = ops.remove_units(model, ops.parse(model), {1: torch.tensor([5, 6])})
    conv2, bn2 = small[4], small[5]
    assert conv2.out_channels == 14 and bn2.num_features == 14 and len(bn2.running_mean) == 14
    fc = small[9]
    assert fc.in_features == 14 * 5 * 5  # two channels' 5x5 blocks of columns gone
    torch.testing.assert_close(fc.weight[:, :125], model[9].weight[:, :125])
    torch.testing.assert_close(fc.weight[:, 125:], model[9].weight[:, 175:])


def test_a_padded_conv_reader_refuses_scalar_compensation():
    model, shape = _model("vgg11")
    view = ops.parse(model)
    x = torch.rand(8, *shape, dtype=F64)
    with pytest.raises(ValueError, match="zero-padded convolution"):
        ops.remove_units(model, view, {0: torch.tensor([1])}, x=x, method="test")
    # without compensation the channel is simply deleted
    small, _ = ops.remove_units(model, view, {0: torch.tensor([1])})
    torch.testing.assert_close(
        small(x), _held(model, view, {0: torch.tensor([1])}, x, "none"), rtol=0, atol=1e-10
    )


def test_nesting_names_and_modes_survive():
    model, _ = _model("vgg11")
    model.train()
    small, _ = ops.remove_units(model, ops.parse(model), {8: torch.tensor([0])})
    assert [n for n, _ in small.named_children()] == ["0", "1", "2", "3"]
    assert small.training and small[0][1].training
    assert small[3][3].in_features == model[3][3].in_features - 1


def test_a_large_constant_channel_does_not_hide_another_channels_border():
    """The constancy check is per reader channel: a huge constant one cannot mask a small one."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 5 * 5, 2),
    )  # fmt: skip  (float32: the huge channel's rounding is larger than the other's border)
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # every first-layer channel is relu(x): mean about 1/2
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].weight[0, 0, 1, 1] = 1e7  # centre tap only: constant response
        model[2].weight[1, 1] = 1.0  # all taps: less at the border
    x = torch.rand(8, 1, 5, 5)
    with pytest.raises(ValueError, match="zero-padded convolution"):
        ops.remove_units(model, ops.parse(model), {0: torch.tensor([0, 1])}, x=x)


def test_removing_every_channel_of_a_conv_is_refused():
    model, _ = _model("lenet5_max")
    with pytest.raises(ValueError, match="all 16 channels"):
        ops.remove_units(model, ops.parse(model), {1: torch.arange(16)})


def test_each_module_keeps_its_mode_and_requires_grad():
    model, _ = _model("lenet5_avg_bn")
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    model[1].weight.requires_grad_(False)
    small, _ = ops.remove_units(model, ops.parse(model), {0: torch.tensor([2])})
    assert small.training and small[0].training and not small[1].training
    assert not small[1].weight.requires_grad and small[1].bias.requires_grad


@pytest.mark.parametrize(
    ("remove", "x", "match"),
    [
        ({4: [0]}, None, "hidden layer 4 out of range"),
        ({0: [6]}, None, r"unit index 6 out of range; hidden layer 0 \(0\) has 6 units"),
        ({1: [2, 2]}, None, "unit 2 more than once"),
        ({0: [0]}, torch.full((2, 1, 28, 28), float("nan"), dtype=F64), "NaN or inf"),
    ],
)
def test_remove_units_names_a_bad_plan(remove, x, match):
    model, _ = _model("lenet5_max")
    with pytest.raises(ValueError, match=match):
        ops.remove_units(model, ops.parse(model), remove, x=x)
