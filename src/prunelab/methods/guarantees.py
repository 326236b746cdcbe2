"""Label consistency: when does a bound on the logit error guarantee an unchanged prediction?

A pruned network's logits ``f_hat = f + Delta`` keep the label ``t = argmax f`` whenever every
logit moves by less than half the gap between the two largest ones (Gordon 2021, Fig. 1):

    max_c |Delta_c| < gap / 2,     gap = f_(1) - f_(2)   =>   argmax f_hat = t,

since ``f_hat_t - f_hat_c > f_t - f_c - gap >= 0``. A sharper sufficient condition looks at each
rival separately: ``|Delta_t| + |Delta_c| < f_t - f_c`` for every ``c != t`` (rule
``"pairwise"``). A coreset bound is *additive* (``|Delta_c| <= E``, Mussay et al. 2020) or
*multiplicative* (``|Delta_c| <= eps |f_c|``, Baykal et al. 2019a, b); either becomes a per-logit
bound ``B: [N, C]`` fed to :func:`consistent`. The fraction of a dev set that a bound guarantees
correct is ``mean(1[y = t] 1[consistent])`` (:func:`guaranteed_fraction`), and each example has
a critical bound below which it is safe (:func:`critical_epsilon`, e.g. ``eps*(x) = gap /
(2 max_c |f_c|)``).

Softmax and cross-entropy ignore a common shift ``f + c 1``, the raw error ``max_c |Delta_c|``
does not: :func:`logit_errors` also reports the centred error ``||P Delta||_2`` (``P = I - 1
1^T / C``) and ``(max Delta - min Delta) / 2``, the l-inf distance to the best constant shift
(METHODS.md A6).

Shapes: N examples, C classes. Everything is computed in the logits' dtype; pass float64 for
exact comparisons near the threshold.

References
----------
Gordon (2021). When are neural pruning approximation bounds useful? ICLR 2021 submission,
https://openreview.net/forum?id=Xxli_LIvYI.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..base import checks

RULES = ("half_gap", "pairwise")
KINDS = ("additive", "multiplicative")


def _check_logits(f: Tensor, fn: str, name: str = "f") -> None:
    """Logits ``[N, C]`` with ``N >= 1``, ``C >= 2``, floating and finite."""
    checks.tensor(f, f"guarantees.{fn}", f"{name} (logits)", floating=True)
    if f.dim() != 2 or f.shape[1] < 2:
        raise ValueError(
            f"guarantees.{fn}: {name} (logits) must be [N, C] with C >= 2; got shape "
            f"{list(f.shape)}"
        )


def _check_choice(value: str, choices: tuple[str, ...], name: str, fn: str) -> None:
    if value not in choices:
        raise ValueError(f"{fn}: {name} {value!r}; choose from {list(choices)}")


def _per_logit(value: float | Tensor, f: Tensor) -> Tensor:
    """``value`` as ``[N, C]``: a scalar, ``[N]`` (one per example), or broadcastable as is."""
    v = torch.as_tensor(value, dtype=f.dtype, device=f.device)
    if v.dim() == 1 and v.shape[0] == f.shape[0]:
        v = v.unsqueeze(1)
    return v.expand_as(f)


def top_two(f: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted class ``t = argmax f`` and the gap ``f_(1) - f_(2)``: ``[N, C] -> [N], [N]``."""
    _check_logits(f, "top_two")
    top = f.topk(2, dim=1)
    return top.indices[:, 0], top.values[:, 0] - top.values[:, 1]


def logit_bound(
    f: Tensor,
    *,
    additive: float | Tensor | None = None,
    multiplicative: float | Tensor | None = None,
) -> Tensor:
    """Per-logit error bound ``B: [N, C]``: ``E`` (additive), ``eps |f_c|`` (multiplicative), or their sum.

    ``additive`` and ``multiplicative`` are >= 0: scalars, one value per example (``[N]``),
    or anything broadcastable to ``[N, C]`` (per-class values as ``[1, C]``).
    """
    _check_logits(f, "logit_bound")
    if additive is None and multiplicative is None:
        raise ValueError("logit_bound: give additive=E and/or multiplicative=eps")
    B = torch.zeros_like(f)
    for name, value in (("additive", additive), ("multiplicative", multiplicative)):
        if value is not None and not bool((torch.as_tensor(value).abs() < math.inf).all()):
            raise ValueError(f"guarantees.logit_bound: {name} must be finite; got {value}")
        if value is not None and not bool((torch.as_tensor(value) >= 0).all()):
            raise ValueError(f"logit_bound: {name} must be >= 0; got {value}")
    if additive is not None:
        B = B + _per_logit(additive, f)
    if multiplicative is not None:
        B = B + _per_logit(multiplicative, f) * f.abs()
    return B


