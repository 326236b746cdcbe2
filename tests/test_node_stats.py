"""Statistics of the node-removal study against independent computations: autograd through a
hand-written forward (float64), loops over masks and units, scipy's quadrature and closed forms."""

import math

import pytest
import scipy.integrate
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import ablation, compare, masks, models
from prunelab.base import stats


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = models.mlp((2, 5, 4, 3), seed=seed, dtype=torch.float64)
    x = torch.randn(30, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    return model, x, y


def _masked_loss(model, x, y, m):
    """The loss of ``model`` with hidden unit j multiplied by m[j] after its ReLU: a
    hand-written forward, nothing of the mask engine."""
    lin = [mod for mod in model if isinstance(mod, torch.nn.Linear)]
    a, first = x, 0
    for layer in lin[:-1]:
        h = torch.relu(layer(a))
        a = h * m[first : first + h.shape[1]]
        first += h.shape[1]
    return F.cross_entropy(lin[-1](a), y)


def test_log_mask_gradients_equal_autograd_of_the_log_loss():
    model, x, y = _tiny()
    m = masks.bernoulli(12, 9, 0.5, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    loss, grad = ablation.mask_losses(model, x, y, m)
    got = ablation.log_mask_gradients(loss, grad)
    for k in range(len(m)):
        mk = m[k].clone().requires_grad_(True)
        (want,) = torch.autograd.grad(_masked_loss(model, x, y, mk).log(), mk)
        assert torch.allclose(got[k], want, rtol=1e-9, atol=1e-12)


def test_on_off_split_equals_a_loop_over_masks_and_units():
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(40, 7, generator=g, dtype=torch.float64)
    m = (torch.rand(40, 7, generator=g) < 0.4).double()
    on, off = ablation.on_off(grad, m)
    want_on = [grad[i, j].item() for i in range(40) for j in range(7) if m[i, j] == 1]
    want_off = [grad[i, j].item() for i in range(40) for j in range(7) if m[i, j] == 0]
    assert sorted(on.tolist()) == sorted(want_on) and sorted(off.tolist()) == sorted(want_off)
    node_on, node_off = ablation.node_on_off_means(grad, m)
    for j in range(7):
        ons = [grad[i, j].item() for i in range(40) if m[i, j] == 1]
        offs = [grad[i, j].item() for i in range(40) if m[i, j] == 0]
        assert node_on[j].item() == pytest.approx(sum(ons) / len(ons), abs=1e-12)
        assert node_off[j].item() == pytest.approx(sum(offs) / len(offs), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        ablation.on_off(grad, m[:, :3])
    with pytest.raises(ValueError, match="> 0"):
        ablation.log_mask_gradients(torch.zeros(40, dtype=torch.float64), grad)


def test_silent_units_are_those_zero_everywhere_and_dead_nodes_agree():
    model, x, _ = _tiny(2)
    with torch.no_grad():
        model[0].bias[1] = -100.0  # node 1 of layer 0 never fires
    acts = masks.hidden_activations(model, x)
    got = compare.silent(acts)
    for a, g in zip(acts, got, strict=True):
        want = [all(a[n, j].item() == 0 for n in range(len(a))) for j in range(a.shape[1])]
        assert g.tolist() == want
    assert got[0][1] and [d.tolist() for d in compare.dead_nodes(model, x)] == [
        g.tolist() for g in got
    ]
    conv = torch.zeros(4, 3, 2, 2)
    conv[2, 0, 1, 1] = 0.5  # channel 0 fires at one position of one sample
    conv[:, 2] = 1.0
    assert compare.silent([conv])[0].tolist() == [False, True, False]


def _gap_loop(mean, std, ratio, ceiling):
    """The gap rule by brute force over every split: the highest qualifying one."""
    cv = sorted(std[j] / abs(mean[j]) for j in range(len(mean)) if mean[j] != 0)
    k_best = None
    for k in range(len(cv) - 1):
        if cv[k] < ceiling and cv[k + 1] / max(cv[k], 1e-300) >= ratio:
            k_best = k
    if k_best is None:
        return set()
    return {j for j in range(len(mean)) if mean[j] != 0 and std[j] / abs(mean[j]) <= cv[k_best]}


def test_bias_like_rules_on_the_case_of_the_issue():
    # six live nodes with CV 0.05-0.17, twelve with CV >= 1.35, two dead
    cvs = [0.05, 0.07, 0.09, 0.12, 0.15, 0.17, 1.35, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 20]
    mean = torch.tensor([1.0] * len(cvs) + [0.0, 0.0], dtype=torch.float64)
    std = torch.tensor([*cvs, 0.0, 0.0], dtype=torch.float64)
    threshold = compare.bias_like(mean, std, 0.1)
    assert threshold.nonzero().flatten().tolist() == [0, 1, 2]  # splits the cluster
    gap = compare.bias_like_gap(mean, std)
    assert gap.units.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert (gap.below, gap.above) == (0.17, 1.35) and gap.ratio == pytest.approx(1.35 / 0.17)
    assert torch.isinf(compare.variation(mean, std)[-1])
    # a constant unit (cv 0) does not split the cluster: the highest gap counts
    mean3 = torch.ones(4, dtype=torch.float64)
    std3 = torch.tensor([0.0, 0.006, 0.15, 1.7], dtype=torch.float64)
    assert compare.bias_like_gap(mean3, std3).units.tolist() == [True, True, True, False]
    # no gap of 3x below the ceiling: none
    even = torch.tensor([0.2, 0.3, 0.45, 0.6, 0.9, 1.2], dtype=torch.float64)
    assert not compare.bias_like_gap(torch.ones(6, dtype=torch.float64), even).units.any()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([-2.0, 0.0, 0.5, 1.0, 3.0]), st.floats(0.001, 20)),
        min_size=2,
        max_size=15,
    ),
    st.floats(1.5, 6),
)
def test_bias_like_gap_equals_brute_force(units, ratio):
    mean = torch.tensor([u[0] for u in units], dtype=torch.float64)
    std = torch.tensor([u[1] if u[0] != 0 else 0.0 for u in units], dtype=torch.float64)
    got = compare.bias_like_gap(mean, std, ratio=ratio).units.nonzero().flatten().tolist()
    assert set(got) == _gap_loop(mean.tolist(), std.tolist(), ratio, 1.0)
    loop = [j for j in range(len(units)) if mean[j] != 0 and std[j] < 0.3 * abs(mean[j])]
    assert compare.bias_like(mean, std, 0.3).nonzero().flatten().tolist() == loop


