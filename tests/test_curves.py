"""methods.curves and stats.clipped_interval against brute-force loops and hand-decided cases."""

import math

import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab.base import stats
from prunelab.methods import curves

LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
rows = st.lists(
    st.lists(st.floats(0, 1, allow_subnormal=False), min_size=6, max_size=6), min_size=2, max_size=5
)


@settings(max_examples=40, deadline=None)
@given(rows, st.floats(0, 0.5), st.floats(0, 0.5))
def test_band_mean_and_area_are_loops(v, lo, hi):
    t = torch.tensor(v, dtype=torch.float64)
    for s, row in enumerate(v):
        above = [x for x, f in zip(row, LEVELS, strict=True) if f > 0]
        assert curves.area(t, LEVELS)[s].item() == pytest.approx(sum(above) / len(above))
        inside = [x for x, f in zip(row, LEVELS, strict=True) if lo < f <= hi]
        if inside:
            got = curves.band_mean(t, LEVELS, lo, hi)[s].item()
            assert got == pytest.approx(sum(inside) / len(inside))
    if not any(lo < f <= hi for f in LEVELS):
        with pytest.raises(ValueError, match="no level"):
            curves.band_mean(t, LEVELS, lo, hi)


def test_area_difference_is_paired_by_seed():
    a = torch.tensor([[1.0, 0.8, 0.6], [1.0, 0.9, 0.7]])
    b = torch.tensor([[1.0, 0.7, 0.3], [1.0, 0.9, 0.9]])
    got = curves.area_difference(a, b, [0, 0.5, 0.9])
    assert got.tolist() == pytest.approx([(0.8 + 0.6 - 0.7 - 0.3) / 2, (0.9 + 0.7 - 0.9 - 0.9) / 2])
    with pytest.raises(ValueError, match="shapes differ"):
        curves.area_difference(a, b[:1], [0, 0.5, 0.9])


@settings(max_examples=40, deadline=None)
@given(rows, st.floats(0, 0.5))
def test_drop_level_is_the_first_level_far_enough_below(v, points):
    mean = [sum(col) / len(col) for col in zip(*v, strict=True)]
    want = next((f for m, f in zip(mean, LEVELS, strict=True) if m <= mean[0] - points), None)
    got = curves.drop_level(torch.tensor(v), LEVELS, points)
    assert math.isnan(got) if want is None else got == pytest.approx(want)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-1, 1), min_size=6, max_size=6), min_size=2, max_size=4))
def test_crossing_level_is_where_the_mean_stays_non_negative(v):
    mean = [sum(col) / len(col) for col in zip(*v, strict=True)]
    start = 0
    for i, m in enumerate(mean):
        if m < 0:
            start = i + 1
    got = curves.crossing_level(torch.tensor(v, dtype=torch.float64), LEVELS)
    if start == len(LEVELS):
        assert math.isnan(got)
    else:
        assert got == LEVELS[start]
        assert all(m >= 0 for m in mean[start:])


def test_rival_difference_takes_the_strongest_rival():
    area = torch.tensor([[0.9, 0.8], [0.5, 0.6], [0.7, 0.75], [0.95, 0.99]])
    diff, best = curves.rival_difference(area, 0, [1, 2])
    assert best == 2 and diff.tolist() == pytest.approx([0.2, 0.05])
    with pytest.raises(ValueError, match="holding"):
        curves.rival_difference(area, 0, [7])


def test_bound_check_ratio_and_holds():
    b = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    o = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    c = curves.bound_check(b, o)
    assert c.ratio.tolist() == [[2.0, 0.5], [1.0, math.inf]]
    assert c.holds.tolist() == [[True, False], [True, True]]
    assert c.worst.tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match=">= 0"):
        curves.bound_check(-b, o)
    with pytest.raises(ValueError, match="shapes"):
        curves.bound_check(b, o[0])


def test_shape_and_order_errors():
    with pytest.raises(ValueError, match=r"\[S, L\]"):
        curves.area(torch.zeros(3), [0, 1, 2])
    with pytest.raises(ValueError, match="increase"):
        curves.drop_level(torch.zeros(2, 3), [0, 0.2, 0.1], 0.1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=8))
def test_clipped_interval_is_scipys_interval_clipped(v):
    mean, lower, upper = stats.clipped_interval(torch.tensor(v, dtype=torch.float64), high=1.0)
    t = torch.tensor(v, dtype=torch.float64)
    sem = scipy.stats.sem(v)
    lo, hi = (t.mean().item(),) * 2
    if sem > 0:
        lo, hi = scipy.stats.t.interval(0.95, len(v) - 1, loc=t.mean().item(), scale=sem)
    assert mean.item() == pytest.approx(t.mean().item())
    assert lower.item() == pytest.approx(lo, abs=1e-9)
    assert upper.item() == pytest.approx(min(hi, 1.0), abs=1e-9)
    assert upper.item() <= 1.0
