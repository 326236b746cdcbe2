"""Curvature estimators against dense autograd oracles (torch.func.hessian, jacrev, loops)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.curvature import (
    ESTIMATORS,
    becker_lecun_diag,
    diag_ggn,
    diag_hessian,
    empirical_fisher_diag,
    flatten,
    hutchinson_diag,
)
from torch import nn
from torch.func import functional_call, hessian, jacrev

from prunelab import curvature, models, ops

# torch.func's forward-mode AD loads TorchScript decompositions that warn on import
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

DTYPE = torch.float64
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "identity"]


def _data(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    net = models.parse(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, net.in_features, generator=g, dtype=DTYPE)
    y = torch.randint(0, net.out_features, (n,), generator=g)
    return x, y


def _flat_fn(model: nn.Module, fn):
    """Wrap fn(params_dict) as a function of one flat parameter vector [P]."""
    named = dict(model.named_parameters())
    names, shapes = list(named), [p.shape for p in named.values()]
    sizes = [p.numel() for p in named.values()]
    theta = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def f(vec: torch.Tensor):
        params = {n: t.reshape(s) for n, t, s in zip(names, vec.split(sizes), shapes, strict=True)}
        return fn(params)

    return f, theta


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The full [P, P] Hessian of the mean cross-entropy (model in eval mode, no dropout)."""
    f, theta = _flat_fn(model, lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
    return hessian(f)(theta)


def dense_ggn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """G = (1/N) sum_n J_n^T (diag p_n - p_n p_n^T) J_n, with J from jacrev: [P, P]."""
    f, theta = _flat_fn(model, lambda p: functional_call(model, p, (x,)))
    J = jacrev(f)(theta)  # [N, C, P]
    p = torch.softmax(f(theta), 1)  # [N, C]
    Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [N, C, C]
    return torch.einsum("ncp,ncd,ndq->pq", J, Lam, J) / x.shape[0]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-8) -> None:
    assert a.shape == b.shape
    if a.numel() == 0:
        return
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


# --- exact diagonal ----------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("widths", [(3, 5, 4), (4, 6, 5, 3), (3, 4, 5, 4, 3)])
def test_diag_hessian_matches_dense_hessian(activation, widths):
    model = models.mlp(widths, activation=activation, seed=1, dtype=DTYPE)
    x, y = _data(model, 7, seed=2)
    H = dense_hessian(model, x, y)
    _close(flatten(diag_hessian(model, x, y)), H.diagonal())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_output_activation_and_tanh_gelu(approximate):
    # a nonlinearity after the last Linear and tanh-approximate GELU both enter the residuals
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.GELU(approximate=approximate), nn.Linear(5, 4), nn.Sigmoid()
    ).to(DTYPE)
    x, y = _data(model, 6, seed=3)
    _close(flatten(diag_hessian(model, x, y)), dense_hessian(model, x, y).diagonal())


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    activation=st.sampled_from(ACTIVATIONS),
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_diag_hessian_random_shapes(widths, activation, n, seed):
    widths = [*widths, max(widths[-1], 2)]  # at least two classes
    model = models.mlp(widths, activation=activation, seed=seed, dtype=DTYPE)
    x, y = _data(model, n, seed)
    H = dense_hessian(model, x, y)
    _close(flatten(diag_hessian(model, x, y)), H.diagonal())
    _close(flatten(diag_ggn(model, x, y)), dense_ggn(model, x, y).diagonal())


def test_no_bias_flatten_and_dropout():
    torch.manual_seed(0)
    body = [nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 3)]
    model = nn.Sequential(nn.Flatten(), *body).to(DTYPE).train()
    reference = nn.Sequential(*body).eval()  # same modules, no dropout, no flatten
    x, y = _data(reference, 5, seed=4)
    result = diag_hessian(model, x.reshape(5, 2, 3), y)
    assert list(result) == [n for n, _ in model.named_parameters()]
    assert "0.bias" not in result and "1.bias" not in result
    _close(flatten(result), dense_hessian(reference, x, y).diagonal())
    assert model.training  # left as it was


def test_model_untouched_and_dtype():
    model = models.mlp((4, 5, 3), activation="tanh", seed=0)  # float32
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(8, 4), torch.arange(8) % 3
    for name, fn in ESTIMATORS.items():
        out = fn(model, x, y)
        assert all(t.dtype == torch.float32 for t in out.values()), name
        assert all(not t.requires_grad for t in out.values()), name
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


