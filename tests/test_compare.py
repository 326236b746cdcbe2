"""compare.py against independent computations: numpy statistics, surgery, brute-force loops."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import bounds, compare, data, models, surgery, train

F64 = torch.float64


def _data(n=80, d=3, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


# --- weights ---------------------------------------------------------------------------------


def test_unmoved_counts_only_entries_equal_to_machine_precision():
    before = torch.tensor([0.5, -0.25, 0.0, 1.0, 2.0])
    after = before.clone()
    after[1] += 1e-3  # moved
    after[3] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))  # one rounding step
    after[4] = 2.5
    assert compare.unmoved(before, after).tolist() == [True, False, True, True, False]
    assert compare.unmoved(before, after, rtol=0).tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError, match="same shape"):
        compare.unmoved(before, after[:3])
    with pytest.raises(ValueError, match="rtol"):
        compare.unmoved(before, after, rtol=-1.0)


def test_weight_shift_matches_a_loop_over_the_moved_entries():
    g = torch.Generator().manual_seed(1)
    before = torch.rand(7, 9, generator=g) - 0.5
    after = before + 0.3 * torch.randn(7, 9, generator=g)
    after[:2] = before[:2]  # two untouched rows, as a dead node's
    s = compare.weight_shift(before, after)
    moved = [
        abs(float(a) - float(b))
        for a, b in zip(after.flatten(), before.flatten())
        if float(a) != float(b)
    ]
    assert s.size == 63 and s.unmoved == 18 and len(moved) == 45
    assert s.mean == pytest.approx(np.mean(moved), rel=1e-12)
    assert s.median == pytest.approx(np.sort(moved)[(len(moved) - 1) // 2], rel=1e-12)
    still = compare.weight_shift(before, before.clone())
    assert still.unmoved == 63 and math.isnan(still.median)


def test_adam_never_moves_the_weights_of_a_dead_node():
    """The source's "weights training never moved": a node dead on all data gets zero gradients
    into and out of it, and Adam's step for a zero gradient is exactly zero."""
    split = data.load("spirals", seed=0, n_train=200, n_test=10)
    model = models.mlp((2, 8, 6, 2), seed=3)
    with torch.no_grad():
        model[0].weight[4] = 0.0
        model[0].bias[4] = -1.0  # node 4 of hidden layer 0: relu(-1) = 0 everywhere
    theta0 = [p.detach().clone() for p in model.parameters()]
    dead = compare.dead_nodes(model, split.train.x)[0]
    assert dead[4] and not dead.all()
    # a loop oracle for dead_nodes: relu(x w_j + b_j) == 0 at every point
    with torch.no_grad():
        loop = [all(float(model[0](p)[j]) <= 0 for p in split.train.x) for j in range(8)]
    assert dead.tolist() == loop
    train.fit(model, split.train, epochs=3, lr=0.01, seed=0, progress=False)
    W1_0, W1 = theta0[2], model[2].weight.detach()
    still = compare.unmoved(W1_0, W1)
    # the columns of the next matrix that read a dead (input-layer) node, and its own row
    assert still[:, dead].all() and not still[:, ~dead].all()
    assert compare.unmoved(theta0[0][dead], model[0].weight.detach()[dead]).all()
    assert compare.weight_shift(W1_0, W1).unmoved >= 6 * int(dead.sum())


