"""Node criteria against autograd and closed-form oracles (float64), on MLPs and on convnets
(a unit is a channel), and select()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.criteria import LABELLED, NODE_CRITERIA, node_scores, select
from prunelab.surgery import remove_nodes
from torch import nn

from prunelab import bounds, criteria, models, ops

F64 = torch.float64


def _setup(activation="relu", widths=(3, 6, 5, 4), seed=0, n=40):
    model = models.mlp(widths, activation=activation, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    return model, x, y


def _gated_loss(model, x, y, gates, reduction="mean", shifts=None):
    """CE of the model's own modules with ``gates[l]`` multiplied in after hidden layer l
    (and ``shifts[l]`` added)."""
    ends = [layer.end for layer in models.parse(model).hidden]
    a = x
    for i, module in enumerate(model):
        a = module(a)
        if i in ends:
            a = a * gates[ends.index(i)]
            if shifts is not None:
                a = a + shifts[ends.index(i)]
    return F.cross_entropy(a, y, reduction=reduction)


def _activations(model, x):
    """Hidden activations from slices of the model itself (eval mode)."""
    return [model[: layer.end + 1](x) for layer in models.parse(model).hidden]


def _gates(model, requires_grad=True):
    return [
        torch.ones(H, dtype=F64, requires_grad=requires_grad) for H in models.hidden_sizes(model)
    ]


# --- activation statistics and weights ---------------------------------------------------


def test_activation_statistics():
    model, x, y = _setup("tanh")
    acts = _activations(model, x)
    for got, a in zip(node_scores("activation_std", model, x), acts):
        torch.testing.assert_close(got, torch.std(a, dim=0, unbiased=False), rtol=1e-12, atol=0)
    for got, a in zip(node_scores("activation_mean_abs", model, x, y), acts):
        torch.testing.assert_close(got, a.abs().mean(0), rtol=1e-12, atol=0)


def test_apoz_dead_unit_and_counts():
    model, x, _ = _setup("relu")
    with torch.no_grad():
        model[0].bias[2] = -100.0  # dead ReLU unit: APoZ 1, importance 0
    scores = node_scores("apoz", model, x)
    assert scores[0][2] == 0
    for got, a in zip(scores, _activations(model, x)):
        zeros = torch.tensor([(a[:, j] == 0).sum().item() for j in range(a.shape[1])], dtype=F64)
        torch.testing.assert_close(got, 1 - zeros / x.shape[0], rtol=0, atol=0)


def test_weight_norms_and_std_out_norm():
    model, x, _ = _setup("relu")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    w_in = node_scores("weight_in_norm", model, x)
    w_out = node_scores("weight_out_norm", model, x)
    std = node_scores("activation_std", model, x)
    std_out = node_scores("std_out_norm", model, x)
    for ell in range(2):
        W, W_next = linears[ell].weight, linears[ell + 1].weight
        for j in range(W.shape[0]):
            assert torch.isclose(w_in[ell][j], W[j].norm())
            assert torch.isclose(w_out[ell][j], W_next[:, j].norm())
        torch.testing.assert_close(std_out[ell], std[ell] * w_out[ell], rtol=1e-12, atol=0)


def test_random_is_seeded():
    model, x, _ = _setup()
    a = node_scores("random", model, x, generator=torch.Generator().manual_seed(3))
    b = node_scores("random", model, x, generator=torch.Generator().manual_seed(3))
    c = node_scores("random", model, x, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert all(((s >= 0) & (s < 1)).all() for s in a)
    d, e = node_scores("random", model, x), node_scores("random", model, x)
    assert torch.equal(d[1], e[1])  # no generator: seeded 0, reproducible


# --- loss-based criteria -----------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_taylor_matches_gate_autograd(activation):
    model, x, y = _setup(activation)
    gates = _gates(model)
    grads = torch.autograd.grad(_gated_loss(model, x, y, gates), gates)
    for got, g in zip(node_scores("taylor", model, x, y), grads):
        torch.testing.assert_close(got, g.square(), rtol=1e-10, atol=1e-15)


def test_gate_gradient_identity_relu():
    """dL/dz_j = sum_i W_ji dL/dW_ji + b_j dL/db_j for a ReLU unit (METHODS.md C)."""
    model, x, y = _setup("relu")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    gates = _gates(model)
    loss = _gated_loss(model, x, y, gates)
    params = [p for lin in linears[:-1] for p in (lin.weight, lin.bias)]
    g_gate = torch.autograd.grad(loss, gates, retain_graph=True)
    g_params = torch.autograd.grad(loss, params)
    taylor = node_scores("taylor", model, x, y)
    for ell, lin in enumerate(linears[:-1]):
        gW, gb = g_params[2 * ell], g_params[2 * ell + 1]
        identity = (lin.weight * gW).sum(1) + lin.bias * gb
        torch.testing.assert_close(identity, g_gate[ell], rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(taylor[ell], identity.square(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_mean_replacement_matches_per_sample_gradients(activation):
    model, x, y = _setup(activation)
    sizes = models.hidden_sizes(model)
    shifts = [torch.zeros(x.shape[0], H, dtype=F64, requires_grad=True) for H in sizes]
    # a -> a + shift: with the summed loss, d/d shift[n] = dl_n/da_n
    loss = _gated_loss(model, x, y, [1.0] * len(sizes), reduction="sum", shifts=shifts)
    grads = torch.autograd.grad(loss, shifts)
    acts = _activations(model, x)
    for got, g, a in zip(node_scores("mean_replacement", model, x, y), grads, acts):
        expected = ((a.mean(0) - a) * g).abs().mean(0)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-15)


def test_mean_replacement_loop_oracle():
    """Brute force: per sample, autograd of l_n w.r.t. its own activations."""
    model, x, y = _setup("tanh", n=8)
    scores = node_scores("mean_replacement", model, x, y)
    net = models.parse(model)
    acts = _activations(model, x)
    for ell in range(2):
        a = acts[ell].detach()
        abar = a.mean(0)
        total = torch.zeros_like(abar)
        for n in range(x.shape[0]):
            an = a[n : n + 1].clone().requires_grad_(True)
            f = an
            for dense in net.layers[ell + 1 :]:
                f = dense.phi(F.linear(f, dense.weight, dense.bias))
            (g,) = torch.autograd.grad(F.cross_entropy(f, y[n : n + 1]), an)
            total += ((abar - a[n]) * g[0]).abs()
        torch.testing.assert_close(scores[ell], total / x.shape[0], rtol=1e-10, atol=1e-15)


def test_constant_unit_scores_zero():
    model, x, y = _setup("tanh")
    with torch.no_grad():
        model[2].weight[1] = 0.0  # node 1 of hidden layer 1 is constant tanh(b)
    for name in ("mean_replacement", "activation_std", "std_out_norm", "lipschitz"):
        assert node_scores(name, model, x, y)[1][1] == 0, name
    assert abs(node_scores("mean_replacement_delta", model, x, y)[1][1]) < 1e-18


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid"])
def test_obd_mask_matches_autograd_second_derivative(activation):
    model, x, y = _setup(activation, widths=(3, 5, 4, 4, 3))
    h = node_scores("obd_mask", model, x, y)
    delta = node_scores("obd_mask_delta", model, x, y)
    gates = _gates(model)
    loss = _gated_loss(model, x, y, gates)
    first = torch.autograd.grad(loss, gates, create_graph=True)
    for ell, g in enumerate(first):
        for j in range(g.shape[0]):  # loop over nodes in the test only
            (second,) = torch.autograd.grad(g[j], gates[ell], retain_graph=True)
            torch.testing.assert_close(h[ell][j], second[j], rtol=1e-9, atol=1e-15)
            quad = -g[j] + 0.5 * second[j]
            torch.testing.assert_close(delta[ell][j], quad.detach(), rtol=1e-9, atol=1e-15)
    if activation == "relu":
        assert all((s >= -1e-15).all() for s in h)  # Gauss-Newton: non-negative


@pytest.mark.parametrize(
    ("activation", "chunked"), [("relu", False), ("tanh", False), ("gelu", True)]
)
def test_activation_hessian_diagonal_engine(activation, chunked, monkeypatch):
    """curvature.diag_hessian_activations / diag_hessian_masks (the engine of obd_mask)
    against the dense per-sample Hessian of the loss w.r.t. each hidden layer's activations."""
    from prunelab import curvature

    if chunked:  # a few samples per chunk, to exercise the sample split
        monkeypatch.setattr(curvature, "_MAX_FACTOR_ELEMENTS", 60)
    model, x, y = _setup(activation, widths=(3, 5, 4, 4, 3), n=7)
    h = curvature.diag_hessian_activations(model, x, y)
    h_m = curvature.diag_hessian_masks(model, x, y)
    net = models.parse(model)
    for ell, a in enumerate(_activations(model, x)):
        a = a.detach()

        def loss(a_l, ell=ell):
            f = a_l
            for dense in net.layers[ell + 1 :]:
                f = dense.phi(F.linear(f, dense.weight, dense.bias))
            return F.cross_entropy(f, y)

        H = torch.autograd.functional.hessian(loss, a)  # [N, H, N, H]
        dense = torch.stack([H[n, :, n, :].diagonal() for n in range(a.shape[0])])
        torch.testing.assert_close(h[ell], dense, rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(h_m[ell], (a.square() * dense).sum(0), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mean_replacement_delta_is_second_order_expansion(activation):
    """d/dt and d2/dt2 at t=0 of L with a_j -> a_j + t (abar_j - a_j), one node at a time."""
    model, x, y = _setup(activation, n=30)
    scores = node_scores("mean_replacement_delta", model, x, y)
    net = models.parse(model)
    for ell in range(2):
        a = _activations(model, x)[ell].detach()
        for j in range(a.shape[1]):
            t = torch.zeros((), dtype=F64, requires_grad=True)
            d = torch.zeros_like(a)
            d[:, j] = a[:, j].mean() - a[:, j]
            f = a + t * d
            for dense in net.layers[ell + 1 :]:
                f = dense.phi(F.linear(f, dense.weight, dense.bias))
            (g,) = torch.autograd.grad(F.cross_entropy(f, y), t, create_graph=True)
            (h,) = torch.autograd.grad(g, t)
            torch.testing.assert_close(
                scores[ell][j], (g + 0.5 * h).detach(), rtol=1e-9, atol=1e-15
            )


def test_lipschitz_is_the_certified_bound():
    model, x, y = _setup("tanh")
    scores = node_scores("lipschitz", model, x, y)
    for got, b in zip(scores, bounds.node_bounds(model, x)):
        torch.testing.assert_close(got, b, rtol=0, atol=0)
    for ell in range(2):
        for j in (0, 3):
            torch.testing.assert_close(
                scores[ell][j], bounds.expected_bound(model, x, ell, [j]), rtol=1e-12, atol=0
            )
            change = bounds.loss_change(model, x, y, ell, [j]).abs().mean()
            assert change <= scores[ell][j] + 1e-15


def test_shared_linear_and_flatten_models():
    shared = nn.Linear(4, 4, dtype=F64)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(4, 4, dtype=F64),
        nn.Tanh(),
        shared,
        nn.Tanh(),
        shared,
        nn.Tanh(),
        nn.Linear(4, 3, dtype=F64),
    )
    x = torch.randn(12, 2, 2, dtype=F64)
    y = torch.randint(0, 3, (12,))
    gates = _gates(model)
    loss = _gated_loss(model, x, y, gates)
    first = torch.autograd.grad(loss, gates, create_graph=True)
    taylor, h = node_scores("taylor", model, x, y), node_scores("obd_mask", model, x, y)
    for ell, g in enumerate(first):
        torch.testing.assert_close(taylor[ell], g.detach().square(), rtol=1e-10, atol=1e-15)
        (second,) = torch.autograd.grad(g[1], gates[ell], retain_graph=True)
        torch.testing.assert_close(h[ell][1], second[1], rtol=1e-9, atol=1e-15)


def test_every_criterion_runs_with_dropout_in_training_mode():
    model = models.mlp((3, 6, 5, 4), dropout=0.5, seed=1, dtype=F64).train()
    _, x, y = _setup()
    for name in NODE_CRITERIA:
        a, b = node_scores(name, model, x, y), node_scores(name, model, x, y)
        assert [s.shape for s in a] == [torch.Size([6]), torch.Size([5])]
        assert all(torch.equal(s, t) for s, t in zip(a, b)), name  # dropout off: deterministic


# --- validation ------------------------------------------------------------------------------


def test_errors_name_the_argument():
    model, x, y = _setup()
    with pytest.raises(KeyError, match="choose from"):
        node_scores("magnitude", model, x, y)
    for name in LABELLED:
        with pytest.raises(ValueError, match="pass labels y"):
            node_scores(name, model, x)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\]"):
        node_scores("taylor", model, x[:, :2], y)
    with pytest.raises(TypeError, match="x is torch.float32"):
        node_scores("taylor", model, x.float(), y)
    with pytest.raises(TypeError, match="y must hold integer"):
        node_scores("taylor", model, x, y.double())
    with pytest.raises(ValueError, match=r"y must have shape \[40\]"):
        node_scores("taylor", model, x, y[:5])
    with pytest.raises(ValueError, match=r"y must be class labels in \[0, 4\)"):
        node_scores("taylor", model, x, y + 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        node_scores("activation_std", model, x * float("nan"))
    with pytest.raises(ValueError, match="no hidden layer"):
        node_scores("taylor", nn.Sequential(nn.Linear(3, 4, dtype=F64)), x, y)


# --- select ------------------------------------------------------------------------------------


def test_select_layer_counts_and_fractions():
    scores = [torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0]), torch.tensor([0.5, 0.1, 0.9, 0.2])]
    assert select(scores, count=2) == {0: [1, 3], 1: [1, 3]}
    assert select(scores, fraction=0.5) == {0: [1, 3], 1: [1, 3]}  # round(2.5) = 2 (half to even)
    assert select(scores, fraction=0.6) == {0: [1, 2, 3], 1: [1, 3]}  # 3 of 5, round(2.4) = 2
    assert select(scores, fraction=0.0) == {}
    assert select(scores, count=3, min_keep=1) == {0: [1, 2, 3], 1: [0, 1, 3]}
    with pytest.raises(ValueError, match="fewer than min_keep=2"):
        select(scores, count=3, min_keep=2)
    with pytest.raises(ValueError, match="fewer than min_keep=1"):
        select(scores, fraction=1.0)