# --- GGN, residuals, factor --------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_diag_ggn_matches_dense_ggn(activation):
    model = models.mlp((3, 6, 5, 4), activation=activation, seed=5, dtype=DTYPE)
    x, y = _data(model, 8, seed=6)
    _close(flatten(diag_ggn(model, x, y)), dense_ggn(model, x, y).diagonal())


def test_ggn_equals_hessian_for_relu_not_for_tanh():
    x, y = _data(models.mlp((3, 6, 5, 4), seed=0), 8, seed=7)
    relu = models.mlp((3, 6, 5, 4), activation="relu", seed=8, dtype=DTYPE)
    for name, value in diag_ggn(relu, x, y).items():
        _close(value, diag_hessian(relu, x, y)[name], 1e-12)
    tanh = models.mlp((3, 6, 5, 4), activation="tanh", seed=8, dtype=DTYPE)
    G, H = diag_ggn(tanh, x, y), diag_hessian(tanh, x, y)
    for name in ["4.weight", "4.bias"]:  # last (linear) layer: no residual reaches it
        _close(G[name], H[name], 1e-12)
    for name in ["0.weight", "2.weight"]:
        assert (G[name] - H[name]).abs().max() > 1e-4 * H[name].abs().max()


def test_output_factor_squares_to_lambda():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g, dtype=DTYPE)
    S = curvature._output_factor(logits, N=3).permute(1, 2, 0)  # [N, i, v]
    p = torch.softmax(logits, 1)
    Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    _close(S @ S.transpose(1, 2), Lam / 3, 1e-14)


def test_becker_lecun_exact_only_at_output():
    model = models.mlp((3, 6, 5, 4), activation="tanh", seed=9, dtype=DTYPE)
    x, y = _data(model, 8, seed=10)
    B, H = becker_lecun_diag(model, x, y), diag_hessian(model, x, y)
    for name in ["4.weight", "4.bias"]:
        _close(B[name], H[name], 1e-12)
    assert (B["0.weight"] - H["0.weight"]).abs().max() > 1e-4 * H["0.weight"].abs().max()


# --- empirical Fisher, Hutchinson --------------------------------------------------------


def test_empirical_fisher_matches_per_sample_loop():
    model = models.mlp((3, 6, 4), activation="gelu", seed=11, dtype=DTYPE)
    x, y = _data(model, 6, seed=12)
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])  # l_i, unscaled
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            expected[n] += g.square() / len(y)
    for name, value in empirical_fisher_diag(model, x, y).items():
        _close(value, expected[name], 1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_hutchinson_within_three_standard_errors(activation):
    model = models.mlp((3, 5, 4), activation=activation, seed=13, dtype=DTYPE)
    x, y = _data(model, 10, seed=14)
    exact = flatten(diag_hessian(model, x, y))
    g = torch.Generator().manual_seed(15)
    mean, se = hutchinson_diag(model, x, y, 2000, g, return_std=True, chunk=500)
    mean, se = flatten(mean), flatten(se)
    z = (mean - exact).abs() / se.clamp_min(1e-12)
    # entries with zero variance (a diagonal row of H) are estimated exactly
    assert (z[se > 1e-12] < 3).float().mean() > 0.95  # ~99.7% expected under normality
    _close(mean[se <= 1e-12], exact[se <= 1e-12], 1e-10)
    assert (mean - exact).abs().max() < 5 * se.max()


@pytest.mark.slow
def test_hutchinson_ten_thousand_probes():
    # METHODS.md B oracle: the mean over 10^4 probes lies within 3 standard errors
    model = models.mlp((4, 6, 5, 3), activation="gelu", seed=19, dtype=DTYPE)
    x, y = _data(model, 12, seed=20)
    exact = flatten(diag_hessian(model, x, y))
    g = torch.Generator().manual_seed(21)
    mean, se = hutchinson_diag(model, x, y, 10_000, g, return_std=True, chunk=1000)
    mean, se = flatten(mean), flatten(se)
    live = se > 1e-12
    assert ((mean - exact).abs()[live] < 3 * se[live]).float().mean() > 0.97
    assert (mean - exact).abs().max() < 5 * se.max()


def test_hutchinson_single_probe_is_exact_on_the_diagonal_plus_cross_terms():
    # v * Hv = diag(H) + sum_{j != i} H_ij v_i v_j: check one probe against the dense Hessian
    model = models.mlp((2, 3, 3), activation="sigmoid", seed=16, dtype=DTYPE)
    x, y = _data(model, 4, seed=17)
    g = torch.Generator().manual_seed(18)
    est = flatten(hutchinson_diag(model, x, y, 1, g))
    g = torch.Generator().manual_seed(18)
    v = flatten(
        {
            n: torch.randint(0, 2, (1, *p.shape), generator=g).to(DTYPE)[0] * 2 - 1
            for n, p in model.named_parameters()
        }
    )
    _close(est, v * (dense_hessian(model, x, y) @ v), 1e-10)


# --- errors ------------------------------------------------------------------------------


def test_errors_name_the_problem():
    model = models.mlp((3, 4, 2), seed=0, dtype=DTYPE)
    x, y = _data(model, 4, seed=0)
    with pytest.raises(ValueError, match=r"diag_hessian: x must have shape \[N, 3\]"):
        diag_hessian(model, x[:, :2], y)
    with pytest.raises(ValueError, match=r"y must have shape \[4\] like x"):
        diag_hessian(model, x, y[:3])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        diag_hessian(model, x, y + 5)
    with pytest.raises(TypeError, match="integer class labels"):
        diag_hessian(model, x, y.to(DTYPE))
    with pytest.raises(ValueError, match="NaN or inf"):
        diag_hessian(model, x.clone().fill_(float("nan")), y)
    with pytest.raises(TypeError, match="float32"):
        diag_hessian(model, x.float(), y)
    with pytest.raises(TypeError, match="Conv1d"):
        diag_ggn(nn.Sequential(nn.Conv1d(1, 1, 1)), x, y)
    shared = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="shared"):
        diag_hessian(nn.Sequential(shared, nn.ReLU(), shared).to(DTYPE), x, y)
    with pytest.raises(ValueError, match="probes"):
        hutchinson_diag(model, x, y, 0)


