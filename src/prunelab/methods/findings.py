"""Findings: a source's claim, the source's figure, our measurement and a verdict by a stated rule.

A study reports each claim of its source as a :class:`Finding`. The verdict is never written by
hand: it comes from one of the rules below, each a pure function of our measurement (values over
seeds, so the interval is part of the decision), and the rule's text goes with the finding so a
reader can check it.

    holds          the measurement satisfies the rule (at 95% over seeds where there are seeds)
    differs        it does not; ``detail`` gives the size and, where known, the cause
    not measured   the study does not measure the claim, the measurement is not finite on
                   some seed, or (``within``) too few seeds to decide; ``detail`` says which

Rules (``values``: one number per seed):

    above(values, t)        holds iff the 95% interval of the mean lies above t
    below(values, t)        holds iff it lies below t
    within(values, lo, hi, tol)
                            an equivalence test: holds iff the interval lies inside the band
                            [lo - tol, hi + tol], differs iff it lies wholly outside it, and is
                            not measured (undecided: more seeds decide) where it straddles an edge
    every(values, pred)     holds iff pred holds on every seed (a claim about each run; ours
                            lists each seed's value)

With one seed the interval is the value itself, and the rule's text says so.

Each rule takes ``bounds``, the quantity's range (an accuracy in %: ``(0, 100)``), to which the
interval is clipped: two seeds give wide intervals, never ones past what the quantity can be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import stats

VERDICTS = ("holds", "differs", "not measured")
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """The mean over ``n`` seeds with its two-sided 95% Student-t interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2 or self.low == self.high:
            return _num(self.mean)
        return f"{_num(self.mean)} [{_num(self.low)}, {_num(self.high)}]"


@dataclass(frozen=True)
class Finding:
    """One claim of the source and what our runs say about it.

    ``claim`` is the source's statement, ``source`` its own figure ("" where it has none),
    ``ours`` our measurement as text (mean and 95% interval over seeds), ``verdict`` one of
    ``VERDICTS``, ``rule`` the stated rule that decided it, ``detail`` the size or cause of a
    difference, ``section`` the report section holding the evidence, and ``estimate`` the numbers.
    """

    claim: str
    source: str
    ours: str
    verdict: str
    rule: str
    detail: str = ""
    section: str = ""
    estimate: Estimate | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: choose from {', '.join(VERDICTS)}")


def estimate(
    values: Tensor | Sequence[float],
    *,
    level: float = LEVEL,
    bounds: tuple[float, float] | None = None,
) -> Estimate:
    """Mean of per-seed ``values`` [S] and its Student-t interval (zero width for one seed),
    the interval clipped to the quantity's range ``bounds`` (an accuracy in %: (0, 100)).

    Non-finite values are an error: a claim measured as NaN is not measured.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("estimate: values is empty; give one number per seed")
    if not torch.isfinite(v).all():
        raise ValueError(f"estimate: values must be finite; got {v.tolist()}")
    mean, half = stats.mean_interval(v, level=level)
    m, h = mean.item(), half.item()
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    if not lo <= hi:
        raise ValueError(f"estimate: bounds must be (low, high) with low <= high; got {bounds}")
    return Estimate(m, min(max(m - h, lo), hi), max(min(m + h, hi), lo), v.numel())


def _num(x: float) -> str:
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.2e}"


def _subject(values) -> str:
    """What a rule decides on: the interval of the mean, or the value itself for one seed."""
    n = torch.as_tensor(values).numel()
    return "the 95% interval of the mean" if n > 1 else "the value (one seed)"


def _unmeasured(claim, source, values, rule, detail, section) -> Finding | None:
    """A "not measured" finding naming the seeds whose value is not finite (a NaN measurement
    is stated, never averaged or dropped); None when every value is finite."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    bad = (~torch.isfinite(v)).nonzero().flatten().tolist()
    if not bad:
        return None
    why = f"The measurement is not finite on seed(s) {', '.join(map(str, bad))} of {v.numel()}."
    return Finding(claim, source, "not finite", "not measured", rule, f"{why} {detail}".strip(),
                   section)  # fmt: skip


def _finding(claim, source, e, holds, rule, detail, section, unit="") -> Finding:
    ours = f"{e}{unit}" + (f" ({e.n} seeds)" if e.n > 1 else "")
    return Finding(claim, source, ours, "holds" if holds else "differs", rule, detail, section, e)


def above(
    claim: str,
    values: Tensor | Sequence[float],
    threshold: float = 0.0,
    *,
    source: str = "",
    detail: str = "",
    section: str = "",
    unit: str = "",
    bounds: tuple[float, float] | None = None,
) -> Finding:
    """Holds iff the 95% interval of the mean of ``values`` lies above ``threshold``."""
    rule = f"holds iff {_subject(values)} lies above {_num(threshold)}"
    if (f := _unmeasured(claim, source, values, rule, detail, section)) is not None:
        return f
    e = estimate(values, bounds=bounds)
    return _finding(claim, source, e, e.low > threshold, rule, detail, section, unit)