def test_select_global_and_min_keep():
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 6.0, 0.05, 7.0])]
    assert select(scores, count=3, scope="global") == {0: [0, 1], 1: [2]}
    # layer 0 can lose at most 2 with min_keep=1; the next lowest come from layer 1
    assert select(scores, count=4, scope="global") == {0: [0, 1], 1: [0, 2]}
    assert select(scores, fraction=4 / 7, scope="global") == {0: [0, 1], 1: [0, 2]}
    assert select(scores, count=3, scope="global", min_keep=2) == {0: [0], 1: [0, 2]}
    with pytest.raises(ValueError, match="at most 5 can go"):
        select(scores, count=6, scope="global")


def test_select_ties_are_deterministic():
    scores = [torch.zeros(4), torch.zeros(3)]
    assert select(scores, count=2) == {0: [0, 1], 1: [0, 1]}
    assert select(scores, count=4, scope="global") == {0: [0, 1, 2], 1: [0]}


def test_select_errors():
    s = [torch.rand(4)]
    for kwargs, match in [
        ({}, "exactly one"),
        ({"fraction": 0.5, "count": 1}, "exactly one"),
        ({"fraction": 1.5}, r"fraction must be a number in \[0, 1\]"),
        ({"count": -1}, "non-negative int"),
        ({"count": 1, "scope": "net"}, "choose from"),
        ({"count": 1, "min_keep": 0}, "min_keep"),
    ]:
        with pytest.raises(ValueError, match=match):
            select(s, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        select([torch.tensor([1.0, float("nan")])], count=1)
    with pytest.raises(TypeError, match="list of 1-D tensors"):
        select(torch.rand(4), count=1)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    fraction=st.floats(0, 1),
    min_keep=st.integers(1, 3),
    scope=st.sampled_from(["layer", "global"]),
)
def test_select_properties(sizes, seed, fraction, min_keep, scope):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.randint(0, 5, (H,), generator=g).double() for H in sizes]  # many ties
    try:
        plan = select(scores, fraction=fraction, scope=scope, min_keep=min_keep)
    except ValueError:
        # only when the request cannot leave min_keep nodes everywhere
        if scope == "layer":
            assert any(round(fraction * H) > H - min_keep for H in sizes)
        else:
            assert round(fraction * sum(sizes)) > sum(max(0, H - min_keep) for H in sizes)
        return
    removed = {ell: set(v) for ell, v in plan.items()}
    for ell, H in enumerate(sizes):
        r = removed.get(ell, set())
        assert len(r) <= H - min_keep or not r
        assert all(0 <= j < H for j in r)
        if scope == "layer":
            assert len(r) == round(fraction * H)
        kept = [scores[ell][j] for j in range(H) if j not in r]
        if r and kept:
            assert max(scores[ell][j] for j in r) <= min(kept)
    if scope == "global":
        assert sum(len(r) for r in removed.values()) == round(fraction * sum(sizes))
        # any kept node scoring below a removed one sits in a layer at its min_keep floor
        low = max((scores[ell][j] for ell, r in removed.items() for j in r), default=None)
        for ell, H in enumerate(sizes):
            for j in range(H):
                if j not in removed.get(ell, set()) and low is not None and scores[ell][j] < low:
                    assert len(removed.get(ell, set())) == max(0, H - min_keep)
    assert select(scores, fraction=fraction, scope=scope, min_keep=min_keep) == plan