def test_chunked_over_samples_gives_the_same_result(monkeypatch):
    model = models.mlp((3, 6, 5, 4), activation="tanh", seed=22, dtype=DTYPE)
    x, y = _data(model, 9, seed=23)
    whole = diag_hessian(model, x, y)
    monkeypatch.setattr(curvature, "_MAX_FACTOR_ELEMENTS", 50)  # ~1 sample per chunk
    for name, value in diag_hessian(model, x, y).items():
        _close(value, whole[name], 1e-13)


# --- unit curvature on convnets (the op-generic path) ------------------------------------

_ACTS = {
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
}  # fmt: skip
_POOLS = {
    "none": lambda: nn.Identity(),
    "max": lambda: nn.MaxPool2d(2),
    "max3": lambda: nn.MaxPool2d(3, 2, padding=1),  # overlapping windows
    "avg": lambda: nn.AvgPool2d(2, ceil_mode=True),
    "adaptive": lambda: nn.AdaptiveAvgPool2d(3),
    "adaptive_max": lambda: nn.AdaptiveMaxPool2d(3),
    "max_ceil": lambda: nn.MaxPool2d(2, 2, dilation=2, ceil_mode=True),  # windows past the edge
}


def _seeded(model: nn.Sequential, g: torch.Generator) -> nn.Sequential:
    """``model`` in eval mode with seeded weights (scaled by fan-in), biases and BatchNorm
    statistics, so that every activation and BatchNorm sees a non-trivial input."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DTYPE))
                m.weight.mul_(1.5 * m.weight[0].numel() ** -0.5)
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=DTYPE))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=DTYPE))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=DTYPE))
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=DTYPE))
                m.bias.copy_(0.5 * torch.randn(m.num_features, generator=g, dtype=DTYPE))
    return model.eval()


def _random_convnet(seed, activation, pool, bn, kernel, stride, padding, size, head_act=True):
    """conv(2->3) [BN] act pool conv(3->4, 3, padding 1) [BN] act Flatten Linear [act] Linear,
    float64, eval mode, seeded weights and BatchNorm statistics; inputs [N, 2, size, size]."""
    g = torch.Generator().manual_seed(seed)
    act = _ACTS[activation]
    features = nn.Sequential(
        nn.Conv2d(2, 3, kernel, stride=stride, padding=padding), *([nn.BatchNorm2d(3)] if bn else []),
        act(), _POOLS[pool](), nn.Conv2d(3, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if bn else []),
        act(), nn.Flatten(),
    ).to(DTYPE)  # fmt: skip
    D = features.eval()(torch.zeros(1, 2, size, size, dtype=DTYPE)).shape[1]
    head = [nn.Linear(D, 5), *([act()] if head_act else []), nn.Linear(5, 3)]
    model = nn.Sequential(*features, *head).to(DTYPE)
    return _seeded(model, g)


def _gate_oracle(model, x, y):
    """d^2 L / dm_j^2 per hidden layer, autograd through unit gates (ops.forward's scales)."""
    view = ops.parse(model)
    gates = tuple(torch.ones(H, dtype=DTYPE) for H in view.hidden_sizes)

    def loss(*m):
        return F.cross_entropy(ops.forward(view, x, scales=dict(enumerate(m)), training=False), y)

    H = torch.autograd.functional.hessian(loss, gates)
    return [H[ell][ell].diagonal() for ell in range(len(gates))]


def _mean_oracle(model, x, y):
    """d^2/dt^2 of L with unit j moved towards its mean (over samples and positions), by
    autograd through ops.forward's edit, one unit at a time."""
    view = ops.parse(model)
    with torch.no_grad():
        units = ops.forward(view, x, taps=True, training=False)[1]
    out = []
    for ell, a in enumerate(units):
        abar = a.transpose(0, 1).reshape(a.shape[1], -1).mean(1)
        q = []
        for j in range(a.shape[1]):

            def loss(t, j=j, ell=ell, abar=abar):
                def move(b):
                    d = torch.zeros_like(b)
                    d[:, j] = abar[j] - b[:, j].detach()
                    return b + t * d

                return F.cross_entropy(ops.forward(view, x, edit={ell: move}, training=False), y)

            q.append(torch.func.hessian(loss)(torch.zeros((), dtype=DTYPE)))
        out.append(torch.stack(q))
    return out


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    activation=st.sampled_from(sorted(_ACTS)),
    pool=st.sampled_from(sorted(_POOLS)),
    bn=st.booleans(),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    size=st.integers(6, 9),
    n=st.integers(1, 4),
    head_act=st.booleans(),
)
def test_unit_curvature_on_random_convnets(
    seed, activation, pool, bn, kernel, stride, padding, size, n, head_act
):
    model = _random_convnet(seed, activation, pool, bn, kernel, stride, padding, size, head_act)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 2, size, size, generator=g, dtype=DTYPE)
    y = torch.randint(0, 3, (n,), generator=g)
    for got, want in zip(curvature.diag_hessian_masks(model, x, y), _gate_oracle(model, x, y)):
        _close(got, want, 1e-9)
    mean = curvature.directional_curvature(model, x, y, direction="mean")
    for got, want in zip(mean, _mean_oracle(model, x, y)):
        _close(got, want, 1e-9)


