"""Coreset pruning against the oracles of METHODS.md A: closed forms, brute-force loops and
Monte-Carlo checks (means within 3 standard errors, failure rates at most delta)."""

from __future__ import annotations

import math

import pytest
import torch
from prunelab.coreset import (
    compounded_error,
    deterministic_bound,
    expected_unique,
    implied_epsilon,
    layer_epsilons,
    mussay_probabilities,
    mussay_scale,
    relative_importance,
    sample_counts,
    sample_size,
    sample_until_distinct,
    sample_weights,
    samples_for_size,
    sensitivities,
    top_sensitivity,
)
from torch import nn

from prunelab import coreset, models

DTYPE = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(H_out: int, H_in: int, N: int, seed: int, *, positive: bool = False):
    """Random weights [H_out, H_in] (signed, or positive) and positive inputs [N, H_in]."""
    g = _gen(seed)
    W = torch.randn(H_out, H_in, generator=g, dtype=DTYPE)
    a = torch.rand(N, H_in, generator=g, dtype=DTYPE) + 0.05
    return (W.abs() if positive else W), a


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- sensitivities ---------------------------------------------------------------------------


def test_relative_importance_matches_loop_and_sums_to_one():
    W, a = _layer(3, 5, 4, 0)
    a[1, 2] = -0.7  # a negative input: a+ and a- become separate samples
    g = relative_importance(W, a)
    assert g.shape == (2, 8, 3, 5)
    a2 = torch.cat((a.clamp(min=0), (-a).clamp(min=0)))
    expected = torch.zeros(2, 8, 3, 5, dtype=DTYPE)
    for part, Wp in enumerate((W.clamp(min=0).tolist(), (-W).clamp(min=0).tolist())):
        for n, x in enumerate(a2.tolist()):
            for i in range(3):
                den = sum(Wp[i][k] * x[k] for k in range(5))
                for j in range(5):
                    expected[part, n, i, j] = Wp[i][j] * x[j] / den if den > 0 else 0.0
    torch.testing.assert_close(g, expected, rtol=1e-14, atol=1e-14)
    active = g.sum(-1) > 0
    torch.testing.assert_close(g.sum(-1)[active], torch.ones_like(g.sum(-1)[active]))
    assert bool(((g >= 0) & (g <= 1)).all())


def test_sensitivities_are_the_chunked_max_over_the_batch(monkeypatch):
    W, a = _layer(4, 6, 50, 1)
    expected = relative_importance(W, a).amax(1)
    monkeypatch.setattr(coreset.sensitivity, "_CHUNK_ELEMENTS", 100)  # forces many chunks
    s = sensitivities(W, a)
    torch.testing.assert_close(s, expected, rtol=0, atol=0)
    S, size = s.sum(-1), (coreset.split_signs(W) > 0).sum(-1)  # (2, H_out): per part
    assert bool((S[size > 0] >= 1 - 1e-12).all()) and bool((size >= S).all())  # 1 <= S <= |W|
    assert bool((S[size == 0] == 0).all())


def test_sensitivity_q_and_m_are_invariant_to_scaling_weights_and_inputs():
    W, a = _layer(5, 8, 20, 2)
    s = sensitivities(W, a)
    s2 = sensitivities(3.7 * W, 0.2 * a)
    torch.testing.assert_close(s2, s)
    q, q2 = s / s.sum(-1, keepdim=True), s2 / s2.sum(-1, keepdim=True)
    torch.testing.assert_close(q2, q)
    assert torch.equal(sample_size(0.2, 0.1, s.sum(-1)), sample_size(0.2, 0.1, s2.sum(-1)))


