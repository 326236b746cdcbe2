"""The one remove-and-rewire routine on convnets, against hooks on the original model.

The oracle holds each removed unit at its mean (or 0) after its activation, by forward hooks
on the original model's own modules; the pruned model must compute exactly that, through max
and average pooling, BatchNorm, Flatten and zero-padded convolutions (whose exact compensation
needs an Offset at the border).
"""

import pytest
import torch
from torch import nn

from prunelab import models, ops

F64 = torch.float64


def _flat(model: nn.Sequential) -> list[nn.Module]:
    return [m for m in model.modules() if not isinstance(m, nn.Sequential)]


def _held(
    model: nn.Sequential,
    view: ops.View,
    remove: dict,
    x: torch.Tensor,
    mode: str,
    capture: int | None = None,
):
    """``model(x)`` with the removed units held at their means (or 0) after their activation
    (and, with ``capture``, the output of the module at that flattened position).

    The hooks run in layer order on the same forward, so each mean is taken in the network as
    modified so far: the sequential means of mean compensation.
    """
    modules = {op.position: op.module for op in view.ops}
    flat = _flat(model)
    handles = []
    seen = []
    if capture is not None:
        handles.append(flat[capture].register_forward_hook(lambda m, i, out: seen.append(out)))
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
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out if capture is None else (out, seen[0])


