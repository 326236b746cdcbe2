"""The interactive explorer: one self-contained HTML page to take nodes out of a network by hand.

:func:`page` embeds a network's weights (float64), a sample of its data, the hidden nodes'
activation statistics and, for 2-D inputs, a ``G x G`` grid over ``[-lim, lim]^2`` with its
labels, as base64 arrays in a JSON block; ``explorer.js`` (inlined, no dependencies, no network
access) computes everything in the browser in ``Float64Array`` arithmetic. The page shows the
network with every hidden node as a clickable circle (radius growing with the node's
activation std), the loss and accuracy on the embedded sample, and either a heatmap of the
output probability with the data and the decision boundary (2-D inputs) or per-class accuracy
bars and sample images with their predictions (other inputs).

Each number the page shows equals a Python function on the same sample (float64):

- plain removal: loss and accuracy under the 0/1 node mask ``m`` are
  ``ablation.mask_losses(model, x, y, m[None])`` and the argmax of
  ``masks.masked_logits(model, x, m[None])``; the node tooltip's ``dL/dm_j`` is
  ``mask_losses``'s gradient;
- mean compensation: the network is ``surgery.remove_nodes(model, removed,
  compensate="mean", x=x)``: the page takes the means layer by layer in the network as
  pruned so far, exactly as ``remove_nodes`` does;
- the heatmap is ``P(class 1)`` (two classes; else the class colours weighted by
  ``softmax``) of that network on ``data.grid(G, lim)``;
- hovering or focusing node ``j`` shows ``d CE(x_g, y_g) / d m_j`` at every grid point
  ``x_g`` with the labels ``y_g = data.plane_labels(sample, grid)``: in plain mode
  ``ablation.point_mask_gradients(model, grid, labels, m)``; with compensation every node
  enters the next layer as ``e_j = c_j + m_j (a_j - c_j)``, ``c_j`` its mean (taken as above
  and held fixed), so the gradient says what fading the node towards its mean would do.

The node sizes use each node's activation mean and (population) std over the sample with all
nodes on; "remove the k lowest-std nodes" ranks all hidden nodes of the network together (ties
by index). "Random subset" keeps node ``t`` iff ``u_t < p``, the ``u_t`` drawn in node order
from a mulberry32 generator seeded with the given seed: the same seed gives the same subset.

A toggle updates incrementally: the first layer after a changed node gets a rank-one correction
of its pre-activations, later layers are recomputed; on a 2-50-50-2 net with a 200 x 200 grid
that is a few million multiply-adds, tens of milliseconds (``tests/test_explorer_browser.py``
prints the measured time).
"""

from __future__ import annotations

import base64
import copy
import html
import importlib.resources
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...base import checkpoint, data, models
from ...base.files import atomic_write

EXPLORER_CHECKPOINT = "explorer.safetensors"  # what a study saves into its run folder
EXPLORER_PAGE = "explorer.html"
IMAGES = 12  # sample images shown for inputs that are not 2-D
_DTYPES = {"f64": "<f8", "f32": "<f4", "u8": "u1", "i32": "<i4"}
_PLACEHOLDER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")


def default_samples(features: int) -> int:
    """How many data points a page embeds by default: 1000 for 2-D inputs, else 500."""
    return 1000 if features == 2 else 500


