"""What every study shares: the report vocabulary and config plumbing.

A study module defines ``NAME``, ``SUMMARY`` (one line), a frozen ``Config`` dataclass (help text
in ``field(metadata={"help": ...})``, quick-mode overrides in ``Config.QUICK``), a ``Results``
dataclass, ``run(config, out, *, progress) -> Results``, ``headline(results) -> dict``,
``findings(results, config) -> list[Finding]`` (the source's claims with our measurement and a
verdict by a stated rule, :mod:`prunelab.methods.findings`; stored in results.json and gathered
into ``run all``'s scoreboard) and ``sections(results, config) -> list[Section]``. ``headline``
and ``findings`` live in the study module and compute from ``Results`` with tested library
calls; the report module only formats. A study split into units of work
(:mod:`prunelab.base.executor`) also takes ``executor=``; :func:`.units.run_study` runs any
other study as one unit. Figures are built with ``matplotlib.figure.Figure``
directly (no pyplot, so no global figure state).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure as MplFigure


@dataclass
class Table:
    """A table for the report: header ``columns`` and ``rows`` of numbers or strings."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Plot:
    """A figure for the report; ``name`` becomes the PNG file name in the run folder."""

    name: str
    figure: MplFigure
    caption: str = ""


@dataclass
class Section:
    """One section of a report: a title, paragraphs of text, tables and figures (in order)."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with help text (shown by ``prunelab run STUDY --help``)."""
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return field(default=default, metadata={"help": help}, **kwargs)


def config_fields(config_cls: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    """The public fields of a config class with their resolved types."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(config_cls) if f.init}


def coerce(kind: Any, value: Any, *, name: str) -> Any:
    """Convert ``value`` (from TOML or the command line) to the field type ``kind``."""
    origin = typing.get_origin(kind)
    try:
        if origin is tuple:
            (item, *_) = typing.get_args(kind)
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(item(v) for v in value)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind in (int, float, str):
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name!r}: cannot read {value!r} as {_type_name(kind)}") from None
    return value


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a comma-separated list of {typing.get_args(kind)[0].__name__}"
    return getattr(kind, "__name__", str(kind))


def make_config(
    config_cls: type, *, quick: bool = False, overrides: Mapping[str, Any] | None = None
) -> Any:
    """Build a config: defaults, then ``config_cls.QUICK`` if ``quick``, then ``overrides``.

    Raises ``KeyError`` naming an unknown option and listing the valid ones.
    """
    fields = config_fields(config_cls)
    values: dict[str, Any] = dict(getattr(config_cls, "QUICK", {})) if quick else {}
    for key, value in (overrides or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            valid = ", ".join(sorted(k.replace("_", "-") for k in fields))
            raise KeyError(
                f"unknown option {key!r} for {config_cls.__module__}: choose from {valid}"
            )
        values[name] = coerce(fields[name][0], value, name=key)
        check_value(fields[name][0], values[name], name=key)
    return config_cls(**values)


# Integer options that count something there must be at least one of (a name ending in one of
# these); other integers must be >= 0, seeds in 0..2**63-1, floats finite and learning rates > 0.
AT_LEAST_ONE = ("epochs", "width", "widths", "batch_size", "_batch", "_train", "n_test", "n_dev")
AT_LEAST_ONE_EXCEPT = ("finetune",)  # zero fine-tuning epochs is a choice


def check_value(kind: Any, value: Any, *, name: str) -> None:
    """Raise ``ValueError`` naming option ``name`` unless ``value`` is in its accepted range."""
    key = name.replace("-", "_")
    items = value if isinstance(value, tuple) else (value,)
    if key == "seed":
        if not 0 <= value < 2**63:
            raise ValueError(f"option {name!r}: must be an int in 0..2**63-1; got {value!r}")
        return
    positive = key.endswith(AT_LEAST_ONE) and not any(k in key for k in AT_LEAST_ONE_EXCEPT)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"option {name!r}: must be a finite number; got {value!r}")
        if isinstance(v, int) and v < (1 if positive else 0):
            least = "1" if positive else "0"
            raise ValueError(f"option {name!r}: must be an int >= {least}; got {value!r}")
        if isinstance(v, float) and key.endswith("lr") and v <= 0:
            raise ValueError(f"option {name!r}: must be a learning rate > 0; got {value!r}")