def _padded8() -> nn.Sequential:
    """8x8 inputs through zero-padded 3x3 convs: stride 1 and 2, with and without BatchNorm and
    bias, read through average pooling and a padded (overlapping) max pool."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),  # layer 0: 8x8
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),  # layer 1: 8x8 -> 4x4
        nn.Conv2d(5, 7, 3, padding=1, bias=False), nn.BatchNorm2d(7), nn.Tanh(),  # layer 2: 4x4
        nn.MaxPool2d(3, 1, padding=1),
        nn.Conv2d(7, 4, 3, stride=2, padding=1), nn.ReLU(),  # layer 3: 2x2
        nn.Flatten(), nn.Linear(16, 3),
    ).to(F64)  # fmt: skip


SHAPES = {"lenet5_max": (1, 28, 28), "lenet5_avg_bn": (1, 28, 28), "padded8": (2, 8, 8)}


def _model(kind: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    shape = SHAPES.get(kind, (3, 16, 16))
    if kind == "lenet5_max":
        return models.lenet5(seed=0, dtype=F64).eval(), shape
    if kind == "lenet5_avg_bn":
        m = models.lenet5(pool="avg", batchnorm=True, seed=0, dtype=F64)
    elif kind == "padded8":
        m = _padded8()
    else:  # a thin VGG: zero-padded 3x3 convs; its last conv read through the pool and Flatten
        m = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=F64)
    m.train()  # BatchNorm statistics that are not the identity
    with torch.no_grad():
        m(torch.randn(16, *shape, dtype=F64))
    return m.eval(), shape


def _x(shape: tuple[int, ...], n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


PLANS = {  # hidden layer -> removed units
    "lenet5_max": {0: [1, 4], 1: [0, 3, 15], 2: list(range(0, 120, 7))},  # unpadded readers
    "lenet5_avg_bn": {0: [2], 1: [5, 6], 3: [0, 83]},
    "vgg11": {7: [0, 3, 9], 8: [1, 2]},  # the last conv read through the pool and Flatten
    "vgg11_padded": {0: [1, 5], 1: [0, 3], 2: [7], 4: [1, 2], 5: [3], 8: [1]},  # padded readers
    "padded8": {0: [1, 4], 1: [2], 2: [0, 5], 3: [1]},
}


def _model_for(kind: str):
    return _model("vgg11" if kind.startswith("vgg11") else kind)


def _offsets(model: nn.Sequential) -> dict[str, ops.Offset]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ops.Offset)}


@pytest.mark.parametrize("kind", sorted(PLANS))
@pytest.mark.parametrize("mode", ["mean", "none"])
def test_removal_equals_holding_units_at_their_mean_or_zero(kind, mode):
    model, shape = _model_for(kind)
    view = ops.parse(model)
    x = _x(shape)
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


def test_offsets_go_only_where_the_compensation_varies_with_position():
    model, shape = _model("padded8")
    x = _x(shape)
    view = ops.parse(model)
    small, _ = ops.remove_units(
        model, view, {ell: torch.tensor(R) for ell, R in PLANS["padded8"].items()}, x=x
    )
    # the padded conv readers of layers 0, 1, 2 get one each, right after the conv (before its
    # BatchNorm); the Linear reading layer 3 takes its compensation into the bias
    assert list(_offsets(small)) == ["3_offset", "6_offset", "10_offset"]
    names = [n for n, _ in small.named_children()]
    assert names[3:5] == ["3", "3_offset"] and names[7:10] == ["6", "6_offset", "7"]
    o = small.get_submodule("3_offset").offset  # [4, 8, 8]: zero inside, not at the border
    assert o.shape == (4, 8, 8)
    assert o[:, 1:-1, 1:-1].abs().max() < 1e-12 and o[:, 0].abs().max() > 1e-3
    o = small.get_submodule("10_offset").offset  # stride 2 on 4x4: only row and column 0 pad
    assert o[:, 1:, 1:].abs().max() < 1e-12 and o[:, 0].abs().max() > 1e-3
    # unpadded readers and readers at a single position need none
    lenet, shape = _model("lenet5_max")
    plan = {ell: torch.tensor(R) for ell, R in PLANS["lenet5_max"].items()}
    assert not _offsets(ops.remove_units(lenet, ops.parse(lenet), plan, x=_x(shape))[0])
    vgg, shape = _model("vgg11")
    small, _ = ops.remove_units(vgg, ops.parse(vgg), {5: torch.tensor([3])}, x=_x(shape))
    assert not _offsets(small)  # conv 22 reads layer 5 at 1x1: one position, no border


INTERIOR = {  # (kind, hidden layer): its reader's interior positions (None: it has none)
    ("padded8", 0): (slice(1, -1), slice(1, -1)),  # 3x3, padding 1 at 8x8
    ("padded8", 1): (slice(1, -1), slice(1, -1)),  # through the average pool: 4x4
    ("padded8", 2): (slice(1, None), slice(1, None)),  # through the padded max pool, stride 2
    ("padded8", 3): (),  # a Linear: exact everywhere
    ("vgg11", 0): (slice(1, -1), slice(1, -1)),  # through the max pool: 8x8
    ("vgg11", 4): None,  # 3x3, padding 1 at 2x2: every position touches the padding
}


@pytest.mark.parametrize(("kind", "ell"), sorted(INTERIOR))
def test_interior_form_is_exact_inside_and_reports_its_border_error(kind, ell):
    """Each reader's output (BatchNorm included) against the original with the units held."""
    model, shape = _model(kind)
    view = ops.parse(model)
    x = _x(shape)
    remove = {ell: torch.tensor(PLANS[f"{kind}_padded" if kind == "vgg11" else kind][ell])}
    small, _ = ops.remove_units(model, view, remove, x=x, border="interior")
    assert not _offsets(small)  # so the flattened positions are the original's
    at = max(view.layers[ell + 1].positions)  # the reader's last module: its conv or BatchNorm
    _, want = _held(model, view, remove, x, "mean", capture=at)
    _, got = _held(small, ops.parse(small), {}, x, "mean", capture=at)
    err = ops.compensation_error(model, view, remove, x=x)
    assert list(err) == [ell]
    if INTERIOR[kind, ell] is not None:
        inside = (slice(None), slice(None), *INTERIOR[kind, ell])
        torch.testing.assert_close(got[inside], want[inside], rtol=0, atol=1e-10)
    assert abs((got - want).abs().max().item() - err[ell]) < 1e-10
    assert err[ell] > 1e-3 if kind != "padded8" or ell < 3 else err[ell] < 1e-12


