"""Weight criteria against closed forms on quadratics and against autograd (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.criteria import (
    WEIGHT_CRITERIA,
    WEIGHT_LABELLED,
    damped_inverse,
    hessian_gradient_product,
    obd_saliency,
    obs_saliency,
    obs_update,
    weight_scores,
)
from torch import nn

from prunelab import criteria, curvature, models

F64 = torch.float64


def _setup(activation="relu", widths=(3, 6, 5, 4), seed=0, n=40):
    model = models.mlp(widths, activation=activation, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    return model, x, y


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def _loss(model, x, y, temperature=1.0):
    """Mean CE of the model's own modules as a function of a parameter dict."""
    return lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)) / temperature, y)


def _spd(P, seed):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(P, P, generator=g, dtype=F64)
    return B @ B.T + 0.1 * torch.eye(P, dtype=F64), torch.randn(P, generator=g, dtype=F64)


def _quadratic(A, w_star):
    """E(w) = 1/2 (w - w*)^T A (w - w*), the OBD/OBS oracle (METHODS.md B)."""
    return lambda w: 0.5 * (w - w_star) @ A @ (w - w_star)


# --- OBD and OBS on a quadratic: the saliencies are the exact loss increases -----------------


@settings(max_examples=25, deadline=None)
@given(P=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_obd_and_obs_on_a_quadratic(P, seed):
    A, w_star = _spd(P, seed)
    E = _quadratic(A, w_star)
    s_obd = obd_saliency(w_star, torch.diagonal(A))
    A_inv = torch.linalg.inv(A)
    L_obs = obs_saliency(w_star, A_inv)
    for q in range(P):
        zeroed = w_star.clone()
        zeroed[q] = 0
        assert s_obd[q].item() == pytest.approx(E(zeroed).item(), rel=1e-10)  # exact increase
        moved, L_q = obs_update(w_star, A_inv, torch.tensor([q]))
        assert moved[q] == 0
        assert L_q.item() == pytest.approx(E(moved).item(), rel=1e-8)  # exact after compensation
        assert L_q.item() == pytest.approx(L_obs[q].item(), rel=1e-10)
        assert L_obs[q] <= s_obd[q] * (1 + 1e-12)  # never worse than OBD for the same q


@settings(max_examples=20, deadline=None)
@given(P=st.integers(3, 8), seed=st.integers(0, 10_000), data=st.data())
def test_obs_update_is_the_constrained_minimum(P, seed, data):
    A, w_star = _spd(P, seed)
    E = _quadratic(A, w_star)
    Q = sorted(data.draw(st.sets(st.integers(0, P - 1), min_size=1, max_size=P - 1)))
    moved, L_Q = obs_update(w_star, torch.linalg.inv(A), torch.tensor(Q))
    assert (moved[Q] == 0).all()
    assert L_Q.item() == pytest.approx(E(moved).item(), rel=1e-8)
    zeroed = w_star.clone()
    zeroed[Q] = 0
    assert E(moved) <= E(zeroed) * (1 + 1e-12)
    g = torch.Generator().manual_seed(seed)
    free = [i for i in range(P) if i not in Q]
    for _ in range(5):  # any other feasible point is worse
        other = moved.clone()
        other[free] += 0.1 * torch.randn(len(free), generator=g, dtype=F64)
        assert E(other) >= E(moved) - 1e-12


def test_hessian_gradient_product_on_an_analytic_quadratic():
    # L(a, c) = 1/2 theta^T A theta - b^T theta with theta = [a (2x2), c (3)]: Hg = A (A theta - b)
    A, b = _spd(7, 1)
    theta = torch.randn(7, generator=torch.Generator().manual_seed(2), dtype=F64)

    def loss(p):
        t = torch.cat([p["a"].reshape(-1), p["c"]])
        return 0.5 * t @ A @ t - b @ t

    hg = hessian_gradient_product(loss, {"a": theta[:4].reshape(2, 2), "c": theta[4:]})
    expected = A @ (A @ theta - b)
    torch.testing.assert_close(torch.cat([hg["a"].reshape(-1), hg["c"]]), expected)


# --- model-level criteria against autograd ------------------------------------------------


def _flat_hessian_and_grad(model, x, y, temperature=1.0):
    params = _params(model)
    sizes = [p.numel() for p in params.values()]

    def loss(flat):
        p = {n: t.reshape(q.shape) for (n, q), t in zip(params.items(), flat.split(sizes))}
        return _loss(model, x, y, temperature)(p)

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    return torch.func.hessian(loss)(flat), torch.func.grad(loss)(flat), flat, sizes


def _unflat(model, v, sizes):
    return {n: t.reshape(p.shape) for (n, p), t in zip(model.named_parameters(), v.split(sizes))}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_obd_family_uses_the_named_diagonal(activation, monkeypatch):
    model, x, y = _setup(activation)
    H, _, flat, sizes = _flat_hessian_and_grad(model, x, y)
    expected = _unflat(model, 0.5 * torch.diagonal(H) * flat**2, sizes)
    for name, got in weight_scores("obd", model, x, y).items():
        torch.testing.assert_close(got, expected[name], rtol=1e-9, atol=1e-14)
    # empirical Fisher: per-sample gradients of l_n, squared and averaged
    params = _params(model)

    def sample_grad(xi, yi):
        return torch.func.grad(_loss(model, xi[None], yi[None]))(params)

    per_sample = torch.func.vmap(sample_grad)(x, y)  # {name: [N, *shape]}
    for name, got in weight_scores("obd_fisher", model, x, y).items():
        fisher = per_sample[name].square().mean(0)
        torch.testing.assert_close(got, 0.5 * fisher * params[name] ** 2)
    monkeypatch.setattr(criteria.weights, "HUTCHINSON_PROBES", 8)
    hutch = curvature.hutchinson_diag(model, x, y, 8, torch.Generator().manual_seed(5))
    got = weight_scores("obd_hutchinson", model, x, y, generator=torch.Generator().manual_seed(5))
    for name, h in hutch.items():
        torch.testing.assert_close(got[name], 0.5 * h * params[name] ** 2)
    for name, estimator in (("obd_ggn", "ggn"), ("obd_becker_lecun", "becker_lecun")):
        h = curvature.ESTIMATORS[estimator](model, x, y)
        for n, s in weight_scores(name, model, x, y).items():
            torch.testing.assert_close(s, obd_saliency(params[n], h[n]))


@pytest.mark.parametrize("max_block", [10_000, 6])
def test_obs_scores_use_the_damped_layer_block(max_block):
    model, x, y = _setup("tanh", widths=(3, 5, 4))
    H, _, flat, sizes = _flat_hessian_and_grad(model, x, y)
    scores = criteria.obs(model, x, y, max_block=max_block)
    offset = 0
    for name in ["0", "2"]:
        W, b = _params(model)[f"{name}.weight"], _params(model)[f"{name}.bias"]
        P = W.numel() + b.numel()
        w_idx = torch.arange(offset, offset + W.numel())
        b_idx = torch.arange(offset + W.numel(), offset + P)
        if max_block >= P:  # the whole layer block
            index = torch.cat([w_idx, b_idx])
            block = H[index][:, index]
            s = obs_saliency(torch.cat([W.reshape(-1), b]), damped_inverse(block, 1e-4))
            expected_w, expected_b = s[: W.numel()].reshape(W.shape), s[W.numel() :]
        else:  # one block per output unit
            D = W.shape[1]
            expected_w, expected_b = torch.empty_like(W), torch.empty_like(b)
            for i in range(W.shape[0]):
                index = torch.cat([w_idx[i * D : (i + 1) * D], b_idx[i : i + 1]])
                theta = torch.cat([W[i], b[i : i + 1]])
                s = obs_saliency(theta, damped_inverse(H[index][:, index], 1e-4))
                expected_w[i], expected_b[i] = s[:D], s[D]
        torch.testing.assert_close(scores[f"{name}.weight"], expected_w, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(scores[f"{name}.bias"], expected_b, rtol=1e-7, atol=1e-12)
        offset += P


def test_damped_inverse():
    A, _ = _spd(4, 0)
    lam = 0.5 * torch.diagonal(A).mean()
    torch.testing.assert_close(damped_inverse(A, 0.5), torch.linalg.inv(A + lam * torch.eye(4)))
    batch = damped_inverse(torch.stack([A, 2 * A]), 0.0)
    torch.testing.assert_close(batch[1], torch.linalg.inv(2 * A))
    torch.testing.assert_close(
        damped_inverse(torch.zeros(2, 2), 1e-3), 1e3 * torch.eye(2, dtype=F64)
    )


def test_snip_sums_to_one_and_is_the_connection_sensitivity():
    model, x, y = _setup()
    scores = weight_scores("snip", model, x, y)
    weights = [n for n in scores if n.endswith("weight")]
    assert sum(scores[n].sum() for n in weights).item() == pytest.approx(1, rel=1e-12)
    params = _params(model)
    # |dL(c * theta)/dc| at c = 1 with autograd on explicit masks c
    c = {n: torch.ones_like(p, requires_grad=True) for n, p in params.items()}
    loss = _loss(model, x, y)({n: c[n] * p for n, p in params.items()})
    grads = dict(zip(c, torch.autograd.grad(loss, list(c.values()))))
    total = sum(grads[n].abs().sum() for n in weights)
    for n in params:
        torch.testing.assert_close(scores[n], grads[n].abs() / total)


def test_grasp_is_minus_theta_hg_at_temperature_normalised():
    model, x, y = _setup("tanh")
    H, g, flat, sizes = _flat_hessian_and_grad(model, x, y, criteria.GRASP_TEMPERATURE)
    S = _unflat(model, -flat * (H @ g), sizes)  # GraSP's score; it removes the largest
    total = sum(S[n].sum() for n in S if n.endswith("weight")).abs()
    got = weight_scores("grasp", model, x, y)
    for n in S:
        torch.testing.assert_close(got[n], -S[n] / total, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_synflow_conserves_the_flow_layer_by_layer(activation):
    model, x, y = _setup(activation, widths=(4, 7, 6, 5, 3))
    absolute = {n: p.abs() for n, p in _params(model).items()}
    R = torch.func.functional_call(model, absolute, (torch.ones(1, 4, dtype=F64),)).sum()
    scores = weight_scores("synflow", model, x)
    layers = ["0", "2", "4", "6"]
    for ell, name in enumerate(layers):
        # layer l's weights and every bias of layers >= l carry the whole flow R
        flow = scores[f"{name}.weight"].sum() + sum(scores[f"{m}.bias"].sum() for m in layers[ell:])
        assert flow.item() == pytest.approx(R.item(), rel=1e-12)
    with torch.no_grad():  # without biases: each layer's weights alone score R
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    R0 = torch.func.functional_call(
        model, {n: p.abs() for n, p in _params(model).items()}, (torch.ones(1, 4, dtype=F64),)
    ).sum()
    scores = weight_scores("synflow", model, x)
    for name in layers:
        assert scores[f"{name}.weight"].sum().item() == pytest.approx(R0.item(), rel=1e-12)
    # and S = |theta dR/dtheta| by autograd
    p = {n: q.abs().requires_grad_(True) for n, q in _params(model).items()}
    out = torch.func.functional_call(model, p, (torch.ones(1, 4, dtype=F64),)).sum()
    grads = dict(zip(p, torch.autograd.grad(out, list(p.values()))))
    for n in p:
        torch.testing.assert_close(scores[n], (p[n] * grads[n]).abs().detach())


def test_magnitude_random_and_shapes(monkeypatch):
    monkeypatch.setattr(criteria.weights, "HUTCHINSON_PROBES", 8)
    model, x, y = _setup()
    params = _params(model)
    for name in WEIGHT_CRITERIA:
        scores = weight_scores(name, model, x, y, generator=torch.Generator().manual_seed(0))
        assert list(scores) == list(params), name
        for n, s in scores.items():
            assert s.shape == params[n].shape and s.dtype == F64, (name, n)
            assert torch.isfinite(s).all(), (name, n)
    for n, s in weight_scores("magnitude", model, x).items():
        assert torch.equal(s, params[n].abs())
    a = weight_scores("random", model, x, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # drawn parameter by parameter, in parameter order
    for n, p in params.items():
        assert torch.equal(a[n], torch.rand(p.shape, generator=g, dtype=p.dtype))
    # the default generator is seeded 0: a call without one is reproducible
    d = weight_scores("random", model, x)
    g = torch.Generator().manual_seed(0)
    assert all(torch.equal(d[n], torch.rand(p.shape, generator=g, dtype=p.dtype))
               for n, p in params.items())  # fmt: skip


def test_a_model_without_hidden_layers_is_scored():
    model = nn.Sequential(nn.Linear(3, 2).double())
    x = torch.randn(10, 3, dtype=F64)
    y = torch.randint(0, 2, (10,))
    for name in ["magnitude", "obd", "snip", "obs"]:
        assert weight_scores(name, model, x, y)["0.weight"].shape == (2, 3)


def test_errors():
    model, x, y = _setup()
    with pytest.raises(KeyError, match="choose from"):
        weight_scores("nope", model, x, y)
    for name in WEIGHT_LABELLED:
        with pytest.raises(ValueError, match="labels"):
            weight_scores(name, model, x)
    shared = nn.Linear(3, 3).double()
    with pytest.raises(ValueError, match="twice"):
        weight_scores("magnitude", nn.Sequential(shared, nn.ReLU(), shared), x)
    with pytest.raises(ValueError, match="shape"):
        weight_scores("obd", model, x[:, :2], y)
    with pytest.raises(ValueError, match="damping"):
        criteria.obs(model, x, y, damping=-1.0)


# --- convnets: the same criteria on the op view ------------------------------------------------


def _conv_setup(n=12, seed=0, batchnorm=True):
    """A small convnet with every op kind: padded and strided convs, eval-mode BatchNorm,
    tanh, max and average pools, Flatten, Linear (float64)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3) if batchnorm else nn.Identity(),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
        if batchnorm:
            bn = model[1]
            bn.running_mean.copy_(torch.tensor([-0.7, 0.4, -0.2], dtype=F64))
            bn.running_var.copy_(torch.rand(3, generator=g, dtype=F64) + 0.5)
    model.eval()
    x = torch.randn(n, 2, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=g)
    return model, x, y


CONV_WEIGHTS = ["0.weight", "4.weight", "8.weight", "10.weight"]


def test_snip_on_a_convnet_is_the_connection_sensitivity():
    model, x, y = _conv_setup()
    scores = weight_scores("snip", model, x, y)
    params = _params(model)
    assert list(scores) == list(params) and scores["4.weight"].shape == (4, 3, 3, 3)
    c = {n: torch.ones_like(p, requires_grad=True) for n, p in params.items()}
    loss = _loss(model, x, y)({n: c[n] * p for n, p in params.items()})
    grads = dict(zip(c, torch.autograd.grad(loss, list(c.values()))))
    total = sum(grads[n].abs().sum() for n in CONV_WEIGHTS)  # Linear and Conv2d weights only
    for n in params:  # BatchNorm's gamma and beta scored on the same scale
        torch.testing.assert_close(scores[n], grads[n].abs() / total)


def test_grasp_on_a_convnet_is_minus_theta_hg_by_forward_over_reverse():
    model, x, y = _conv_setup()
    params = _params(model)
    loss = _loss(model, x, y, criteria.GRASP_TEMPERATURE)
    g = torch.func.grad(loss)(params)
    Hg = torch.func.jvp(torch.func.grad(loss), (params,), (g,))[1]  # independent of grasp's
    S = {n: -p * Hg[n] for n, p in params.items()}
    total = sum(S[n].sum() for n in CONV_WEIGHTS).abs()
    got = weight_scores("grasp", model, x, y)
    for n in S:
        torch.testing.assert_close(got[n], -S[n] / total, rtol=1e-8, atol=1e-14)


def test_synflow_on_a_convnet_is_its_definition():
    model, x, _ = _conv_setup()
    mean = model[1].running_mean.clone()
    # the linearised net as the reference code builds it: |.| of the whole state dict, eval
    state = {n: t.detach().abs() for n, t in model.state_dict().items()}
    p = {n: state[n].clone().requires_grad_(True) for n, _ in model.named_parameters()}
    ones = torch.ones(1, 2, 8, 8, dtype=F64)
    R = torch.func.functional_call(model, {**state, **p}, (ones,)).sum()
    grads = dict(zip(p, torch.autograd.grad(R, list(p.values()))))
    got = weight_scores("synflow", model, x)
    for n in p:
        torch.testing.assert_close(got[n], (p[n] * grads[n]).abs().detach())
    assert torch.equal(model[1].running_mean, mean)  # negative entries, left as they are


def test_synflow_on_lenet5_is_conserved_layer_by_layer():
    model = models.lenet5(seed=0, dtype=F64)
    x = torch.zeros(1, 1, 28, 28, dtype=F64)
    R = torch.func.functional_call(
        model, {n: p.abs() for n, p in _params(model).items()}, (torch.ones_like(x),)
    ).sum()
    scores = weight_scores("synflow", model, x)
    layers = ["0", "3", "7", "9", "11"]
    for ell, name in enumerate(layers):  # max pools and padded convs keep the flow
        flow = scores[f"{name}.weight"].sum() + sum(scores[f"{m}.bias"].sum() for m in layers[ell:])
        assert flow.item() == pytest.approx(R.item(), rel=1e-10)


def test_magnitude_random_and_curvature_criteria_on_a_convnet(monkeypatch):
    monkeypatch.setattr(criteria.weights, "HUTCHINSON_PROBES", 2)
    model, x, y = _conv_setup()
    params = _params(model)
    for n, s in weight_scores("magnitude", model, x).items():
        assert torch.equal(s, params[n].abs())
    a = weight_scores("random", model, x, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # drawn parameter by parameter, in parameter order
    for n, p in params.items():
        torch.testing.assert_close(a[n], torch.rand(p.shape, generator=g, dtype=p.dtype))
    for name in sorted(set(WEIGHT_CRITERIA) - {"magnitude", "random", "snip", "grasp", "synflow"}):
        try:  # the curvature criteria: scores, or a refusal naming the missing piece
            scores = weight_scores(name, model, x, y, generator=torch.Generator().manual_seed(0))
        except ValueError as e:  # obs: its blocks cover Linear and Conv2d, not BatchNorm
            if "Linear and Conv2d layers only" in str(e):
                assert str(e).startswith(f"{name}: ") and "'1.weight'" in str(e), str(e)
                continue
            assert str(e).startswith(f"{name}: needs ") and "convnet" in str(e), str(e)
            assert "curvature" in str(e) or "hessian_blocks" in str(e), str(e)
        else:
            assert all(scores[n].shape == p.shape for n, p in params.items())


def test_convnet_errors():
    model, x, y = _conv_setup()
    with pytest.raises(ValueError, match=r"snip: x must have shape \[N, 2, H, W\]"):
        weight_scores("snip", model, x[:, :1], y)
    with pytest.raises(ValueError, match="labels"):
        weight_scores("grasp", model, x)
    model[1].train()
    with pytest.raises(ValueError, match="snip: .*training mode"):
        weight_scores("snip", model, x, y)
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    shared = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(128, 3).double())
    with pytest.raises(ValueError, match="magnitude: a Linear or Conv2d module appears twice"):
        weight_scores("magnitude", shared, x)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_obd_on_a_convnet_uses_the_exact_hessian_diagonal(batchnorm):
    model, x, y = _conv_setup(batchnorm=batchnorm)
    H, _, flat, sizes = _flat_hessian_and_grad(model, x, y)  # torch.func.hessian, tanh inside
    expected = _unflat(model, 0.5 * torch.diagonal(H) * flat**2, sizes)
    got = weight_scores("obd", model, x, y)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-8, atol=1e-13)


@pytest.mark.parametrize("max_block", [10_000, 40])
def test_obs_on_a_convnet_uses_the_damped_layer_block(max_block):
    model, x, y = _conv_setup(batchnorm=False)
    H, _, flat, sizes = _flat_hessian_and_grad(model, x, y)
    scores = criteria.obs(model, x, y, max_block=max_block)
    params, offset = _params(model), 0
    for name in ["0", "4", "8", "10"]:
        W, b = params[f"{name}.weight"], params[f"{name}.bias"]
        P, D = W.numel() + b.numel(), W[0].numel()  # a conv filter's row: [C_in k_h k_w]
        w_idx = torch.arange(offset, offset + W.numel()).reshape(W.shape[0], D)
        b_idx = torch.arange(offset + W.numel(), offset + P)
        if max_block >= P:  # the whole layer block, weights row-major then the bias
            blocks = [(torch.cat([w_idx.reshape(-1), b_idx]), None)]
        else:  # one block per output unit (filter): its weights and its bias
            blocks = [(torch.cat([w_idx[i], b_idx[i : i + 1]]), i) for i in range(W.shape[0])]
        expected_w, expected_b = torch.empty_like(W).reshape(-1, D), torch.empty_like(b)
        for index, i in blocks:
            s = obs_saliency(flat[index], damped_inverse(H[index][:, index], 1e-4))
            if i is None:
                expected_w, expected_b = s[: W.numel()].reshape(-1, D), s[W.numel() :]
            else:
                expected_w[i], expected_b[i] = s[:D], s[D]
        torch.testing.assert_close(scores[f"{name}.weight"], expected_w.reshape(W.shape))
        torch.testing.assert_close(scores[f"{name}.bias"], expected_b)
        offset += P
