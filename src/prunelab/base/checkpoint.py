"""Portable checkpoints: safetensors weights with a JSON header, never pickle.

A checkpoint is one ``.safetensors`` file. Its tensors are the model's ``state_dict`` (shared
modules stored once); its string metadata holds ``"prunelab"``, a JSON object with the
architecture (:func:`prunelab.models.spec`), the caller's metadata (training config, data name
and seed, ...) and the package and torch versions. ``load`` rebuilds the ``nn.Sequential`` from
the architecture and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from .. import __version__
from . import models
from .files import atomic_write, to_jsonable

FORMAT = "prunelab-checkpoint/1"


def versions() -> dict[str, str]:
    """Versions of prunelab, torch and Python, recorded in checkpoints and results."""
    return {
        "prunelab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, each shared tensor once (first occurrence)."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def save(path: str | os.PathLike, model: nn.Module, **metadata: Any) -> Path:
    """Save ``model`` (a supported ``nn.Sequential``) and JSON-able ``metadata`` to ``path``.

    The write is atomic. Typical metadata: ``data="circle", seed=0, train={...}``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from prunelab import models
    >>> m = models.mlp((2, 20, 2), seed=0)
    >>> p = save(tempfile.mkdtemp() + "/circle.safetensors", m, data="circle")
    >>> m2, meta = load(p)
    >>> bool(torch.equal(m(torch.ones(1, 2)), m2(torch.ones(1, 2))))
    True
    """
    header = {
        "format": FORMAT,
        "architecture": models.spec(model),
        "metadata": to_jsonable(metadata),
        "versions": versions(),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in _tensors(model).items()}
    blob = safetensors.torch.save(tensors, metadata={"prunelab": json.dumps(header)})
    return atomic_write(path, blob)


def load(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    """Load a checkpoint written by :func:`save`.

    Returns
    -------
    model : nn.Sequential
        In eval mode, with the saved dtype.
    metadata : dict
        The caller's metadata plus ``"versions"`` (those that wrote the file).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (``IsADirectoryError``, a subclass of ``OSError``, if it
        is a folder).
    ValueError
        If the file is not a prunelab checkpoint, is corrupt, or its tensors do not match its
        architecture (missing, unexpected or wrongly shaped entries are named).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"checkpoint.load: path {str(path)!r} is a folder; give a checkpoint file "
            "(.safetensors) written by checkpoint.save"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint.load: path {str(path)!r} does not exist")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("prunelab")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(
            f"checkpoint {str(path)!r} is not a readable safetensors file: {e}"
        ) from None
    if raw is None:
        raise ValueError(
            f"checkpoint {str(path)!r} has no prunelab header; was it saved by "
            "prunelab.checkpoint.save?"
        )
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {str(path)!r} has a corrupt header: {e}") from None
    if header.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint {str(path)!r} has format {header.get('format')!r}; "
            f"this prunelab reads {FORMAT!r}"
        )
    model = models.from_spec(header["architecture"])
    expected = _tensors(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its architecture: "
            f"missing {missing}, unexpected {unexpected}"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise ValueError(
                f"checkpoint {str(path)!r}: tensor {name!r} has shape "
                f"{list(t.shape)}, the architecture needs {list(expected[name].shape)}"
            )
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    dtype = floating[0] if floating else torch.float32  # not a BatchNorm's integer counter
    model = model.to(dtype)
    with torch.no_grad():
        for name, target in _tensors(model).items():
            target.copy_(tensors[name])
    model.eval()
    return model, {**header.get("metadata", {}), "versions": header.get("versions", {})}
