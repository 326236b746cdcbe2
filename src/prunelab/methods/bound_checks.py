"""Summaries of pruning bounds against what happens, one number per seed over many settings.

A study of approximation bounds (Gordon 2021) measures many settings (regime x method x
guaranteed share, or x kept fraction), each on S seeds. Its claims are about all settings at
once ("the bound is at least 10 times the error everywhere"), so each summary below reduces a
``[K, S]`` table (K settings, S seeds) to ``[S]``: one value per seed, over which a finding
takes its interval. NaN marks a setting not measured on a seed (e.g. not sampled because it
needed too many draws) and is skipped; a seed with nothing measured gets NaN.

    seed_means(v, S)          [S * D] seed-major (seed x draw) -> [S] mean over draws
    exceed_share(v, limit)    share of the K settings with v > limit
    bound_ratio(b, o)         min over settings of b / o (observed 0 or NaN: skipped)
    largest(v), smallest(v)   max, min over settings
    largest_gain(a, b)        max over settings of a - b
    spread(v)                 max / min over settings

Reference: Gordon (2021), "When are neural pruning approximation bounds useful?", ICLR 2021
submission (``sources/004_*.txt``). Measured behaviour: ``docs/approximation-bounds.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _table(values: Tensor | Sequence, where: str) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() != 2 or 0 in v.shape:
        raise ValueError(f"{where}: values must be [K settings, S seeds]; got {tuple(v.shape)}")
    return v


def seed_means(values: Sequence[float] | Tensor, seeds: int) -> Tensor:
    """Per-seed means of a seed-major list of ``seeds * D`` values (D draws per seed) -> [S];
    NaN values are skipped (a seed with none left: NaN)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if seeds < 1 or v.numel() % seeds or v.numel() == 0:
        raise ValueError(f"seed_means: {v.numel()} values do not split into {seeds} seeds")
    return v.reshape(seeds, -1).nanmean(1)  # [S, D] -> [S]


def exceed_share(values: Tensor | Sequence, limit: Tensor | Sequence | float) -> Tensor:
    """Share of the K settings whose value exceeds ``limit`` (a number or one per setting [K]),
    per seed: values [K, S] -> [S]. A NaN value does not exceed."""
    v = _table(values, "exceed_share")
    lim = torch.as_tensor(limit, dtype=torch.float64)
    lim = lim[:, None] if lim.dim() == 1 else lim  # [K] -> [K, 1]
    return (v > lim).double().mean(0)


def bound_ratio(bound: Tensor | Sequence, observed: Tensor | Sequence) -> Tensor:
    """The smallest bound / observed over the K settings, per seed: [K, S] -> [S]; settings
    whose observed value is 0 or NaN are skipped (NaN if none is left)."""
    b, o = _table(bound, "bound_ratio"), _table(observed, "bound_ratio")
    if b.shape != o.shape:
        raise ValueError(f"bound_ratio: shapes differ: {tuple(b.shape)} and {tuple(o.shape)}")
    ratio = torch.where((o > 0) & o.isfinite(), b / o, torch.nan)
    return _nanmin(ratio)


def largest(values: Tensor | Sequence) -> Tensor:
    """The largest value over the K settings, per seed, NaN skipped: [K, S] -> [S]."""
    v = _table(values, "largest")
    return -_nanmin(-v)


def smallest(values: Tensor | Sequence) -> Tensor:
    """The smallest value over the K settings, per seed, NaN skipped: [K, S] -> [S]."""
    return _nanmin(_table(values, "smallest"))


def largest_gain(after: Tensor | Sequence, before: Tensor | Sequence) -> Tensor:
    """max over the K settings of ``after - before``, per seed: [K, S] -> [S]."""
    a, b = _table(after, "largest_gain"), _table(before, "largest_gain")
    if a.shape != b.shape:
        raise ValueError(f"largest_gain: shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return largest(a - b)


def spread(values: Tensor | Sequence) -> Tensor:
    """max / min over the K settings, per seed: [K, S] -> [S] (1: all settings equal)."""
    v = _table(values, "spread")
    return largest(v) / _nanmin(v)


def _nanmin(v: Tensor) -> Tensor:
    """min over dim 0 skipping NaN; NaN where a column is all NaN. [K, S] -> [S]."""
    filled = torch.where(v.isnan(), torch.inf, v).amin(0)
    return torch.where(v.isnan().all(0), torch.nan, filled)