@pytest.mark.parametrize("kind", ["padded8", "vgg11_padded"])
@pytest.mark.parametrize("border", ops.BORDERS)
def test_one_pass_equals_successive_removals(kind, border):
    """Removing layer by layer, each on the model the last step returned (offsets sliced and
    added to), equals the one pass; so do the interior form's errors."""
    model, shape = _model_for(kind)
    x = _x(shape)
    plan = {ell: torch.tensor(R) for ell, R in PLANS[kind].items()}
    whole, _ = ops.remove_units(model, ops.parse(model), plan, x=x, border=border)
    errors = ops.compensation_error(model, ops.parse(model), plan, x=x)
    step = model
    for ell, R in plan.items():
        view = ops.parse(step)
        if border == "interior":  # its means are taken in the interior form's network
            error = ops.compensation_error(step, view, {ell: R}, x=x)[ell]
            assert error == pytest.approx(errors[ell], rel=1e-9, abs=1e-12)
        step, _ = ops.remove_units(step, view, {ell: R}, x=x, border=border)
    torch.testing.assert_close(step(x), whole(x), rtol=0, atol=1e-10)
    assert list(_offsets(step)) == list(_offsets(whole))


def test_a_second_removal_adds_to_an_offset():
    model, shape = _model("padded8")
    x = _x(shape)
    once, _ = ops.remove_units(model, ops.parse(model), {0: torch.tensor([1])}, x=x)
    # channel 4 of layer 0 is channel 3 of the pruned model; layer 1 is sliced, offset too
    twice, _ = ops.remove_units(
        once, ops.parse(once), {0: torch.tensor([3]), 1: torch.tensor([2])}, x=x
    )
    plan = {0: torch.tensor([1, 4]), 1: torch.tensor([2])}
    want = _held(model, ops.parse(model), plan, x, "mean")
    torch.testing.assert_close(twice(x), want, rtol=0, atol=1e-10)
    assert list(_offsets(twice)) == ["3_offset", "6_offset"]
    assert twice.get_submodule("3_offset").offset.shape == (4, 8, 8)


def test_a_large_constant_channel_does_not_hide_another_channels_border():
    """The constancy test is per reader channel: a huge constant one cannot mask a small one's
    border, which gets its Offset."""
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
        model[0].weight.fill_(1.0)  # every first-layer channel is relu(x) = x: mean about 1/2
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].weight[0, 0, 1, 1] = 1e7  # centre tap only: constant response
        model[2].weight[1, 1] = 1.0  # all taps: less at the border
    x = torch.rand(8, 1, 5, 5)
    small, _ = ops.remove_units(model, ops.parse(model), {0: torch.tensor([0, 1])}, x=x)
    o = small.get_submodule("2_offset").offset  # [2, 5, 5]
    abar = x.mean()  # of the removed channel 1, which the reader's channel 1 sums over 3x3
    torch.testing.assert_close(o[1, 0, 0], -5 * abar)  # a corner sees 4 taps of 9
    torch.testing.assert_close(o[1, 0, 2], -3 * abar)  # an edge 6
    assert o[1, 1:-1, 1:-1].abs().max() < 1e-6 and o[0].abs().max() <= 1e7 * 1e-5


def test_nesting_names_and_modes_survive():
    model, _ = _model("vgg11")
    model.train()
    small, _ = ops.remove_units(model, ops.parse(model), {8: torch.tensor([0])})
    assert [n for n, _ in small.named_children()] == ["0", "1", "2", "3"]
    assert small.training and small[0][1].training
    assert small[3][3].in_features == model[3][3].in_features - 1


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
        ({0: [0]}, "border", r"border='median'; choose from \['offset', 'interior'\]"),
    ],
)
def test_remove_units_names_a_bad_plan(remove, x, match):
    model, _ = _model("lenet5_max")
    kw = {"border": "median"} if x == "border" else {"x": x}
    with pytest.raises(ValueError, match=match):
        ops.remove_units(model, ops.parse(model), remove, **kw)