def test_incident_died_and_a_restricted_shift():
    rows, cols = torch.tensor([True, False, False]), torch.tensor([False, False, True, False])
    mask = compare.incident(rows, cols)
    loop = [[bool(rows[i]) or bool(cols[j]) for j in range(4)] for i in range(3)]
    assert mask.tolist() == loop
    before = torch.zeros(3, 4) + 0.5
    after = before + torch.arange(12.0).reshape(3, 4) / 10
    s = compare.weight_shift(before, after, where=mask)
    picked = (after - before)[mask]
    assert s.size == 6 and s.unmoved == 1  # entry [0, 0] did not move
    assert s.mean == pytest.approx(picked[picked != 0].mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        compare.weight_shift(before, after, where=mask[:2])
    # a node that dies: alive at theta0, bias pushed far below zero afterwards
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    model = models.mlp((2, 4, 3, 2), seed=0)
    later = copy.deepcopy(model)
    with torch.no_grad():
        later[0].weight[1] = 0.0
        later[0].bias[1] = -5.0
    before_dead = compare.dead_nodes(model, x)[0]
    assert not before_dead[1]
    assert compare.died(model, later, x)[0].tolist() == [j == 1 for j in range(4)]
    with pytest.raises(ValueError, match="hidden sizes"):
        compare.died(model, models.mlp((2, 5, 3, 2), seed=0), x)


def test_coactive_marks_exactly_the_entries_with_a_nonzero_gradient():
    x, y = _data(n=40, d=3, classes=2, seed=4)
    model = models.mlp((3, 6, 5, 2), seed=2, dtype=F64)
    with torch.no_grad():
        model[0].bias[1] = -50.0  # dead node
    co = compare.coactive(model, x, 1)
    with torch.no_grad():
        a = torch.relu(model[0](x))
        z = model[2](a)
    loop = [
        [any(a[n, j] != 0 and z[n, i] > 0 for n in range(40)) for j in range(6)] for i in range(5)
    ]
    assert co.tolist() == loop
    assert not co[:, 1].any()
    # autograd: the per-example gradients of W^1 vanish exactly where the nodes never meet
    for n in range(40):
        model.zero_grad()
        F.cross_entropy(model(x[n : n + 1]), y[n : n + 1]).backward()
        assert (model[2].weight.grad[~co] == 0).all()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert (model[2].weight.grad[co] != 0).all()
    # the output layer has no gate: a column is marked iff its node is ever nonzero
    alive = (torch.relu(z) != 0).any(0)
    assert compare.coactive(model, x, 2).tolist() == [alive.tolist()] * 2
    with pytest.raises(ValueError, match="Linear index"):
        compare.coactive(model, x, 3)


def test_descendants_match_numpy_correlations():
    g = torch.Generator().manual_seed(2)
    origin = torch.rand(5, 6, generator=g, dtype=F64)
    a = origin + 0.2 * torch.randn(5, 6, generator=g, dtype=F64)
    b = origin + 0.5 * (a - origin) + 0.1 * torch.randn(5, 6, generator=g, dtype=F64)
    a[0, :3] = origin[0, :3]
    b[0, :3] = origin[0, :3]
    d = compare.descendants(origin, a, b)
    A, B, C = a.numpy().ravel(), b.numpy().ravel(), origin.numpy().ravel()
    assert d.correlation == pytest.approx(np.corrcoef(A, B)[0, 1], rel=1e-12)
    assert d.shift_correlation == pytest.approx(np.corrcoef(A - C, B - C)[0, 1], rel=1e-12)
    assert d.equal == 3 and d.a.unmoved == 3 and d.b.unmoved == 3
    assert math.isnan(compare.pearson(torch.ones(4), torch.arange(4.0)))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(1, 4))
def test_surviving_weights_equal_the_pruned_layer(seed, r0, r1):
    model = models.mlp((3, 6, 5, 2), seed=seed % 1000)
    g = torch.Generator().manual_seed(seed)
    remove = {
        0: torch.randperm(6, generator=g)[:r0].tolist(),
        1: torch.randperm(5, generator=g)[:r1].tolist(),
    }
    pruned = surgery.remove_nodes(model, remove, compensate="none")
    for layer in range(3):
        W = compare.surviving_weights(model, layer, remove)
        assert torch.equal(W, models.parse(pruned).layers[layer].weight.detach())
    kept = compare.kept_nodes(model, remove)
    assert kept[0].tolist() == sorted(set(range(6)) - set(remove[0]))
    assert compare.surviving_weights(model, 1, {}).shape == (5, 6)


def test_kept_nodes_and_surviving_weights_reject_bad_plans():
    model = models.mlp((3, 6, 5, 2), seed=0)
    with pytest.raises(ValueError, match="hidden layer 2 out of range"):
        compare.kept_nodes(model, {2: [0]})
    with pytest.raises(ValueError, match="0..5"):
        compare.kept_nodes(model, {0: [6]})
    with pytest.raises(ValueError, match="Linear index in 0..2"):
        compare.surviving_weights(model, 3, {})


# --- nodes and decisions --------------------------------------------------------------------


