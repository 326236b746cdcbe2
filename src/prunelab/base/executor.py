"""Units of work and the executors that run them: serially, in a local process pool, or on Ray.

A *unit* is a pure function of its arguments (a study's config and the seed or arm it covers).
Its result is stored under a name derived from a hash of what determines it (its arguments and
the code that computes it; open_lth's convention: the folder ``<label>_<hash>/`` in the executor's ``store``, holding ``result.pt`` and
any files the unit wrote), moved into place only when whole, and skipped when already there, so
an interrupted run resumes where it stopped and a finished one re-renders without computing
anything. A unit that writes files (``writes=True``: checkpoints) is given its own folder as
``out``; :func:`run_units` copies those files into the caller's run folder. A unit that fails is
reported with its arguments and error while the others go on; nothing is stored for it, so the
next run retries it. Without a ``store`` the units go to a temporary folder (nothing resumes).

The stored files are pickles (``torch.save``) because unit results are arbitrary dataclasses of
tensors that must come back bitwise; they are a cache the run writes for itself, not a portable
format (checkpoints stay safetensors + JSON).

Ray is imported only when the ``ray`` executor is chosen (``pip install "prunelab[ray]"``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import files
from .progress import track

EXECUTORS = ("serial", "process", "ray")
NOT_HASHED = ("out", "progress")  # arguments that say where and how, not what is computed
RESULT = "result.pt"  # a stored unit's result, in its folder


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``fn(**kwargs)``, stored as ``<label>_<hash of fn and kwargs>/``.

    ``fn`` must be a module-level function (process and Ray workers import it by name).
    Arguments named in ``NOT_HASHED`` do not enter the hash; the contents of the files named in
    ``inputs`` (a user's checkpoint) do. ``writes``: ``fn`` also takes ``out``, a folder of its
    own for the files it writes.
    """

    label: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    writes: bool = False

    def key(self) -> dict[str, Any]:
        """What determines the result (JSON): the function's qualified name, its arguments, the
        SHA-256 of each input file, and the code (:func:`code_digest`: a changed prunelab or
        torch never reuses results computed by another)."""
        args = {k: v for k, v in self.kwargs.items() if k not in NOT_HASHED}
        fn = f"{self.fn.__module__}.{self.fn.__qualname__}"
        key = {"fn": fn, "kwargs": json.loads(json.dumps(files.to_jsonable(args), default=str))}
        key["code"] = code_digest()
        if self.inputs:
            key["inputs"] = {p: _file_digest(p) for p in self.inputs}
        return key

    def digest(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`key` (sorted keys, so stable across runs)."""
        text = json.dumps(self.key(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filename(self) -> str:
        """The name of the unit's folder in the store."""
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.label)
        return f"{safe}_{self.digest()}"


@functools.cache
def code_digest() -> str:
    """SHA-256 over prunelab's own source files (path and bytes) and torch's version: a unit
    stored by other code is computed again rather than loaded (its Results may have other
    fields, or other numbers)."""
    root = Path(__file__).resolve().parents[1]  # the prunelab package
    h = hashlib.sha256(torch.__version__.encode())
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".js", ".html", ".css", ".json"):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _file_digest(path: str) -> str:
    """SHA-256 of a file's bytes ("missing" if there is none: the unit itself will say so)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


@dataclass
class UnitError(RuntimeError):
    """Some units failed; ``failures`` maps each failed unit's label to its error text."""

    failures: dict[str, str]

    def __str__(self) -> str:
        lines = [f"{len(self.failures)} unit(s) failed (rerun to retry them):"]
        for label, error in self.failures.items():
            lines.append(f"  {label}: " + error.replace("\n", "\n    "))
        return "\n".join(lines)


@dataclass(frozen=True)
class Executor:
    """How units run: ``kind`` in ``EXECUTORS``, ``workers`` (0: one per CPU core, or Ray's
    cluster size), ``threads`` torch threads per task in workers, ``ray_address`` (None: start
    and stop a local Ray cluster), and ``store``, the folder that keeps finished units (None:
    a temporary one, so nothing resumes). The command line keeps them in ``OUT/.units``, beside
    the run folders, which each run replaces whole."""

    kind: str = "serial"
    workers: int = 0
    threads: int = 1
    ray_address: str | None = None
    store: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor {self.kind!r}: choose from {', '.join(EXECUTORS)}")
        if self.workers < 0 or self.threads < 1:
            raise ValueError(
                f"workers must be >= 0 and threads >= 1; got {self.workers}, {self.threads}"
            )
        if self.ray_address is not None and self.kind != "ray":
            raise ValueError(f"ray_address needs the ray executor; got executor {self.kind!r}")


SERIAL = Executor()


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int | None) -> bytes:
    """Run one unit (in a worker: with ``threads`` torch threads) and return its pickled result.

    Errors come back as text, so that one failure never stops the others and never needs its
    exception type to be picklable.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = files.to_cpu(fn(**kwargs))
    except Exception as e:  # reported with the unit's config, then retried
        raise _FailedError(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}") from None
    buffer = io.BytesIO()
    torch.save(result, buffer)
    return buffer.getvalue()


class _FailedError(Exception):
    """A unit's error, as text (pickles across processes and Ray)."""


def _load(path: Path) -> Any:
    # our own cache of our own results (see the module docstring), hence weights_only=False
    return torch.load(path, map_location="cpu", weights_only=False)


