"""The op view: every primitive of every op kind against autograd in float64."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from prunelab import models, ops

F64 = torch.float64


def _eval(*modules: nn.Module) -> nn.Sequential:
    """A float64 Sequential in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    seq = nn.Sequential(*modules).to(F64)
    for m in seq.modules():
        if isinstance(m, ops.Offset):
            m.offset.uniform_(-1, 1)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)
    return seq.eval()


# (modules, per-sample input shape): each parses to exactly one op
CASES = {
    "linear": (lambda: [nn.Linear(5, 4)], (5,)),
    "linear_nobias": (lambda: [nn.Linear(5, 4, bias=False)], (5,)),
    "linear_bn": (lambda: [nn.Linear(5, 4), nn.BatchNorm1d(4)], (5,)),
    "conv": (lambda: [nn.Conv2d(2, 3, 3, padding=1)], (2, 6, 6)),
    "conv_strided": (lambda: [nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2)], (2, 7, 7)),
    "conv_rect": (lambda: [nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=(0, 1))], (2, 5, 6)),
    "conv_bn": (lambda: [nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)], (2, 5, 5)),
    "conv_offset": (lambda: [nn.Conv2d(2, 3, 3, padding=1), ops.Offset((3, 6, 6))], (2, 6, 6)),
    "conv_offset_bn": (
        lambda: [nn.Conv2d(2, 3, 3, stride=2, padding=1), ops.Offset((3, 3, 3)), nn.BatchNorm2d(3)],
        (2, 5, 5),
    ),
    "avgpool": (lambda: [nn.AvgPool2d(2)], (2, 6, 6)),
    "avgpool_pad": (lambda: [nn.AvgPool2d(3, 2, padding=1)], (2, 7, 7)),
    "avgpool_pad_exclude": (
        lambda: [nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True)],
        (2, 6, 6),
    ),
    "adaptive_avg": (lambda: [nn.AdaptiveAvgPool2d((3, 2))], (2, 7, 5)),
    "maxpool": (lambda: [nn.MaxPool2d(2)], (2, 6, 6)),
    "maxpool_overlap": (lambda: [nn.MaxPool2d(3, 1, padding=1)], (2, 5, 5)),
    "adaptive_max": (lambda: [nn.AdaptiveMaxPool2d(3)], (2, 7, 7)),
    **{
        f"act_{name}": (lambda make=make: [make(0.1)], (3, 4, 4))
        for name, make in ops.ACTIVATIONS.items()
        if name != "identity"
    },
    "flatten": (lambda: [nn.Flatten()], (2, 3, 3)),
    "dropout": (lambda: [nn.Dropout(0.5)], (6,)),
    "identity": (lambda: [nn.Identity()], (6,)),
}


def _case(name: str, n: int = 3):
    make, shape = CASES[name]
    seq = _eval(*make())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g, dtype=F64)
    if name.startswith("maxpool") or name.startswith("adaptive_max"):
        x = x + 1e-3 * torch.arange(x.numel(), dtype=F64).view_as(x)  # no ties
    if isinstance(seq[0], nn.Linear | nn.Conv2d):
        return seq, ops.parse(seq, method="test").ops[0], x
    # a parameter-free op is read after a layer (a view starts with one)
    layer = nn.Conv2d(shape[0], shape[0], 1) if len(shape) == 3 else nn.Linear(shape[0], 2)
    return seq, ops.parse(nn.Sequential(layer, *seq), method="test").ops[1], x