def below(
    claim: str,
    values: Tensor | Sequence[float],
    threshold: float = 0.0,
    *,
    source: str = "",
    detail: str = "",
    section: str = "",
    unit: str = "",
    bounds: tuple[float, float] | None = None,
) -> Finding:
    """Holds iff the 95% interval of the mean of ``values`` lies below ``threshold``."""
    rule = f"holds iff {_subject(values)} lies below {_num(threshold)}"
    if (f := _unmeasured(claim, source, values, rule, detail, section)) is not None:
        return f
    e = estimate(values, bounds=bounds)
    return _finding(claim, source, e, e.high < threshold, rule, detail, section, unit)


def within(
    claim: str,
    values: Tensor | Sequence[float],
    low: float,
    high: float,
    *,
    tol: float = 0.0,
    source: str = "",
    detail: str = "",
    section: str = "",
    unit: str = "",
    bounds: tuple[float, float] | None = None,
) -> Finding:
    """An equivalence test against the source's range ``[low, high]`` (a single figure:
    ``low == high``) widened by the stated tolerance ``tol``: holds iff the 95% interval of the
    mean lies inside ``[low - tol, high + tol]``, differs iff it lies wholly outside, and is
    "not measured" where it straddles an edge (too few seeds to decide; the detail says so).

    A rule that held whenever the interval merely met the range would favour "holds" exactly
    when the seeds are few and the interval wide.
    """
    if not low <= high:
        raise ValueError(f"within: low must be <= high; got {low}, {high}")
    if not tol >= 0:
        raise ValueError(f"within: tol must be >= 0; got {tol}")
    a, b = low - tol, high + tol
    band = _num(a) if a == b else f"[{_num(a)}, {_num(b)}]"
    what = _num(low) if low == high else f"[{_num(low)}, {_num(high)}]"
    told = f" ± {_num(tol)}" if tol else ""
    rule = (
        f"holds iff {_subject(values)} lies inside the source's {what}{told} = {band}; "
        "differs iff it lies wholly outside"
    )
    if (f := _unmeasured(claim, source, values, rule, detail, section)) is not None:
        return f
    e = estimate(values, bounds=bounds)
    f = _finding(claim, source, e, a <= e.low and e.high <= b, rule, detail, section, unit)
    if f.verdict == "differs" and e.low <= b and e.high >= a:  # straddles an edge of the band
        why = (
            f"Undecided: the interval {_num(e.low)} to {_num(e.high)} reaches both inside and "
            f"outside {band} ({e.n} seed{'s' if e.n > 1 else ''}); more seeds would decide."
        )
        f = Finding(claim, source, f.ours, "not measured", rule, f"{why} {detail}".strip(),
                    section, e)  # fmt: skip
    return f


def every(
    claim: str,
    values: Tensor | Sequence[float],
    predicate: Callable[[float], bool],
    condition: str,
    *,
    source: str = "",
    detail: str = "",
    section: str = "",
    unit: str = "",
    bounds: tuple[float, float] | None = None,
) -> Finding:
    """Holds iff ``predicate`` is true for the value of every seed; ``condition`` states it."""
    n = torch.as_tensor(values).numel()
    rule = f"holds iff {condition} on every seed" if n > 1 else f"holds iff {condition}"
    if (f := _unmeasured(claim, source, values, rule, detail, section)) is not None:
        return f
    e = estimate(values, bounds=bounds)
    v = torch.as_tensor(values, dtype=torch.float64).flatten().tolist()
    holds = all(predicate(x) for x in v)
    f = _finding(claim, source, e, holds, rule, detail, section, unit)
    if len(v) > 1:  # a claim about each run: show each run's value, not an interval of the mean
        ours = ", ".join(_num(x) for x in v) + f"{unit} ({len(v)} seeds)"
        f = Finding(f.claim, f.source, ours, f.verdict, f.rule, f.detail, f.section, e)
    return f


def not_measured(claim: str, why: str, *, source: str = "", section: str = "") -> Finding:
    """A claim of the source this study does not measure, and why (never dropped silently)."""
    return Finding(claim, source, "-", "not measured", "not measured", why, section)


def tally(findings: Sequence[Finding]) -> dict[str, int]:
    """How many findings have each verdict, in the order of ``VERDICTS``."""
    return {v: sum(f.verdict == v for f in findings) for v in VERDICTS}


def direction(e: Estimate, threshold: float = 0.0, *, above: bool = True) -> str:
    """What an estimate says about a claim that the mean lies above (``above=False``: below)
    ``threshold``: significant, the same direction but not significant (the interval reaches
    past ``threshold``), or the opposite direction (the mean on the other side)."""
    sign = 1 if above else -1
    side = "above" if above else "below"
    low = e.low if above else -e.high
    mean, t = sign * e.mean, sign * threshold
    if low > t:
        return f"The interval lies {side} {_num(threshold)}."
    if mean > t:
        return (
            f"Same direction as the claim, not significant: the mean is {side} "
            f"{_num(threshold)} but the interval reaches past it ({e.n} seeds)."
        )
    return f"The opposite direction: the mean is not {side} {_num(threshold)}."


def noted(f: Finding, threshold: float = 0.0, *, above: bool = True) -> Finding:
    """``f`` with :func:`direction` appended to its detail where the verdict is "differs"."""
    if f.verdict != "differs" or f.estimate is None:
        return f
    note = direction(f.estimate, threshold, above=above)
    detail = f"{f.detail} {note}" if f.detail else note
    return Finding(f.claim, f.source, f.ours, f.verdict, f.rule, detail, f.section, f.estimate)