def run_units(
    units: Sequence[Unit],
    out: str | os.PathLike | None = None,
    *,
    executor: Executor = SERIAL,
    progress: bool = True,
    description: str = "units",
) -> list[Any]:
    """Run the units not yet in ``executor.store``; return every unit's result in order, and
    copy the files the units wrote into the folder ``out``.

    Raises :class:`UnitError` (after every other unit has finished and been stored) if any unit
    failed, naming each with its arguments and error.
    """
    labels = [u.label for u in units]
    if len(set(labels)) < len(labels):
        raise ValueError(f"unit labels must be distinct; got {labels}")
    if executor.store is None:
        with tempfile.TemporaryDirectory(prefix="prunelab-units-") as tmp:
            kept = dataclasses.replace(executor, store=tmp)
            return run_units(units, out, executor=kept, progress=progress, description=description)
    store = Path(executor.store)
    store.mkdir(parents=True, exist_ok=True)
    folders = [store / u.filename() for u in units]
    todo = [i for i, f in enumerate(folders) if not (f / RESULT).is_file()]
    for leftover in store.glob(".*.new-*"):  # what killed runs left, whatever their units
        files.clean_stale(store / leftover.name[1:].rsplit(".new-", 1)[0])
    work: dict[int, Path] = {}
    for i in todo:  # each unit writes into a fresh folder, moved into place when whole
        work[i] = Path(tempfile.mkdtemp(dir=store, prefix=f".{folders[i].name}.new-{os.getpid()}-"))
    failures: dict[str, str] = {}
    try:
        with track(len(units), description, enabled=progress) as advance:
            advance(len(units) - len(todo), status=f"{len(units) - len(todo)} stored")

            def done(i: int, payload: bytes | None, error: str | None) -> None:
                if error is None:
                    files.atomic_write(work[i] / RESULT, payload)
                    shutil.rmtree(folders[i], ignore_errors=True)  # a partial one, never whole
                    os.replace(work.pop(i), folders[i])
                else:
                    u = units[i]
                    failures[u.label] = f"{error.strip()}\nconfig: {u.key()['kwargs']}"
                advance(status=f"{labels[i]} {'failed' if error else 'done'}")

            calls = [(i, _kwargs(units[i], work[i])) for i in todo]
            _RUNNERS[executor.kind](executor, [units[i] for i in todo], calls, done)
    finally:
        for folder in work.values():  # failed or interrupted units leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
    if failures:
        raise UnitError(failures)
    if out is not None:
        for u, folder in zip(units, folders, strict=True):
            if u.writes:
                _gather(folder, Path(out))
    return [_load(f / RESULT) for f in folders]


def _kwargs(unit: Unit, folder: Path) -> dict[str, Any]:
    """The unit's arguments, with ``out`` (its own folder) for a unit that writes files."""
    return {**unit.kwargs, "out": str(folder)} if unit.writes else unit.kwargs


def _gather(folder: Path, out: Path) -> None:
    """Put the files a unit wrote (all but its result) into ``out``, keeping their paths: hard
    links where the file system allows (stored files are only ever replaced, never edited in
    place), copies otherwise."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != RESULT:
            target = out / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def _run_serial(executor: Executor, units, calls, done) -> None:
    for (i, kwargs), u in zip(calls, units, strict=True):
        try:
            payload = _call(u.fn, kwargs, None)  # this process keeps its thread setting
        except _FailedError as e:
            done(i, None, str(e))
            continue
        done(i, payload, None)


def _run_process(executor: Executor, units, calls, done) -> None:
    import concurrent.futures as cf
    import multiprocessing

    if not units:
        return
    workers = min(executor.workers or os.cpu_count() or 1, len(units))
    # spawn, not fork: a forked child inherits torch's thread pools and can deadlock in them
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures = {
            pool.submit(_call, u.fn, kwargs, executor.threads): i
            for (i, kwargs), u in zip(calls, units, strict=True)
        }
        for future in cf.as_completed(futures):
            try:
                done(futures[future], future.result(), None)
            except _FailedError as e:
                done(futures[future], None, str(e))
            except Exception as e:  # a worker that died
                done(futures[future], None, f"{type(e).__name__}: {e}")
    finally:  # on Ctrl-C, drop the queued units (the finished ones are stored)
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(executor: Executor, units, calls, done) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError(
            'executor "ray" needs Ray: pip install "prunelab[ray]" (or pip install "ray>=2.9")'
        ) from None
    if not units:
        return
    started = not ray.is_initialized()
    if started:
        if executor.ray_address is None:
            ray.init(num_cpus=executor.workers or None, include_dashboard=False)
        else:
            ray.init(address=executor.ray_address)
    try:
        task = ray.remote(num_cpus=executor.threads, max_retries=0)(_call)
        pending = {
            task.remote(u.fn, kwargs, executor.threads): i
            for (i, kwargs), u in zip(calls, units, strict=True)
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                done(i, ray.get(ready[0]), None)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                done(i, None, str(cause) if isinstance(cause, _FailedError) else str(e))
            except ray.exceptions.RayError as e:  # a worker or node that died
                done(i, None, f"{type(e).__name__}: {e}")
    finally:
        if started:
            ray.shutdown()


_RUNNERS = {"serial": _run_serial, "process": _run_process, "ray": _run_ray}