def test_select_then_remove():
    model, x, y = _setup("relu", widths=(3, 10, 8, 4))
    plan = select(node_scores("activation_std", model, x, y), fraction=0.5)
    pruned = remove_nodes(model, plan, x=x)
    assert models.hidden_sizes(pruned) == [5, 4]
    assert criteria.NODE_CRITERIA is NODE_CRITERIA


# --- convnets: a unit is a channel (statistics over samples and positions) ------------------

ACT_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU)
POOLS = {
    "max": lambda: nn.MaxPool2d(2),
    "avg": lambda: nn.AvgPool2d(2),
    "max3": lambda: nn.MaxPool2d(3, 2, padding=1),  # overlapping windows
}


def _convnet(activation="relu", pool="max", bn=True, seed=0, reader_bn=False):
    """A tiny LeNet-like float64 net in eval mode on [N, 2, 8, 8]: conv (padding 1), [BN], act,
    pool, conv (stride 2, padding 2), [BN], act, Flatten, Linear, act, Linear; seeded weights
    and non-trivial BatchNorm statistics."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}[activation]
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), *([nn.BatchNorm2d(3)] if bn else []), act(),
        POOLS[pool](),
        nn.Conv2d(3, 4, 3, stride=2, padding=2), *([nn.BatchNorm2d(4)] if reader_bn else []),
        act(), nn.Flatten(), nn.Linear(36, 5), act(), nn.Linear(5, 3),
    ).to(F64)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.weight.mul_(m.weight[0].numel() ** -0.5)
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=F64))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=F64))
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
                m.bias.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=F64))
    return model.eval()


def _conv_data(model, n=6, seed=1, shape=(2, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=F64)
    C = [m for m in _modules(model) if isinstance(m, nn.Linear)][-1].out_features
    return x, torch.randint(0, C, (n,), generator=g)


def _modules(model):
    out = []
    for m in model:
        out.extend(_modules(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _run(model, x, gates=None, shifts=None, edit=None):
    """The model's own modules in order (no op view): after hidden activation l, multiply
    ``gates[l]`` per channel, add ``shifts[l]``, apply ``edit[l]``; returns (logits, units)."""
    a, units = x, []
    for m in _modules(model):
        a = m(a)
        if isinstance(m, ACT_MODULES):
            ell = len(units)
            if gates is not None:
                a = a * gates[ell].view(-1, *[1] * (a.dim() - 2))
            if shifts is not None:
                a = a + shifts[ell]
            if edit is not None and ell in edit:
                a = edit[ell](a)
            units.append(a)
    return a, units


def _channel_rows(a):
    """[N, C, *spatial] -> [C, N P]: every sample and position of a channel in one row."""
    return a.transpose(0, 1).reshape(a.shape[1], -1)


@pytest.mark.parametrize("pool", ["max", "avg", "max3"])
def test_convnet_activation_statistics(pool):
    model = _convnet("tanh", pool)
    x, y = _conv_data(model, n=7)
    with torch.no_grad():
        units = _run(model, x)[1]
    for got, a in zip(node_scores("activation_std", model, x), units):
        torch.testing.assert_close(got, torch.std(_channel_rows(a), 1, unbiased=False))
    for got, a in zip(node_scores("activation_mean_abs", model, x, y), units):
        torch.testing.assert_close(got, _channel_rows(a).abs().mean(1))


def test_convnet_apoz_dead_channel():
    model = _convnet("relu", bn=False)
    x, _ = _conv_data(model, n=5)
    with torch.no_grad():
        model[0].bias[1] = -100.0  # channel 1 never fires: APoZ 1
    scores = node_scores("apoz", model, x)
    assert scores[0][1] == 0
    with torch.no_grad():
        units = _run(model, x)[1]
    for got, a in zip(scores, units):
        rows = _channel_rows(a)
        expected = torch.tensor([1 - (r == 0).sum().item() / r.numel() for r in rows], dtype=F64)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def test_convnet_weight_norms_and_std_out_norm():
    model = _convnet("relu", bn=True, reader_bn=True)
    x, _ = _conv_data(model)
    conv1, conv2, lin1, lin2 = (m for m in model if isinstance(m, nn.Conv2d | nn.Linear))
    w_in = node_scores("weight_in_norm", model, x)
    w_out = node_scores("weight_out_norm", model, x)
    std_out = node_scores("std_out_norm", model, x)
    std = node_scores("activation_std", model, x)
    for j in range(3):  # filters (raw, BatchNorm not folded); the reader conv's W[:, j]
        torch.testing.assert_close(w_in[0][j], conv1.weight[j].norm())
        torch.testing.assert_close(w_out[0][j], conv2.weight[:, j].norm())
    for j in range(4):  # the Linear after Flatten reads channel j through 9 columns
        torch.testing.assert_close(w_out[1][j], lin1.weight[:, 9 * j : 9 * j + 9].norm())
    torch.testing.assert_close(w_out[2], lin2.weight.norm(dim=0))
    bn2 = model[5]  # the reader of layer 0 has a BatchNorm: std_out_norm folds it in
    s = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
    folded = conv2.weight * s.view(-1, 1, 1, 1)
    torch.testing.assert_close(std_out[0], std[0] * folded.flatten(2).norm(dim=(0, 2)))
    torch.testing.assert_close(std_out[1], std[1] * w_out[1])


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("pool", ["max", "avg", "max3"])
def test_convnet_taylor_and_mean_replacement(activation, pool):
    model = _convnet(activation, pool)
    x, y = _conv_data(model, n=5)
    gates = [torch.ones(H, dtype=F64, requires_grad=True) for H in (3, 4, 5)]
    grads = torch.autograd.grad(F.cross_entropy(_run(model, x, gates)[0], y), gates)
    for got, g in zip(node_scores("taylor", model, x, y), grads):
        torch.testing.assert_close(got, g.square(), rtol=1e-10, atol=1e-18)
    # per-sample gradients: with the summed loss, d/d shift[n] = dl_n / da_n
    with torch.no_grad():
        units = _run(model, x)[1]
    shifts = [torch.zeros_like(a, requires_grad=True) for a in units]
    loss = F.cross_entropy(_run(model, x, shifts=shifts)[0], y, reduction="sum")
    grads = torch.autograd.grad(loss, shifts)
    for got, g, a in zip(node_scores("mean_replacement", model, x, y), grads, units):
        abar = _channel_rows(a).mean(1).view(-1, *[1] * (a.dim() - 2))
        first = ((abar - a) * g).flatten(2).sum(2) if a.dim() > 2 else (abar - a) * g
        torch.testing.assert_close(got, first.abs().mean(0), rtol=1e-10, atol=1e-18)


def _gate_hessians(model, x, y, sizes):
    """d^2 L / dm_j^2 and dL/dm_j per hidden layer, by autograd through gates on the model's
    own modules."""
    gates = tuple(torch.ones(H, dtype=F64) for H in sizes)

    def loss(*g):
        return F.cross_entropy(_run(model, x, list(g))[0], y)

    H = torch.autograd.functional.hessian(loss, gates)
    first = torch.autograd.functional.jacobian(loss, gates)
    return [H[ell][ell].diagonal() for ell in range(len(sizes))], list(first)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid"])
@pytest.mark.parametrize("pool", ["max", "avg", "max3"])
@pytest.mark.parametrize("bn", [False, True])
def test_convnet_obd_mask_matches_autograd(activation, pool, bn):
    model = _convnet(activation, pool, bn=bn, reader_bn=bn)
    x, y = _conv_data(model, n=5)
    second, first = _gate_hessians(model, x, y, (3, 4, 5))
    h = node_scores("obd_mask", model, x, y)
    delta = node_scores("obd_mask_delta", model, x, y)
    for ell in range(3):
        torch.testing.assert_close(h[ell], second[ell], rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(
            delta[ell], -first[ell] + 0.5 * second[ell], rtol=1e-9, atol=1e-15
        )
    if activation == "relu":
        assert all((s >= -1e-15).all() for s in h)  # Gauss-Newton: non-negative


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("pool", ["max", "avg", "max3"])
def test_convnet_mean_replacement_delta_is_second_order_expansion(activation, pool):
    """d/dt + d2/dt2 / 2 at t=0 of L with a_j -> a_j + t (abar_j - a_j), abar_j the channel's
    mean over samples and positions (a constant map), one channel at a time."""
    model = _convnet(activation, pool, reader_bn=True)
    x, y = _conv_data(model, n=6)
    scores = node_scores("mean_replacement_delta", model, x, y)
    with torch.no_grad():
        units = _run(model, x)[1]
    for ell, a in enumerate(units):
        abar = _channel_rows(a).mean(1)
        for j in range(a.shape[1]):
            t = torch.zeros((), dtype=F64, requires_grad=True)

            def move(b, j=j, t=t, abar=abar):
                d = torch.zeros_like(b)
                d[:, j] = abar[j] - b[:, j].detach()
                return b + t * d

            loss = F.cross_entropy(_run(model, x, edit={ell: move})[0], y)
            (g,) = torch.autograd.grad(loss, t, create_graph=True)
            (h,) = torch.autograd.grad(g, t)
            torch.testing.assert_close(
                scores[ell][j], (g + 0.5 * h).detach(), rtol=1e-9, atol=1e-15
            )


def test_convnet_constant_channel_scores_zero():
    model = _convnet("tanh", "avg", bn=False)
    x, y = _conv_data(model)
    with torch.no_grad():
        model[0].weight[2] = 0.0  # channel 2 is the constant map tanh(b_2), padding and all
    for name in ("mean_replacement", "activation_std", "std_out_norm", "lipschitz"):
        assert node_scores(name, model, x, y)[0][2] == 0, name
    assert abs(node_scores("mean_replacement_delta", model, x, y)[0][2]) < 1e-18


@pytest.mark.parametrize("pool", ["max", "max3"])
def test_convnet_lipschitz_is_the_certified_bound(pool):
    model = _convnet("relu", pool, reader_bn=True)
    x, y = _conv_data(model, n=20)
    scores = node_scores("lipschitz", model, x, y)
    for got, b in zip(scores, bounds.node_bounds(model, x)):
        torch.testing.assert_close(got, b, rtol=0, atol=0)
    for ell, s in enumerate(scores):
        for j in range(s.shape[0]):
            change = bounds.loss_change(model, x, y, ell, [j]).abs().mean()
            assert change <= s[j] * (1 + 1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.lenet5(in_shape=(1, 12, 12), seed=0, dtype=F64),
        lambda: models.lenet5(
            in_shape=(1, 12, 12), pool="avg", activation="tanh", batchnorm=True, dtype=F64
        ),
        lambda: models.vgg("vgg11", width=0.125, in_shape=(3, 8, 8), seed=1, dtype=F64),
    ],
    ids=["lenet5", "lenet5-avg-tanh-bn", "vgg11"],
)
def test_every_criterion_on_lenet5_and_vgg(make):
    model = make().eval()
    view = ops.parse(model)
    first = view.layers[0]
    x, y = _conv_data(
        model, n=4, shape=(first.in_units, *((12, 12) if first.in_units == 1 else (8, 8)))
    )
    sizes = view.hidden_sizes
    for name in NODE_CRITERIA:
        scores = node_scores(name, model, x, y)
        assert [s.shape[0] for s in scores] == sizes, name
        assert all(torch.isfinite(s).all() for s in scores), name
    second, _ = _gate_hessians(model, x, y, sizes)
    for got, h in zip(node_scores("obd_mask", model, x, y), second):
        torch.testing.assert_close(got, h, rtol=1e-8, atol=1e-15)
    with torch.no_grad():
        units = _run(model, x)[1]
    for got, a in zip(node_scores("activation_std", model, x), units):
        torch.testing.assert_close(got, torch.std(_channel_rows(a), 1, unbiased=False))


def test_convnet_errors_name_the_argument():
    model = _convnet()
    x, y = _conv_data(model)
    with pytest.raises(ValueError, match=r"taylor: x must have shape \[N, 2, H, W\]"):
        node_scores("taylor", model, x[:, :1], y)
    with pytest.raises(ValueError, match="obd_mask: x has samples of shape"):
        node_scores("obd_mask", model, x[:, :, :3, :3], y)
    with pytest.raises(TypeError, match="x is torch.float32"):
        node_scores("apoz", model, x.float())
    with pytest.raises(ValueError, match=r"y must be class labels in \[0, 3\)"):
        node_scores("mean_replacement", model, x, y + 3)
    with pytest.raises(ValueError, match="pass labels y"):
        node_scores("obd_mask_delta", model, x)
    model.train()  # BatchNorm on batch statistics cannot be folded
    for name in ("activation_std", "taylor"):
        with pytest.raises(ValueError, match=rf"{name}: .*training mode.*model.eval\(\)"):
            node_scores(name, model, x, y)


def test_criteria_on_a_pruned_convnet_with_border_offsets():
    """A convnet after mean-compensated channel removal (an Offset at the zero-padded
    reader): the criteria read it like any other; obd_mask against autograd."""
    model = _convnet("tanh", "max3", reader_bn=True)
    x, y = _conv_data(model, n=6)
    pruned = remove_nodes(model, {0: [1]}, compensate="mean", x=x)
    sizes = ops.parse(pruned).hidden_sizes
    assert sizes == [2, 4, 5]
    for name in NODE_CRITERIA:
        assert [s.shape[0] for s in node_scores(name, pruned, x, y)] == sizes, name
    second, _ = _gate_hessians(pruned, x, y, sizes)
    for got, h in zip(node_scores("obd_mask", pruned, x, y), second):
        torch.testing.assert_close(got, h, rtol=1e-9, atol=1e-15)