def consistent(f: Tensor, bound: Tensor | float, *, rule: str = "half_gap") -> Tensor:
    """Whether a per-logit error bound guarantees ``argmax (f + Delta) = argmax f``.

    With ``t = argmax f`` and ``|Delta_c| <= B_c``:

    ``"half_gap"``: ``max_c B_c < gap / 2`` (Gordon 2021, Fig. 1);
    ``"pairwise"``: ``B_t + B_c < f_t - f_c`` for every ``c != t`` (sharper, METHODS.md A6).

    Both are strict, so a tie at the top (``gap = 0``) is never guaranteed.

    Parameters
    ----------
    f : Tensor [N, C]
        Logits of the unpruned model.
    bound : float or Tensor
        Per-logit bound ``B``: a scalar, ``[N]`` (one per example) or broadcastable to ``[N,
        C]`` (see :func:`logit_bound`).
    rule : str
        One of ``RULES``.

    Returns
    -------
    Tensor [N], bool.
    """
    _check_logits(f, "consistent")
    _check_choice(rule, RULES, "rule", "consistent")
    B = _per_logit(bound, f)
    if not bool((B >= 0).all()):  # NaN fails this too
        raise ValueError(
            "guarantees.consistent: bound must be >= 0 and not NaN; got some that are not"
        )
    t, gap = top_two(f)
    if rule == "half_gap":
        return B.amax(1) < gap / 2
    f_t = f.gather(1, t[:, None])  # (N, 1)
    B_t = B.gather(1, t[:, None])
    ok = (B_t + B < f_t - f) | torch.nn.functional.one_hot(t, f.shape[1]).bool()
    return ok.all(1)


def guaranteed(
    f: Tensor,
    y: Tensor,
    *,
    additive: float | Tensor | None = None,
    multiplicative: float | Tensor | None = None,
    rule: str = "half_gap",
) -> Tensor:
    """Examples guaranteed correct after pruning: ``1[y = argmax f] 1[consistent]``, ``[N]`` bool."""
    t, _ = top_two(f)
    if y.shape != t.shape:
        raise ValueError(f"guaranteed: labels must be [{len(t)}]; got shape {list(y.shape)}")
    B = logit_bound(f, additive=additive, multiplicative=multiplicative)
    return (t == y) & consistent(f, B, rule=rule)


def guaranteed_fraction(
    f: Tensor,
    y: Tensor,
    *,
    additive: float | Tensor | None = None,
    multiplicative: float | Tensor | None = None,
    rule: str = "half_gap",
) -> float:
    """Fraction of a dev set guaranteed to stay correct under an additive or multiplicative bound.

    ``mean_n 1[y_n = t_n] 1[consistent]`` (Gordon 2021, Sec. 4.1). For a multiplicative bound
    this is invariant to a scaling ``alpha > 0`` of the final layer; an additive bound ``E`` is
    not (logits and gaps scale by ``alpha``).

    Parameters
    ----------
    f : Tensor [N, C]
        Logits of the unpruned model on the dev set.
    y : Tensor [N]
        Labels.
    additive, multiplicative : float or Tensor, optional
        ``E`` with ``|Delta_c| <= E``, or ``eps`` with ``|Delta_c| <= eps |f_c|``.
    rule : str
        ``"half_gap"`` or ``"pairwise"``.
    """
    ok = guaranteed(f, y, additive=additive, multiplicative=multiplicative, rule=rule)
    return ok.double().mean().item()


