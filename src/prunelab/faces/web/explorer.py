"""The interactive explorer: one self-contained HTML page to take units out of a network by hand.

How to read it and why its defaults are what they are: docs/explorer.md.

:func:`page` embeds a network's weights (float64; an eval-mode BatchNorm folded into its Linear
or Conv2d in Python), a sample of its data, the hidden units' activation statistics and, for
2-D inputs, a ``G x G`` grid over ``[-lim, lim]^2`` with its labels, as base64 arrays in a JSON
block. ``network.js`` (inlined with ``explorer.js``, no dependencies, no network access)
computes everything in the browser in ``Float64Array`` arithmetic: each Linear or Conv2d is a
stage followed by its activation and pools (max, average, adaptive; each embedded as explicit
windows, :func:`_pool`), and a unit is a Linear's output feature or a Conv2d's output channel
(one switch for its whole feature map), as in prunelab's unit masks. The page shows the network
with every hidden unit as a clickable circle (radius growing with its activation std; a
channel's over samples and positions, drawn with a thick ring), the loss and accuracy on the
embedded sample, and either a heatmap of the output probability with the data and the decision
boundary (2-D inputs) or per-class accuracy bars and sample images with their predictions
(other inputs).

Each number the page shows equals a Python function on the same sample (float64):

- plain removal: loss and accuracy under the 0/1 unit mask ``m`` are
  ``ablation.mask_losses(model, x, y, m[None])`` and the argmax of
  ``masks.masked_logits(model, x, m[None])``; the tooltip's ``dL/dm_j`` is ``mask_losses``'s
  gradient. A unit's factor applies after the pools that follow it (as the mask engine
  applies it; the same values for ``m >= 0``), so at ``m_j = 0`` behind a max pool the gradient
  is the one-sided derivative of turning the unit up, as ``mask_losses`` returns;
- mean compensation: every removed unit is held at its mean activation (a channel: over the
  samples and its positions), the means taken layer by layer in the network as pruned so far,
  the network ``surgery.remove_nodes(model, removed, compensate="mean", x=x)`` builds
  (``ops.forward`` with those units held is the tests' oracle); the tooltip's gradient is then
  that of ``e_j = h_j + m_j (q_j - h_j)``: ``q_j`` the unit's map after its pools, ``h_j`` the
  same pools' answer to its mean, held fixed (what fading the unit towards its mean would do);
- the heatmap is ``P(class 1)`` (two classes; else the class colours weighted by
  ``softmax``) of that network on ``data.grid(G, lim)``;
- hovering or focusing node ``j`` shows ``d CE(x_g, y_g) / d m_j`` at every grid point
  ``x_g`` with the labels ``y_g = data.plane_labels(sample, grid)``: in plain mode
  ``ablation.point_mask_gradients(model, grid, labels, m)``; with compensation as above.

Units are named as the reports name them: ``node t`` (the mask index) on an MLP, ``conv2 ch 5``
and ``fc1 #17`` on a convnet. "Remove the k lowest-std units" ranks all hidden units of the
network together (ties by index) and, by default, switches mean compensation on: the
train-vs-prune source pruned that way (bias compensation, which equals holding the units at
their means). "Random subset" keeps unit ``t`` iff ``u_t < p``, the ``u_t`` drawn in unit order from a
mulberry32 generator seeded with the given seed: the same seed gives the same subset.

A toggle updates incrementally: the layer reading a changed unit gets that unit's contribution
corrected (a rank-one update of a Linear's pre-activations, one input channel of a
convolution), later layers are recomputed; on a 2-50-50-2 net with a 200 x 200 grid that is a
few million multiply-adds, tens of milliseconds, and on a digits LeNet-5 (200 images) about
as much (``benchmarks/explorer_toggle.py`` prints the measured times).
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

from ...base import checkpoint, data, ops, stats
from ...base.files import atomic_write

EXPLORER_CHECKPOINT = "explorer.safetensors"  # what a study saves into its run folder
EXPLORER_PAGE = "explorer.html"
IMAGES = 12  # sample images shown for inputs that are not 2-D
SCRIPTS = ("network.js", "explorer.js")  # the arithmetic, then the page; inlined in this order
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
    """How to draw a sample: ``[rows, cols]`` for grey images (2-D samples, one-channel
    ``[1, H, W]``, or a square number >= 16 of features), ``[3, H, W]`` for colour images,
    None for other data (drawn as a line)."""
    if x.dim() == 3:
        return list(x.shape[1:])
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return list(x.shape[2:]) if x.shape[1] == 1 else list(x.shape[1:])
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


def _pool(op: ops.Pool, shape: list[int]) -> dict[str, Any]:
    """A pooling op as explicit windows per output position (each channel alike).

    Pooling the ``h w`` one-hot images gives ``M[o, i]``, the weight of input ``i`` in output
    ``o`` (an average pool: ``1 / divisor`` with padding, ``ceil_mode`` and adaptive windows as
    torch counts them; a max pool: 1 iff ``i`` lies in ``o``'s window). ``index: [O, K]`` lists
    each window's inputs in row-major order (-1 pads), ``weight: [O, K]`` their weights.
    """
    _, h, w = shape
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    with torch.no_grad():
        out = op.apply(basis, training=False)  # [h w, 1, h_o, w_o]
    M = out.reshape(h * w, -1).T  # [O, h w]
    member = M != 0
    K = int(member.sum(1).max())
    index = torch.full((M.shape[0], K), -1, dtype=torch.int32)
    weight = torch.zeros(M.shape[0], K, dtype=torch.float64)
    for o in range(M.shape[0]):
        (inputs,) = torch.nonzero(member[o], as_tuple=True)  # ascending: torch's scan order
        index[o, : len(inputs)] = inputs.to(torch.int32)
        weight[o, : len(inputs)] = M[o, inputs]
    return {
        "op": "pool",
        "kind": "max" if op.routing else "avg",
        "out": list(out.shape[-2:]),
        "index": _array(index, "i32"),
        "weight": _array(weight, "f64"),
    }


def _stages(view: ops.View, x1: Tensor) -> list[dict[str, Any]]:
    """The network as stages: each Affine op (BatchNorm and Offset folded), then its pools and
    activation up to its units (``pre``), then the pools before the next layer reads them
    (``pools``; units are masked after these, as the mask engine does). Flatten, Dropout and
    Identity leave the numbers as they are (row-major), so they are left out.

    ``x1``: one sample ``[1, *in]`` in float64, to read every op's input shape.
    """
    unit_at = set(view.unit_ops)
    stages: list[dict[str, Any]] = []
    a = view.inputs(x1)
    for k, op in enumerate(view.ops):
        shape = list(a.shape[1:])
        with torch.no_grad():
            a = op.apply(a, training=False)
        if isinstance(op, ops.Affine):
            W, b = op.folded()
            layer: dict[str, Any] = {
                "kind": "conv" if op.conv else "linear",
                "W": _array(W, "f64"),  # [H_out, H_in] or [C_out, C_in, k_h, k_w]
                "b": _array(b, "f64"),
                "in": shape,
                "out": list(a.shape[1:]),
                "activation": "identity",
                "slope": 0.0,
                "pre": [],
                "pools": [],
                "units_read": False,
            }
            if op.conv:
                m = op.module
                layer.update(stride=list(m.stride), padding=list(m.padding))
                layer["dilation"] = list(m.dilation)
                offset = op.folded_offset()
                if offset is not None:  # a per-position bias (exact border compensation)
                    layer["offset"] = _array(offset, "f64")
            stages.append(layer)
        elif not stages:
            if isinstance(op, ops.Pool):
                raise ValueError(
                    f"explorer: module {op.position} ({type(op.module).__name__}) pools the "
                    "input before the first layer; the explorer takes pooling after a layer only"
                )
        elif isinstance(op, ops.Activation):
            stages[-1].update(activation=op.activation, slope=op.slope)
            stages[-1]["pre"].append({"op": "act", "activation": op.activation, "slope": op.slope})
        elif isinstance(op, ops.Pool):
            where = "pools" if stages[-1]["units_read"] else "pre"
            stages[-1][where].append(_pool(op, shape))
        if k in unit_at:
            stages[-1]["units_read"] = True
    for layer in stages:
        del layer["units_read"]
    return stages


def _describe(view: ops.View, shape: list[int]) -> str:
    """The architecture in one line: ``64-16-10`` or ``1x8x8-c6-c16-120-84-10``."""
    parts = ["x".join(map(str, shape))]
    parts += [f"c{layer.units}" if layer.conv else str(layer.units) for layer in view.layers]
    return "-".join(parts)


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
        A model :func:`prunelab.ops.parse` accepts (an MLP or a convnet: Linear, Conv2d,
        pooling, eval-mode BatchNorm, Flatten, the six activations), with at least one hidden
        layer; any dtype (the page computes in float64, so float32 weights are embedded
        exactly; a BatchNorm is folded into its layer in float64).
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
        If the model has no hidden layer, the data's shape or labels do not fit the model, or
        ``samples``, ``grid`` or ``lim`` is out of range.
    """
    view = ops.parse(copy.deepcopy(model).double().eval(), method="explorer")
    if not view.hidden:
        raise ValueError("explorer: the model has no hidden layer, so there are no nodes to remove")
    first, C = view.layers[0], view.out_features
    if first.conv:
        if dataset.x.dim() != 4 or dataset.x.shape[1] != first.in_units:
            raise ValueError(
                f"explorer: data {dataset.name!r} has samples of shape {list(dataset.shape)} "
                f"but the model's first Conv2d takes images [{first.in_units}, H, W]"
            )
        flat = dataset
    else:
        flat = dataset.flatten()
        if first.in_units != flat.features:
            raise ValueError(
                f"explorer: data {dataset.name!r} has {flat.features} features but the model "
                f"takes {first.in_units} inputs"
            )
    D = flat.features
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
    x64 = view.check_x(sample.x.double(), "explorer", name=f"data {dataset.name!r}")
    logits, taps = ops.forward(view, x64, taps=True, training=False)  # all nodes on
    if logits.shape[1:] != (C,):
        raise ValueError(
            f"explorer: the model's output per sample has shape {list(logits.shape[1:])}; it "
            f"must be [{C}] class scores"
        )
    mean, std, _ = stats.unit_statistics(taps)  # per unit; a channel over samples and positions
    stages = _stages(view, x64[:1])
    names = sorted({layer["activation"] for layer in stages[:-1]})
    arch = _describe(view, list(sample.shape))
    return {
        "title": title or f"{arch} {'/'.join(names)} net on {dataset.name}",
        "source": source,
        "data": dataset.name,
        "classes": C,
        "arch": arch,
        "widths": [D, *view.hidden_sizes, C],
        "input": list(sample.shape),  # one sample as the first layer reads it
        "conv": [layer.conv for layer in view.hidden],  # per hidden layer: units are channels
        "layers": stages,
        "x": _array(sample.x, "f32" if sample.x.dtype == torch.float32 else "f64"),
        "y": _array(sample.y, "i32"),
        "mean": _array(mean, "f64"),
        "std": _array(std, "f64"),
        "plane": _plane(sample, grid, float(lim)) if D == 2 else None,
        "image": _image_shape(dataset.x) if D != 2 else None,
        "images": _sample_images(sample.y, C, IMAGES) if D != 2 else [],
        "colormaps": {"prob": _colormap("viridis"), "grad": _colormap("RdBu_r")},
    }


def page(model: nn.Module, dataset: data.Dataset, **options: Any) -> str:
    """The explorer as one self-contained HTML document (see :func:`payload` for options)."""
    content = payload(model, dataset, **options)
    files = importlib.resources.files(__package__)
    js = "\n".join((files / name).read_text() for name in SCRIPTS)
    if "</script" in js.lower():
        raise ValueError(f"{' and '.join(SCRIPTS)} must not contain '</script' (they are inlined)")
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