@pytest.mark.parametrize("name", sorted(CASES))
def test_apply_is_the_module(name):
    seq, op, x = _case(name)
    torch.testing.assert_close(op.apply(x), seq(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_is_autograd(name):
    seq, op, x = _case(name)
    xr = x.clone().requires_grad_(True)
    y = seq(xr)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    (want,) = torch.autograd.grad(y, xr, g)
    torch.testing.assert_close(op.vjp(x, g), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_squared_vjp_is_the_squared_jacobian(name):
    seq, op, x = _case(name, n=1)
    J = torch.autograd.functional.jacobian(seq, x)  # (1, *out, 1, *in)
    out_numel = seq(x).numel()
    J = J.reshape(out_numel, x.numel())
    g = torch.randn(seq(x).shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    want = ((J * J).T @ g.reshape(-1)).view_as(x)
    torch.testing.assert_close(op.vjp(x, g, squared=True), want, rtol=1e-12, atol=1e-12)


AFFINE = [n for n in CASES if n.startswith(("linear", "conv"))]


@pytest.mark.parametrize("name", AFFINE)
def test_folded_weights_give_the_same_output(name):
    seq, op, x = _case(name)
    W, b = op.folded()
    y = op._z(x, W, b)
    o = op.folded_offset()  # the per-position part of the bias, an Offset's only
    assert (o is None) == ("offset" not in name)
    torch.testing.assert_close(y if o is None else y + o, seq(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", AFFINE)
def test_per_sample_grads_are_a_loop_of_autograd(name):
    seq, op, x = _case(name)
    g = torch.randn(seq(x).shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    dW, db = op.per_sample_grads(x, g)
    W0, b0 = op.folded()
    for n in range(len(x)):
        W, b = W0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = op._z(x[n : n + 1], W, b)
        want_W, want_b = torch.autograd.grad((y * g[n : n + 1]).sum(), (W, b))
        torch.testing.assert_close(dW[n], want_W, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(db[n], want_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", AFFINE)
def test_add_sparse_is_the_layer_with_a_sparse_weight(name):
    seq, op, x = _case(name)
    W = op.raw()[0].detach()
    g = torch.Generator().manual_seed(5)
    entries = torch.randperm(W.numel(), generator=g)[: max(1, W.numel() // 3)]
    values = torch.randn(len(entries), generator=g, dtype=F64)
    sparse = torch.zeros(W.numel(), dtype=F64)
    sparse[entries] = values
    z = op._z(x, sparse.view(W.shape), None)  # the raw layer with the sparse weight, no bias
    out = torch.randn(z.shape, generator=g, dtype=F64)
    want = out + z
    torch.testing.assert_close(op.add_sparse(x, entries, values, out), want, rtol=0, atol=1e-14)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-14)  # in place


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(2),
        nn.MaxPool2d(3, 2),
        nn.MaxPool2d((2, 3), (1, 2), dilation=(2, 1)),
        nn.MaxPool2d(3, 1, padding=1),  # padded: the module itself
        nn.MaxPool2d(2, ceil_mode=True),
    ],
)
def test_max_pool_without_autograd_is_the_module_exactly(pool):
    x = torch.randn(3, 2, 9, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    x[0, 0, :2, :2] = 0.0  # ties
    op = ops.parse(nn.Sequential(nn.Conv2d(2, 2, 1), pool)).ops[1]
    with torch.no_grad():
        assert torch.equal(op.apply(x, training=False), pool(x))


def test_batchnorm_running_statistics_take_overrides_like_functional_call():
    seq = _eval(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    op = ops.parse(seq).ops[0]
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    new = {"1.running_mean": torch.tensor([1.0, -2.0, 0.5], dtype=F64)}
    new["1.running_var"] = torch.tensor([0.3, 2.0, 1.0], dtype=F64)
    want = functional_call(seq, new, (x,))
    torch.testing.assert_close(op.apply(x, new, training=False), want, rtol=1e-12, atol=1e-12)
    W, b = op.folded(new)
    torch.testing.assert_close(op._z(x, W, b), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", AFFINE)
def test_slice_out_keeps_exactly_those_units(name):
    seq, op, x = _case(name)
    keep = torch.tensor([2, 0])
    small = nn.Sequential(*op.slice_out(keep)).eval()
    torch.testing.assert_close(small(x), seq(x)[:, keep], rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", AFFINE)
def test_slice_in_equals_zeroing_the_removed_inputs(name):
    seq, op, x = _case(name)
    keep = torch.tensor([0, 1]) if op.in_units > 2 else torch.tensor([1])
    gone = torch.ones(op.in_units, dtype=torch.bool)
    gone[keep] = False
    zeroed = x.clone()
    zeroed[:, gone] = 0
    torch.testing.assert_close(
        op.slice_in(keep)(x[:, keep]), op.module(zeroed), rtol=1e-13, atol=1e-13
    )


def test_slice_in_through_flatten_removes_a_channel_block():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 4, 5).to(F64)  # reads 3 channels of 2x2 positions, flattened
    op = ops.parse(nn.Sequential(linear)).ops[0]
    x = torch.randn(4, 3, 2, 2, dtype=F64)
    keep = torch.tensor([0, 2])
    zeroed = x.clone()
    zeroed[:, 1] = 0
    torch.testing.assert_close(
        op.slice_in(keep, block=4)(x[:, keep].flatten(1)), linear(zeroed.flatten(1))
    )


@pytest.mark.parametrize("name", AFFINE)
def test_response_is_the_linear_part(name):
    seq, op, x = _case(name)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(op.response(x), op.module(x) - op.module(zero), atol=1e-13, rtol=0)


def test_response_to_a_constant_channel_depends_on_position_in_a_padded_conv():
    """A zero-padded 3x3 conv answers a constant input channel less at the border."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).to(F64)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    op = ops.parse(nn.Sequential(conv)).ops[0]
    r = op.response(torch.full((1, 1, 4, 4), 2.0, dtype=F64))[0, 0]
    assert r[1:3, 1:3].eq(18).all()  # interior: 9 taps of 2
    assert r[0, 0] == 8 and r[0, 1] == 12  # a corner sees 4 taps, an edge 6


def test_an_offset_folds_into_its_conv_before_the_batchnorm():
    seq, op, x = _case("conv_offset_bn")
    assert len(ops.parse(seq).ops) == 1
    assert op.positions == (0, 1, 2) and (op.offset_name, op.norm_name) == ("1", "2")
    assert dict(seq.named_buffers())["1.offset"].shape == (3, 3, 3)  # a buffer, not trained
    assert "1.offset" not in dict(seq.named_parameters())


def test_an_offset_takes_only_its_own_size():
    seq, op, x = _case("conv_offset")
    with pytest.raises(ValueError, match=r"shape \[3, 6, 6\].*got \[3, 7, 7\]"):
        op.apply(torch.zeros(1, 2, 7, 7, dtype=F64))
    view = ops.parse(seq)
    with pytest.raises(ValueError, match=r"test: x has samples of shape \[2, 7, 7\]"):
        view.check_x(torch.zeros(1, 2, 7, 7, dtype=F64), "test")


def test_batchnorm_in_training_mode_cannot_be_folded():
    view = ops.parse(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
    view.ops[0].norm.train()
    with pytest.raises(ValueError, match=r"module 1 \(BatchNorm1d, '1'\) is in training mode"):
        view.ops[0].folded()


# --- parsing ---------------------------------------------------------------------------


def test_parse_reads_a_vgg_shaped_model():
    model = nn.Sequential(
        nn.Sequential(  # features
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
        ),
        nn.AdaptiveAvgPool2d(2),  # avgpool
        nn.Flatten(),
        nn.Sequential(nn.Linear(24, 7), nn.ReLU(), nn.Dropout(), nn.Linear(7, 3)),  # classifier
    )
    view = ops.parse(model)
    assert view.hidden_sizes == [4, 6, 7]
    assert [type(op).__name__ for op in view.ops] == [
        "Affine", "Activation", "Pool", "Affine", "Activation", "Pool", "Flatten", "Affine",
        "Activation", "Pass", "Affine",
    ]  # fmt: skip
    assert [view.ops[k].name for k in view.unit_ops] == ["0.2", "0.5", "3.1"]
    assert view.ops[0].norm_name == "0.1" and view.conv


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        (nn.Linear(2, 2), TypeError, "must be an nn.Sequential"),
        (nn.Sequential(nn.Linear(2, 2), nn.Softmax(1)), TypeError, r"module 1 \(Softmax\).*Linear, Conv2d"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten()), ValueError, "groups=1"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")), ValueError, "as integers"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, padding_mode="reflect")), ValueError, "'zeros'"),
        (nn.Sequential(nn.Flatten(0), nn.Linear(2, 2)), ValueError, r"Flatten\(1, -1\)"),
        (nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, return_indices=True)), ValueError,
         "return_indices=False"),
        (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), ValueError, "before any Linear or Conv2d"),
        (nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh()), ValueError, "one activation"),
        (nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.BatchNorm1d(2)), ValueError,
         "directly follow a Linear or Conv2d"),
        (nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False)),
         ValueError, "no running statistics"),
        (nn.Sequential(nn.ReLU()), ValueError, "before any"),
        (nn.Sequential(nn.Flatten()), ValueError, "no Linear or Conv2d"),
        (nn.Sequential(nn.Linear(2, 2), ops.Offset((2,))), ValueError, "directly follow a Conv2d"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), ops.Offset((2, 3, 3))), ValueError,
         "directly follow a Conv2d"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), ops.Offset((2, 3, 3))), ValueError,
         r"before its BatchNorm"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), ops.Offset((3, 3, 3))), ValueError,
         r"shape \[3, 3, 3\].*needs shape \[2, H, W\]"),
        (nn.Sequential(nn.Conv2d(1, 2, 1), ops.Offset((2, 3, 3)), ops.Offset((2, 3, 3))),
         ValueError, "another Offset"),
    ],
)  # fmt: skip
def test_parse_errors_name_the_module_and_the_choices(model, error, match):
    with pytest.raises(error, match=match):
        ops.parse(model, method="test")


# --- the forward pass ------------------------------------------------------------------


def _lenet(batchnorm: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(4)] if batchnorm else []
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), *norm, nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(5, 6), nn.GELU(), nn.Linear(6, 3),
    )  # fmt: skip
    return _eval(*model)


def test_forward_is_the_model_and_functional_call():
    model = _lenet()
    x = torch.randn(4, 1, 8, 8, dtype=F64)
    view = ops.parse(model)
    torch.testing.assert_close(ops.forward(view, x), model(x), rtol=0, atol=0)
    params = {n: p * 1.5 for n, p in model.named_parameters()}
    torch.testing.assert_close(
        ops.forward(view, x, params=params),
        functional_call(model, params, (x,)),
        atol=1e-14,
        rtol=0,
    )


def test_forward_scales_and_taps_the_units_after_their_activation():
    model = _lenet()
    view = ops.parse(model)
    x = torch.randn(4, 1, 8, 8, dtype=F64)
    s0, s2 = torch.rand(4, dtype=F64), torch.rand(4, 6, dtype=F64)  # shared, per sample
    seen = []

    def scale(k, s):
        def hook(module, inputs, out):
            seen.append(out)  # before the multiplier
            return out * (s[..., None, None] if out.dim() == 4 else s)

        return model[k].register_forward_hook(hook)

    handles = [scale(2, s0), scale(9, s2)]  # Tanh after conv+BN, GELU after the Linear
    try:
        want = model(x)
    finally:
        for h in handles:
            h.remove()
    out, acts = ops.forward(view, x, scales={0: s0, 2: s2}, taps=True)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-14)
    assert [a.shape for a in acts] == [(4, 4, 8, 8), (4, 5, 2, 2), (4, 6)]
    torch.testing.assert_close(acts[0], seen[0] * s0[:, None, None])
    torch.testing.assert_close(acts[2], seen[1] * s2)


def test_forward_flattens_images_for_an_mlp():
    mlp = _eval(nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 1, 4, 4, dtype=F64)
    torch.testing.assert_close(ops.forward(ops.parse(mlp), x), mlp(x.flatten(1)))


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    size=st.integers(5, 9),
)
def test_conv_primitives_for_any_geometry(k, stride, padding, dilation, size):
    """vjp and per-sample gradients of a Conv2d equal autograd for any stride/padding/dilation."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, k, stride, padding, dilation).to(F64)
    op = ops.parse(nn.Sequential(conv)).ops[0]
    x = torch.randn(2, 2, size, size, dtype=F64, requires_grad=True)
    y = conv(x)
    g = torch.randn_like(y)
    gx, gW, gb = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    torch.testing.assert_close(op.vjp(x.detach(), g), gx)
    dW, db = op.per_sample_grads(x.detach(), g)
    torch.testing.assert_close(dW.sum(0), gW)
    torch.testing.assert_close(db.sum(0), gb)


def test_unit_gradients_are_autograd_through_every_op_kind():
    model = _lenet()
    view = ops.parse(model)
    x = torch.randn(5, 1, 8, 8, dtype=F64)
    y = torch.tensor([0, 1, 2, 1, 0])
    acts, grads = ops.unit_gradients(
        view, x, lambda f: torch.softmax(f, 1) - torch.nn.functional.one_hot(y, 3).to(f)
    )
    scales = {ell: torch.ones(h, dtype=F64, requires_grad=True) for ell, h in enumerate([4, 5, 6])}
    out, taps = ops.forward(view, x, scales=scales, taps=True)
    for t in taps:
        t.retain_grad()
    torch.nn.functional.cross_entropy(out, y, reduction="sum").backward()
    for a, g, t in zip(acts, grads, taps, strict=True):
        torch.testing.assert_close(a, t.detach())
        torch.testing.assert_close(g, t.grad, rtol=1e-12, atol=1e-12)


def test_forward_edit_and_start():
    model = _lenet()
    view = ops.parse(model)
    x = torch.randn(3, 1, 8, 8, dtype=F64)
    _, taps = ops.forward(view, x, taps=True)

    def hold(a):
        a = a.clone()
        a[:, 1] = 0.5
        return a

    held = ops.forward(view, x, edit={1: hold})
    want = model[6:](hold(taps[1]))  # modules 6.. follow the second conv's ReLU (module 5)
    torch.testing.assert_close(held, want, rtol=0, atol=1e-14)
    k = view.unit_ops[1] + 1  # start after the second layer's units
    torch.testing.assert_close(ops.forward(view, taps[1], start=k), model(x), rtol=0, atol=1e-14)


def test_training_mode_batchnorm_takes_parameter_overrides_like_functional_call():
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))  # noqa: E731
    a, b = make().double().train(), make().double().train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 3, dtype=F64)
    params = {n: 2 * p.detach() for n, p in a.named_parameters()}
    got = ops.forward(ops.parse(a), x, params=params)
    want = functional_call(b, params, (x,))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(a[1].running_mean, b[1].running_mean, rtol=0, atol=0)
    assert a[1].num_batches_tracked == b[1].num_batches_tracked == 1


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm1d(2)),
        nn.Sequential(nn.Linear(2, 2), nn.BatchNorm2d(2)),
    ],
)
def test_batchnorm_must_match_its_layer(model):
    with pytest.raises(ValueError, match="which takes a BatchNorm"):
        ops.parse(model)


def test_an_mlp_behind_input_dropout_reads_images_flattened():
    mlp = _eval(nn.Dropout(0.2), nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 1, 4, 4, dtype=F64)
    torch.testing.assert_close(ops.forward(ops.parse(mlp), x), mlp(x.flatten(1)))


def test_records_are_each_layers_input_output_and_activation():
    model = _eval(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, 3), nn.Sigmoid())
    x = torch.randn(6, 4, dtype=F64)
    (a0, z0, h0), (a1, z1, h1) = ops.records(ops.parse(model), x)
    torch.testing.assert_close(a0, x)
    torch.testing.assert_close(z0, model[0](x))
    torch.testing.assert_close(h0, torch.tanh(z0))
    torch.testing.assert_close(a1, h0)  # dropout off
    torch.testing.assert_close(z1, model[3](h0))
    torch.testing.assert_close(h1, model(x))  # the output activation counts


def test_the_op_view_follows_the_device_of_its_inputs():
    """On the meta device (shapes without data) every pass and primitive stays on it: no
    tensor is made on the CPU behind the caller's back."""
    model = models.lenet5(batchnorm=True, pool="avg").eval().to("meta")
    view = ops.parse(model)
    x = torch.empty(2, 1, 28, 28, device="meta")
    out, taps = ops.forward(view, x, taps=True, scales={0: torch.ones(6, device="meta")})
    recs = ops.records(view, x)
    assert out.device.type == "meta" and all(t.device.type == "meta" for t in taps)
    assert all(t.device.type == "meta" for rec in recs for t in rec)
    a = x
    for op in view.ops:
        y = op.apply(a, training=False)
        g = torch.empty_like(y)
        assert op.vjp(a, g).device.type == "meta"
        assert op.vjp(a, g, squared=True).device.type == "meta"
        if isinstance(op, ops.Affine):
            assert all(t.device.type == "meta" for t in (*op.folded(), *op.per_sample_grads(a, g)))
        a = y