def test_unit_curvature_convnet_chunked(monkeypatch):
    model = _random_convnet(3, "tanh", "max3", True, 3, 1, 1, 8)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 2, 8, 8, generator=g, dtype=DTYPE), torch.randint(0, 3, (7,), generator=g)
    whole = curvature.diag_hessian_masks(model, x, y)
    means = curvature.directional_curvature(model, x, y, direction="mean")
    monkeypatch.setattr(curvature, "_MAX_FACTOR_ELEMENTS", 500)  # ~1 sample per chunk
    for a, b in zip(curvature.diag_hessian_masks(model, x, y), whole):
        _close(a, b, 1e-13)
    for a, b in zip(curvature.directional_curvature(model, x, y, direction="mean"), means):
        _close(a, b, 1e-13)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_op_generic_path_equals_dense_recursion_on_mlps(activation):
    """The convnet path run on an MLP's op view gives the MLP recursion's numbers."""
    model = models.mlp((3, 6, 5, 4), activation=activation, seed=5, dtype=DTYPE)
    x, y = _data(model, 9, seed=6)
    view = ops.parse(model)
    with torch.no_grad():
        units = ops.forward(view, x, taps=True, training=False)[1]
    means = [a.mean(0) for a in units]
    for direction in ("mask", "mean"):
        dense = curvature.directional_curvature(model, x, y, direction=direction, means=means)
        with torch.no_grad():
            generic = curvature._op_forms(view, x, y, direction, means)
        for a, b in zip(generic, dense):
            _close(a, b, 1e-12)
    # the MLP's "mean" direction is sum_n h_nj (abar_j - a_nj)^2 with the activation diagonal
    h = curvature.diag_hessian_activations(model, x, y)
    q = curvature.directional_curvature(model, x, y, direction="mean")
    for got, h_l, a in zip(q, h, units):
        _close(got, (h_l * (a.mean(0) - a).square()).sum(0), 1e-13)


