"""sweep: batched pruned-model evaluation against surgery, masked training against physical
pruning, and the comparison statistics against scipy and closed forms."""

from collections import Counter

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import data, ensemble, models, surgery, sweep, train

F64 = torch.float64


def _plans(sizes, M, seed):
    """M random removal plans keeping at least one node per layer (some layers untouched)."""
    g = torch.Generator().manual_seed(seed)
    plans = []
    for _ in range(M):
        plan = {}
        for ell, H in enumerate(sizes):
            k = int(torch.randint(0, H, (1,), generator=g))
            if k:
                plan[ell] = torch.randperm(H, generator=g)[:k].tolist()
        plans.append(plan)
    return plans


@settings(max_examples=6, deadline=None)
@given(
    activation=st.sampled_from(["relu", "leaky_relu", "tanh", "gelu"]),
    depth=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_removal_logits_equal_surgery_for_both_compensations(activation, depth, seed):
    sizes = [5, 4, 6][:depth]
    model = models.mlp([3, *sizes, 4], activation=activation, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x, x_ref = (
        torch.randn(17, 3, generator=g, dtype=F64),
        torch.randn(11, 3, generator=g, dtype=F64),
    )
    plans = _plans(sizes, 6, seed)
    masks = sweep.plan_masks(plans, sizes, dtype=F64)
    for compensate in ("none", "mean"):
        f = sweep.removal_logits(model, x, masks, compensate=compensate, x_ref=x_ref)
        for i, plan in enumerate(plans):
            pruned = surgery.remove_nodes(model, plan, compensate=compensate, x=x_ref)
            torch.testing.assert_close(f[i], pruned(x), rtol=1e-10, atol=1e-12)
    # a tiny chunk budget forces one mask per chunk: chunking must not change anything
    one = sweep.removal_logits(model, x, masks, compensate="mean", x_ref=x_ref, chunk_bytes=1)
    torch.testing.assert_close(one, f, rtol=1e-12, atol=1e-13)


def test_plan_masks_zero_exactly_the_planned_nodes():
    masks = sweep.plan_masks([{0: [1], 1: [0, 2]}, {}], [3, 4])
    assert masks.tolist() == [[1, 0, 1, 0, 1, 0, 1], [1] * 7]
    with pytest.raises(ValueError, match="hidden layer 2"):
        sweep.plan_masks([{2: [0]}], [3, 4])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        sweep.plan_masks([{0: [3]}], [3, 4])


def test_removal_metrics_equal_evaluate_on_the_pruned_models(blobs):
    model = models.mlp([2, 8, 6, 3], seed=1)
    train.fit(model, blobs, epochs=3, lr=0.02, seed=0, progress=False)
    plans = _plans([8, 6], 5, 3)
    masks = sweep.plan_masks(plans, [8, 6])
    ref = blobs.x[:40]
    for compensate in ("none", "mean"):
        loss, acc, majority = sweep.removal_metrics(
            model, blobs, masks, compensate=compensate, x_ref=ref
        )
        for i, plan in enumerate(plans):
            pruned = surgery.remove_nodes(model, plan, compensate=compensate, x=ref)
            m = train.evaluate(pruned, blobs)
            assert loss[i].item() == pytest.approx(m["loss"], rel=1e-5)
            assert acc[i].item() == pytest.approx(m["accuracy"], abs=1e-6)
            top = Counter(train.predict(pruned, blobs.x).argmax(1).tolist()).most_common(1)
            assert majority[i].item() == pytest.approx(top[0][1] / len(blobs), abs=1e-6)


@given(st.lists(st.lists(st.integers(0, 3), min_size=5, max_size=5), min_size=1, max_size=4))
def test_majority_share_counts_the_most_common_class(rows):
    shares = sweep.majority_share(torch.tensor(rows), 4)
    for row, share in zip(rows, shares, strict=True):
        assert share.item() == Counter(row).most_common(1)[0][1] / 5


def test_removal_logits_errors():
    model = models.mlp([2, 3, 2], seed=0)
    x, masks = torch.randn(4, 2), torch.ones(1, 3)
    with pytest.raises(ValueError, match="compensate='half'"):
        sweep.removal_logits(model, x, masks, compensate="half")
    with pytest.raises(ValueError, match="x_ref"):
        sweep.removal_logits(model, x, masks, compensate="mean")
    with pytest.raises(ValueError, match="x_ref must be"):
        sweep.removal_logits(model, x, masks, compensate="mean", x_ref=torch.randn(4, 3))


@pytest.mark.parametrize("compensate", ["none", "mean"])
def test_masked_equivalent_evaluates_and_trains_like_the_pruned_model(compensate, blobs):
    model = models.mlp([2, 7, 5, 3], seed=2, dtype=F64)
    plan = {0: [0, 3, 4], 1: [2]}
    x = blobs.x.double()
    pruned = surgery.remove_nodes(model, plan, compensate=compensate, x=x)
    copy, mask = sweep.masked_equivalent(model, plan, compensate=compensate, x=x)
    assert mask.tolist() == [0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1]
    blobs64 = data.Dataset(x, blobs.y, "blobs", 3)
    before = train.evaluate(copy, blobs64, node_masks=mask)
    assert before["loss"] == pytest.approx(train.evaluate(pruned, blobs64)["loss"], rel=1e-12)
    # fine-tune both: the physically pruned net alone, the masked copy in a stacked fit_many
    train.fit(pruned, blobs64, epochs=3, lr=0.01, batch_size=16, seed=5, progress=False)
    other = models.mlp([2, 7, 5, 3], seed=9, dtype=F64)  # a second model in the same stack
    ensemble.fit_many(
        [copy, other],
        blobs64,
        seeds=[5, 6],
        epochs=3,
        lr=0.01,
        batch_size=16,
        node_masks=torch.stack([mask, torch.ones(12, dtype=F64)]),
        progress=False,
    )
    shrunk = surgery.remove_nodes(copy, plan, compensate="none")  # masked nodes: delete them
    for a, b in zip(shrunk.parameters(), pruned.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # the removed nodes' own weights never moved
    kept_rows = copy[0].weight[[0, 3, 4]]
    torch.testing.assert_close(kept_rows, model[0].weight[[0, 3, 4]], rtol=0, atol=0)


def test_masked_equivalent_errors():
    model = models.mlp([2, 3, 2], seed=0)
    with pytest.raises(ValueError, match="needs data x"):
        sweep.masked_equivalent(model, {0: [1]}, compensate="mean")
    with pytest.raises(ValueError, match="compensate='zero'"):
        sweep.masked_equivalent(model, {0: [1]}, compensate="zero")


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 4), min_size=2, max_size=8),
    descending=st.booleans(),
)
def test_ranks_match_scipy_average_ranks(values, descending):
    v = torch.tensor(values, dtype=F64)
    expected = scipy.stats.rankdata(-np.array(values) if descending else values, method="average")
    assert sweep.ranks(v, descending=descending).tolist() == pytest.approx(expected.tolist())
    # along another dim of a 2-D tensor: each column ranked on its own
    two = torch.stack([v, -v], 1)  # [K, 2]
    r = sweep.ranks(two, dim=0, descending=descending)
    assert r[:, 0].tolist() == pytest.approx(expected.tolist())


