"""Label-consistency guarantees and logit error metrics against brute force (METHODS.md A6)."""

from __future__ import annotations

import copy

import pytest
import torch
from prunelab.guarantees import (
    centre,
    consistent,
    critical_epsilon,
    epsilon_for_fraction,
    guaranteed,
    guaranteed_fraction,
    logit_bound,
    logit_errors,
    top_two,
)

from prunelab import models

DTYPE = torch.float64


def _logits(N: int = 500, C: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(N, C, generator=g, dtype=DTYPE)


def test_top_two_gap():
    f = torch.tensor([[1.0, 3.0, 2.5], [0.0, -1.0, -1.0]], dtype=DTYPE)
    t, gap = top_two(f)
    assert t.tolist() == [1, 0]
    torch.testing.assert_close(gap, torch.tensor([0.5, 1.0], dtype=DTYPE))


def test_no_label_flips_below_half_the_gap_and_the_rule_is_tight():
    f = _logits()
    t, gap = top_two(f)
    g = torch.Generator().manual_seed(1)
    radius = (0.999 * gap / 2).unsqueeze(1)  # ||Delta||_inf slightly below gap/2
    for _ in range(200):
        delta = (2 * torch.rand(f.shape, generator=g, dtype=DTYPE) - 1) * radius
        assert torch.equal((f + delta).argmax(1), t)
    assert bool(consistent(f, radius).all())
    # adversarial: top logit down, runner-up up, by 0.999 vs 1.001 of gap/2
    second = f.topk(2, dim=1).indices[:, 1]
    for factor, flips in ((0.999, False), (1.001, True)):
        delta = torch.zeros_like(f)
        rows = torch.arange(len(f))
        delta[rows, t] = -factor * gap / 2
        delta[rows, second] = factor * gap / 2
        assert bool(((f + delta).argmax(1) != t).all()) == flips
        assert bool(consistent(f, factor * gap.unsqueeze(1) / 2).any()) != flips


def test_pairwise_rule_is_sharper_and_still_sound():
    f = _logits(seed=2)
    t, _ = top_two(f)
    g = torch.Generator().manual_seed(3)
    B = torch.rand(f.shape, generator=g, dtype=DTYPE) * 2  # per-logit bounds
    half, pair = consistent(f, B), consistent(f, B, rule="pairwise")
    assert bool((pair | ~half).all())  # half-gap safe => pairwise safe
    assert int(pair.sum()) > int(half.sum())
    # brute force: the worst perturbation puts the top down by B_t and every rival up by B_c
    rows = torch.arange(len(f))
    worst = f + B
    worst[rows, t] = f[rows, t] - B[rows, t]
    rivals = worst.clone()
    rivals[rows, t] = -torch.inf
    assert torch.equal(pair, worst[rows, t] > rivals.amax(1))


def test_guaranteed_fraction_matches_a_loop_for_both_kinds():
    f = _logits(200, 4, seed=4)
    y = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(5))
    y[:120] = f[:120].argmax(1)  # mostly correct
    E, eps = 0.4, 0.08
    count_add = count_mul = 0
    for n in range(200):
        row = f[n].tolist()
        order = sorted(range(4), key=lambda c: -row[c])
        t, gap = order[0], row[order[0]] - row[order[1]]
        correct = int(y[n]) == t
        count_add += correct and gap / 2 > E
        count_mul += correct and eps * max(abs(v) for v in row) < gap / 2
    assert guaranteed_fraction(f, y, additive=E) == pytest.approx(count_add / 200)
    assert guaranteed_fraction(f, y, multiplicative=eps) == pytest.approx(count_mul / 200)
    assert torch.equal(
        guaranteed(f, y, multiplicative=eps),
        (f.argmax(1) == y) & consistent(f, logit_bound(f, multiplicative=eps)),
    )


@pytest.mark.parametrize("rule", ["half_gap", "pairwise"])
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_critical_epsilon_is_the_threshold(kind, rule):
    f = _logits(300, 5, seed=6)
    crit = critical_epsilon(f, kind=kind, rule=rule)
    if kind == "multiplicative" and rule == "half_gap":
        _, gap = top_two(f)
        torch.testing.assert_close(crit, gap / (2 * f.abs().amax(1)))
    below = logit_bound(f, **{kind: crit * (1 - 1e-9)})  # one bound per example, [N]
    above = logit_bound(f, **{kind: (crit * (1 + 1e-9)).unsqueeze(1)})  # or [N, 1]
    assert bool(consistent(f, below, rule=rule).all())
    assert not bool(consistent(f, above, rule=rule).any())


