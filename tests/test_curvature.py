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

from prunelab import curvature, models

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