@pytest.mark.parametrize("n", [3, 10, 200, 1000])
def test_critical_correlation_is_where_the_p_value_is_alpha(n):
    r = stats.critical_correlation(n)
    assert stats.correlation_p_value(r, n).item() == pytest.approx(0.05, rel=1e-9)
    assert stats.correlation_p_value(r * 1.01, n).item() < 0.05


def _outside_quad(r2, half):
    """1 - (1/a^2) int_0^a min(a, sqrt(max(r^2 - x^2, 0))) dx, by quadrature."""
    r = math.sqrt(r2)
    inside, _ = scipy.integrate.quad(
        lambda t: min(half, math.sqrt(max(r2 - t * t, 0.0))), 0, half, points=[min(r, half)]
    )
    return 1 - inside / half**2


@pytest.mark.parametrize("half", [1.0, 2.0])
@pytest.mark.parametrize(
    "share", [0.0, 0.3, 2 / math.pi, math.sqrt(2 / math.pi), 1.0, 1.5, 1.99, 3]
)
def test_outside_disc_equals_quadrature(share, half):
    r2 = share * half**2  # r^2 as a multiple of a^2: inside, between a and a sqrt(2), beyond
    assert stats.outside_disc(r2, half=half) == pytest.approx(_outside_quad(r2, half), abs=1e-9)


def test_outside_disc_closed_forms_of_the_circle_task():
    assert stats.outside_disc(2 / math.pi) == pytest.approx(0.5, abs=1e-15)
    # the source's slip: |x|^2 > sqrt(2/pi) on [-1, 1]^2 leaves 1 - sqrt(2 pi)/4 = 37.3% outside
    source = stats.outside_disc(math.sqrt(2 / math.pi))
    assert source == pytest.approx(1 - math.sqrt(2 * math.pi) / 4, abs=1e-15)
    assert round(100 * source) == 37
    x = torch.rand(400_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    share = ((2 * x - 1).pow(2).sum(1) > math.sqrt(2 / math.pi)).double().mean().item()
    assert share == pytest.approx(source, abs=3e-3)
    with pytest.raises(ValueError, match="r2 must be"):
        stats.outside_disc(-1.0)


def test_excess_kurtosis_and_skewness_equal_scipys():
    import scipy.stats

    v = torch.distributions.Laplace(0.0, 1.0).sample((500,)).double()
    assert stats.excess_kurtosis(v) == pytest.approx(scipy.stats.kurtosis(v.numpy()), rel=1e-9)
    assert stats.skewness(v) == pytest.approx(scipy.stats.skew(v.numpy()), rel=1e-9)