def test_pfp_neuron_sensitivity_is_the_max_over_parts_and_next_neurons():
    W_next, a = _layer(4, 7, 30, 3)
    s = coreset.neuron_sensitivities(W_next, a)
    g = relative_importance(W_next, a)  # (2, N, H_next, H)
    torch.testing.assert_close(s, g.amax(dim=(0, 1, 2)))


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["indices", "binomial_chain"])
def test_sample_counts_sum_to_m_and_have_mean_mq(direct, monkeypatch):
    if not direct:
        monkeypatch.setattr(coreset.sampling, "_DIRECT_DRAWS", 0)
    g = _gen(4)
    q = torch.softmax(torch.randn(7, generator=g, dtype=DTYPE), 0)
    R, m = 20_000, 13
    n = sample_counts(q.expand(R, 7), m, generator=g)
    assert bool((n.sum(1) == m).all())
    mean, se = n.double().mean(0), n.double().std(0) / math.sqrt(R)
    assert bool(((mean - m * q).abs() <= 3 * se).all())
    big = sample_counts(q, 10**9, generator=g)  # binomial chain: exact for huge m
    assert int(big.sum()) == 10**9
    zero_q = torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=DTYPE)
    n = sample_counts(zero_q.expand(100, 4), torch.arange(100), generator=g)
    assert int(n[:, [0, 2]].sum()) == 0 and torch.equal(n.sum(1), torch.arange(100))


def test_sample_weights_is_unbiased_within_three_standard_errors():
    W, a = _layer(1, 8, 30, 5)  # one neuron with signed weights
    R = 10_000  # the neuron repeated: rows are independent draws
    s = sensitivities(W, a).expand(2, R, 8)
    W_hat = sample_weights(W.expand(R, 8), s, 12, generator=_gen(6))
    mean, se = W_hat.mean(0), W_hat.std(0) / math.sqrt(R)
    assert bool(((mean - W[0]).abs() <= 3 * se + 1e-12).all())
    assert bool(((W_hat != 0) & (W_hat.sign() != W.sign())).sum() == 0)  # signs never flip
    assert int((W_hat != 0).sum(1).max()) <= 2 * 12  # at most m per part


def test_sample_weights_drops_weights_with_zero_sensitivity():
    W, a = _layer(2, 5, 10, 7, positive=True)
    a[:, 3] = 0.0  # input 3 never fires on S
    s = sensitivities(W, a)
    W_hat = sample_weights(W, s, 1000, generator=_gen(0))
    assert bool((W_hat[:, 3] == 0).all())


def _bernstein_failure_rate(eps: float, delta: float, R: int, seed: int) -> tuple[float, int]:
    W, a = _layer(1, 12, 40, seed, positive=True)
    s = sensitivities(W, a)
    S = float(s[0].sum())
    m = sample_size(eps, delta, S)
    W_hat = sample_weights(W.expand(R, 12), s.expand(2, R, 12), m, generator=_gen(seed + 1))
    x = a[:5]  # fixed points of S
    z, z_hat = x @ W.T, x @ W_hat.T  # (5, 1), (5, R)
    fail = (z_hat / z - 1).abs() >= eps
    return float(fail.double().mean(1).max()), m


@pytest.mark.parametrize(
    ("eps", "delta", "seed"), [(0.3, 0.1, 8), (0.1, 0.1, 9), (0.05, 0.05, 10), (0.2, 0.01, 11)]
)
def test_bernstein_failure_rate_is_at_most_delta(eps, delta, seed):
    rate, m = _bernstein_failure_rate(eps, delta, 2_000, seed)  # 2,000 repeats, m = m_B
    assert m > 1 and rate <= delta


def test_deterministic_sipp_bound_is_exact_on_S():
    # positive weights and inputs: z - z_hat = z * sum_{dropped} g_j(x) <= R z, exactly on S
    W, a = _layer(6, 10, 25, 12, positive=True)
    s = sensitivities(W, a)
    kept = top_sensitivity(s, 4)
    assert bool((kept.sum(1) == 4).all())
    z, z_hat = a @ W.T, a @ (W * kept).T
    g = relative_importance(W, a)[0]  # (N, H_out, H_in)
    torch.testing.assert_close(z - z_hat, z * (g * ~kept).sum(-1), rtol=1e-12, atol=1e-12)
    R = (s[0] * ~kept).sum(-1)
    torch.testing.assert_close(deterministic_bound(W, s, kept, a), R * z)
    assert bool((z - z_hat <= R * z + 1e-12).all())


