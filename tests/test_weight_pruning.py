"""Weight masks, strip, the sparsity sweep and OBS pruning against torch.nn.utils.prune and
explicit computations (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.surgery import obs_prune, prune_weights, sparsity_sweep, strip
from torch import nn
from torch.nn.utils import prune

from prunelab import criteria, data, ensemble, hessian_blocks, models, ops, train

F64 = torch.float64


def _setup(widths=(5, 9, 7, 4), seed=0, n=60, dropout=0.0):
    model = models.mlp(widths, seed=seed, dtype=F64, dropout=dropout)
    g = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    return model, x, y


def _magnitude(model):
    return {n: p.detach().abs() for n, p in model.named_parameters()}


def _pruned(masks):
    return sum(int((m == 0).sum()) for m in masks.values())


def torch_prune_curve(model, levels, x, y, scope):
    """The plain loop: copy, prune by L1 magnitude with torch.nn.utils.prune, evaluate."""
    loss, acc = [], []
    for level in levels:
        m = copy.deepcopy(model).eval()
        linears = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Linear | nn.Conv2d)]
        if scope == "global":
            prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=level)
        else:
            for module, name in linears:
                prune.l1_unstructured(module, name, amount=level)
        with torch.no_grad():
            f = m(x)
        loss.append(F.cross_entropy(f, y).item())
        acc.append((f.argmax(1) == y).double().mean().item())
    return torch.tensor(loss, dtype=F64), torch.tensor(acc, dtype=F64)


# --- prune_weights: exact counts, lowest scores, nesting -----------------------------------


@settings(max_examples=40, deadline=None)
@given(
    sparsity=st.floats(0, 1),
    scope=st.sampled_from(["global", "layer"]),
    biases=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_prune_weights_prunes_exactly_the_lowest(sparsity, scope, biases, seed):
    model, _, _ = _setup(seed=seed % 5)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g, dtype=F64) for n, p in model.named_parameters()}
    masks = prune_weights(model, scores, sparsity, scope=scope, biases=biases)
    names = [n for n, _ in model.named_parameters() if biases or n.endswith("weight")]
    assert list(masks) == names
    if scope == "global":
        total = sum(scores[n].numel() for n in names)
        assert _pruned(masks) == round(sparsity * total)
        groups = [names]
    else:
        for n in names:
            assert int((masks[n] == 0).sum()) == round(sparsity * scores[n].numel())
        groups = [[n] for n in names]
    for group in groups:  # every pruned score is below every kept one
        pruned = torch.cat([scores[n][masks[n] == 0] for n in group])
        kept = torch.cat([scores[n][masks[n] == 1] for n in group])
        if len(pruned) and len(kept):
            assert pruned.max() < kept.min()


def test_prune_weights_counts_like_torch_prune_and_breaks_ties_by_index():
    model, _, _ = _setup()
    scores = {n: torch.zeros_like(p) for n, p in model.named_parameters()}  # all tied
    masks = prune_weights(model, scores, 0.25, scope="layer")
    for m in masks.values():
        k = round(0.25 * m.numel())
        assert (m.reshape(-1)[:k] == 0).all() and (m.reshape(-1)[k:] == 1).all()
    # the count equals torch.nn.utils.prune's for the same amount (half to even rounding)
    ref = copy.deepcopy(model)
    prune.global_unstructured(
        [(mod, "weight") for mod in ref if isinstance(mod, nn.Linear)],
        pruning_method=prune.L1Unstructured,
        amount=0.3,
    )
    got = prune_weights(model, _magnitude(model), 0.3)
    for mod, name in zip([m for m in ref if isinstance(m, nn.Linear)], ["0", "2", "4"]):
        assert torch.equal(got[f"{name}.weight"], mod.weight_mask)


@settings(max_examples=15, deadline=None)
@given(
    levels=st.lists(st.floats(0, 1), min_size=2, max_size=4).map(sorted),
    scope=st.sampled_from(["global", "layer"]),
    seed=st.integers(0, 1000),
)
def test_iterative_rounds_nest(levels, scope, seed):
    model, _, _ = _setup()
    g = torch.Generator().manual_seed(seed)
    masks = None
    for level in levels:  # fresh scores each round, as after fine-tuning
        scores = {
            n: torch.rand(p.shape, generator=g, dtype=F64) for n, p in model.named_parameters()
        }
        new = prune_weights(model, scores, level, scope=scope, masks=masks)
        if masks is not None:
            assert all(((new[n] == 1) <= (masks[n] == 1)).all() for n in new)  # nested
        if scope == "global":
            assert _pruned(new) == round(level * sum(m.numel() for m in new.values()))
        masks = new


def test_masks_stay_in_force_through_fit_and_fit_many():
    split = data.load("circle", seed=0, n_train=200, n_test=50)
    model = models.mlp((2, 8, 6, 2), seed=1)
    train.fit(model, split.train, epochs=5, batch_size=50, progress=False)
    masks = prune_weights(model, _magnitude(model), 0.6)
    train.fit(model, split.train, epochs=5, batch_size=50, weight_masks=masks, progress=False)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert (params[n][m == 0] == 0).all() and (params[n][m == 1] != 0).all()
    second = prune_weights(model, _magnitude(model), 0.8, masks=masks)  # round two nests
    assert all(((second[n] == 1) <= (masks[n] == 1)).all() for n in masks)
    nets = [copy.deepcopy(model) for _ in range(2)]
    stacked = {n: torch.stack([masks[n], second[n]]) for n in masks}  # per-model masks
    ensemble.fit_many(
        nets,
        split.train,
        seeds=[0, 1],
        epochs=2,
        batch_size=50,
        weight_masks=stacked,
        progress=False,
    )
    for k, net in enumerate(nets):
        for n, p in net.named_parameters():
            if n in stacked:
                assert (p[stacked[n][k] == 0] == 0).all()


# --- strip ------------------------------------------------------------------------------


def test_strip_equals_the_masked_model_and_leaves_nothing_behind():
    model, x, y = _setup(dropout=0.2)
    model.train()
    masks = prune_weights(model, _magnitude(model), 0.5, biases=True)
    plain = strip(model, masks)
    masked = {n: p.detach() * masks[n] for n, p in model.named_parameters()}
    model.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), torch.func.functional_call(model, masked, (x,)))
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert not list(plain.buffers())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in plain.modules())
    assert isinstance(plain[2], nn.Dropout) and plain[2].p == 0.2
    # a model pruned with torch.nn.utils.prune: the re-parametrisation is folded in
    ref = copy.deepcopy(model)
    prune.l1_unstructured(ref[0], "weight", amount=0.4)
    out = strip(ref)
    assert [n for n, _ in out.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert torch.equal(out[0].weight, ref[0].weight) and hasattr(ref[0], "weight_orig")
    assert all(not m._forward_pre_hooks for m in out.modules())


# --- sparsity_sweep --------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("net", ["mlp", "lenet5"])
def test_sweep_equals_the_torch_prune_loop(scope, net):
    if net == "mlp":
        (model, x, y), levels = _setup(widths=(6, 12, 8, 5), n=200), [i / 40 for i in range(41)]
    else:
        (model, x, y), levels = _lenet(n=60), [i / 20 for i in range(21)]
    sweep = sparsity_sweep(model, _magnitude(model), levels, x, y, scope=scope)
    loss, acc = torch_prune_curve(model, levels, x, y, scope)
    torch.testing.assert_close(sweep.loss, loss, rtol=1e-10, atol=1e-12)
    assert torch.equal(sweep.accuracy, acc)
    total = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    if scope == "global":
        assert sweep.pruned.tolist() == [round(s * total) for s in levels]


@settings(max_examples=12, deadline=None)
@given(
    levels=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    scope=st.sampled_from(["global", "layer"]),
    biases=st.booleans(),
    chunk=st.sampled_from([1, 2**12, 2**28]),
    seed=st.integers(0, 1000),
)
def test_sweep_equals_prune_weights_then_evaluate(levels, scope, biases, chunk, seed):
    model, x, y = _setup(seed=seed % 3)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.randn(p.shape, generator=g, dtype=F64) for n, p in model.named_parameters()}
    sweep = sparsity_sweep(
        model, scores, levels, x, y, scope=scope, biases=biases, chunk_bytes=chunk
    )
    for i, level in enumerate(levels):  # any order, duplicates, any chunking
        masks = prune_weights(model, scores, level, scope=scope, biases=biases)
        with torch.no_grad():
            f = strip(model, masks).eval()(x)
        assert sweep.loss[i].item() == pytest.approx(F.cross_entropy(f, y).item(), rel=1e-10)
        top2 = f.topk(2, 1).values
        ties = int((top2[:, 0] - top2[:, 1] < 1e-9).sum())  # e.g. all-pruned rows: equal logits
        accuracy = (f.argmax(1) == y).double().mean().item()
        assert abs(sweep.accuracy[i].item() - accuracy) <= ties / len(y) + 1e-15
        assert sweep.pruned[i].item() == _pruned(masks)
        removed = sum(scores[n][m == 0].sum() for n, m in masks.items())
        assert sweep.removed_score[i].item() == pytest.approx(float(removed), abs=1e-9)


def test_sweep_of_a_model_without_hidden_layers_and_float32():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x = torch.randn(50, 2, 3)
    y = torch.randint(0, 3, (50,))
    levels = [0.0, 0.5, 1.0]
    sweep = sparsity_sweep(model, _magnitude(model), levels, x, y)
    loss, acc = torch_prune_curve(model, levels, x, y, "global")
    torch.testing.assert_close(sweep.loss, loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(sweep.accuracy, acc)


def test_errors_name_the_argument():
    model, x, y = _setup()
    scores = _magnitude(model)
    with pytest.raises(ValueError, match="sparsity"):
        prune_weights(model, scores, 1.5)
    with pytest.raises(ValueError, match="scope"):
        prune_weights(model, scores, 0.5, scope="row")
    with pytest.raises(KeyError, match="'2.weight'"):
        prune_weights(model, {"0.weight": scores["0.weight"]}, 0.5)
    with pytest.raises(ValueError, match="shaped like"):
        prune_weights(model, {**scores, "0.weight": scores["0.weight"].T}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        prune_weights(model, {**scores, "0.weight": scores["0.weight"] * torch.nan}, 0.5)
    masks = prune_weights(model, scores, 0.5)
    with pytest.raises(ValueError, match="already prune"):
        prune_weights(model, scores, 0.2, masks=masks)
    with pytest.raises(ValueError, match="levels"):
        sparsity_sweep(model, scores, [0.1, 2.0], x, y)
    with pytest.raises(ValueError, match="class labels"):
        sparsity_sweep(model, scores, [0.1], x, y + 10)


# --- OBS pruning ------------------------------------------------------------------------


@pytest.mark.parametrize("max_block", [10_000, 10])
def test_obs_prune_is_the_constrained_minimum_of_each_block(max_block):
    split = data.load("circle", seed=0, n_train=300, n_test=10)
    model = models.mlp((2, 8, 6, 2), seed=3, dtype=F64)
    train.fit(model, split.train, epochs=40, lr=0.05, batch_size=None, progress=False)
    x, y = split.train.x.to(F64), split.train.y
    masks = prune_weights(model, criteria.weight_scores("obs", model, x, y), 0.3)
    new = obs_prune(model, x, y, masks, max_block=max_block)
    old_p, new_p = dict(model.named_parameters()), dict(new.named_parameters())
    for k, name in enumerate(["0", "2", "4"]):
        W, b = old_p[f"{name}.weight"].detach(), old_p[f"{name}.bias"].detach()
        mw = masks[f"{name}.weight"]
        assert (new_p[f"{name}.weight"][mw == 0] == 0).all()
        theta = torch.cat([W.reshape(-1), b])
        delta = torch.cat([new_p[f"{name}.weight"].reshape(-1), new_p[f"{name}.bias"]]).detach()
        delta = delta - theta
        pruned = torch.cat([mw.reshape(-1) == 0, torch.zeros(len(b), dtype=torch.bool)])
        H = hessian_blocks.layer_hessian(model, x, y, k)
        if max_block >= len(theta):
            blocks = [torch.arange(len(theta))]
        else:  # one block per output unit: its weights and its bias
            D = W.shape[1]
            blocks = [
                torch.cat([torch.arange(i * D, (i + 1) * D), torch.tensor([W.numel() + i])])
                for i in range(W.shape[0])
            ]
        for index in blocks:
            B = H[index][:, index]
            B = B + criteria.OBS_DAMPING * torch.diagonal(B).mean() * torch.eye(len(index))
            d, q = delta[index], pruned[index]
            if not q.any():
                assert (d == 0).all()
                continue
            # the update zeroes Q and is stationary in the free coordinates: (B d)_F = 0
            torch.testing.assert_close(d[q], -theta[index][q])
            torch.testing.assert_close((B @ d)[~q], torch.zeros(int((~q).sum()), dtype=F64))
            zero = torch.where(q, -theta[index], 0.0)  # plain zeroing, no compensation
            assert d @ B @ d <= zero @ B @ zero * (1 + 1e-9)
    loss = lambda m: F.cross_entropy(m(x), y).item()  # noqa: E731
    assert loss(new) < loss(strip(model, masks))  # and the real loss agrees here


@pytest.mark.parametrize("max_block", [10_000, 5])
def test_obs_prune_without_biases(max_block):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 2, bias=False))
    model = model.double()
    x = torch.randn(40, 3, generator=g, dtype=F64)
    y = torch.randint(0, 2, (40,), generator=g)
    masks = prune_weights(model, _magnitude(model), 0.4)
    new = obs_prune(model, x, y, masks, max_block=max_block)
    for name, p in new.named_parameters():
        assert (p[masks[name] == 0] == 0).all()
        assert not torch.equal(p, dict(model.named_parameters())[name] * masks[name])  # moved


# --- convnets ----------------------------------------------------------------------------


def _lenet(in_shape=(1, 8, 8), batchnorm=False, seed=0, n=40, classes=4):
    """A float64 LeNet-5 in eval mode (BatchNorm with non-trivial statistics) and data."""
    model = models.lenet5(
        in_shape=in_shape, classes=classes, batchnorm=batchnorm, seed=seed, dtype=F64
    )
    g = torch.Generator().manual_seed(seed + 11)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    x = torch.randn(n, *in_shape, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    return model.eval(), x, y


def _layer_weights(model):
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.93, 1.0])
def test_global_magnitude_on_lenet5_is_a_sort_of_every_conv_and_linear_weight(sparsity):
    model = models.lenet5(seed=0, batchnorm=True)
    scores = _magnitude(model)
    masks = prune_weights(model, scores, sparsity)
    names = [f"{i}.weight" for i in (0, 4, 9, 12, 15)]  # Conv2d and Linear; not BatchNorm
    assert list(masks) == names and masks["0.weight"].shape == (6, 1, 5, 5)
    flat = torch.cat([scores[n].reshape(-1) for n in names])  # brute force: one sort of all
    k = round(sparsity * len(flat))
    pruned = torch.zeros(len(flat), dtype=torch.bool)
    pruned[torch.sort(flat, stable=True).indices[:k]] = True
    got = torch.cat([masks[n].reshape(-1) == 0 for n in names])
    assert torch.equal(got, pruned)
    ref = copy.deepcopy(model)
    prune.global_unstructured(_layer_weights(ref), pruning_method=prune.L1Unstructured, amount=k)
    for (module, _), n in zip(_layer_weights(ref), names, strict=True):
        assert torch.equal(masks[n], module.weight_mask)
    layer = prune_weights(model, scores, sparsity, scope="layer")  # per tensor: l1_unstructured
    for (module, _), n in zip(_layer_weights(copy.deepcopy(model)), names, strict=True):
        prune.l1_unstructured(module, "weight", amount=round(sparsity * module.weight.numel()))
        assert torch.equal(layer[n], module.weight_mask)


def test_masks_stay_in_force_through_fit_on_lenet5():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    split = data.Dataset(x, y, "halves", 2)
    model = models.lenet5(in_shape=(1, 8, 8), classes=2, batchnorm=True, dropout=0.2, seed=0)
    masks = prune_weights(model, _magnitude(model), 0.7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train.fit(model, split, epochs=3, batch_size=16, weight_masks=masks, progress=False)
    params = dict(model.named_parameters())
    for n, m in masks.items():  # pruned entries exactly zero, the others trained
        assert (params[n][m == 0] == 0).all() and (params[n][m == 1] != before[n][m == 1]).any()
    assert not (params["1.weight"] == before["1.weight"]).all()  # BatchNorm trains, unmasked
    second = prune_weights(model, _magnitude(model), 0.85, masks=masks)  # round two nests
    assert all(((second[n] == 1) <= (masks[n] == 1)).all() for n in masks)


def test_strip_on_a_convnet_gives_plain_modules_with_the_same_outputs():
    model = models.vgg("vgg11", width=0.125, in_shape=(3, 8, 8), classes=3, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
    model.eval()
    x = torch.randn(5, 3, 8, 8, generator=g, dtype=F64)
    masks = prune_weights(model, _magnitude(model), 0.6, biases=True)
    plain = strip(model, masks)
    masked = {n: p.detach() * masks.get(n, 1) for n, p in model.named_parameters()}
    with torch.no_grad():
        torch.testing.assert_close(plain(x), torch.func.functional_call(model, masked, (x,)))
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert [n for n, _ in plain.named_buffers()] == [n for n, _ in model.named_buffers()]
    for (n, b), (_, c) in zip(plain.named_buffers(), model.named_buffers(), strict=True):
        assert torch.equal(b, c) and b.data_ptr() != c.data_ptr(), n  # copied
    assert isinstance(plain[0], nn.Sequential) and not plain.training
    for n, p in plain.named_parameters():
        if n in masks:
            assert (p[masks[n] == 0] == 0).all()
    # torch.nn.utils.prune on a conv: its re-parametrisation folded into a plain weight
    ref, _, _ = _lenet()
    prune.l1_unstructured(ref[0], "weight", amount=0.4)
    out = strip(ref)
    assert torch.equal(out[0].weight, ref[0].weight) and not hasattr(out[0], "weight_orig")
    assert all(not m._forward_pre_hooks for m in out.modules()) and not list(out.buffers())
    with pytest.raises(KeyError, match="strip: masks names '0.1.weight'"):  # a BatchNorm's
        strip(model, {"0.1.weight": torch.ones(2)})


@settings(max_examples=10, deadline=None)
@given(
    levels=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    scope=st.sampled_from(["global", "layer"]),
    biases=st.booleans(),
    share=st.sampled_from([(0.0, 0.0), (1 / 16, 1 / 3), (1.0, 1.0)]),
    seed=st.integers(0, 1000),
)
def test_convnet_sweep_equals_prune_weights_then_evaluate(levels, scope, biases, share, seed):
    from prunelab.engines import sparsity

    model, x, y = _lenet(batchnorm=seed % 2 == 0, seed=seed % 3)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.randn(p.shape, generator=g, dtype=F64) for n, p in model.named_parameters()}
    old = sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE
    sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE = share  # dense, mixed, always by changes
    try:
        sweep = sparsity_sweep(model, scores, levels, x, y, scope=scope, biases=biases)
    finally:
        sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE = old
    for i, level in enumerate(levels):  # any order, duplicates
        masks = prune_weights(model, scores, level, scope=scope, biases=biases)
        with torch.no_grad():
            f = strip(model, masks)(x)
        assert sweep.loss[i].item() == pytest.approx(F.cross_entropy(f, y).item(), rel=1e-10)
        top2 = f.topk(2, 1).values
        ties = int((top2[:, 0] - top2[:, 1] < 1e-9).sum())
        accuracy = (f.argmax(1) == y).double().mean().item()
        assert abs(sweep.accuracy[i].item() - accuracy) <= ties / len(y) + 1e-15
        assert sweep.pruned[i].item() == _pruned(masks)


def test_the_op_engine_on_an_mlp_equals_the_dense_engine():
    from prunelab.engines import sparsity
    from prunelab.methods.surgery import sweep as sweep_module

    model, x, y = _setup(widths=(6, 12, 8, 5), n=50)
    view = ops.parse(model)
    scores = _magnitude(model)
    levels = [i / 10 for i in range(11)]
    params = {n: p.detach() for n, p in model.named_parameters()}
    flat = {n: s.reshape(-1) for n, s in scores.items()}
    seq, counts, _ = sweep_module._ranks(params, flat, levels, "global")
    order = list(range(len(levels)))
    net = models.parse(model)
    dense = torch.cat([f for _, f in sweep_module._sweep_logits(net, seq, counts, order, x, 2**28)])
    for share in [(1 / 16, 1 / 3), (1.0, 1.0), (0.0, 0.0)]:
        old = sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE
        sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE = share
        try:
            op = [f for _, f in sparsity.sweep_logits(view, seq, counts, order, x, 2**28)]
        finally:
            sparsity.SPARSE_SHARE, sparsity.CHANNEL_SHARE = old
        torch.testing.assert_close(torch.cat(op), dense, rtol=1e-12, atol=1e-12)


def test_convnet_sweep_errors():
    model, x, y = _lenet()
    scores = _magnitude(model)
    with pytest.raises(ValueError, match=r"sparsity_sweep: x must have shape \[N, 1, H, W\]"):
        sparsity_sweep(model, scores, [0.5], x.flatten(1), y)
    with pytest.raises(KeyError, match="sparsity_sweep: no scores for parameter '3.weight'"):
        sparsity_sweep(model, {"0.weight": scores["0.weight"]}, [0.5], x, y)
    bn, _, _ = _lenet(batchnorm=True)
    bn.train()
    with pytest.raises(ValueError, match="sparsity_sweep: .*training mode"):
        sparsity_sweep(bn, _magnitude(bn), [0.5], x, y)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    shared = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(64, 2)).double()
    with pytest.raises(ValueError, match="sparsity_sweep: a Linear or Conv2d module appears twice"):
        sparsity_sweep(shared, _magnitude(shared), [0.5], x, y % 2)


def test_obs_prune_on_a_convnet_is_the_constrained_minimum_of_each_layer_block():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3),
    ).double()  # fmt: skip
    x = torch.randn(30, 1, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 3, (30,), generator=g)
    scores = criteria.weight_scores("obs", model, x, y)
    masks = prune_weights(model, scores, 0.3, scope="layer")  # entries in every layer
    new = obs_prune(model, x, y, masks, max_block=10**9)  # one block per layer
    old_p, new_p = dict(model.named_parameters()), dict(new.named_parameters())
    for k, name in enumerate(["0", "3"]):  # the two convs: [C_out, C_in, 3, 3] filters
        W, b = old_p[f"{name}.weight"].detach(), old_p[f"{name}.bias"].detach()
        mw = masks[f"{name}.weight"]
        assert (mw == 0).any() and (new_p[f"{name}.weight"][mw == 0] == 0).all()
        theta = torch.cat([W.reshape(-1), b])
        d = torch.cat([new_p[f"{name}.weight"].reshape(-1), new_p[f"{name}.bias"]]).detach()
        d = d - theta
        q = torch.cat([mw.reshape(-1) == 0, torch.zeros(len(b), dtype=torch.bool)])
        B = hessian_blocks.layer_hessian(model, x, y, k)
        B = B + criteria.OBS_DAMPING * torch.diagonal(B).mean() * torch.eye(len(theta), dtype=F64)
        torch.testing.assert_close(d[q], -theta[q])
        torch.testing.assert_close((B @ d)[~q], torch.zeros(int((~q).sum()), dtype=F64))