def test_batchnorm_mlp_takes_the_op_path():
    model = nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3)
    ).to(DTYPE)
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(-2, 2)
    model.eval()
    x, y = _data(nn.Sequential(nn.Linear(3, 3)), 6, seed=8)
    for got, want in zip(curvature.diag_hessian_masks(model, x, y), _gate_oracle(model, x, y)):
        _close(got, want, 1e-10)


def test_unit_curvature_errors():
    model = _random_convnet(0, "relu", "max", True, 3, 1, 1, 6)
    x = torch.randn(3, 2, 6, 6, dtype=DTYPE)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"direction='median'; choose from \['mask', 'mean'\]"):
        curvature.directional_curvature(model, x, y, direction="median")
    with pytest.raises(ValueError, match=r"means\[1\] must be a finite Tensor \[4\]; got \(3,\)"):
        curvature.directional_curvature(
            model, x, y, direction="mean", means=[torch.zeros(3), torch.zeros(3), torch.zeros(5)]
        )
    with pytest.raises(ValueError, match="means must be a list of 3 tensors"):
        curvature.directional_curvature(model, x, y, direction="mean", means=torch.zeros(3))
    with pytest.raises(ValueError, match=r"diag_hessian_masks: x must have shape \[N, 2, H, W\]"):
        curvature.diag_hessian_masks(model, x[:, :1], y)
    with pytest.raises(ValueError, match=r"y must be class labels in \[0, 3\)"):
        curvature.diag_hessian_masks(model, x, y + 1)
    model.train()
    with pytest.raises(ValueError, match=r"diag_hessian_masks: .*training mode.*model.eval\(\)"):
        curvature.diag_hessian_masks(model, x, y)


# --- per-parameter curvature on convnets (the op-generic path) ---------------------------


def _tiny_convnet(seed, activation, pool, bn, kernel, stride, padding, dilation, size, head_act):
    """conv(2->2, kernel, stride, padding, dilation) [BN] act pool conv(2->2, 2, padding 1)
    [BN] act Flatten Linear(->3) [act] Linear(3->3): float64, eval mode, seeded weights and
    BatchNorm statistics, few enough parameters for a dense Hessian; inputs [N, 2, size, size]."""
    g = torch.Generator().manual_seed(seed)
    act = _ACTS[activation]
    norm = (lambda c: [nn.BatchNorm2d(c)]) if bn else (lambda c: [])
    features = nn.Sequential(
        nn.Conv2d(2, 2, kernel, stride=stride, padding=padding, dilation=dilation), *norm(2),
        act(), _POOLS[pool](), nn.Conv2d(2, 2, 2, padding=1), *norm(2), act(), nn.Flatten(),
    ).to(DTYPE)  # fmt: skip
    D = features.eval()(torch.zeros(1, 2, size, size, dtype=DTYPE)).shape[1]
    head = [nn.Linear(D, 3), *([act()] if head_act else []), nn.Linear(3, 3)]
    model = nn.Sequential(*features, *head).to(DTYPE)
    return _seeded(model, g)


def _conv_data(model, n, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, size, size, generator=g, dtype=DTYPE)
    return x, torch.randint(0, 3, (n,), generator=g)


_CONV_CASES = {  # activation, pool, bn, kernel, stride, padding, dilation, size, head_act
    "relu-max": ("relu", "max", False, 3, 1, 1, 1, 6, True),
    "relu-max-bn-stride": ("relu", "max3", True, 3, 2, 1, 1, 9, True),
    "leaky-avg-dilation": ("leaky_relu", "avg", False, 2, 1, 1, 2, 7, False),
    "tanh-max-bn": ("tanh", "max", True, 3, 1, 1, 1, 6, True),
    "tanh-avg-stride": ("tanh", "avg", False, 3, 2, 0, 1, 9, True),
    "gelu-adaptive-bn": ("gelu", "adaptive", True, 2, 1, 0, 1, 6, True),
    "sigmoid-none": ("sigmoid", "none", False, 3, 1, 1, 1, 5, True),
    "gelu-adaptive-max": ("gelu", "adaptive_max", False, 3, 1, 1, 1, 7, True),
    "tanh-max-ceil-bn": ("tanh", "max_ceil", True, 2, 1, 1, 1, 8, False),
}


