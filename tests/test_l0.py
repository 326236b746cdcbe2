"""Hard-concrete L0 gates: Monte-Carlo against the closed forms, exact physical removal, and
training that closes gates (METHODS.md C, Louizos et al. 2018)."""

from __future__ import annotations

import math

import pytest
import torch
from prunelab.l0 import BETA, GAMMA, ZETA, Gates
from torch import nn

from prunelab import l0, models

DTYPE = torch.float64


def test_monte_carlo_probability_of_a_closed_gate_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 0.7, 2.5], dtype=DTYPE)
    n = 100_000
    z = l0.sample_gates(log_alpha, n, generator=g)
    assert bool(((z >= 0) & (z <= 1)).all())
    p_zero = (z == 0).double().mean(0)
    expected = torch.sigmoid(BETA * math.log(-GAMMA / ZETA) - log_alpha)
    se = torch.sqrt(expected * (1 - expected) / n)
    assert bool(((p_zero - expected).abs() <= 3 * se).all())
    torch.testing.assert_close(l0.prob_nonzero(log_alpha), 1 - expected)


def test_sampled_gates_and_their_gradient_are_the_hard_concrete_formula():
    """z = clamp(sigmoid((log u - log(1-u) + log_alpha)/beta)(zeta - gamma) + gamma, 0, 1), and
    dz/dlog_alpha = s(1-s)(zeta - gamma)/beta where z is not clamped, 0 where it is; u drawn
    from the same generator, squeezed into (1e-6, 1 - 1e-6) as in the official code."""
    log_alpha = torch.tensor([-2.0, -0.3, 0.0, 0.8, 3.0], dtype=DTYPE, requires_grad=True)
    z = l0.sample_gates(log_alpha, 2000, generator=torch.Generator().manual_seed(1))
    u = torch.rand((2000, 5), generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    u = 1e-6 + (1 - 2e-6) * u
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha.detach()) / BETA)
    raw = s * (ZETA - GAMMA) + GAMMA
    torch.testing.assert_close(z.detach(), raw.clamp(0, 1), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(z.sum(), log_alpha)
    inside = (raw > 0) & (raw < 1)
    want = (s * (1 - s) * (ZETA - GAMMA) / BETA * inside).sum(0)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    assert bool(((raw <= 0) | (raw >= 1)).any())  # the clamped branch is exercised


def test_test_time_gate_formula():
    log_alpha = torch.tensor([-10.0, -2.5, -1.0, 0.0, 1.0, 2.5, 10.0], dtype=DTYPE)
    expected = [
        min(1.0, max(0.0, 1 / (1 + math.exp(-la)) * (ZETA - GAMMA) + GAMMA))
        for la in log_alpha.tolist()
    ]
    torch.testing.assert_close(l0.test_gates(log_alpha), torch.tensor(expected, dtype=DTYPE))
    z = l0.test_gates(log_alpha)
    assert z[0] == 0 and z[-1] == 1 and 0 < z[3] < 1


def test_log_alpha_initialisation():
    g = torch.Generator().manual_seed(2)
    la = l0.init_log_alpha(20_000, generator=g, dtype=DTYPE)
    assert abs(float(la.mean())) < 1e-3 and float(la.std()) == pytest.approx(0.01, rel=0.05)
    la2 = l0.init_log_alpha(20_000, generator=g, r=0.2, dtype=DTYPE)
    assert float(la2.mean()) == pytest.approx(math.log(4), abs=1e-3)
    with pytest.raises(ValueError, match="r"):
        l0.init_log_alpha(3, generator=g, r=1.0)


def test_physical_removal_reproduces_the_gated_model_exactly():
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 10),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(10, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    ).double()
    g = torch.Generator().manual_seed(3)
    la0 = 3 * torch.randn(10, generator=g, dtype=DTYPE)
    la1 = 3 * torch.randn(8, generator=g, dtype=DTYPE)
    la1[:2] = 4.6  # open at 1
    gates = Gates({0: la0, 1: la1})
    z = gates.test()
    assert 0 < int((z[0] == 0).sum()) < 10 and 0 < int((z[1] == 0).sum()) < 8  # some closed
    x = torch.randn(64, 2, 3, generator=g, dtype=DTYPE)
    before = [p.detach().clone() for p in model.parameters()]
    small = l0.prune(model, gates)
    assert models.parse(small).hidden_sizes == [int((z[0] > 0).sum()), int((z[1] > 0).sum())]
    assert sum(z_l.gt(0).sum() for z_l in z.values()) == gates.open()
    small.eval()
    expected = l0.gated_logits(model, gates, x)
    torch.testing.assert_close(small(x), expected, rtol=0, atol=1e-12)
    # the oracle: multiply the gates in by hand after each activation
    h = torch.relu(model[1](x.flatten(1))) * z[0]
    h = torch.tanh(model[4](h)) * z[1]
    torch.testing.assert_close(expected, model[6](h), rtol=0, atol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_prune_with_one_gated_layer_and_all_gates_closed():
    model = models.mlp((3, 5, 4, 2), seed=0).double()
    gates = Gates({1: torch.full((4,), -4.6, dtype=DTYPE)})  # every gate of layer 1 closed
    small = l0.prune(model, gates)
    assert models.parse(small).hidden_sizes == [5, 0]
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    torch.testing.assert_close(small(x), model[-1].bias.detach().expand(7, 2))
    with pytest.raises(ValueError, match="hidden layer 2"):
        l0.prune(model, Gates({2: torch.zeros(2)}))
    with pytest.raises(ValueError, match="has 5 nodes"):
        l0.prune(model, Gates({0: torch.zeros(4)}))


def test_penalty_closes_gates_on_a_toy_problem(blobs):
    results = {}
    for penalty in (0.0, 0.05):
        model = models.mlp((2, 16, 3), seed=0)
        gates, history = l0.fit_l0(
            model, blobs, penalty=penalty, epochs=30, lr=0.05, batch_size=40, progress=False
        )
        results[penalty] = (gates, history, model)
    open_free, open_paid = results[0.0][0].open(), results[0.05][0].open()
    assert open_free == 16 and open_paid < open_free
    hist = results[0.05][1]
    assert len(hist.loss) == 30 and hist.expected_l0[-1] < hist.expected_l0[0]
    assert hist.open[-1] == open_paid
    gates, _, model = results[0.05]
    la = gates.log_alpha[0]
    assert bool((la >= math.log(1e-2) - 1e-6).all()) and bool((la <= math.log(1e2) + 1e-6).all())
    # the pruned model is the gated model, with the closed nodes gone
    small = l0.prune(model, gates)
    torch.testing.assert_close(small(blobs.x), l0.gated_logits(model, gates, blobs.x))
    assert models.parse(small).hidden_sizes == [open_paid]


def test_fit_l0_is_reproducible_and_leaves_the_global_rng(blobs):
    runs = []
    for _ in range(2):
        model = models.mlp((2, 8, 8, 3), dropout=0.2, seed=1)
        state = torch.get_rng_state()
        gates, history = l0.fit_l0(
            model, blobs, penalty=0.01, epochs=2, layers=[1], seed=3, progress=False
        )
        assert torch.equal(state, torch.get_rng_state())
        runs.append((gates.log_alpha[1], history.loss, model[0].weight.detach().clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][2], runs[1][2])
    with pytest.raises(ValueError, match="layers must be"):
        l0.fit_l0(models.mlp((2, 4, 3)), blobs, penalty=0.1, layers=[1], progress=False)
    with pytest.raises(ValueError, match="penalty"):
        l0.fit_l0(models.mlp((2, 4, 3)), blobs, penalty=-1.0, progress=False)


def test_gate_lr_sets_the_gates_learning_rate_only(blobs):
    def run(**kwargs):
        model = models.mlp((2, 8, 3), seed=0)
        gates, _ = l0.fit_l0(model, blobs, penalty=0.05, epochs=3, seed=2, progress=False, **kwargs)
        return gates.log_alpha[0], model[0].weight.detach()

    la, w = run(lr=0.01)
    la_same, w_same = run(lr=0.01, gate_lr=0.01)
    assert torch.equal(la, la_same) and torch.equal(w, w_same)  # None means lr, bitwise
    la_fast, w_fast = run(lr=0.01, gate_lr=0.1)
    start = run(lr=1e-30, gate_lr=1e-30)[0]  # the initial log alpha (no step moves it)
    # Adam's first steps move each entry by about its learning rate, so ten times the rate
    # moves the gates roughly ten times as far
    assert (la_fast - start).abs().mean() > 4 * (la - start).abs().mean()
    assert not torch.equal(w_fast, w)  # weights see other gates, but their rate is lr
    with pytest.raises(ValueError, match="gate_lr must be > 0"):
        l0.fit_l0(models.mlp((2, 4, 3)), blobs, penalty=0.1, gate_lr=0.0, progress=False)
