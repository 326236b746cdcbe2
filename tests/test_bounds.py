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


# --- convnets: operator norms, max pooling, the chain of links -----------------------------

from prunelab import ops  # noqa: E402
from prunelab.engines import opnorms  # noqa: E402

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
_POOLS = {
    "max": lambda: nn.MaxPool2d(2),
    "max3": lambda: nn.MaxPool2d(3, 2, padding=1),  # overlapping windows: sqrt(4) = 2
    "avg": lambda: nn.AvgPool2d(2),
    "avg3": lambda: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
    "adaptive": lambda: nn.AdaptiveAvgPool2d(3),
}


def _convnet(seed=0, activation="relu", pool="max", bn=True, scale=1.0, size=8, stride=2):
    """conv(2->3, pad 1) [BN] act pool conv(3->4, 3, stride, pad 2) [BN] act Flatten Linear(5)
    act Linear(3): float64, eval mode, seeded, on [N, 2, size, size]."""
    g = torch.Generator().manual_seed(seed)
    act = _ACTS[activation]
    features = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), *([nn.BatchNorm2d(3)] if bn else []), act(),
        _POOLS[pool](), nn.Conv2d(3, 4, 3, stride=stride, padding=2),
        *([nn.BatchNorm2d(4)] if bn else []), act(), nn.Flatten(),
    ).to(F64).eval()  # fmt: skip
    D = features(torch.zeros(1, 2, size, size, dtype=F64)).shape[1]
    model = nn.Sequential(*features, nn.Linear(D, 5), act(), nn.Linear(5, 3)).to(F64)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.weight.mul_(scale * m.weight[0].numel() ** -0.5)
                m.bias.copy_(0.3 * scale * torch.randn(m.bias.shape, generator=g, dtype=F64))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=F64))
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
                m.bias.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=F64))
    x = 2 * torch.randn(16, 2, size, size, generator=g, dtype=F64)
    y = torch.randint(0, 3, (16,), generator=g)
    return model.eval(), x, y


def _jacobian(fn, in_shape):
    """Dense oracle: the matrix of a linear map by autograd's Jacobian at 0: [D_out, D_in]."""
    J = torch.autograd.functional.jacobian(fn, torch.zeros(1, *in_shape, dtype=F64))
    D_in = math.prod(in_shape)
    return J.reshape(-1, D_in)


_LINEAR_MAPS = {
    "conv s2 p1": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), (3, 7, 6)),
    "conv dilated": (lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2, bias=False), (2, 6, 6)),
    "conv 1x1": (lambda: nn.Conv2d(4, 2, 1, bias=False), (4, 3, 5)),
    "avg pool": (lambda: nn.AvgPool2d(2), (2, 6, 6)),
    "avg pool 3/2 pad": (lambda: nn.AvgPool2d(3, 2, padding=1), (1, 7, 7)),
    "avg pool ceil": (lambda: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), (1, 5, 5)),
    "adaptive avg": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5)),
    "linear": (lambda: nn.Linear(6, 4, bias=False), (6,)),
}


@pytest.mark.parametrize("name", sorted(_LINEAR_MAPS))
@pytest.mark.parametrize("lanczos", [False, True])
def test_operator_norms_match_dense_oracle(name, lanczos, monkeypatch):
    make, in_shape = _LINEAR_MAPS[name]
    torch.manual_seed(0)
    module = make().to(F64)
    if lanczos:
        monkeypatch.setattr(opnorms, "MAX_DENSE", 0)
    like = torch.zeros((), dtype=F64)
    A = _jacobian(module, in_shape)
    exact = torch.linalg.matrix_norm(A, ord=2)
    got = opnorms.spectral_norms(module, in_shape, like)
    assert exact * (1 - 1e-12) <= got <= exact * (1 + 1e-8)
    C = in_shape[0]
    sets = [[j] for j in range(C)] + ([[0, C - 1]] if C > 1 else [])
    blocks = A.view(A.shape[0], C, -1)
    for S, value in zip(sets, opnorms.spectral_norms(module, in_shape, like, sets=sets)):
        want = torch.linalg.matrix_norm(blocks[:, S].reshape(A.shape[0], -1), ord=2)
        assert want * (1 - 1e-12) <= value <= want * (1 + 1e-8), S
    if not lanczos:
        torch.testing.assert_close(opnorms.dense_matrix(module, in_shape, like), A)