@pytest.mark.parametrize("case", sorted(_CONV_CASES))
def test_diag_hessian_and_ggn_on_convnets(case):
    model = _tiny_convnet(1, *_CONV_CASES[case])
    x, y = _conv_data(model, 3, _CONV_CASES[case][7], seed=2)
    result = diag_hessian(model, x, y)
    assert list(result) == [n for n, _ in model.named_parameters()]
    _close(flatten(result), dense_hessian(model, x, y).diagonal(), 1e-10)
    _close(flatten(diag_ggn(model, x, y)), dense_ggn(model, x, y).diagonal(), 1e-10)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    activation=st.sampled_from(sorted(_ACTS)),
    pool=st.sampled_from(sorted(_POOLS)),
    bn=st.booleans(),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    n=st.integers(1, 3),
    head_act=st.booleans(),
)
def test_diag_hessian_on_random_convnets(
    seed, activation, pool, bn, kernel, stride, padding, dilation, n, head_act
):
    args = (activation, pool, bn, kernel, stride, padding, dilation, 8, head_act)
    model = _tiny_convnet(seed, *args)
    x, y = _conv_data(model, n, 8, seed + 1)
    _close(flatten(diag_hessian(model, x, y)), dense_hessian(model, x, y).diagonal(), 1e-10)


def test_relu_convnet_hessian_equals_ggn_tanh_does_not():
    relu = _tiny_convnet(3, *_CONV_CASES["relu-max-bn-stride"])
    x, y = _conv_data(relu, 4, 9, seed=4)
    H, G = diag_hessian(relu, x, y), diag_ggn(relu, x, y)
    for name in H:
        _close(H[name], G[name], 1e-13)
    tanh = _tiny_convnet(3, *_CONV_CASES["tanh-max-bn"])
    x, y = _conv_data(tanh, 4, 6, seed=4)
    H, G = diag_hessian(tanh, x, y), diag_ggn(tanh, x, y)
    assert (H["0.weight"] - G["0.weight"]).abs().max() > 1e-4 * H["0.weight"].abs().max()
    _close(H["10.weight"], G["10.weight"], 1e-12)  # the output layer: no residual reaches it


@pytest.mark.parametrize("case", ["relu-max-bn-stride", "gelu-adaptive-bn", "tanh-avg-stride"])
def test_empirical_fisher_on_convnets_matches_per_sample_loop(case):
    model = _tiny_convnet(5, *_CONV_CASES[case])
    x, y = _conv_data(model, 4, _CONV_CASES[case][7], seed=6)
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])  # l_i, unscaled
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            expected[n] += g.square() / len(y)
    result = empirical_fisher_diag(model, x, y)
    assert list(result) == list(params)
    for name, value in result.items():
        _close(value, expected[name], 1e-12)


def _becker_lecun_oracle(model, x, y):
    """Becker & LeCun's recursion written out module by module with dense per-sample
    Jacobians (jacrev) and second derivatives (torch.func.hessian), no op view: at a module
    ``u -> v(u)`` with diagonal ``h`` and gradient ``g`` at its output,

        h_in = (J o J)^T h + diag(d^2 (g . v) / du^2),    diag[theta] += (dv/dtheta o dv/dtheta)^T h

    (every parameter enters its module linearly, so ``g . v`` has no second derivative in it)."""
    N = x.shape[0]
    modules = list(model)
    names = {id(m): n for n, m in model.named_children()}
    out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(N):
        inputs, a = [], x[i : i + 1]
        with torch.no_grad():
            for m in modules:
                inputs.append(a)
                a = m(a)
        p = torch.softmax(a, 1)[0]
        h = p * (1 - p) / N  # [C]
        g = (p - F.one_hot(y[i], 3).to(DTYPE)) / N
        for m, u in zip(modules[::-1], inputs[::-1], strict=True):
            J = jacrev(lambda t, m=m: m(t).reshape(-1))(u).reshape(h.numel(), -1)  # [out, in]
            for pname, param in m.named_parameters():
                Jp = jacrev(lambda q, m=m, pname=pname, u=u: functional_call(m, {pname: q}, (u,)))
                Jt = Jp(param.detach()).reshape(h.numel(), -1)  # [out, P]
                out[f"{names[id(m)]}.{pname}"] += (Jt.square().T @ h).view_as(param)
            second = hessian(lambda t, m=m, g=g: (g * m(t).reshape(-1)).sum())(u)
            second = second.reshape(u.numel(), u.numel()).diagonal()
            h, g = J.square().T @ h + second, J.T @ g
    return out