def test_deterministic_bound_holds_on_S_for_signed_weights_and_inputs():
    g = _gen(13)
    W = torch.randn(5, 9, generator=g, dtype=DTYPE)
    a = torch.randn(30, 9, generator=g, dtype=DTYPE)
    s = sensitivities(W, a)
    kept = top_sensitivity(s, torch.tensor([0, 2, 4, 6, 9]))
    err = (a @ W.T - a @ (W * kept).T).abs()
    bound = deterministic_bound(W, s, kept, a)
    assert bool((err <= bound + 1e-12).all())
    assert bool((bound[:, 4] == 0).all())  # everything kept: no error


def test_expected_unique_matches_monte_carlo_and_U_is_at_most_min_m_n():
    g = _gen(14)
    p = torch.softmax(2 * torch.randn(15, generator=g, dtype=DTYPE), 0)
    R = 20_000
    for m in (1, 5, 15, 60):
        U = (sample_counts(p.expand(R, 15), m, generator=g) > 0).sum(1).double()
        assert int(U.max()) <= min(m, 15)
        se = U.std() / math.sqrt(R)
        assert abs(U.mean() - expected_unique(p, m)) <= 3 * se + 1e-12


def test_samples_for_size_is_the_smallest_m_reaching_k():
    g = _gen(15)
    p = torch.softmax(torch.randn(3, 30, generator=g, dtype=DTYPE), 1)
    k = torch.tensor([1, 12, 29])
    m = samples_for_size(p, k)
    assert bool((expected_unique(p, m) >= k).all())
    assert bool((expected_unique(p, m - 1) < k).all())
    assert int(samples_for_size(p[0], 0)) == 0
    with pytest.raises(ValueError, match="k must be in"):
        samples_for_size(p[0], 30)  # E[U] only tends to n


def test_sample_until_distinct_stops_at_k_distinct():
    g = _gen(16)
    q = torch.softmax(torch.randn(40, generator=g, dtype=DTYPE), 0)
    for k in (1, 10, 40):
        counts, m = sample_until_distinct(q, k, generator=g)
        assert int((counts > 0).sum()) == k and int(counts.sum()) == m >= k


# --- sample sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "constants", "formula"),
    [
        ("bernstein", {}, lambda e, d, S: S * (6 + 2 * e) * math.log(2 / d) / (3 * e**2)),
        ("hoeffding", {}, lambda e, d, S: math.log(2 / d) / (2 * e**2)),
        ("hoeffding_signed", {}, lambda e, d, S: 2 * math.log(2 / d) / e**2),
        (
            "corenet",
            {"K": 2.0, "eta": 400},
            lambda e, d, S: 8 * S * 2.0 * math.log(8 * 400 / d) / e**2,
        ),
        (
            "sipp",
            {"K": 2.0, "eta": 400, "c": 8.0},
            lambda e, d, S: (6 + 2 * e) * S * 2.0 * math.log(8 * 400 / d) / e**2,
        ),
        (
            "torchprune",
            {},
            lambda e, d, S: 3 * (6 + 2 * e) * (2 * 3 * math.log(8 * 2 * 1 / d)) * S / e**2,
        ),
    ],
)
def test_sample_size_closed_forms_and_the_epsilon_round_trip(bound, constants, formula):
    for eps, delta, S in [(0.1, 0.1, 5.0), (0.5, 1e-3, 1.0), (0.03, 0.2, 37.5)]:
        m = sample_size(eps, delta, S, bound=bound, **constants)
        assert m == math.ceil(formula(eps, delta, S))
        # exact inverse of the unrounded formula
        m_real = formula(eps, delta, S)
        e = implied_epsilon(m_real, delta, S, bound=bound, **constants)
        assert e == pytest.approx(eps, rel=1e-12)
        # rounding up m can only tighten eps, and the tighter eps maps back to the same m
        e_m = implied_epsilon(m, delta, S, bound=bound, **constants)
        assert e_m <= eps
        assert sample_size(e_m, delta, S, bound=bound, **constants) == m