def test_activation_correlation_matches_numpy_and_marks_constant_nodes():
    x, _ = _data()
    a = models.mlp((3, 5, 4, 3), seed=0, dtype=F64)
    b = models.mlp((3, 5, 4, 3), seed=1, dtype=F64)
    with torch.no_grad():
        b[0].weight[2] = 0.0
        b[0].bias[2] = 0.7  # constant node: relu(0.7)
    corr = compare.activation_correlation(a, b, x)
    acts_a = [t.numpy() for t in models.parse(a).activations(x)]
    acts_b = [t.numpy() for t in models.parse(b).activations(x)]
    for ell in range(2):
        Ha, Hb = acts_a[ell].shape[1], acts_b[ell].shape[1]
        for j in range(Ha):
            for k in range(Hb):
                u, v = acts_a[ell][:, j], acts_b[ell][:, k]
                if u.min() == u.max() or v.min() == v.max():
                    assert math.isnan(corr[ell][j, k])
                else:
                    assert corr[ell][j, k].item() == pytest.approx(
                        np.corrcoef(u, v)[0, 1], abs=1e-12
                    )
    assert corr[0][:, 2].isnan().all()


def test_roles_of_a_net_with_itself_are_perfectly_matched():
    x, _ = _data()
    a = models.mlp((3, 5, 4, 3), seed=0, dtype=F64)
    b = models.mlp((3, 5, 4, 3), seed=7, dtype=F64)
    for r in compare.roles(a, a, x):
        live = ~r.matched.isnan()
        assert torch.allclose(r.matched[live], torch.ones(int(live.sum()), dtype=F64))
    cross = compare.activation_correlation(a, b, x)[1]
    off = cross[~torch.eye(4, dtype=torch.bool)]
    r = compare.roles(a, b, x)[1]
    assert r.unmatched == pytest.approx(off[~off.isnan()].mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="same number"):
        compare.roles(a, models.mlp((3, 5, 3), seed=0, dtype=F64), x)
    with pytest.raises(ValueError, match="matched with node j"):
        compare.roles(a, models.mlp((3, 6, 4, 3), seed=0, dtype=F64), x)


def test_agreement_is_one_with_itself_and_zero_with_the_swapped_classes():
    x, _ = _data(classes=2)
    a = models.mlp((3, 6, 2), seed=0, dtype=F64)
    swapped = models.mlp((3, 6, 2), seed=0, dtype=F64)
    with torch.no_grad():
        swapped[2].weight.copy_(a[2].weight.flip(0))
        swapped[2].bias.copy_(a[2].bias.flip(0))
    assert compare.agreement(a, a, x) == 1.0
    assert compare.agreement(a, swapped, x) == 0.0


# --- the certificate --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removal_certificate_telescopes_to_the_pruned_net(seed):
    x, y = _data(seed=seed)
    model = models.mlp((3, 7, 6, 3), seed=seed, dtype=F64)
    remove = {0: [1, 4, 5], 1: [0, 2]}
    c = compare.removal_certificate(model, x, y, remove)
    pruned = surgery.remove_nodes(model, remove, compensate="mean", x=x)
    with torch.no_grad():
        change = F.cross_entropy(pruned(x), y, reduction="none") - F.cross_entropy(
            model(x), y, reduction="none"
        )
    assert c.layers == [0, 1]
    assert c.total_observed == pytest.approx(change.abs().mean().item(), rel=1e-10)
    assert c.loss_change == pytest.approx(change.mean().item(), abs=1e-12)
    assert (c.bound >= c.observed).all() and c.total_bound >= c.total_observed
    assert c.total_bound == pytest.approx(c.bound.sum().item())
    assert c.total_observed <= c.observed.sum().item() + 1e-12  # triangle inequality
    # the first step is the plain single-layer certificate on the unpruned net
    assert c.bound[0].item() == pytest.approx(
        bounds.expected_bound(model, x, 0, [1, 4, 5]).item(), rel=1e-12
    )
    # the second is evaluated on the net with layer 0 already pruned
    half = surgery.remove_nodes(model, {0: [1, 4, 5]}, compensate="mean", x=x)
    assert c.bound[1].item() == pytest.approx(
        bounds.expected_bound(half, x, 1, [0, 2]).item(), rel=1e-12
    )
    assert (c.source > 0).all()


def test_removal_certificate_needs_a_node():
    x, y = _data()
    with pytest.raises(ValueError, match="nothing to certify"):
        compare.removal_certificate(models.mlp((3, 4, 3), seed=0, dtype=F64), x, y, {0: []})
