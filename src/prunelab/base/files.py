"""Atomic file writes and JSON encoding of results (tensors, dataclasses, numpy values).

Every file prunelab writes goes through :func:`atomic_write`: the bytes go to a temporary file in
the same folder, are flushed to disk, and the temporary file is renamed over the target, so an
interrupted run never leaves a half-written result behind. A whole run folder is written into a
fresh sibling and swapped in at the end (:func:`fresh_folder`), so a run folder always holds one
complete run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename). Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_NEW, _OLD = "new", "old"  # a run being written; the previous run while the new one moves in


def _sibling(path: Path, kind: str) -> str:
    """Name prefix of ``path``'s temporary siblings of ``kind`` written by this process."""
    return f".{path.name}.{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(path: str | os.PathLike) -> None:
    """Remove the temporary siblings that dead processes left beside ``path``.

    A run killed while writing leaves ``.NAME.new-PID-*`` (deleted here); one killed between
    moving the previous run aside and moving the new one in leaves ``.NAME.old-PID-*`` and no
    ``NAME``: the previous run is moved back. Siblings of live processes are left alone.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for kind in (_OLD, _NEW):  # an old run is restored before a new one could be mistaken
        for tmp in sorted(path.parent.glob(f".{glob.escape(path.name)}.{kind}-*")):
            pid = tmp.name[len(f".{path.name}.{kind}-") :].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)) or not tmp.is_dir():
                continue
            if kind == _OLD and not path.exists():
                os.replace(tmp, path)
            else:
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fresh_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty folder beside ``path`` to write a whole run into; on success it replaces
    ``path``, so ``path`` always holds one complete run (the previous one, or the new one).

    Stale temporary folders of dead runs are cleaned first (:func:`clean_stale`). If the block
    raises (or the process is interrupted), the new folder is deleted and ``path`` is
    untouched. The swap is two renames in the same parent folder: a kill between them leaves
    the previous run under ``.NAME.old-PID-*``, which the next run moves back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is a file, not a run folder")
    clean_stale(path)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=_sibling(path, _NEW)))
    try:
        yield work
        os.chmod(work, 0o755)  # mkdtemp creates 0700; runs are meant to be shared
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_sibling(path, _OLD)))
            os.replace(path, old)  # an empty folder is replaced by a rename
        os.replace(work, path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor inside (dataclass fields, dicts, lists, tuples) on the CPU.

    What a study returns goes through this, so results computed on a GPU format and save like
    any others.
    """
    if isinstance(value, Tensor):
        return value.cpu()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: to_cpu(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    if isinstance(value, tuple):
        items = [to_cpu(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def to_jsonable(value: Any) -> Any:
    """Convert tensors, arrays, dataclasses, tuples and non-finite floats to plain JSON values.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has no literal
    for them); :func:`from_jsonable` turns them back.
    """
    if isinstance(value, Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value


def _float(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, list):
        return [_float(u) for u in v]
    return v


def from_jsonable(kind: Any, value: Any) -> Any:
    """Rebuild a value of type ``kind`` (a dataclass, ``Tensor``, container hint) from JSON."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if kind is Tensor:
        return torch.tensor(_float(value))
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        fields = {f.name for f in dataclasses.fields(kind) if f.init}
        return kind(**{k: from_jsonable(hints[k], v) for k, v in value.items() if k in fields})
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return from_jsonable(options[0], value) if len(options) == 1 else _float(value)
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return [from_jsonable(item, v) for v in value]
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in value)
        return tuple(from_jsonable(a, v) for a, v in zip(args, value, strict=False))
    if origin is dict:
        _, item = typing.get_args(kind) or (Any, Any)
        return {k: from_jsonable(item, v) for k, v in value.items()}
    if kind is float:
        return float(_float(value))
    return _float(value)


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Atomically write ``value`` (see :func:`to_jsonable`) as indented JSON."""
    return atomic_write(path, json.dumps(to_jsonable(value), indent=1, allow_nan=False) + "\n")
