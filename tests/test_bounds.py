"""Certified loss-change bounds hold on random nets, vanish for constant nodes, and are tight
in the limit the module docstring describes (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.surgery import remove_nodes
from torch import nn

from prunelab import bounds, models

F64 = torch.float64
TOL = 1e-12


def _random_setup(seed: int, depth: int, activation: str, scale: float, slope: float = 0.01):
    g = torch.Generator().manual_seed(seed)
    widths = [3, *torch.randint(2, 7, (depth,), generator=g).tolist(), 4]
    model = models.mlp(widths, activation=activation, seed=seed, dtype=F64, slope=slope)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    x = 2 * torch.randn(30, 3, generator=g, dtype=F64)
    y = torch.randint(0, 4, (30,), generator=g)
    return model, x, y, widths[1:-1]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    depth=st.integers(1, 3),
    activation=st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh"]),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
    slope=st.sampled_from([0.01, 2.0]),
    data=st.data(),
)
def test_bounds_hold_on_random_nets(seed, depth, activation, scale, slope, data):
    model, x, y, sizes = _random_setup(seed, depth, activation, scale, slope)
    ell = data.draw(st.integers(0, len(sizes) - 1))
    S = data.draw(st.lists(st.integers(0, sizes[ell] - 1), unique=True, min_size=1))
    for replace in ("mean", "zero"):
        change = bounds.loss_change(model, x, y, ell, S, replace=replace)  # [N]
        for norm, centred in (("l2", False), ("l2", True), ("range", False)):
            kw = dict(replace=replace, norm=norm, centred=centred)
            per_sample = bounds.sample_bound(model, x, ell, S, **kw)
            expected = bounds.expected_bound(model, x, ell, S, **kw)
            assert (change.abs() <= per_sample * (1 + 1e-9) + TOL).all(), kw
            assert change.abs().mean() <= per_sample.mean() * (1 + 1e-9) + TOL, kw
            assert per_sample.mean() <= expected * (1 + 1e-9) + TOL, kw  # Jensen
        # the centred (translation-invariant) form is never looser
        assert bounds.expected_bound(
            model, x, ell, S, replace=replace, centred=True
        ) <= bounds.expected_bound(model, x, ell, S, replace=replace) * (1 + 1e-12)
    # the source's product of all norms is looser whenever the upstream layers do not contract
    linears = [m for m in model if isinstance(m, nn.Linear)]
    upstream = math.prod(
        torch.linalg.matrix_norm(lin.weight, 2).item() for lin in linears[: ell + 1]
    )
    if upstream >= 1:
        assert bounds.source_bound(model, x, ell, S) >= bounds.expected_bound(model, x, ell, S) * (
            1 - 1e-12
        )


@pytest.mark.parametrize("compensate", ["mean", "none"])
def test_loss_change_equals_surgery(compensate):
    model, x, y, _ = _random_setup(3, 2, "tanh", 1.0)
    replace = "mean" if compensate == "mean" else "zero"
    change = bounds.loss_change(model, x, y, 1, [0, 2], replace=replace)
    pruned = remove_nodes(model, {1: [0, 2]}, compensate=compensate, x=x)
    expected = F.cross_entropy(pruned(x), y, reduction="none") - F.cross_entropy(
        model(x), y, reduction="none"
    )
    torch.testing.assert_close(change, expected, rtol=0, atol=1e-12)


def test_constant_node_has_zero_bound_and_zero_change():
    model, x, y, _ = _random_setup(5, 2, "sigmoid", 1.0)
    with torch.no_grad():
        model[2].weight[1] = 0.0
        model[2].bias[1] = 0.0  # node 1 of hidden layer 1 is sigmoid(0) = 0.5 exactly
    assert torch.equal(bounds.loss_change(model, x, y, 1, [1]), torch.zeros(30, dtype=F64))
    assert bounds.expected_bound(model, x, 1, [1]) == 0
    assert (bounds.sample_bound(model, x, 1, [1], norm="range") == 0).all()
    assert bounds.node_bounds(model, x)[1][1] == 0


def _one_node_net(u: float, margin: float) -> nn.Sequential:
    """x -> a = relu(x) -> logits (margin + u a, -u a): class 0 is wrong for y = 1."""
    model = nn.Sequential(nn.Linear(1, 1, dtype=F64), nn.ReLU(), nn.Linear(1, 2, dtype=F64))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.0)
        model[2].weight.copy_(torch.tensor([[u], [-u]], dtype=F64))
        model[2].bias.copy_(torch.tensor([margin, 0.0], dtype=F64))
    return model


def test_bound_is_approached_in_the_limit():
    """Ratio E|dl| / bound -> 1 as the wrong-class margin M grows; 1 - ratio <= exp(-M).

    Each inequality is tight here: the logit change is a multiple of W[:, j] (one layer),
    |a - abar| is the same on every sample (a in {0, 2}, so Jensen is an equality), and
    Delta f = t (1, -1) is aligned with p - e_y -> e_0 - e_1, whose norm sqrt(2) is reached
    only as p becomes one-hot: softmax never is, so the ratio stays below 1 at finite M.
    """
    x = torch.tensor([[0.0], [2.0]] * 5, dtype=F64)
    y = torch.ones(10, dtype=torch.long)
    u, previous = 0.3, 0.0
    for M in (0.0, 2.0, 5.0, 10.0, 20.0, 30.0):
        model = _one_node_net(u, M)
        change = bounds.loss_change(model, x, y, 0, [0])
        bound = bounds.expected_bound(model, x, 0, [0])
        torch.testing.assert_close(bound, torch.tensor(2 * u, dtype=F64))  # sqrt2 * sqrt2 u * 1
        ratio = (change.abs().mean() / bound).item()
        # softplus(t) = t + log1p(exp(-t)), written to avoid cancellation
        closed = (4 * u + math.log1p(math.exp(-M - 4 * u)) - math.log1p(math.exp(-M))) / (4 * u)
        assert ratio == pytest.approx(closed, rel=1e-12)
        assert previous <= ratio <= 1 and 1 - ratio <= math.exp(-M) + 1e-15
        per_sample = change.abs() / bounds.sample_bound(model, x, 0, [0])
        assert (per_sample <= 1).all() and (1 - per_sample <= math.exp(-M) + 1e-15).all()
        previous = ratio
    assert 1 - ratio < 1e-12
    # the source's literal "K X" (no sqrt 2) is exceeded by a factor -> sqrt 2
    literal = bounds.source_bound(model, x, 0, [0], literal=True)
    assert change.abs().mean() / literal == pytest.approx(math.sqrt(2), rel=1e-10)


def test_source_bound_is_not_a_certificate_when_upstream_contracts():
    torch.manual_seed(0)
    model = models.mlp((2, 3, 3, 2), seed=1, dtype=F64)
    with torch.no_grad():
        model[0].weight.mul_(1e-3)
        model[0].bias.zero_()
        model[2].bias.fill_(1.0)  # hidden layer 1 stays active
    g = torch.Generator().manual_seed(2)
    x = torch.rand(50, 2, generator=g, dtype=F64)
    y = torch.randint(0, 2, (50,), generator=g)
    observed = bounds.loss_change(model, x, y, 1, [0]).abs().mean()
    assert observed <= bounds.expected_bound(model, x, 1, [0])
    assert observed > 10 * bounds.source_bound(model, x, 1, [0])


def test_constants_match_explicit_norms():
    model, x, _, _ = _random_setup(7, 3, "sigmoid", 2.0)
    W = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    spec = [torch.linalg.svdvals(w)[0] for w in W]
    S = [0, 1]
    expected = math.sqrt(2) * torch.linalg.svdvals(W[1][:, S])[0] * 0.25 * spec[2] * 0.25 * spec[3]
    torch.testing.assert_close(bounds.loss_lipschitz(model, 0, S), expected, rtol=1e-12, atol=0)
    P = torch.eye(4, dtype=F64) - 1 / 4
    centred = expected / spec[3] * torch.linalg.svdvals(P @ W[3])[0]
    torch.testing.assert_close(bounds.loss_lipschitz(model, 0, S, centred=True), centred)
    # range form, output layer next: max_c W_cS - min_c W_cS summed in l1 over pairs
    last = W[3][:, S]
    r = max((last[c] - last[d]).abs().sum() for c in range(4) for d in range(4))
    torch.testing.assert_close(bounds.loss_lipschitz(model, 2, S, norm="range"), r)
    nodes = bounds.node_lipschitz(model, 1)
    for j in range(W[1].shape[0]):
        torch.testing.assert_close(nodes[j], bounds.loss_lipschitz(model, 1, [j]))
    sigma = models.parse(model).activations(x)[1].std(0, correction=0)
    torch.testing.assert_close(bounds.node_bounds(model, x)[1], nodes * sigma)
    # zeroing uses the root mean square instead of sigma
    rms = models.parse(model).activations(x)[1].square().mean(0).sqrt()
    torch.testing.assert_close(bounds.node_bounds(model, x, replace="zero")[1], nodes * rms)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "identity"])
def test_activation_lipschitz_constants(activation):
    z = torch.linspace(-8, 8, 200_001, dtype=F64)
    d1, _ = models.derivatives(activation, z)
    K = bounds.activation_lipschitz(activation)
    assert d1.abs().max() <= K <= d1.abs().max() + 1e-5
    assert bounds.activation_lipschitz("leaky_relu", 3.0) == 3.0


def test_reference_data_for_the_mean():
    model, x, y, _ = _random_setup(11, 1, "relu", 1.0)
    ref = x[:10]
    change = bounds.loss_change(model, x, y, 0, [0, 1], reference=ref)
    pruned = remove_nodes(model, {0: [0, 1]}, x=ref)
    expected = F.cross_entropy(pruned(x), y, reduction="none") - F.cross_entropy(
        model(x), y, reduction="none"
    )
    torch.testing.assert_close(change, expected, rtol=0, atol=1e-12)
    assert (change.abs() <= bounds.sample_bound(model, x, 0, [0, 1], reference=ref) + TOL).all()


def test_errors():
    model, x, y, _ = _random_setup(0, 2, "relu", 1.0)
    H0 = models.hidden_sizes(model)[0]
    cases = [
        (lambda: bounds.expected_bound(model, x, 2, [0]), ValueError, "hidden-layer index in 0..1"),
        (lambda: bounds.expected_bound(model, x, 0, []), ValueError, "nodes is empty"),
        (lambda: bounds.expected_bound(model, x, 0, [H0]), ValueError, "integers in 0.."),
        (lambda: bounds.expected_bound(model, x, 0, [0, 0]), ValueError, "duplicates"),
        (lambda: bounds.expected_bound(model, x, 0, [0], replace="median"), ValueError, "choose"),
        (lambda: bounds.expected_bound(model, x, 0, [0], norm="l1"), ValueError, "choose"),
        (
            lambda: bounds.expected_bound(model, x, 0, [0], norm="range", centred=True),
            ValueError,
            "centred",
        ),
        (lambda: bounds.expected_bound(model, x.float(), 0, [0]), TypeError, "x is torch.float32"),
        (lambda: bounds.sample_bound(model, x[:, :2], 0, [0]), ValueError, r"shape \[N, 3\]"),
        (lambda: bounds.loss_change(model, x, y.double(), 0, [0]), TypeError, "integer"),
        (lambda: bounds.loss_change(model, x, y + 4, 0, [0]), ValueError, r"\[0, 4\)"),
        (lambda: bounds.activation_lipschitz("swish"), ValueError, "choose from"),
        (
            lambda: bounds.node_bounds(nn.Sequential(nn.Linear(3, 2, dtype=F64)), x),
            ValueError,
            "no hidden layer",
        ),
    ]
    for fn, error, match in cases:
        with pytest.raises(error, match=match):
            fn()