def test_curve_area_is_the_mean_height():
    f = [0.1, 0.3, 0.5, 0.9]
    line = torch.tensor([[2 + 3 * v for v in f]])  # a straight line: trapezoid is exact
    assert sweep.curve_area(line, f).item() == pytest.approx(2 + 3 * 0.5)
    assert sweep.curve_area(torch.full((2, 3, 4), 0.7), f).shape == (2, 3)
    assert sweep.curve_area(torch.tensor([[0.4]]), [0.5]).item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="fractions must increase"):
        sweep.curve_area(torch.zeros(2), [0.5, 0.2])
    with pytest.raises(ValueError, match="3 points but there are 2"):
        sweep.curve_area(torch.zeros(3), [0.2, 0.5])


def test_compare_pairs_by_seed_and_ranks():
    g = torch.Generator().manual_seed(0)
    fractions = [0.2, 0.5, 0.8]
    seed_effect = torch.randn(1, 5, 1, generator=g)  # shared by every criterion of a seed
    base = 0.6 + 0.1 * seed_effect + 0.01 * torch.randn(3, 5, 3, generator=g)
    values = base.clone()
    values[1] += 0.05  # criterion 1 is better than criterion 0 everywhere
    values[2] -= 0.2  # criterion 2 is worst everywhere
    c = sweep.compare(values, fractions, baseline=0)
    assert c.delta_mean[0].item() == 0 and c.delta_half[0].item() == 0
    # pairing removes the seed effect: the paired interval is far narrower than the unpaired
    assert c.delta_half[1] < 0.2 * c.area_half[1]
    assert c.delta_mean[1] - c.delta_half[1] > 0 and c.delta_mean[2] + c.delta_half[2] < 0
    assert c.rank_mean.tolist() == pytest.approx([2.0, 1.0, 3.0])
    assert c.rank_half.tolist() == pytest.approx([0.0, 0.0, 0.0])
    # every seed's area: the trapezoid rule over 3 equally spaced fractions
    expected = (values[..., 0] + 2 * values[..., 1] + values[..., 2]) / 4
    torch.testing.assert_close(c.area, expected.double())
    lower = sweep.compare(-values, fractions, baseline=0, higher_is_better=False)
    assert lower.rank_mean.tolist() == pytest.approx([2.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="baseline 3"):
        sweep.compare(values, fractions, baseline=3)
    with pytest.raises(ValueError, match=r"\[K, S, F\]"):
        sweep.compare(values[0], fractions, baseline=0)


def test_majority_share_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"lie in \[0, 3\); got range \[0, 3\]"):
        sweep.majority_share(torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="integer class predictions"):
        sweep.majority_share(torch.tensor([0.0, 1.0]), 3)
    assert sweep.majority_share(torch.tensor([2, 2, 1], dtype=torch.int32), 3).item() == 2 / 3


