"""Running a study through an executor (:mod:`prunelab.base.executor`).

A study that is split into units of work takes ``executor=`` in its ``run``. A study not (yet)
split runs as one unit: the whole study, stored the same way, so it too resumes (all or
nothing) and re-renders without recomputing. The command line keeps the stored units of the
runs in ``OUT`` in ``OUT/.units`` (:func:`store`): beside the run folders, which a new run
replaces whole, and shared by every study (a unit's name is its hash).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from ..base.executor import SERIAL, Executor, Unit, run_units

STORE = ".units"  # the folder beside the run folders that holds their stored units


def store(out: str | Path) -> Path:
    """Where the units of the runs in the folder ``out`` (``--out``) are stored."""
    return Path(out) / STORE


def split(study: ModuleType) -> bool:
    """Whether ``study.run`` splits its work into units itself (takes ``executor=``)."""
    return "executor" in inspect.signature(study.run).parameters


def run_study(
    study: ModuleType,
    config: Any,
    out: str | Path,
    *,
    progress: bool = True,
    device: str = "cpu",
    executor: Executor = SERIAL,
) -> Any:
    """``study.run(config, out, ...)`` through ``executor``: its units, or itself as one unit."""
    if split(study):
        return study.run(config, out, progress=progress, device=device, executor=executor)
    serial = executor.kind == "serial"  # then the study's own progress bars show
    given = getattr(config, "checkpoint", "")  # a user's model: its contents enter the hash
    unit = Unit(
        study.NAME,
        whole_study,
        dict(name=study.NAME, config=config, device=str(device), progress=progress and serial),
        inputs=(given,) if isinstance(given, str) and given else (),
        writes=True,
    )
    (results,) = run_units(
        [unit], out, executor=executor, progress=progress and not serial, description=study.NAME
    )
    return results


def whole_study(name: str, config: Any, out: str, device: str, progress: bool = False) -> Any:
    """A study that is not split into units, run whole (module-level, so workers can import it)."""
    from . import STUDIES

    return STUDIES[name].run(config, out, progress=progress, device=device)
