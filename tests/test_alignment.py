"""Region shares, the relevance penalty and its training loop, conservation and agreement."""

from __future__ import annotations

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.relevance import Relevance, explain
from torch import nn

from prunelab import alignment, data, decoy, models, train

DTYPE = torch.float64


def _x(n: int, d: int, seed: int = 0, dtype=DTYPE) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _region(d: int, k: int) -> torch.Tensor:
    region = torch.zeros(d, dtype=torch.bool)
    region[:k] = True
    return region


def _autograd_share(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor, region):
    """Gradient x input by double backprop through autograd, and its share on the region."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x, create_graph=True)
    a = (x * g).abs()
    return a[:, region].sum(1) / a.sum(1)


def test_region_share_by_hand():
    R = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 0.0, 0.0, 1.0]])
    share = alignment.region_share(R, torch.tensor([True, False, False, False]))
    torch.testing.assert_close(share, torch.tensor([0.25, 0.0, 0.75]))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 9),
    st.integers(0, 2**31 - 1),
)
def test_region_share_of_a_region_and_its_complement_sum_to_one(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(n, d, generator=g, dtype=DTYPE)
    region = torch.rand(d, generator=g) < 0.5
    s, c = alignment.region_share(R, region), alignment.region_share(R, ~region)
    assert ((s >= 0) & (s <= 1)).all()
    torch.testing.assert_close(s + c, torch.ones(n, dtype=DTYPE))


@pytest.mark.parametrize("widths", [(6, 5, 3), (6, 5, 4, 3)])
def test_penalty_gradient_matches_double_backprop(widths):
    model = models.mlp(widths, seed=1, dtype=DTYPE)
    x, region = _x(7, widths[0]), _region(widths[0], 2)
    t = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    ours = alignment.relevance_share(model, x, region, method="gradient_x_input", target=t)
    oracle = _autograd_share(model, x, t, region)
    torch.testing.assert_close(ours, oracle, rtol=1e-12, atol=1e-12)
    params = list(model.parameters())
    # biases only set the ReLU pattern, so gradient x input has no gradient for them (None)
    g_ours = torch.autograd.grad(ours.mean(), params, allow_unused=True)
    g_oracle = torch.autograd.grad(oracle.mean(), params, allow_unused=True)
    weights = [k for k, p in enumerate(params) if p.dim() == 2]
    assert all(g_oracle[k] is not None and g_oracle[k].abs().sum() > 0 for k in weights)
    for a, b, p in zip(g_ours, g_oracle, params):
        zero = torch.zeros_like(p)
        torch.testing.assert_close(
            zero if a is None else a, zero if b is None else b, rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("method", ["lrp_epsilon", "deeplift", "guided_backprop"])
def test_penalty_gradient_matches_finite_differences(method):
    model = models.mlp((5, 4, 3), activation="tanh", seed=2, dtype=DTYPE)
    x, region = _x(6, 5, seed=3), _region(5, 2)
    W = model[0].weight

    def share() -> torch.Tensor:
        return alignment.relevance_share(model, x, region, method=method, target=1).mean()

    (g,) = torch.autograd.grad(share(), W)
    h = 1e-6
    with torch.no_grad():
        for i, j in [(0, 0), (2, 3), (3, 1)]:
            W[i, j] += h
            up = share().item()
            W[i, j] -= 2 * h
            down = share().item()
            W[i, j] += h
            assert g[i, j].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def _blobs64(n: int = 96) -> data.Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.rand(n, 8, generator=g) * 0.3 + F.one_hot(y, 8)[:, :8] * 0.7
    return data.Dataset(x, y, "blobs8", 3)


def test_weight_zero_is_bitwise_train_fit():
    ds = _blobs64()
    a, b = models.mlp((8, 6, 3), seed=4), models.mlp((8, 6, 3), seed=4)
    h = alignment.fit_penalised(
        a,
        ds,
        region=_region(8, 2),
        weight=0.0,
        epochs=3,
        lr=0.05,
        batch_size=20,
        seed=7,
        progress=False,
        test=ds,
    )
    hf = train.fit(b, ds, epochs=3, lr=0.05, batch_size=20, seed=7, progress=False, test=ds)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert h.loss == pytest.approx(hf.loss, rel=1e-12) and h.accuracy == hf.accuracy
    assert h.test_accuracy == hf.test_accuracy and len(h.penalty) == 3
    assert all(0 <= s <= 1 for s in h.penalty)


def test_one_full_batch_sgd_step_by_hand():
    ds = _blobs64(30)
    ds = data.Dataset(ds.x.double(), ds.y, "blobs8", 3)
    model = models.mlp((8, 5, 3), seed=5, dtype=DTYPE)
    before = [p.detach().clone() for p in model.parameters()]
    region, w, lr = _region(8, 3), 2.5, 0.1
    loss = (
        F.cross_entropy(model(ds.x), ds.y) + w * _autograd_share(model, ds.x, ds.y, region).mean()
    )
    grads = torch.autograd.grad(loss, list(model.parameters()))
    alignment.fit_penalised(
        model,
        ds,
        region=region,
        weight=w,
        epochs=1,
        lr=lr,
        batch_size=None,
        optimizer="sgd",
        progress=False,
    )
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - lr * g, rtol=1e-12, atol=1e-12)


def test_penalty_stops_the_use_of_a_decoy_patch():
    # 8 features, 3 classes; features 0-1 are a patch that encodes the label in training
    ds = _blobs64(150)
    region = _region(8, 2)
    x = decoy.with_patch(ds.x, region, decoy.level(ds.y, 3))
    train_data = data.Dataset(x, ds.y, "decoy", 3)
    swapped = (ds.y + 1) % 3
    probe = decoy.with_patch(ds.x, region, decoy.level(swapped, 3))
    follow, share = {}, {}
    for w in (0.0, 30.0):
        m = models.mlp((8, 16, 3), seed=0)
        h = alignment.fit_penalised(
            m, train_data, region=region, weight=w, epochs=40, lr=0.02, seed=0, progress=False
        )
        follow[w] = decoy.follow_rate(m, probe, swapped)
        share[w] = h.penalty[-1]
    assert share[30.0] < 0.2 * share[0.0]
    assert follow[30.0] < follow[0.0]


def test_fit_penalised_errors():
    ds, m, region = _blobs64(), models.mlp((8, 4, 3)), _region(8, 2)
    with pytest.raises(KeyError, match="choose from"):
        alignment.fit_penalised(m, ds, region=region, weight=1.0, method="nope")
    with pytest.raises(ValueError, match="target 'x'"):
        alignment.fit_penalised(m, ds, region=region, weight=1.0, target="x")
    with pytest.raises(ValueError, match="weight"):
        alignment.fit_penalised(m, ds, region=region, weight=-1.0)
    with pytest.raises(ValueError, match=r"region must be a bool Tensor of shape \[D\] = \[8\]"):
        alignment.fit_penalised(m, ds, region=_region(7, 2), weight=1.0)
    with pytest.raises(ValueError, match="region"):
        alignment.relevance_share(m, ds.x, region.float(), method="gradient")
    with pytest.raises(ValueError, match="3 classes but the model has 2 outputs"):
        alignment.fit_penalised(models.mlp((8, 4, 2)), ds, region=region, weight=1.0)
    with pytest.raises(ValueError, match="has 8 input features but the model expects 6"):
        alignment.fit_penalised(models.mlp((6, 4, 3)), ds, region=_region(6, 2), weight=1.0)


# --- conservation and agreement ----------------------------------------------------------------


def test_conservation_and_bias_fraction_by_hand():
    r = Relevance(
        input=torch.tensor([[1.0, 2.0], [3.0, 0.0]]),
        bias=[torch.tensor([[0.5], [-1.0]]), torch.tensor([[0.5], [0.0]])],
        output=torch.tensor([4.0, 4.0]),
        target=torch.tensor([0, 0]),
    )
    torch.testing.assert_close(alignment.conservation_error(r), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(
        alignment.conservation_error(r, include_bias=False), torch.tensor([0.25, 0.25])
    )
    torch.testing.assert_close(alignment.bias_fraction(r), torch.tensor([0.25, -0.25]))


def test_blame_bias_conserves_and_bias_fraction_is_b_dfdb():
    model = models.mlp((5, 6, 4, 3), seed=6, dtype=DTYPE)
    x = _x(8, 5, seed=2) - 0.5
    r = explain(model, x, method="blame_bias")
    assert alignment.conservation_error(r).max() < 1e-10
    assert alignment.conservation_error(explain(model, x, method="gradient")).min() > 1e-3
    # oracle: sum_j b_j df_t/db_j by autograd (ReLU: LRP-0 bias relevance), over f_t
    biases = [m.bias for m in model if isinstance(m, nn.Linear)]
    f = model(x).gather(1, r.target[:, None]).squeeze(1)
    expected = torch.zeros(8, dtype=DTYPE)
    for n in range(8):
        grads = torch.autograd.grad(f[n], biases, retain_graph=True)
        expected[n] = sum((b * g).sum() for b, g in zip(biases, grads)) / f[n]
    torch.testing.assert_close(alignment.bias_fraction(r), expected.detach())


@pytest.mark.parametrize("kind", ["spearman", "pearson"])
def test_row_correlation_against_scipy(kind):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 12, generator=g)
    b = a + torch.randn(5, 12, generator=g)
    a[:, :4] = 0.0  # ties, as in an image's background
    b[:, 2:6] = 0.0
    ours = alignment.row_correlation(a, b, kind=kind)
    oracle = scipy.stats.spearmanr if kind == "spearman" else scipy.stats.pearsonr
    for n in range(5):
        expected = oracle(a[n].double().numpy(), b[n].double().numpy())[0]
        assert ours[n].item() == pytest.approx(expected, rel=1e-10)


def test_agreement_matrix():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(6, 10, generator=g)
    inputs = {"a": a, "twice": 2 * a, "cubed": a**3, "minus": -a, "noise": torch.randn(6, 10)}
    m = alignment.agreement_matrix(inputs, kind="spearman")
    torch.testing.assert_close(m, m.T)
    torch.testing.assert_close(m.diagonal(), torch.ones(5, dtype=DTYPE))
    assert m[0, 1] == pytest.approx(1) and m[0, 2] == pytest.approx(1)  # monotone maps
    assert m[0, 3] == pytest.approx(-1)
    assert alignment.agreement_matrix(inputs, kind="pearson")[0, 2] < 0.99  # not linear
    assert m[0, 4] == pytest.approx(
        alignment.row_correlation(a, inputs["noise"]).mean().item(), rel=1e-12
    )
    with pytest.raises(ValueError, match="kind 'kendall'"):
        alignment.agreement_matrix(inputs, kind="kendall")