def test_epsilon_for_fraction_guarantees_the_fraction():
    f = _logits(400, 10, seed=7)
    y = f.argmax(1).clone()
    y[:100] = (y[:100] + 1) % 10  # accuracy 0.75
    for kind in ("additive", "multiplicative"):
        e = epsilon_for_fraction(f, y, 0.5, kind=kind)
        assert guaranteed_fraction(f, y, **{kind: e * (1 - 1e-9)}) >= 0.5
        assert guaranteed_fraction(f, y, **{kind: e}) < 0.5
    assert epsilon_for_fraction(f, y, 0.0) == float("inf")
    with pytest.raises(ValueError, match="exceeds the accuracy"):
        epsilon_for_fraction(f, y, 0.8)


def _scaled_final_layer(model, alpha: float = 1.0, shift: float = 0.0):
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[-1].weight.mul_(alpha)
        out[-1].bias.mul_(alpha).add_(shift)
    return out


def test_multiplicative_guarantees_are_invariant_to_scaling_the_final_layer():
    model = models.mlp((4, 16, 5), seed=0).double()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(300, 4, generator=g, dtype=DTYPE)
    f = model(x).detach()
    y = f.argmax(1)
    f_a = _scaled_final_layer(model, 7.5)(x).detach()
    torch.testing.assert_close(critical_epsilon(f_a), critical_epsilon(f))
    torch.testing.assert_close(
        critical_epsilon(f_a, rule="pairwise"), critical_epsilon(f, rule="pairwise")
    )
    assert guaranteed_fraction(f_a, y, multiplicative=0.05) == guaranteed_fraction(
        f, y, multiplicative=0.05
    )
    torch.testing.assert_close(
        critical_epsilon(f_a, kind="additive"), 7.5 * critical_epsilon(f, kind="additive")
    )


def test_shifting_every_final_bias_moves_only_the_raw_error():
    model = models.mlp((4, 16, 5), seed=1).double()
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(9), dtype=DTYPE)
    f = model(x).detach()
    c = -0.83
    f_c = _scaled_final_layer(model, shift=c)(x).detach()
    err = logit_errors(f, f_c)
    torch.testing.assert_close(err.raw, torch.full((200,), abs(c), dtype=DTYPE))
    assert float(err.centred.abs().max()) < 1e-12 and float(err.shift.abs().max()) < 1e-12
    assert torch.equal(f_c.argmax(1), f.argmax(1))
    # a perturbed (pruned-like) model: centred and shift errors do not see the shift
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned[0].weight.mul_(torch.rand(16, 4, generator=torch.Generator().manual_seed(10)) > 0.3)
    f_hat = pruned(x).detach()
    e1 = logit_errors(f, f_hat)
    e2 = logit_errors(f, f_hat + c)
    torch.testing.assert_close(e2.centred, e1.centred)
    torch.testing.assert_close(e2.shift, e1.shift)
    assert bool(((e2.raw - e1.raw).abs() <= abs(c) + 1e-12).all())
    assert torch.equal((f_hat + c).argmax(1), f_hat.argmax(1))


def test_centred_and_shift_errors_against_their_definitions():
    g = torch.Generator().manual_seed(11)
    f = torch.randn(50, 7, generator=g, dtype=DTYPE)
    f_hat = f + torch.randn(50, 7, generator=g, dtype=DTYPE)
    delta = f_hat - f
    P = torch.eye(7, dtype=DTYPE) - torch.ones(7, 7, dtype=DTYPE) / 7
    err = logit_errors(f, f_hat)
    torch.testing.assert_close(err.centred, (delta @ P.T).norm(dim=1))
    torch.testing.assert_close(centre(delta), delta @ P.T)
    shifts = torch.linspace(-5, 5, 20001, dtype=DTYPE)  # brute-force best constant shift
    best = (delta[:, :, None] - shifts).abs().amax(1).amin(1)
    assert bool((err.shift <= best + 1e-12).all()) and bool((best - err.shift < 1e-3).all())
    torch.testing.assert_close(err.raw, delta.abs().amax(1))
    torch.testing.assert_close(err.relative, (delta / f).abs().amax(1))


def test_errors_name_the_argument():
    f = _logits(10, 3)
    with pytest.raises(ValueError, match="rule 'max'"):
        consistent(f, 0.1, rule="max")
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        top_two(torch.zeros(5))
    with pytest.raises(ValueError, match="additive"):
        logit_bound(f, additive=-1.0)
    with pytest.raises(ValueError, match="kind 'relative'"):
        critical_epsilon(f, kind="relative")
