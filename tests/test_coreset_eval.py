"""Evaluation helpers of coreset pruning against loops, closed forms and the guarantee checks."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from prunelab.coreset_eval import (
    ball_inputs,
    bound_for_share,
    guaranteed_share,
    part_outputs,
    preserved_share,
    prune_weights_magnitude,
    scale_weight,
    scaled_critical,
    scaled_error,
    sipp_logit_bound,
    sipp_samples_for_keep,
    split_at,
)

from prunelab import coreset, guarantees, models

DTYPE = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(N: int = 200, C: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    f = 3 * torch.randn(N, C, generator=g, dtype=DTYPE)
    y = torch.where(
        torch.rand(N, generator=g) < 0.8, f.argmax(1), torch.randint(0, C, (N,), generator=g)
    )
    return f, y


def test_part_outputs_and_the_sipp_bound_match_a_loop():
    g = _gen(1)
    W = torch.randn(3, 6, generator=g, dtype=DTYPE)
    a = torch.rand(4, 6, generator=g, dtype=DTYPE)
    eps = torch.rand(2, 3, generator=g, dtype=DTYPE)
    z = part_outputs(W, a)
    B = sipp_logit_bound(W, a, eps)
    for n in range(4):
        for c in range(3):
            zp = sum(max(W[c, j].item(), 0) * a[n, j].item() for j in range(6))
            zm = sum(max(-W[c, j].item(), 0) * a[n, j].item() for j in range(6))
            assert z[0, n, c].item() == pytest.approx(zp) and z[1, n, c].item() == pytest.approx(zm)
            assert B[n, c].item() == pytest.approx(eps[0, c].item() * zp + eps[1, c].item() * zm)
    assert torch.allclose(z[0] - z[1], a @ W.T)
    assert torch.allclose(sipp_logit_bound(W, a, 0.3), 0.3 * z.sum(0))


def test_sipp_bound_holds_with_the_realised_per_part_errors():
    """Triangle inequality: |Delta_c| <= r+ z+ + r- z- with r the realised relative errors."""
    g = _gen(2)
    W = torch.randn(4, 30, generator=g, dtype=DTYPE)
    a = torch.rand(50, 30, generator=g, dtype=DTYPE)
    s = coreset.sensitivities(W, a)
    W_hat = coreset.sample_weights(W, s, 20, generator=g)
    z, z_hat = part_outputs(W, a), part_outputs(W_hat, a)  # (2, N, C)
    r = ((z_hat - z).abs() / z).amax(1)  # (2, C) worst relative error of each part on the batch
    delta = a @ (W_hat - W).T
    assert bool((delta.abs() <= sipp_logit_bound(W, a, r) * (1 + 1e-12)).all())
    assert not bool((delta.abs() <= sipp_logit_bound(W, a, 0.5 * r)).all())


@pytest.mark.parametrize("rule", guarantees.RULES)
def test_scaled_critical_is_the_threshold_of_the_consistency_check(rule):
    f, _ = _logits()
    scale = torch.rand(*f.shape, generator=_gen(3), dtype=DTYPE) + 0.1
    crit = scaled_critical(f, scale, rule=rule)
    assert bool(guarantees.consistent(f, crit[:, None] * scale * (1 - 1e-9), rule=rule).all())
    assert not bool(guarantees.consistent(f, crit[:, None] * scale * (1 + 1e-9), rule=rule).any())
    same = guarantees.critical_epsilon(f, kind="multiplicative", rule=rule)
    assert torch.allclose(scaled_critical(f, f.abs(), rule=rule), same)


def test_scaled_critical_edge_cases():
    f = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=DTYPE)
    crit = scaled_critical(f, torch.zeros_like(f))
    assert crit.tolist() == [math.inf, 0.0]
    with pytest.raises(ValueError, match="scale"):
        scaled_critical(f, -torch.ones_like(f))
    with pytest.raises(ValueError, match="rule"):
        scaled_critical(f, torch.ones_like(f), rule="max")


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_bound_for_share_guarantees_the_share_and_is_the_largest_such(share):
    f, y = _logits(seed=4)
    scale = torch.rand(*f.shape, generator=_gen(5), dtype=DTYPE) + 0.1
    crit = scaled_critical(f, scale)
    correct = f.argmax(1) == y
    e = bound_for_share(crit, correct, share)
    if share == 0:
        assert e == math.inf
        return
    n = int(correct.sum())
    below = guaranteed_share(f, y, e * (1 - 1e-9) * scale)
    above = guaranteed_share(f, y, e * (1 + 1e-9) * scale)
    assert below * n >= share * n - 1e-9
    assert above * n < share * n  # a larger bound loses the k-th example
    # the same number through guarantees.epsilon_for_fraction, as a share of the whole set
    acc = correct.double().mean().item()
    assert bound_for_share(guarantees.critical_epsilon(f), correct, share) == pytest.approx(
        guarantees.epsilon_for_fraction(f, y, share * acc)
    )


def test_guaranteed_and_preserved_shares_against_their_definitions():
    f, y = _logits(seed=6)
    E = 1.0
    acc = (f.argmax(1) == y).double().mean().item()
    assert guaranteed_share(f, y, E) == pytest.approx(
        guarantees.guaranteed_fraction(f, y, additive=E) / acc
    )
    f_hat = f + torch.randn(*f.shape, generator=_gen(7), dtype=DTYPE)
    kept = [
        f_hat[n].argmax().item() == y[n].item()
        for n in range(len(y))
        if f[n].argmax().item() == y[n].item()
    ]
    assert preserved_share(f, f_hat, y) == pytest.approx(sum(kept) / len(kept))
    # a perturbation within the guaranteed bound never loses a guaranteed label
    d = torch.rand(*f.shape, generator=_gen(8), dtype=DTYPE) * 2 - 1
    assert preserved_share(f, f + 0.999 * E * d, y) >= guaranteed_share(f, y, E)


def test_scaled_error_is_the_smallest_bound_that_holds():
    f, _ = _logits(seed=9)
    f_hat = f + 0.3 * torch.randn(*f.shape, generator=_gen(10), dtype=DTYPE)
    scale = torch.rand(*f.shape, generator=_gen(11), dtype=DTYPE) + 0.1
    e = scaled_error(f, f_hat, scale)
    delta = (f_hat - f).abs()
    assert bool((delta <= e[:, None] * scale * (1 + 1e-12)).all())
    assert not bool((delta <= e[:, None] * scale * (1 - 1e-9)).all(1).any())
    zero = scaled_error(f, f, torch.zeros_like(f))
    assert zero.eq(0).all()


def test_sipp_samples_for_keep_is_the_smallest_m_reaching_the_share():
    g = _gen(12)
    W = torch.randn(3, 40, generator=g, dtype=DTYPE)
    a = torch.rand(60, 40, generator=g, dtype=DTYPE)
    s = coreset.sensitivities(W, a)
    q = s / s.sum(-1, keepdim=True)
    target = 0.3 * (s > 0).sum(-1)
    m = sipp_samples_for_keep(s, 0.3)
    assert m.shape == (2, 3)
    assert bool((coreset.expected_unique(q, m) >= target).all())
    assert bool((coreset.expected_unique(q, m - 1) < target).all())
    with pytest.raises(ValueError, match="keep"):
        sipp_samples_for_keep(s, 1.0)


def test_ball_inputs_are_uniform_in_the_augmented_ball():
    beta, dim = 3.0, 5
    x = ball_inputs(4000, dim, beta, generator=_gen(13), dtype=DTYPE)
    norms = torch.sqrt((x**2).sum(1) + 1)
    assert bool((norms <= beta * (1 + 1e-12)).all())
    r = math.sqrt(beta**2 - 1)
    u = (x.norm(dim=1) / r) ** dim  # uniform on [0, 1] for a uniform point in the ball
    assert scipy.stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert x.mean(0).abs().max().item() < 4 * r / math.sqrt(4000)
    with pytest.raises(ValueError, match="beta"):
        ball_inputs(3, 2, 0.5, generator=_gen())


def test_split_at_recomposes_the_model_and_gives_the_layer_inputs():
    model = models.mlp((6, 5, 4, 3), dropout=0.5, seed=0, dtype=DTYPE).eval()
    x = torch.randn(7, 6, generator=_gen(14), dtype=DTYPE)
    body, head = split_at(model, 1)
    with torch.no_grad():
        assert torch.allclose(head(body(x)), model(x))
        assert torch.allclose(body(x), coreset.layer_inputs(model, 1, x))
    assert models.parse(head).hidden_sizes == [4]
    with pytest.raises(ValueError, match="layer"):
        split_at(model, 0)


def test_scale_weight_multiplies_only_the_weight():
    model = models.mlp((4, 6, 3), seed=1, dtype=DTYPE)
    x = torch.randn(5, 4, generator=_gen(15), dtype=DTYPE)
    scaled = scale_weight(model, -1, 2.5)
    a = coreset.layer_inputs(model, 1, x)
    W, b = model[2].weight.detach(), model[2].bias.detach()
    with torch.no_grad():
        assert torch.allclose(scaled(x), 2.5 * a @ W.T + b)
    assert torch.equal(model[2].weight, W)  # the input model is untouched


def test_magnitude_pruning_keeps_the_largest_weights():
    model = models.mlp((8, 6, 3), seed=2, dtype=DTYPE)
    before = model[2].weight.detach().clone()
    pruned = prune_weights_magnitude(model, -1, keep=7)
    W = pruned.model[2].weight.detach()
    assert int(pruned.kept.sum()) == 7 and int((W != 0).sum()) == 7
    assert before.abs()[pruned.kept].min() >= before.abs()[~pruned.kept].max()
    assert torch.equal(W[pruned.kept], before[pruned.kept])
    assert torch.equal(model[2].weight, before)
    assert torch.equal(pruned.model[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="keep"):
        prune_weights_magnitude(model, -1, keep=19)