def _array(values: Tensor | np.ndarray, dtype: str) -> dict[str, Any]:
    """A little-endian array as ``{"dtype", "shape", "b64"}`` (decoded by explorer.js)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(values).astype(_DTYPES[dtype]))
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def _colormap(name: str) -> dict[str, Any]:
    """256 RGB entries of a matplotlib colormap as uint8 ``[256, 3]``."""
    import matplotlib

    rgba = matplotlib.colormaps[name](np.linspace(0, 1, 256))  # [256, 4] in [0, 1]
    return _array(np.round(rgba[:, :3] * 255), "u8")


def _image_shape(x: Tensor) -> list[int] | None:
    """``[rows, cols]`` if the samples are images (2-D samples, or a square number >= 16)."""
    if x.dim() == 3:
        return list(x.shape[1:])
    D = x.flatten(1).shape[1]
    side = math.isqrt(D)
    return [side, side] if D >= 16 and side * side == D else None


def _sample_images(y: Tensor, classes: int, count: int) -> list[int]:
    """Indices of ``count`` samples: the first of each class, then the next ones in order."""
    first = [int(torch.nonzero(y == c)[0]) for c in range(classes) if bool((y == c).any())]
    rest = [i for i in range(len(y)) if i not in first]
    return sorted((first + rest)[: min(count, len(y))])


def _plane(sample: data.Dataset, grid: int, lim: float) -> dict[str, Any]:
    """The heatmap grid of a 2-D data set: axis, labels for the gradient maps, reference curve."""
    points = data.grid(grid, lim, dtype=torch.float64)  # [G*G, 2], x1 outer, x0 inner
    labels = data.plane_labels(sample, points)  # [G*G]
    reference = None
    if sample.name == "circle":  # the rule the circle net learns: radius sqrt(2/pi)
        t = torch.linspace(0, 2 * math.pi, 181, dtype=torch.float64)
        reference = (math.sqrt(2 / math.pi) * torch.stack([t.cos(), t.sin()], 1)).tolist()
    return {
        "n": grid,
        "lim": lim,
        "axis": _array(points[:grid, 0], "f64"),
        "labels": _array(labels, "u8" if sample.classes < 256 else "i32"),
        "reference": reference,
    }


def payload(
    model: nn.Module,
    dataset: data.Dataset,
    *,
    title: str | None = None,
    source: str = "",
    samples: int | None = None,
    grid: int = 200,
    lim: float = 2.0,
) -> dict[str, Any]:
    """Everything the page needs, as a JSON-able dict of metadata and base64 arrays.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, with at least one hidden layer (any
        dtype; the page computes in float64, so float32 weights are embedded exactly).
    dataset : Dataset
        Data of the model's input shape; the first ``samples`` points are embedded.
    title, source : str
        Page title (default: the architecture and data) and a line saying where the network
        comes from.
    samples : int, optional
        Points to embed (default :func:`default_samples`, at most ``len(dataset)``).
    grid, lim : int, float
        Heatmap resolution and extent (2-D inputs only).

    Raises
    ------
    TypeError
        If ``model`` is not a supported ``nn.Sequential``.
    ValueError
        If the model has no hidden layer, the data's feature count or labels do not fit the
        model, or ``samples``, ``grid`` or ``lim`` is out of range.
    """
    net = models.parse(copy.deepcopy(model).double().eval(), method="explorer")
    if not net.hidden:
        raise ValueError("explorer: the model has no hidden layer, so there are no nodes to remove")
    flat = dataset.flatten()
    D, C = flat.features, net.out_features
    if net.in_features != D:
        raise ValueError(
            f"explorer: data {dataset.name!r} has {D} features but the model takes "
            f"{net.in_features} inputs"
        )
    if dataset.classes > C:
        raise ValueError(
            f"explorer: data {dataset.name!r} has {dataset.classes} classes but the model has "
            f"{C} outputs"
        )
    n = default_samples(D) if samples is None else samples
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"explorer: samples must be a positive int; got {samples!r}")
    if D == 2 and (not isinstance(grid, int) or grid < 2 or not lim > 0):
        raise ValueError(f"explorer: need grid >= 2 and lim > 0; got grid={grid!r}, lim={lim!r}")
    sample = flat[: min(n, len(flat))]
    x64 = sample.x.double()  # [N, D], exact: float32 -> float64
    acts = torch.cat(net.activations(x64), 1)  # [N, H], all nodes on
    widths = [D, *net.hidden_sizes, C]
    names = sorted({layer.activation for layer in net.hidden})
    return {
        "title": title or f"{'-'.join(map(str, widths))} {'/'.join(names)} net on {dataset.name}",
        "source": source,
        "data": dataset.name,
        "classes": C,
        "widths": widths,
        "layers": [
            {
                "W": _array(layer.weight, "f64"),  # [H_out, H_in]
                "b": _array(
                    layer.bias if layer.bias is not None else torch.zeros(layer.width), "f64"
                ),
                "activation": layer.activation,
                "slope": layer.slope,
            }
            for layer in net.layers
        ],
        "x": _array(sample.x, "f32" if sample.x.dtype == torch.float32 else "f64"),
        "y": _array(sample.y, "i32"),
        "mean": _array(acts.mean(0), "f64"),
        "std": _array(acts.std(0, correction=0), "f64"),
        "plane": _plane(sample, grid, float(lim)) if D == 2 else None,
        "image": _image_shape(dataset.x) if D != 2 else None,
        "images": _sample_images(sample.y, C, IMAGES) if D != 2 else [],
        "colormaps": {"prob": _colormap("viridis"), "grad": _colormap("RdBu_r")},
    }


def page(model: nn.Module, dataset: data.Dataset, **options: Any) -> str:
    """The explorer as one self-contained HTML document (see :func:`payload` for options)."""
    content = payload(model, dataset, **options)
    files = importlib.resources.files(__package__)
    js = (files / "explorer.js").read_text()
    if "</script" in js.lower():
        raise ValueError("explorer.js must not contain '</script' (it is inlined)")
    parts = {
        "TITLE": html.escape(content["title"]),
        "CSS": (files / "explorer.css").read_text(),
        "JS": js,
        # "</" could end the <script> block early; "<\/" means the same in JSON
        "DATA": json.dumps(content, separators=(",", ":"), allow_nan=False).replace("</", "<\\/"),
    }
    template = (files / "explorer.html").read_text()
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)


def write(path: str | os.PathLike, model: nn.Module, dataset: data.Dataset, **options: Any) -> Path:
    """Write the page for ``model`` on ``dataset`` to ``path`` (atomically); returns the path."""
    return atomic_write(path, page(model, dataset, **options))


def load_data(name: str, *, seed: int = 0) -> data.Dataset:
    """The data a page embeds: the test part of the built-in set ``name``, or a data file."""
    if name in data.LOADERS:
        return data.load(name, seed=seed).test
    if Path(name).is_file():
        return data.from_file(name)
    raise ValueError(
        f"explorer: data {name!r} is neither a built-in set ({', '.join(sorted(data.LOADERS))}) "
        "nor an existing data file"
    )


def from_checkpoint(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    data_name: str | None = None,
    samples: int | None = None,
) -> Path:
    """Write the page for a checkpoint; the data default to those named in its metadata.

    Parameters
    ----------
    path : path
        A checkpoint written by :func:`prunelab.checkpoint.save`.
    out : path, optional
        The page to write (default: the checkpoint's path with the suffix ``.html``).
    data_name : str, optional
        A built-in data set or a data file; default the metadata's ``data`` (its test part,
        drawn with the metadata's ``seed``).
    samples : int, optional
        Points to embed (default: the metadata's ``samples`` if it has one, so that a study can
        make the page use the points its report used; else see :func:`payload`).

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If the checkpoint names no data and none is given, or the data do not fit the model.
    """
    path = Path(path)
    model, meta = checkpoint.load(path)
    name = data_name or meta.get("data")
    if not name:
        raise ValueError(
            f"explorer: checkpoint {str(path)!r} names no data set in its metadata; pass the "
            f"data (one of {', '.join(sorted(data.LOADERS))}, or a data file)"
        )
    seed = int(meta.get("seed", 0))
    dataset = load_data(name, seed=seed)
    source = f"{path.name}; data: {dataset.name}" + (
        f" test set (seed {seed})" if name in data.LOADERS else ""
    )
    out = path.with_suffix(".html") if out is None else Path(out)
    samples = meta.get("samples") if samples is None else samples
    return write(out, model, dataset, source=source, samples=samples)


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run folder: ``explorer.safetensors``, else its only checkpoint.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a folder or holds no checkpoint.
    ValueError
        If it holds several checkpoints and no ``explorer.safetensors`` (they are listed).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"explorer: run folder {str(run_dir)!r} does not exist")
    preferred = run_dir / EXPLORER_CHECKPOINT
    if preferred.is_file():
        return preferred
    found = sorted(run_dir.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"explorer: run folder {str(run_dir)!r} holds no checkpoint")
    raise ValueError(
        f"explorer: run folder {str(run_dir)!r} holds {len(found)} checkpoints "
        f"({', '.join(p.name for p in found)}) and no {EXPLORER_CHECKPOINT}; choose one "
        "with --checkpoint"
    )


def for_run(run_dir: str | os.PathLike) -> Path | None:
    """Write ``explorer.html`` into a run folder holding ``explorer.safetensors`` with data.

    Returns the page's path, or None if the folder has no such checkpoint (or its metadata
    names no data). Used by :func:`prunelab.report.render`.
    """
    path = Path(run_dir) / EXPLORER_CHECKPOINT
    if not path.is_file():
        return None
    _, meta = checkpoint.load(path)
    if not meta.get("data"):
        return None
    return from_checkpoint(path, Path(run_dir) / EXPLORER_PAGE)