# --- convnets: removal with mean compensation on the op engine -------------------------------


def _held_oracle(view, plan, x_ref, x):
    """Hold the removed units at their means, layer by layer in the network held so far."""
    from prunelab import ops

    edit, means = {}, {}
    for ell, R in sorted(plan.items()):
        _, taps = ops.forward(view, x_ref, edit=edit, taps=True, training=False)
        means[ell] = taps[ell][:, R].transpose(0, 1).reshape(len(R), -1).mean(1)

        def hold(a, ell=ell, R=R):
            a = a.clone()
            a[:, R] = means[ell].view(-1, *[1] * (a.dim() - 2))
            return a

        edit[ell] = hold
    return ops.forward(view, x, edit=edit, training=False)


@pytest.mark.parametrize("kind", ["lenet5_max", "lenet5_avg_tanh", "vgg11_bn"])
@pytest.mark.parametrize("fold", [True, False])
def test_convnet_mean_removal_holds_units_at_their_sequential_means(kind, fold):
    from prunelab import ops
    from prunelab.engines import masks as engine
    from prunelab.engines import masks_conv

    F64 = torch.float64
    if kind == "vgg11_bn":  # padded 3x3 convs: the held channels' effect depends on the position
        model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=F64)
        shape = (3, 16, 16)
        model.train()
        with torch.no_grad():
            model(torch.randn(16, *shape, dtype=F64))
    else:
        pool, act = ("max", "relu") if kind == "lenet5_max" else ("avg", "tanh")
        model, shape = models.lenet5(pool=pool, activation=act, seed=0, dtype=F64), (1, 28, 28)
    model.eval()
    view = ops.parse(model)
    g = torch.Generator().manual_seed(0)
    x_ref = torch.randn(9, *shape, generator=g, dtype=F64)
    x = torch.randn(5, *shape, generator=g, dtype=F64)
    plans = [{0: [1, 3], 1: [0, 2, 5]}, {1: [1]}, {0: [0], 2: [4, 5, 6], 3: [0, 1, 2]}, {}]
    masks = sweep.plan_masks(plans, view.hidden_sizes, dtype=F64)
    if fold:
        f = sweep.removal_logits(model, x, masks, compensate="mean", x_ref=x_ref)
    else:  # the first layer's units repeated per mask instead of the folded reader
        _, both, m = engine.conv_inputs(model, torch.cat([x_ref, x]), masks, method="test")
        p = masks_conv.plan(view, both, nonneg=True, ref=9, shared_bytes=0)
        assert p.P is None
        f = masks_conv.held(p, m)
    for i, plan in enumerate(plans):
        plan = {ell: torch.tensor(R) for ell, R in plan.items()}
        torch.testing.assert_close(f[i], _held_oracle(view, plan, x_ref, x), atol=1e-12, rtol=0)
    none = sweep.removal_logits(model, x, masks, compensate="none")
    with torch.no_grad():
        torch.testing.assert_close(none[-1], model(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["lenet5_max", "vgg11_bn"])
def test_convnet_masked_equivalent_acts_as_the_mean_compensated_pruned_model(kind):
    from prunelab import ops, train

    F64 = torch.float64
    if kind == "vgg11_bn":
        model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=F64)
        shape = (3, 16, 16)
    else:
        model, shape = models.lenet5(seed=0, dtype=F64), (1, 28, 28)
    model.eval()
    view = ops.parse(model)
    g = torch.Generator().manual_seed(0)
    x_ref = torch.randn(9, *shape, generator=g, dtype=F64)
    x = torch.randn(5, *shape, generator=g, dtype=F64)
    plan = {0: [1, 3], 1: [0, 2, 5], 2: [4]}
    copy_, mask = sweep.masked_equivalent(model, plan, compensate="mean", x=x_ref)
    scales = dict(enumerate(mask.split(view.hidden_sizes)))
    with torch.no_grad():
        f = ops.forward(ops.parse(copy_), x, scales=scales, training=False)
    expect = _held_oracle(view, {k: torch.tensor(v) for k, v in plan.items()}, x_ref, x)
    torch.testing.assert_close(f, expect, atol=1e-12, rtol=0)
    assert train.predict(copy_, x).shape == (5, 10)
