import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab import stats


def test_kde_integrates_to_one_and_matches_a_direct_sum():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(200, generator=g, dtype=torch.float64)
    t = torch.linspace(-6, 6, 4001, dtype=torch.float64)
    d = stats.kde(v, t, 0.3)
    assert torch.trapezoid(d, t).item() == pytest.approx(1.0, abs=1e-6)
    direct = sum(math.exp(-((0.5 - x) ** 2) / (2 * 0.09)) for x in v.tolist())
    direct /= 200 * 0.3 * math.sqrt(2 * math.pi)
    assert stats.kde(v, torch.tensor([0.5]), 0.3).item() == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="width"):
        stats.kde(v, t, 0.0)


def test_normal_fit_is_maximum_likelihood_and_scores_normal_data_as_normal():
    g = torch.Generator().manual_seed(1)
    v = 2.0 + 0.5 * torch.randn(1000, generator=g, dtype=torch.float64)
    fit = stats.normal_fit(v)
    assert fit.mean == pytest.approx(np.mean(v.numpy())) and fit.std == pytest.approx(
        np.std(v.numpy())
    )
    assert fit.ks < 0.05 and fit.ks_p > 0.01 and fit.shapiro_p > 0.01
    skewed = torch.distributions.Exponential(1.0).sample((1000,)).double()
    assert stats.normal_fit(skewed).shapiro_p < 1e-6


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 200), st.integers(0, 10**6))
def test_pearson_and_its_p_value_match_scipy(n, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, n, generator=g, dtype=torch.float64)
    b = b + 0.5 * a
    ref = scipy.stats.pearsonr(a.numpy(), b.numpy())
    r = stats.pearson(a, b)
    assert r == pytest.approx(ref.statistic, abs=1e-12)
    assert stats.correlation_p_value(r, n).item() == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_path_covariance_of_a_random_walk():
    # x_k = sum of k i.i.d. steps: cov(x_0, x_k) = 0 (x_0 = 0 is constant -> start it at a draw)
    g = torch.Generator().manual_seed(2)
    P, T = 4000, 8
    start = torch.randn(P, 1, generator=g, dtype=torch.float64)
    steps = torch.randn(P, T - 1, generator=g, dtype=torch.float64)
    walk = torch.cat([start, start + steps.cumsum(1)], 1)  # cov(x_0, x_k) = 1
    pc = stats.path_covariance(walk)
    torch.testing.assert_close(pc.cov, torch.cov(walk.T), rtol=1e-12, atol=1e-12)
    assert torch.allclose(pc.from_start, torch.ones(T, dtype=torch.float64), atol=0.1)
    assert pc.from_end[0] == pytest.approx(T, rel=0.1)  # var(x_{T-1}) = 1 + (T-1)
    assert pc.decorrelated_after == T  # correlation 1/sqrt(1+k) stays significant


def test_path_covariance_finds_where_correlation_dies():
    g = torch.Generator().manual_seed(3)
    P = 3000
    a = torch.randn(P, generator=g, dtype=torch.float64)
    noise = torch.randn(P, 5, generator=g, dtype=torch.float64)
    values = torch.stack(
        [a, a + 0.5 * noise[:, 0], a + 0.5 * noise[:, 1], noise[:, 2], noise[:, 3], noise[:, 4]], 1
    )
    assert stats.path_covariance(values).decorrelated_after == 3


def test_mean_interval_matches_the_t_interval():
    v = torch.tensor([[1.0, 2.0], [2.0, 4.0], [4.0, 9.0]], dtype=torch.float64)
    mean, half = stats.mean_interval(v, dim=0)
    lo, hi = scipy.stats.t.interval(0.95, 2, loc=v[:, 0].mean(), scale=scipy.stats.sem(v[:, 0]))
    assert mean[0].item() == pytest.approx((lo + hi) / 2) and half[0].item() == pytest.approx(
        (hi - lo) / 2
    )
    assert stats.mean_interval(v[:1], dim=0)[1].eq(0).all()


def test_skewness_matches_scipy_and_signs_tails():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(500, generator=g, dtype=torch.float64).exp()
    assert stats.skewness(v) == pytest.approx(scipy.stats.skew(v.numpy()), rel=1e-12)
    assert stats.skewness(v) > 0 > stats.skewness(-v)


def test_unit_statistics_run_over_samples_and_positions():
    g = torch.Generator().manual_seed(0)
    acts = [
        torch.randn(5, 3, 4, 2, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    ]
    acts[0][:, 1] = 0.0  # a dead channel
    mean, std, peak = stats.unit_statistics(acts)
    values = [acts[0][:, c].reshape(-1) for c in range(3)] + [acts[1][:, j] for j in range(4)]
    assert mean.tolist() == pytest.approx([v.mean().item() for v in values], abs=1e-14)
    assert std.tolist() == pytest.approx([v.std(correction=0).item() for v in values], abs=1e-14)
    assert peak.tolist() == [v.abs().max().item() for v in values]
    assert peak[1] == 0