@pytest.mark.parametrize("case", ["tanh-max-bn", "relu-max-bn-stride", "gelu-adaptive-bn"])
def test_becker_lecun_on_convnets_matches_its_recursion(case):
    model = _tiny_convnet(7, *_CONV_CASES[case])
    x, y = _conv_data(model, 2, _CONV_CASES[case][7], seed=8)
    expected = _becker_lecun_oracle(model, x, y)
    result = becker_lecun_diag(model, x, y)
    assert list(result) == list(expected)
    for name, value in result.items():
        _close(value, expected[name], 1e-12)
    exact = diag_hessian(model, x, y)
    for name in list(result)[-2:]:  # exact at the output layer only
        _close(result[name], exact[name], 1e-12)


@pytest.mark.parametrize("case", ["relu-max-bn-stride", "tanh-max-bn"])
def test_hutchinson_on_convnets_within_three_standard_errors(case):
    model = _tiny_convnet(9, *_CONV_CASES[case])
    x, y = _conv_data(model, 3, _CONV_CASES[case][7], seed=10)
    exact = flatten(diag_hessian(model, x, y))
    g = torch.Generator().manual_seed(11)
    mean, se = hutchinson_diag(model, x, y, 600, g, return_std=True, chunk=300)
    mean, se = flatten(mean), flatten(se)
    live = se > 1e-12
    assert ((mean - exact).abs()[live] < 3 * se[live]).float().mean() > 0.95
    _close(mean[~live], exact[~live], 1e-10)
    assert (mean - exact).abs().max() < 5 * se.max()


def _activation_oracle(model, x, y):
    """d^2 L / (d a^l_{n,j,s})^2 for every hidden layer: torch.func.hessian w.r.t. a
    perturbation added to the units (ops.forward's edit), one layer at a time."""
    view = ops.parse(model)
    with torch.no_grad():
        units = ops.forward(view, x, taps=True, training=False)[1]
    out = []
    for ell, a in enumerate(units):

        def loss(d, ell=ell):
            logits = ops.forward(view, x, edit={ell: lambda b: b + d}, training=False)
            return F.cross_entropy(logits, y)

        H = hessian(loss)(torch.zeros_like(a))
        out.append(H.reshape(a.numel(), a.numel()).diagonal().view_as(a))
    return out


@pytest.mark.parametrize("case", ["relu-max", "tanh-max-bn", "gelu-adaptive-bn", "tanh-avg-stride"])
def test_diag_hessian_activations_and_masks_on_convnets(case):
    model = _tiny_convnet(12, *_CONV_CASES[case])
    x, y = _conv_data(model, 3, _CONV_CASES[case][7], seed=13)
    got = curvature.diag_hessian_activations(model, x, y)
    want = _activation_oracle(model, x, y)
    assert [h.shape for h in got] == [h.shape for h in want]
    for a, b in zip(got, want, strict=True):
        _close(a, b, 1e-10)
    for a, b in zip(curvature.diag_hessian_masks(model, x, y), _gate_oracle(model, x, y)):
        _close(a, b, 1e-10)


def test_convnet_curvature_chunked_and_untouched(monkeypatch):
    model = _tiny_convnet(14, *_CONV_CASES["tanh-avg-stride"]).float().train()  # no BN
    x, y = _conv_data(model, 5, 9, seed=15)
    x = x.float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    whole = {name: fn(model, x, y) for name, fn in ESTIMATORS.items()}
    acts = curvature.diag_hessian_activations(model, x, y)
    monkeypatch.setattr(curvature, "_MAX_FACTOR_ELEMENTS", 500)  # ~1 sample per chunk
    for name, fn in ESTIMATORS.items():
        if name == "hutchinson":
            continue
        for pname, value in fn(model, x, y).items():
            assert value.dtype == torch.float32 and not value.requires_grad
            _close(value, whole[name][pname], 1e-5)
    for a, b in zip(curvature.diag_hessian_activations(model, x, y), acts, strict=True):
        _close(a, b, 1e-5)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None
    assert model.training  # dropout-free net left in its own mode


