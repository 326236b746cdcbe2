"""Summaries of pruning curves over seeds: areas, drop levels, crossings, paired contrasts, and
bound-against-observed ratios. The studies' findings are built from these numbers.

Shapes: ``values[S, L]`` (seeds x levels) with ``levels[L]`` increasing; per-seed summaries are
``[S]`` (float64), so :mod:`prunelab.methods.findings` can put an interval over seeds on them.
Stories of what they measured: ``docs/obd-vs-magnitude.md``, ``docs/node-criteria.md``,
``docs/train-vs-prune.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def _check(values: Tensor, levels: Tensor | Sequence[float], what: str) -> tuple[Tensor, Tensor]:
    v = torch.as_tensor(values).double()
    f = torch.as_tensor(levels, dtype=torch.float64).flatten()
    if v.dim() != 2 or v.shape[1] != len(f):
        raise ValueError(
            f"{what}: values must be [S, L] with L = {len(f)} levels; got {tuple(v.shape)}"
        )
    if len(f) > 1 and not bool((f.diff() > 0).all()):
        raise ValueError(f"{what}: levels must increase; got {f.tolist()}")
    return v, f


def band_mean(
    values: Tensor, levels: Tensor | Sequence[float], low: float, high: float = math.inf
) -> Tensor:
    """Per seed, the mean of ``values[S, L]`` over the levels in ``(low, high]``: ``[S]``.

    ``band_mean(acc, levels, 0)`` is the area under the curve above the unpruned level (the
    curves' levels are equally spaced). Raises ``ValueError`` if no level lies in the band.
    """
    v, f = _check(values, levels, "band_mean")
    inside = (f > low) & (f <= high)
    if not bool(inside.any()):
        raise ValueError(f"band_mean: no level in ({low}, {high}]; levels {f.tolist()}")
    return v[:, inside].mean(1)


def area(values: Tensor, levels: Tensor | Sequence[float]) -> Tensor:
    """Mean of ``values[S, L]`` over the levels above 0 (the unpruned level excluded): ``[S]``."""
    return band_mean(values, levels, 0.0)


def area_difference(a: Tensor, b: Tensor, levels: Tensor | Sequence[float]) -> Tensor:
    """Paired (seed k with seed k) difference of areas, ``area(a) - area(b)``: ``[S]``."""
    if torch.as_tensor(a).shape != torch.as_tensor(b).shape:
        raise ValueError(f"area_difference: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return area(a, levels) - area(b, levels)


def drop_level(accuracy: Tensor, levels: Tensor | Sequence[float], points: float) -> float:
    """First level where the mean over seeds of ``accuracy[S, L]`` is at least ``points`` below
    its value at the first level (the unpruned model); ``nan`` if it never is."""
    v, f = _check(accuracy, levels, "drop_level")
    mean = v.mean(0)
    hit = (mean <= mean[0] - points).nonzero()
    return f[hit[0]].item() if len(hit) else math.nan


def crossing_level(diff: Tensor, levels: Tensor | Sequence[float]) -> float:
    """The level from which the mean over seeds of ``diff[S, L]`` stays >= 0 to the last level:
    the level after the last one where it is < 0; ``levels[0]`` if it is never < 0, ``nan`` if
    it is < 0 at the last level."""
    v, f = _check(diff, levels, "crossing_level")
    behind = (v.mean(0) < 0).nonzero()
    if not len(behind):
        return f[0].item()
    last = int(behind[-1])
    return math.nan if last + 1 == len(f) else f[last + 1].item()


def rival_difference(area: Tensor, k: int, rivals: Sequence[int]) -> tuple[Tensor, int]:
    """Paired difference of criterion ``k``'s per-seed areas ``area[K, S]`` to its strongest
    rival among ``rivals`` (the one with the highest mean area over seeds): ``([S], rival)``."""
    a = torch.as_tensor(area).double()
    if a.dim() != 2 or not rivals or not all(0 <= j < a.shape[0] for j in (k, *rivals)):
        raise ValueError(f"rival_difference: area must be [K, S] holding {k} and {list(rivals)}")
    best = max(rivals, key=lambda j: a[j].mean().item())
    return a[k] - a[best], best


@dataclass(frozen=True)
class BoundCheck:
    """A bound against what it bounds: ``ratio = bound / observed`` (``inf`` where the observed
    value is 0 and the bound positive, 1 where both are 0), ``holds = bound >= observed``,
    elementwise, and ``worst[S]``: the smallest ratio of each seed (first dimension)."""

    ratio: Tensor
    holds: Tensor
    worst: Tensor


def bound_check(bound: Tensor, observed: Tensor) -> BoundCheck:
    """Compare a bound with the observed quantities (same shape, ``[S, ...]``, both >= 0).

    Raises ``ValueError`` on a shape mismatch or a negative entry.
    """
    b, o = torch.as_tensor(bound).double(), torch.as_tensor(observed).double()
    if b.shape != o.shape or b.dim() == 0:
        raise ValueError(
            f"bound_check: shapes must match, [S, ...]; got {tuple(b.shape)}, {tuple(o.shape)}"
        )
    if bool((b < 0).any()) or bool((o < 0).any()):
        raise ValueError("bound_check: bound and observed must be >= 0")
    ratio = torch.where(o > 0, b / o.clamp_min(1e-300), torch.where(b > 0, math.inf, 1.0))
    return BoundCheck(ratio, b >= o, ratio.reshape(len(ratio), -1).amin(1))