def test_bernstein_inverse_is_the_published_closed_form_and_union_divides_delta():
    S, delta, m = 4.0, 0.05, 1234
    A = S * math.log(2 / delta) / 3
    assert implied_epsilon(m, delta, S) == pytest.approx((A + math.sqrt(A * A + 6 * A * m)) / m)
    assert sample_size(0.1, 0.1, bound="hoeffding", union=10) == sample_size(
        0.1, 0.01, bound="hoeffding"
    )
    S_t = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    m_t = sample_size(0.2, 0.1, S_t)
    assert m_t.dtype == torch.int64 and m_t.shape == (2, 2) and int(m_t[0, 0]) == 0
    assert implied_epsilon(0, 0.1, 2.0) == math.inf


def test_sample_size_errors_name_the_argument_and_choices():
    with pytest.raises(KeyError, match="bernstein"):
        sample_size(0.1, 0.1, 1.0, bound="chernoff")
    with pytest.raises(ValueError, match="delta"):
        sample_size(0.1, 1.5, 1.0)
    with pytest.raises(ValueError, match="eps"):
        sample_size(0.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="sensitivity"):
        sample_size(0.1, 0.1)
    with pytest.raises(ValueError, match=r"constants \['K', 'eta'\]"):
        sample_size(0.1, 0.1, 1.0, bound="corenet", K=1.0)


# --- Mussay et al. -----------------------------------------------------------------------------


def _mussay_layer(seed: int, *, positive_next: bool = False):
    g = _gen(seed)
    W = torch.randn(12, 5, generator=g, dtype=DTYPE)
    b = torch.randn(12, generator=g, dtype=DTYPE)
    W_next = torch.randn(4, 12, generator=g, dtype=DTYPE)
    return W, b, (W_next.abs() if positive_next else W_next)


def test_mussay_probabilities_formula_and_beta_invariance_for_relu():
    W, b, W_next = _mussay_layer(17)
    P = mussay_probabilities(W, b, W_next, 2.0)
    norms = torch.cat((W, b[:, None]), 1).norm(dim=1)
    expected = W_next.abs().amax(0) * 2.0 * norms
    torch.testing.assert_close(P, expected / expected.sum())
    torch.testing.assert_close(mussay_probabilities(W, b, W_next, 37.0), P)
    Ps = mussay_probabilities(W, b, W_next, 2.0, activation="sigmoid")
    assert not torch.allclose(mussay_probabilities(W, b, W_next, 0.1, activation="sigmoid"), Ps)


def test_mussay_bound_is_linear_in_beta_and_alpha_with_probabilities_invariant():
    W, b, W_next = _mussay_layer(18)
    F = mussay_scale(W, b, W_next, 1.5)
    assert mussay_scale(W, b, W_next, 3.0) == pytest.approx(2 * F)
    assert mussay_scale(W, b, 2.5 * W_next, 1.5) == pytest.approx(2.5 * F)
    P = mussay_probabilities(W, b, W_next, 1.5)
    torch.testing.assert_close(mussay_probabilities(W, b, 2.5 * W_next, 1.5), P)


def _ball_points(n: int, d: int, beta: float, g: torch.Generator) -> torch.Tensor:
    """n inputs a: [n, d] with ||[a; 1]|| <= beta, spread over the ball."""
    direction = torch.randn(n, d, generator=g, dtype=DTYPE)
    direction = direction / direction.norm(dim=1, keepdim=True)
    radius = math.sqrt(beta**2 - 1) * torch.rand(n, 1, generator=g, dtype=DTYPE) ** (1 / d)
    return direction * radius


@pytest.mark.parametrize("positive_next", [True, False])
def test_mussay_hoeffding_violation_rate_is_at_most_delta(positive_next):
    W, b, W_next = _mussay_layer(19, positive_next=positive_next)
    beta, eps, delta, R = 2.0, 0.15, 0.1, 2_000
    name = coreset.mussay_bound_name(W_next, "relu")
    assert name == ("hoeffding" if positive_next else "hoeffding_signed")
    m = sample_size(eps, delta, bound=name, union=W_next.shape[0])
    P = mussay_probabilities(W, b, W_next, beta)
    F = mussay_scale(W, b, W_next, beta)
    g = _gen(20)
    a = _ball_points(5, 5, beta, g)  # 5 fixed inputs in the ball
    h = torch.relu(a @ W.T + b)  # (5, H)
    exact = h @ W_next.T  # (5, H_next)
    n = sample_counts(P.expand(R, 12), m, generator=g).double()  # (R, H)
    estimate = torch.einsum("nh,rh,ih->rni", h, n / (m * P), W_next)  # (R, 5, H_next)
    unbiased_mean = estimate.mean(0)
    assert bool(((unbiased_mean - exact).abs() <= 3 * estimate.std(0) / math.sqrt(R) + 1e-12).all())
    violated = ((estimate - exact).abs() > eps * F).any(-1)  # any next neuron: union bound
    assert float(violated.double().mean(0).max()) <= delta


