"""Summaries of bounds against observations (methods.bound_checks) against plain Python loops."""

import math

import pytest
import torch

from prunelab.methods import bound_checks as bc

NAN = math.nan


def _col(table, s):
    return [row[s] for row in table]


def test_seed_means_by_hand():
    v = [1.0, 3.0, 10.0, NAN, NAN, NAN]  # 3 seeds x 2 draws
    got = bc.seed_means(v, 3)
    assert got[0] == 2.0 and got[1] == 10.0 and math.isnan(got[2])
    with pytest.raises(ValueError, match="do not split into 4 seeds"):
        bc.seed_means(v, 4)


def test_summaries_against_loops():
    g = torch.Generator().manual_seed(0)
    K, S = 7, 4
    bound = torch.rand(K, S, generator=g, dtype=torch.float64) * 10
    observed = torch.rand(K, S, generator=g, dtype=torch.float64)
    observed[2, 1] = 0.0  # skipped: no error to compare with
    observed[3, 2] = NAN  # skipped: not measured
    limit = torch.rand(K, generator=g, dtype=torch.float64) * 10
    for s in range(S):
        b, o = _col(bound.tolist(), s), _col(observed.tolist(), s)
        ratios = [x / y for x, y in zip(b, o, strict=True) if y > 0 and not math.isnan(y)]
        assert bc.bound_ratio(bound, observed)[s].item() == pytest.approx(min(ratios))
        share = sum(x > lim for x, lim in zip(b, limit.tolist(), strict=True)) / K
        assert bc.exceed_share(bound, limit)[s].item() == pytest.approx(share)
        assert bc.exceed_share(bound, 5.0)[s].item() == pytest.approx(sum(x > 5 for x in b) / K)
        assert bc.largest(bound)[s].item() == max(b)
        assert bc.smallest(bound)[s].item() == min(b)
        assert bc.spread(bound)[s].item() == pytest.approx(max(b) / min(b))
        gains = [x - y for x, y in zip(b, o, strict=True) if not math.isnan(y)]
        assert bc.largest_gain(bound, observed)[s].item() == pytest.approx(max(gains))


def test_all_nan_column_gives_nan_and_bad_shapes_are_refused():
    v = torch.tensor([[NAN, 1.0], [NAN, 2.0]])
    assert math.isnan(bc.largest(v)[0]) and bc.largest(v)[1] == 2.0
    assert math.isnan(bc.bound_ratio(v, v)[0])
    assert bc.exceed_share(v, 0.0).tolist() == [0.0, 1.0]  # NaN never exceeds
    with pytest.raises(ValueError, match=r"\[K settings, S seeds\]"):
        bc.largest([1.0, 2.0])
    with pytest.raises(ValueError, match="shapes differ"):
        bc.bound_ratio(torch.ones(2, 2), torch.ones(3, 2))
