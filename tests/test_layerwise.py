"""Layer-by-layer SiPP pruning (coreset.layer_by_layer) and a convnet's dense head
(coreset_eval.split_head), against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunelab import coreset, models
from prunelab.methods import coreset_eval

F64 = torch.float64


def _net(seed=0):
    model = models.mlp((6, 12, 8, 3), seed=seed, dtype=F64).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(300, 6, generator=g, dtype=F64)
    return model, x[:200], x[200:]


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: models.mlp((784, 30, 20, 10), seed=0, dtype=F64), (784,)),
        (lambda: models.lenet5(seed=0, dtype=F64), (1, 28, 28)),
        (lambda: models.vgg("vgg11", width=0.125, in_shape=(1, 28, 28), seed=0, dtype=F64), (1, 28, 28)),
    ],
)  # fmt: skip
def test_split_head_recomposes_the_model(build, shape):
    model = build().eval()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    extractor, head = coreset_eval.split_head(model)
    assert torch.equal(head(extractor(x)), model(x))
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and linears[-1].out_features == 10
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-2]
    assert torch.equal(linears[0].weight, last.weight) and linears[0].weight is not last.weight


def test_split_head_rejects_a_model_without_a_dense_head():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="split_head: the model must end in 2 Linear"):
        coreset_eval.split_head(model)


def test_layer_targets_and_implied_output_bound_follow_corenet():
    """eps_l = eps / (2 L) / prod_{k >= l} Delta_hat^k with Delta_hat the worst neuron's mean
    sign-cancellation factor on S; the implied output bound (1 + eps / (2 L))^l - 1."""
    model, xs, xd = _net()
    eps = 2.0
    stages, _ = coreset.layer_by_layer(
        model, xs, xd, eps=eps, delta=0.1, generator=torch.Generator().manual_seed(0)
    )
    Ws = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    inputs, a = [], xs
    for m in model:
        if isinstance(m, nn.Linear):
            inputs.append(a)
        a = m(a)
    hats = []
    for W, a in zip(Ws, inputs, strict=True):
        ratio = (a.abs() @ W.abs().T) / (a @ W.T).abs()
        hats.append(ratio.mean(0).max().item())
    L = len(Ws)
    for k, st in enumerate(stages):
        assert st.eps == pytest.approx(eps / (2 * L) / math.prod(hats[k:]), rel=1e-12)
        assert st.implied == pytest.approx((1 + eps / (2 * L)) ** (k + 1) - 1, rel=1e-12)
        assert st.weights == Ws[k].numel()


def test_no_sampling_within_the_budget_leaves_the_model_whole():
    model, xs, xd = _net()
    stages, pruned = coreset.layer_by_layer(
        model, xs, xd, eps=1.0, delta=0.1, generator=torch.Generator(), max_samples=0
    )
    assert all(st.skipped and st.sparsity == 0 and st.observed == 0 for st in stages)
    assert all(st.output == 0 and st.within == 1 for st in stages)
    assert torch.equal(pruned(xd), model(xd))


def test_observed_errors_recomputed_from_the_pruned_layers():
    """Each stage's observed error is max_i |z_hat_i - z_i| / (z+_i + z-_i) on inputs from
    the pruned lower layers; the output error is the relative logit error of the final copy."""
    model, xs, xd = _net(seed=3)
    stages, pruned = coreset.layer_by_layer(
        model, xs, xd, eps=200.0, delta=0.1, generator=torch.Generator().manual_seed(2),
        max_samples=1e9,
    )  # fmt: skip
    assert not any(st.skipped for st in stages) and stages[-1].sparsity > 0
    lin = [m for m in model if isinstance(m, nn.Linear)]
    plin = [m for m in pruned if isinstance(m, nn.Linear)]
    a, k = xd, 0
    for m, p in zip(model, pruned, strict=True):
        if isinstance(m, nn.Linear):
            W, Wh = lin[k].weight, plin[k].weight
            d = (a @ Wh.T - a @ W.T).abs()
            err = torch.where(d == 0, 0, d / (a.abs() @ W.abs().T)).amax(1)
            assert stages[k].observed == pytest.approx(err.mean().item(), rel=1e-10)
            k += 1
        a = p(a)  # the next layer reads the pruned layers' outputs
    f, fh = model(xd), pruned(xd)
    d = (fh - f).abs()
    rel = torch.where(d == 0, 0, d / f.abs()).amax(1)
    assert stages[-1].output == pytest.approx(rel.median().item(), rel=1e-10)
    assert stages[-1].within == pytest.approx((rel <= stages[-1].implied).double().mean().item())


def test_layer_by_layer_errors_name_the_argument():
    model, xs, xd = _net()
    for kw, match in (
        ({"eps": 0.0}, "eps must be a positive"),
        ({"eps": 1.0, "delta": 1.5}, "delta must lie in"),
        ({"eps": 1.0, "max_samples": -1}, "max_samples must be"),
    ):
        args = {"delta": 0.1, **kw}
        with pytest.raises(ValueError, match=match):
            coreset.layer_by_layer(model, xs, xd, generator=torch.Generator(), **args)


def test_layer_by_layer_rejects_bad_inputs_by_name():
    model, xs, xd = _net()
    kw = dict(eps=1.0, delta=0.1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"\(x_dev\).*shape"):
        coreset.layer_by_layer(model, xs, xd[:, :5], **kw)
    with pytest.raises(ValueError, match=r"\(x_S\).*NaN"):
        coreset.layer_by_layer(model, torch.full_like(xs, float("nan")), xd, **kw)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        coreset.layer_by_layer(model, xs, xd, **{**kw, "generator": 3})


def test_sample_size_saturates_instead_of_overflowing():
    m = coreset.sample_size(torch.tensor([1e-12, 1e-1]), 0.1, torch.tensor([5.0, 5.0]))
    assert m[0] == 2**62 and 0 < m[1] < 2**62