def test_prune_neurons_mussay_builds_a_smaller_model_with_the_bias_from_the_last_column():
    model = models.mlp((5, 12, 4, 3), seed=0).double()
    before = _params(model)
    pruned = coreset.prune_neurons_mussay(model, 0, beta=3.0, size=6, generator=_gen(21))
    assert all(torch.equal(p, q) for p, q in zip(before, _params(model)))  # input untouched
    new = models.parse(pruned.model)
    assert new.hidden_sizes == [6, 4] and int(pruned.kept.sum()) == 6
    W, b = model[0].weight.detach(), model[0].bias.detach()
    torch.testing.assert_close(new.layers[0].weight.detach(), W[pruned.kept])
    torch.testing.assert_close(new.layers[0].bias.detach(), b[pruned.kept], rtol=0, atol=0)
    # column 1 of the point matrix [W, b] (the official code's slip) is a weight, not the bias
    assert not torch.allclose(new.layers[0].bias.detach(), W[pruned.kept][:, 1])


def test_prune_neurons_reweights_the_next_layer_as_the_estimator_says():
    model = models.mlp((5, 12, 3), seed=1).double()
    x = torch.randn(20, 5, generator=_gen(22), dtype=DTYPE)
    P = mussay_probabilities(
        model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach(), 3.0
    )
    pruned = coreset.prune_neurons(model, 0, P, samples=40, generator=_gen(23))
    n = sample_counts(P, 40, generator=_gen(23)).double()  # the same draws
    h = torch.relu(model[0](x))
    expected = (h * n / (40 * P)) @ model[2].weight.detach().T + model[2].bias.detach()
    torch.testing.assert_close(pruned.model(x), expected)
    assert int(pruned.samples) == 40 and torch.equal(pruned.kept, n > 0)


def test_prune_neurons_mussay_epsilon_first_uses_the_hoeffding_sample_size():
    model = models.mlp((5, 30, 4), seed=2).double()
    pruned = coreset.prune_neurons_mussay(model, 0, beta=2.0, eps=0.5, delta=0.1, generator=_gen(0))
    assert int(pruned.samples) == sample_size(0.5, 0.1, bound="hoeffding_signed", union=4)
    assert models.parse(pruned.model).hidden_sizes == [int(pruned.kept.sum())]
    with pytest.raises(ValueError, match="supports"):
        coreset.prune_neurons_mussay(
            models.mlp((5, 8, 2), activation="gelu"), 0, beta=2.0, size=3, generator=_gen(0)
        )
    with pytest.raises(ValueError, match="exactly one"):
        coreset.prune_neurons_mussay(model, 0, beta=2.0, size=3, samples=5, generator=_gen(0))
    with pytest.raises(ValueError, match=r"hidden layer index in \[0, 1\)"):
        coreset.prune_neurons_mussay(model, 1, beta=2.0, size=3, generator=_gen(0))


def test_prune_neurons_pfp_keeps_the_requested_number():
    model = models.mlp((4, 20, 10, 3), seed=3).double()
    x = torch.randn(64, 4, generator=_gen(24), dtype=DTYPE)
    pruned = coreset.prune_neurons_pfp(model, 1, x, size=7, generator=_gen(25))
    assert models.parse(pruned.model).hidden_sizes == [20, 7]
    eps_first = coreset.prune_neurons_pfp(model, 0, x, eps=0.5, delta=0.1, generator=_gen(25))
    s = coreset.neuron_sensitivities(model[2].weight.detach(), coreset.layer_inputs(model, 1, x))
    assert int(eps_first.samples) == sample_size(0.5, 0.1, float(s.sum()))