def critical_epsilon(f: Tensor, *, kind: str = "multiplicative", rule: str = "half_gap") -> Tensor:
    """Per-example critical bound: the label is guaranteed for every bound strictly below it.

    ``multiplicative``, ``half_gap``: ``eps*(x) = gap / (2 max_c |f_c|)`` (METHODS.md A6);
    ``multiplicative``, ``pairwise``: ``min_{c != t} (f_t - f_c) / (|f_t| + |f_c|)``;
    ``additive`` (either rule): ``E*(x) = gap / 2``.

    ``f: [N, C] -> [N]`` (0 where ``gap = 0``).
    """
    _check_logits(f, "critical_epsilon")
    _check_choice(kind, KINDS, "kind", "critical_epsilon")
    _check_choice(rule, RULES, "rule", "critical_epsilon")
    t, gap = top_two(f)
    if kind == "additive":
        return gap / 2
    if rule == "half_gap":
        den = 2 * f.abs().amax(1)
        return torch.where(gap > 0, gap / torch.where(den > 0, den, 1), 0)
    f_t = f.gather(1, t[:, None])
    num, den = f_t - f, f_t.abs() + f.abs()  # (N, C)
    ratio = torch.where(num > 0, num / torch.where(den > 0, den, 1), 0)
    ratio = ratio.masked_fill(torch.nn.functional.one_hot(t, f.shape[1]).bool(), torch.inf)
    return ratio.amin(1)


def epsilon_for_fraction(
    f: Tensor, y: Tensor, fraction: float, *, kind: str = "multiplicative", rule: str = "half_gap"
) -> float:
    """The bound needed to guarantee ``fraction`` of the dev set correct (epsilon-first).

    The guaranteed fraction at bound ``e`` is ``P_dev(correct and critical > e)``; the returned
    value ``e_k`` is the ``k``-th largest critical bound among correct examples, ``k =
    ceil(fraction N)``, so every ``e < e_k`` guarantees at least ``fraction`` (Gordon 2021,
    Fig. 2). ``fraction = 0`` gives ``inf``.

    Raises
    ------
    ValueError
        If ``fraction`` is outside [0, 1] or above the model's accuracy on ``(f, y)``.
    """
    t, _ = top_two(f)
    if y.shape != t.shape:
        raise ValueError(f"epsilon_for_fraction: labels must be [{len(t)}]; got {list(y.shape)}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"epsilon_for_fraction: fraction must be in [0, 1]; got {fraction}")
    crit = critical_epsilon(f, kind=kind, rule=rule)[t == y]
    k = int(torch.ceil(torch.tensor(fraction * len(t) * (1 - 1e-12))).item())
    if k == 0:
        return float("inf")
    if k > len(crit):
        raise ValueError(
            f"epsilon_for_fraction: fraction {fraction} exceeds the accuracy {len(crit) / len(t)}"
        )
    return float(crit.sort(descending=True).values[k - 1])


def centre(delta: Tensor) -> Tensor:
    """``P Delta`` with ``P = I - 1 1^T / C``: the logit change minus its mean, ``[N, C]``."""
    return delta - delta.mean(-1, keepdim=True)


class LogitErrors(NamedTuple):
    """Per-example logit errors of ``Delta = f_hat - f``, each ``[N]``.

    ``raw = max_c |Delta_c|``; ``centred = ||P Delta||_2``; ``shift = (max Delta - min Delta) /
    2`` (the l-inf distance to the best constant shift); ``relative = max_c |Delta_c| / |f_c|``
    (the multiplicative error; ``inf`` where ``f_c = 0 != Delta_c``). ``centred`` and ``shift``
    are invariant to ``f_hat + c 1``, as softmax is.
    """

    raw: Tensor
    centred: Tensor
    shift: Tensor
    relative: Tensor


def logit_errors(f: Tensor, f_hat: Tensor) -> LogitErrors:
    """Raw, centred, shift-invariant and relative errors of ``f_hat`` against ``f`` (``[N, C]``)."""
    _check_logits(f, "logit_errors")
    _check_logits(f_hat, "logit_errors", "f_hat")
    if f_hat.shape != f.shape:
        raise ValueError(
            f"logit_errors: f_hat must match f {list(f.shape)}; got {list(f_hat.shape)}"
        )
    delta = f_hat - f
    rel = torch.where(delta == 0, 0, delta.abs() / f.abs())
    return LogitErrors(
        raw=delta.abs().amax(1),
        centred=centre(delta).norm(dim=1),
        shift=(delta.amax(1) - delta.amin(1)) / 2,
        relative=rel.amax(1),
    )