def test_folded_conv_and_composite_links_match_dense_oracle():
    """The l2 constant of a run of linear ops (avg pool, conv with BatchNorm folded) is the
    norm of their composition, below the product of their norms."""
    model, x, _ = _convnet(1, "relu", "avg", bn=True)
    view = ops.parse(model)
    shapes = bounds._shapes(view, x)
    link = bounds._links(view, 0)[0]  # [avg pool, conv2 + BN]: restricted to layer 0's channels
    assert link.linear and link.restricted and len(link.ops) == 2
    pool, conv, bn = model[3], model[4], model[5]
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)

    def folded_conv(v):
        return F.conv2d(v, conv.weight, None, conv.stride, conv.padding) * s.view(-1, 1, 1)

    A = _jacobian(lambda v: folded_conv(pool(v)), shapes[link.ops[0]])
    got = bounds._link_l2(view, link, [[0], [1], [2]], False, shapes, x)
    blocks = A.view(A.shape[0], 3, -1)
    want = torch.stack([torch.linalg.matrix_norm(blocks[:, j], ord=2) for j in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    whole = torch.linalg.matrix_norm(A, ord=2)
    conv_alone = torch.linalg.matrix_norm(_jacobian(folded_conv, shapes[link.ops[1]]), ord=2)
    pool_alone = torch.linalg.matrix_norm(_jacobian(pool, shapes[link.ops[0]]), ord=2)
    assert whole <= conv_alone * pool_alone * (1 + 1e-12)


@pytest.mark.parametrize(
    ("pool", "size", "m"),
    [
        (lambda: nn.MaxPool2d(2), (6, 6), 1),
        (lambda: nn.MaxPool2d(2, ceil_mode=True), (7, 5), 1),
        (lambda: nn.MaxPool2d(3, 2), (9, 9), 4),
        (lambda: nn.MaxPool2d(3, 2, padding=1), (8, 8), 4),
        (lambda: nn.MaxPool2d(3, 1, padding=1), (6, 5), 9),
        (lambda: nn.MaxPool2d((3, 2), (2, 1)), (7, 6), 4),
        (lambda: nn.MaxPool2d(3, 2, dilation=2), (11, 11), 9),
        (lambda: nn.AdaptiveMaxPool2d((4, 3)), (7, 5), 4),
    ],
)
def test_max_pool_lipschitz_is_sqrt_multiplicity(pool, size, m):
    """``m`` = the most windows holding one input (brute force over one-hot images), and
    ``||pool(u + t e_i) - pool(u)||_2 = sqrt(m) |t|`` when input i is the maximum of all its
    windows: overlapping max pools are not 1-Lipschitz in l2."""
    pool = pool()
    like = torch.zeros((), dtype=F64)
    H, W = size
    E = torch.eye(H * W, dtype=F64).view(-1, 1, H, W)
    counts = pool(E).flatten(1).sum(1)  # windows holding each input
    assert counts.max() == m == opnorms.pool_multiplicity(pool, size, like)
    i = int(counts.argmax())
    u = torch.rand(1, 1, H, W, dtype=F64, generator=torch.Generator().manual_seed(0))
    u.view(-1)[i] = 2.0  # the maximum of every window holding it
    v = u.clone()
    v.view(-1)[i] += 0.5
    ratio = torch.linalg.vector_norm(pool(v) - pool(u)) / 0.5
    torch.testing.assert_close(ratio, torch.tensor(math.sqrt(m), dtype=F64))
    for seed in range(5):  # and it is never exceeded
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(2, 4, 1, H, W, generator=g, dtype=F64)
        gap = torch.linalg.vector_norm(pool(a) - pool(b), dim=(1, 2, 3))
        assert (gap <= math.sqrt(m) * torch.linalg.vector_norm(a - b, dim=(1, 2, 3)) + 1e-12).all()


def test_convnet_constants_match_explicit_product():
    """K_j for layer 0 of conv relu maxpool(3, 2, pad 1) conv relu Flatten Linear relu Linear:
    sqrt(2) * sqrt(4) * ||conv2 on channel j||_2 * ||W_3||_2 * ||W_4||_2, each norm from a
    dense matrix built by autograd at the sizes x gives."""
    model, x, _ = _convnet(2, "relu", "max3", bn=False)
    _, conv2, lin1, lin2 = (m for m in model if isinstance(m, nn.Conv2d | nn.Linear))

    def conv_j(j):
        return lambda v: F.conv2d(v, conv2.weight[:, j : j + 1], None, conv2.stride, conv2.padding)

    norms = [torch.linalg.matrix_norm(_jacobian(conv_j(j), (1, 4, 4)), ord=2) for j in range(3)]
    rest = torch.linalg.matrix_norm(lin1.weight, ord=2) * torch.linalg.matrix_norm(lin2.weight, 2)
    expected = math.sqrt(2) * 2 * torch.stack(norms) * rest
    torch.testing.assert_close(bounds.node_lipschitz(model, 0, x=x), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        bounds.loss_lipschitz(model, 0, [1], x=x[:1]), expected[1], rtol=1e-12, atol=0
    )
    # node_bounds: K_j sqrt(P) sigma_j, sigma_j over samples and the 8 x 8 positions
    a = ops.forward(ops.parse(model), x, taps=True, training=False)[1][0]
    sigma = a.transpose(0, 1).reshape(3, -1).std(1, correction=0)
    torch.testing.assert_close(bounds.node_bounds(model, x)[0], expected * 8 * sigma)
    # range form, layer 2 (Linear reading Linear): the exact logit range R(W[:, j])
    W = lin2.weight
    R = torch.stack([(W[:, j, None] - W[None, :, j]).abs().amax() for j in range(5)])
    torch.testing.assert_close(bounds.node_lipschitz(model, 2, norm="range", x=x), R)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    activation=st.sampled_from(sorted(_ACTS)),
    pool=st.sampled_from(sorted(_POOLS)),
    bn=st.booleans(),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
    stride=st.integers(1, 2),
    data=st.data(),
)
def test_bounds_hold_on_random_convnets(seed, activation, pool, bn, scale, stride, data):
    model, x, y = _convnet(seed, activation, pool, bn, scale, stride=stride)
    sizes = ops.parse(model).hidden_sizes
    ell = data.draw(st.integers(0, len(sizes) - 1))
    S = data.draw(st.lists(st.integers(0, sizes[ell] - 1), unique=True, min_size=1))
    for replace in ("mean", "zero"):
        change = bounds.loss_change(model, x, y, ell, S, replace=replace)  # [N]
        for norm, centred in (("l2", False), ("l2", True), ("range", False)):
            kw = dict(replace=replace, norm=norm, centred=centred)
            per_sample = bounds.sample_bound(model, x, ell, S, **kw)
            expected = bounds.expected_bound(model, x, ell, S, **kw)
            assert (change.abs() <= per_sample * (1 + 1e-9) + TOL).all(), kw
            assert per_sample.mean() <= expected * (1 + 1e-9) + TOL, kw
    nodes = bounds.node_bounds(model, x)[ell]
    for j in range(sizes[ell]):
        assert bounds.loss_change(model, x, y, ell, [j]).abs().mean() <= nodes[j] * (1 + 1e-9)


def test_bounds_hold_on_lenet5_and_vgg_with_lanczos(monkeypatch):
    for model, shape in (
        (
            models.lenet5(in_shape=(1, 12, 12), batchnorm=True, seed=3, dtype=F64).eval(),
            (1, 12, 12),
        ),
        (models.vgg("vgg11", width=0.125, in_shape=(3, 8, 8), seed=3, dtype=F64).eval(), (3, 8, 8)),
    ):
        g = torch.Generator().manual_seed(4)
        x = torch.randn(12, *shape, generator=g, dtype=F64)
        y = torch.randint(0, 10, (12,), generator=g)
        dense = bounds.node_bounds(model, x)
        monkeypatch.setattr(opnorms, "MAX_DENSE", 0)  # every link by Lanczos
        lanczos = bounds.node_bounds(model, x)
        monkeypatch.undo()
        for ell, (b, c) in enumerate(zip(dense, lanczos)):
            assert ((c >= b * (1 - 1e-12)) & (c <= b * (1 + 1e-8))).all(), ell
            for j in range(0, len(b), 3):
                change = bounds.loss_change(model, x, y, ell, [j]).abs().mean()
                assert change <= b[j] * (1 + 1e-9)


@pytest.mark.parametrize("compensate", ["mean", "none"])
def test_convnet_loss_change_equals_surgery(compensate):
    model, x, y = _convnet(5, "tanh", "max3", bn=True)
    replace = "mean" if compensate == "mean" else "zero"
    for ell, S in ((0, [1]), (1, [0, 2]), (2, [3])):
        change = bounds.loss_change(model, x, y, ell, S, replace=replace)
        pruned = remove_nodes(model, {ell: S}, compensate=compensate, x=x)
        expected = F.cross_entropy(pruned(x), y, reduction="none") - F.cross_entropy(
            model(x), y, reduction="none"
        )
        torch.testing.assert_close(change, expected, rtol=0, atol=1e-12)


def test_convnet_constant_channel_has_zero_bound_and_zero_change():
    model, x, y = _convnet(6, "sigmoid", "avg", bn=False)
    with torch.no_grad():
        model[0].weight[1] = 0.0  # channel 1 is the constant map sigmoid(b_1)
    assert torch.equal(bounds.loss_change(model, x, y, 0, [1]), torch.zeros(16, dtype=F64))
    assert bounds.expected_bound(model, x, 0, [1]) == 0
    assert (bounds.sample_bound(model, x, 0, [1], norm="range") == 0).all()
    assert bounds.node_bounds(model, x)[0][1] == 0


@pytest.mark.parametrize("out", [lambda: nn.LeakyReLU(3.0), nn.GELU, nn.Sigmoid])
def test_activation_after_the_output_layer_is_a_link(out):
    """An MLP whose logits pass an activation: its Lipschitz constant multiplies the bound
    (the range form then uses 2 ||Delta f||_inf), and the certificate holds."""
    g = torch.Generator().manual_seed(0)
    for seed in range(10):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), out()).to(F64)
        x = 2 * torch.randn(30, 3, generator=g, dtype=F64)
        y = torch.randint(0, 3, (30,), generator=g)
        change = bounds.loss_change(model, x, y, 0, [0, 2])
        for norm, centred in (("l2", False), ("l2", True), ("range", False)):
            b = bounds.sample_bound(model, x, 0, [0, 2], norm=norm, centred=centred)
            assert (change.abs() <= b * (1 + 1e-9)).all(), (norm, centred)
    W, K = (
        model[2].weight,
        bounds.activation_lipschitz(models.parse(model).layers[-1].activation, 3.0),
    )
    expected = math.sqrt(2) * torch.linalg.matrix_norm(W[:, [1]], ord=2) * K
    torch.testing.assert_close(bounds.loss_lipschitz(model, 0, [1]), expected)


def test_convnet_errors():
    model, x, y = _convnet()
    with pytest.raises(ValueError, match=r"loss_lipschitz: .*Conv2d.*pass x=Tensor\[N, 2, H, W\]"):
        bounds.loss_lipschitz(model, 0, [0])
    with pytest.raises(ValueError, match=r"node_lipschitz: .*depend on the input size"):
        bounds.node_lipschitz(model, 1)
    with pytest.raises(ValueError, match=r"node_bounds: x must have shape \[N, 2, H, W\]"):
        bounds.node_bounds(model, x[:, :1])
    with pytest.raises(ValueError, match=r"nodes must be integers in 0..3 \(hidden layer 1"):
        bounds.expected_bound(model, x, 1, [4])
    with pytest.raises(ValueError, match=r"layer must be a hidden-layer index in 0..2"):
        bounds.expected_bound(model, x, 3, [0])
    with pytest.raises(ValueError, match=r"source_bound: module 0 \(Conv2d\)"):
        bounds.source_bound(model, x, 0, [0])
    model.train()
    with pytest.raises(ValueError, match=r"expected_bound: .*training mode"):
        bounds.expected_bound(model, x, 0, [0])
