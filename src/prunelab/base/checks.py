"""Argument checks shared by every public entry point.

Each check takes the value, the public function's name (``fn``, e.g. ``"train.fit"``) and the
argument's name, and returns the value in the form the function works with, or raises
``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value) whose message
names the function, the argument, the bad value and what is accepted. Internal helpers trust
what these return.

The model-dependent checks (``x`` against the model's input shape, dtype and device, labels
against its classes) live on the op view (:meth:`prunelab.ops.View.check_x`,
:meth:`~prunelab.ops.View.check_labels`); :func:`finite_model` is what every entry point that
parses a model runs on its parameters.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

_COUNTS = {1: "one", 2: "two", 3: "three"}
SEED_RANGE = 2**63  # torch.Generator.manual_seed takes 0 .. 2**63 - 1


def _show(value: Any) -> str:
    """A short echo of a bad value for a message."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def integer(value: Any, fn: str, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (a Python or numpy integer; not a bool, not a float), at least
    ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int; got {_show(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}; got {value}")
    return int(value)


def real(
    value: Any,
    fn: str,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the interval given by ``low``/``high`` (closed unless
    ``open_low``/``open_high``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number; got {_show(value)}")
    v = float(value)
    left = "(" if open_low or low is None else "["
    right = ")" if open_high or high is None else "]"
    accepted = f"a finite number in {left}{'-inf' if low is None else low}, "
    accepted += f"{'inf' if high is None else high}{right}"
    ok = v == v and abs(v) != float("inf")
    ok = ok and (low is None or (v > low if open_low else v >= low))
    ok = ok and (high is None or (v < high if open_high else v <= high))
    if not ok:
        raise ValueError(f"{fn}: {name} must be {accepted}; got {value!r}")
    return v


def seed(value: Any, fn: str, name: str = "seed") -> int:
    """An integer seed in ``0 .. 2**63 - 1`` (what ``torch.Generator.manual_seed`` takes)."""
    if isinstance(value, torch.Generator):
        raise TypeError(
            f"{fn}: {name} must be an int seed in 0..2**63-1; got a torch.Generator "
            f"(pass an int here; functions that take a generator call it 'generator')"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int seed in 0..2**63-1; got {_show(value)}")
    if not 0 <= value < SEED_RANGE:
        raise ValueError(f"{fn}: {name} must be an int seed in 0..2**63-1; got {value}")
    return int(value)


def generator(value: Any, fn: str, name: str = "generator") -> torch.Generator | None:
    """A ``torch.Generator`` or ``None`` (the function's documented default)."""
    if value is not None and not isinstance(value, torch.Generator):
        hint = " (make one with torch.Generator().manual_seed(seed))"
        raise TypeError(
            f"{fn}: {name} must be a torch.Generator or None; got {_show(value)}"
            f"{hint if isinstance(value, numbers.Integral) else ''}"
        )
    return value


def seed_or_generator(value: Any, fn: str, name: str = "seed") -> torch.Generator:
    """A private CPU generator seeded with an int ``value``; a given generator is used as is."""
    if isinstance(value, torch.Generator):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{fn}: {name} must be an int seed in 0..2**63-1 or a torch.Generator; "
            f"got {_show(value)}"
        )
    return torch.Generator().manual_seed(seed(value, fn, name))


def widths(value: Any, fn: str, name: str = "widths", *, at_least: int = 2) -> tuple[int, ...]:
    """A sequence of ``at_least`` or more positive ints (no floats, even whole ones)."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) >= at_least
    if ok:
        ok = all(
            not isinstance(w, bool) and isinstance(w, numbers.Integral) and w >= 1 for w in value
        )
    if not ok:
        raise ValueError(
            f"{fn}: {name} must be a sequence of at least {_COUNTS.get(at_least, at_least)} "
            "positive ints, e.g. "
            f"(2, 20, 2); got {_show(value)}"
        )
    return tuple(int(w) for w in value)


def instance(value: Any, kind: type | tuple[type, ...], fn: str, name: str, accepted: str) -> Any:
    """``value`` if it is a ``kind``; otherwise a ``TypeError`` saying ``accepted``."""
    if not isinstance(value, kind):
        raise TypeError(f"{fn}: {name} must be {accepted}; got {type(value).__name__}")
    return value


def tensor(
    value: Any,
    fn: str,
    name: str,
    *,
    dim: int | None = None,
    floating: bool = False,
    nonempty: bool = True,
    finite: bool = True,
) -> Tensor:
    """A tensor with ``dim`` dimensions (if given), a floating dtype (if ``floating``), at least
    one entry (if ``nonempty``) and no NaN or inf (if ``finite``)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor; got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise ValueError(
            f"{fn}: {name} must have {dim} dimension(s); got shape {tuple(value.shape)}"
        )
    if floating and not value.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor; got {value.dtype}")
    if nonempty and value.numel() == 0:
        raise ValueError(
            f"{fn}: {name} holds no samples (shape {tuple(value.shape)}); give at least one"
        )
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{fn}: {name} holds {bad} NaN or inf value(s) out of {value.numel()}; "
            "it must be finite"
        )
    return value


def finite_model(model: nn.Module, fn: str) -> None:
    """Raise unless every floating parameter and buffer of ``model`` is finite (a NaN weight
    would turn every result into NaN or a meaningless accuracy)."""
    named = [
        (name, p.detach())
        for name, p in [*model.named_parameters(), *model.named_buffers()]
        if p.is_floating_point() and p.numel() and not p.is_meta  # meta: no values to check
    ]
    if not named:
        return
    device = named[0][1].device  # one synchronisation for the whole model on a GPU
    if bool(torch.stack([torch.isfinite(p).all().to(device) for _, p in named]).all()):
        return
    for pname, p in named:
        if not bool(torch.isfinite(p).all()):
            bad = int((~torch.isfinite(p)).sum())
            raise ValueError(
                f"{fn}: the model's {pname} holds {bad} NaN or inf value(s); a model must have "
                "finite parameters (was it trained with too high a learning rate?)"
            )
