"""The two compositions of the maximum (relevance.composed) compared per window, against the
source's worked example and plain loops."""

import math

import pytest
import torch
from torch import nn

from prunelab.methods.relevance.composed import (
    composed_max_relevance,
    max_disagreement,
    pool_windows,
)

DTYPE = torch.float64


def test_worked_example_and_agreement_against_a_zero_reference():
    a = torch.tensor([[3.0, 1.0], [3.0, 1.0], [2.0, 2.0]], dtype=DTYPE)
    ref = torch.tensor([[0.0, 2.0], [0.0, 0.0], [2.0, 2.0]], dtype=DTYPE)
    d = max_disagreement(a, ref)
    # softmax (1, 0) against relu (1.5, -0.5): |0.5| + |0.5| over 2 * |3 - 2|
    assert d[0].item() == pytest.approx(0.5, abs=1e-6)
    assert d[1].item() == pytest.approx(0.0, abs=1e-4)  # zero reference: both winner-takes-all
    assert math.isnan(d[2])  # the maximum does not move


def test_disagreement_against_a_loop():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(20, 4, generator=g, dtype=DTYPE)
    ref = torch.rand(20, 4, generator=g, dtype=DTYPE)
    d = max_disagreement(a, ref, softness=1e-3)
    for n in range(20):
        s = composed_max_relevance(a[n : n + 1], ref[n : n + 1], form="softmax", softness=1e-3)
        h = composed_max_relevance(a[n : n + 1], ref[n : n + 1], form="relu")
        dm = abs(max(a[n].tolist()) - max(ref[n].tolist()))
        assert d[n].item() == pytest.approx((s - h).abs().sum().item() / (2 * dm), rel=1e-9)


def test_pool_windows_are_the_max_pools_windows():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 6, 4, generator=g, dtype=DTYPE)
    w = pool_windows(a, 2)
    assert w.shape == (2 * 3 * 3 * 2, 4)
    pooled = nn.MaxPool2d(2)(a)  # [2, 3, 3, 2]
    torch.testing.assert_close(w.amax(1), pooled.flatten())
    row = 0
    for n in range(2):
        for c in range(3):
            for i in range(3):
                for j in range(2):
                    window = a[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten()
                    torch.testing.assert_close(w[row], window)
                    row += 1


def test_share_within_and_nanmedian_against_loops():
    from prunelab.base import stats

    v = torch.tensor([1e-6, -2e-5, 3e-3, float("nan"), 0.5])
    assert stats.share_within(v, 1e-4) == pytest.approx(2 / 5)
    assert stats.share_within(v, 1.0) == pytest.approx(4 / 5)
    ordered = sorted(x for x in v.tolist() if not math.isnan(x))
    assert stats.nanmedian(v) == pytest.approx(ordered[(len(ordered) - 1) // 2])
    assert math.isnan(stats.nanmedian(torch.tensor([float("nan")])))


def test_nanmin_against_a_loop():
    from prunelab.base import stats

    v = torch.tensor([0.3, float("nan"), -0.2, 0.9])
    assert stats.nanmin(v) == pytest.approx(min(x for x in v.tolist() if not math.isnan(x)))
    assert math.isnan(stats.nanmin(torch.tensor([float("nan")])))