def test_convnet_curvature_errors():
    model = _tiny_convnet(0, *_CONV_CASES["relu-max-bn-stride"])
    x, y = _conv_data(model, 3, 9, seed=0)
    with pytest.raises(ValueError, match=r"diag_hessian: x must have shape \[N, 2, H, W\]"):
        diag_hessian(model, x[:, :1], y)
    shared = nn.Conv2d(2, 2, 3, padding=1).to(DTYPE)
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.Flatten(), nn.Linear(2 * 81, 3)).to(DTYPE)
    for fn in (diag_hessian, diag_ggn, empirical_fisher_diag, becker_lecun_diag, hutchinson_diag):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: a module appears twice"):
            fn(twice, x, y)
    assert len(curvature.diag_hessian_activations(twice, x, y)) == 2  # no per-parameter sums
    model.train()
    for fn in (diag_hessian, empirical_fisher_diag, hutchinson_diag):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: .*training mode.*model.eval\(\)"):
            fn(model, x, y)


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    size=st.tuples(st.integers(7, 10), st.integers(7, 10)),
)
def test_unfold_equals_torch_unfold(kernel, stride, padding, dilation, size):
    conv = nn.Conv2d(2, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(3, 2, size[0] + 1, size[1], dtype=DTYPE)[:, :, 1:]  # not contiguous
    want = F.unfold(x, kernel, dilation, padding, stride)
    _close(curvature._unfold(conv, x), want, 0.0)


def test_convnet_dropout_counts_as_identity():
    model = _tiny_convnet(16, *_CONV_CASES["tanh-max-bn"])
    x, y = _conv_data(model, 3, 6, seed=17)
    body = list(model)
    with_dropout = nn.Sequential(*body[:3], nn.Dropout(0.5), *body[3:]).train()
    for module in body:
        module.eval()  # the BatchNorms; the Dropout stays in training mode
    for fn in (diag_hessian, empirical_fisher_diag, becker_lecun_diag):
        got, want = fn(with_dropout, x, y), fn(model, x, y)
        assert list(got) == [n for n, _ in with_dropout.named_parameters()]
        _close(flatten(got), flatten(want), 1e-14)


@pytest.mark.parametrize("first_pool", ["max", "max3", "avg"])
def test_pool_before_curved_activation(first_pool):
    # conv -> pool -> tanh: the residual diag(r) meets the pool before the conv (a max pool
    # routes it back as a diagonal, an average pool turns it into columns)
    torch.manual_seed(18)
    model = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1), _POOLS[first_pool](), nn.Tanh(),
        nn.Conv2d(2, 2, 2), nn.AvgPool2d(2, ceil_mode=True), nn.GELU(), nn.Flatten(),
        nn.Linear(8, 3),  # 8x8 -> 4x4 (pool) -> 3x3 (conv) -> 2x2 (pool), 2 channels
    ).to(DTYPE)  # fmt: skip
    x, y = _conv_data(model, 3, 8, seed=19)
    _close(flatten(diag_hessian(model, x, y)), dense_hessian(model, x, y).diagonal(), 1e-10)
    for a, b in zip(
        curvature.diag_hessian_activations(model, x, y), _activation_oracle(model, x, y)
    ):
        _close(a, b, 1e-10)
    for a, b in zip(curvature.diag_hessian_masks(model, x, y), _gate_oracle(model, x, y)):
        _close(a, b, 1e-10)


def test_offset_before_batchnorm():
    # a pruned conv's Offset shifts z before the BatchNorm, so it enters gamma's zhat
    torch.manual_seed(20)
    shift = ops.Offset((2, 5, 5), dtype=DTYPE)
    model = nn.Sequential(
        nn.Conv2d(2, 2, 2), shift, nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(50, 3)
    ).to(DTYPE)
    with torch.no_grad():
        shift.offset.normal_()
        model[2].running_var.uniform_(0.5, 2.0)
        model[2].weight.normal_()
    model.eval()
    x, y = _conv_data(model, 3, 6, seed=21)
    result = diag_hessian(model, x, y)
    assert list(result) == ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"]
    _close(flatten(result), dense_hessian(model, x, y).diagonal(), 1e-10)


def test_residual_columns_in_blocks_are_exact(monkeypatch):
    # a tiny budget walks the residual columns one block (of one column) at a time
    model = _tiny_convnet(22, *_CONV_CASES["tanh-avg-stride"])
    x, y = _conv_data(model, 3, 9, seed=23)
    monkeypatch.setattr(curvature, "_MAX_FACTOR_ELEMENTS", 100)
    _close(flatten(diag_hessian(model, x, y)), dense_hessian(model, x, y).diagonal(), 1e-10)
    for a, b in zip(
        curvature.diag_hessian_activations(model, x, y), _activation_oracle(model, x, y)
    ):
        _close(a, b, 1e-10)