# --- weight pruning of whole models --------------------------------------------------------------


def test_prune_weights_sipp_samples_each_part_and_leaves_the_model_untouched():
    model = models.mlp((4, 16, 3), seed=4).double()
    before = _params(model)
    x = torch.randn(100, 4, generator=_gen(26), dtype=DTYPE)
    pruned = coreset.prune_weights_sipp(model, -1, x, eps=0.5, delta=0.1, generator=_gen(27))
    assert all(torch.equal(p, q) for p, q in zip(before, _params(model)))
    W = model[2].weight.detach()
    s = sensitivities(W, coreset.layer_inputs(model, 1, x))
    assert torch.equal(pruned.samples, sample_size(0.5, 0.1, s.sum(-1)))
    W_hat = pruned.model[2].weight.detach()
    assert torch.equal(pruned.kept, W_hat != 0)
    assert bool(((W_hat != 0) & (W_hat.sign() != W.sign())).sum() == 0)
    torch.testing.assert_close(pruned.model[2].bias, model[2].bias)
    torch.testing.assert_close(pruned.model[0].weight, model[0].weight)


def test_prune_weights_topk_error_obeys_the_bound_on_S():
    model = models.mlp((4, 16, 8, 3), seed=5).double()
    x = torch.randn(80, 4, generator=_gen(28), dtype=DTYPE)
    pruned = coreset.prune_weights_topk(model, 1, x, keep=5)
    a = coreset.layer_inputs(model, 1, x)
    W = model[2].weight.detach()
    s = sensitivities(W, a)
    err = (pruned.model[2](a) - model[2](a)).abs().detach()
    assert bool((err <= deterministic_bound(W, s, pruned.kept, a) + 1e-12).all())
    assert pruned.samples is None and bool((pruned.kept.sum(1) == 5).all())


# --- composition -----------------------------------------------------------------------------


def test_two_positive_layers_compound_relative_errors():
    g = _gen(29)
    W1 = torch.rand(6, 4, generator=g, dtype=DTYPE)
    W2 = torch.rand(3, 6, generator=g, dtype=DTYPE)
    x = torch.rand(50, 4, generator=g, dtype=DTYPE)
    e = 0.07
    f = torch.relu(x @ W1.T) @ W2.T
    bound = compounded_error([e, e])
    assert bound == pytest.approx((1 + e) ** 2 - 1)
    worst = 0.0
    for _ in range(50):  # per-layer relative error <= e: entrywise factors in [1 - e, 1 + e]
        U1 = 1 + e * (2 * torch.rand(W1.shape, generator=g, dtype=DTYPE) - 1)
        U2 = 1 + e * (2 * torch.rand(W2.shape, generator=g, dtype=DTYPE) - 1)
        f_hat = torch.relu(x @ (W1 * U1).T) @ (W2 * U2).T
        worst = max(worst, float((f_hat / f - 1).abs().max()))
    assert worst <= bound
    f_max = torch.relu(x @ ((1 + e) * W1).T) @ ((1 + e) * W2).T  # attained at the extreme
    torch.testing.assert_close(f_max / f - 1, torch.full_like(f, bound))
    assert bound <= 2 * 2 * e  # (1 + e')^(L-1) - 1 <= 2 (L-1) e' when (L-1) e' <= 1


def test_layer_epsilons_and_cancellation():
    eps = layer_epsilons(0.1, [2.0, 3.0, 1.5])
    assert eps == pytest.approx([0.1 / 6 / 9.0, 0.1 / 6 / 4.5, 0.1 / 6 / 1.5])
    W, a = _layer(3, 5, 10, 30, positive=True)
    torch.testing.assert_close(coreset.cancellation(W, a), torch.ones(10, 3, dtype=DTYPE))
    W_signed, _ = _layer(3, 5, 10, 31)
    D = coreset.cancellation(W_signed, a)
    assert bool((D >= 1 - 1e-12).all())
    lam = math.log(100 * 40) / 2
    k = math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * 100 * 40 / 0.1))
    assert coreset.kappa(0.1, 100, 40) == pytest.approx(k)
    assert coreset.delta_hat(D, k) == pytest.approx(float(D.mean(0).max()) + k)
