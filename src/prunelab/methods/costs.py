"""What a pruned model costs: its layer widths, parameter count and dense multiply-accumulates.

For a chain of dense layers with widths ``w_0 = D, w_1, ..., w_L = C`` (inputs, hidden, outputs),
one forward pass of one input costs

    MACs = sum_{l=1}^{L} w_{l-1} w_l                       (multiply-accumulates, bias adds not counted)
    parameters = sum_{l=1}^{L} (w_{l-1} w_l + w_l [layer l has a bias])

and removing hidden nodes shrinks the widths. The *theoretical speed-up* of a pruned model is
``MACs(full) / MACs(pruned)``: the ratio of dense arithmetic, what a dense kernel on the smaller
matrices saves (the FLOP count of e.g. Molchanov et al. 2017 and Liu et al. 2019, "Rethinking
the value of network pruning", without elementwise work). Wall-clock gains on real hardware are
smaller for small layers; these are counts, not timings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..base import ops

Plan = Mapping[int, Iterable[int]]  # hidden layer -> node indices to remove (criteria.select)


def widths(model: nn.Module, remove: Plan | None = None) -> list[int]:
    """Layer widths ``[D, H_1 - |R_1|, ..., H_L - |R_L|, C]`` of ``model`` after ``remove``.

    For a convnet the widths count units: input channels, each hidden layer's channels or
    features, the classes.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.ops.parse` accepts.
    remove : mapping of int to iterable of int, optional
        A removal plan as :func:`prunelab.criteria.select` returns and
        :func:`prunelab.surgery.remove_nodes` takes (hidden layer to node indices).

    Raises
    ------
    ValueError
        For a hidden layer out of range, duplicate or out-of-range node indices, or a plan that
        removes every node of a layer (the message names the layer).
    """
    view = ops.parse(model, method="costs.widths")
    sizes = view.hidden_sizes
    out = [view.layers[0].in_units, *sizes, view.out_features]
    for ell, nodes in (remove or {}).items():
        if isinstance(ell, bool) or not isinstance(ell, int) or not 0 <= ell < len(sizes):
            raise ValueError(
                f"costs.widths: hidden layer {ell!r} out of range; the model has hidden sizes "
                f"{sizes} (keys 0..{len(sizes) - 1})"
            )
        index = [int(i) for i in nodes]
        H = sizes[ell]
        if len(set(index)) < len(index) or any(not 0 <= i < H for i in index):
            raise ValueError(
                f"costs.widths: remove[{ell}] must list distinct node indices in [0, {H}); "
                f"got {sorted(index)}"
            )
        if len(index) == H:
            raise ValueError(f"costs.widths: remove[{ell}] removes all {H} nodes of layer {ell}")
        out[ell + 1] -= len(index)
    return out


def _layers(
    model: nn.Module, remove: Plan | None, in_shape, method: str, *, positions: bool = True
) -> list[tuple]:
    """Per layer ``(out, in, per_pair, positions, bias, norm)`` after ``remove``: kept output
    and input units, weights per (output, input) unit pair (a conv's kernel size; a Linear's
    columns per input channel after a Flatten), output positions per input (1 for a Linear),
    whether it has a bias, and whether an affine BatchNorm follows it."""
    view = ops.parse(model, method=method)
    w = widths(model, remove)
    counts = [1] * len(view.layers)
    if view.conv and positions:
        if in_shape is None:
            raise ValueError(
                f"{method}: a convnet's cost depends on the input size; pass in_shape=(C, H, W)"
            )
        a = torch.zeros(1, *in_shape, dtype=view.dtype, device=view.device)
        with torch.no_grad():
            for op in view.ops:
                a = op.apply(a, training=False)
                if isinstance(op, ops.Affine):
                    counts[view.layers.index(op)] = a[0, 0].numel()
    out = []
    for ell, layer in enumerate(view.layers):
        kernel = layer.weight[0, 0].numel()  # 1 for a Linear
        block = layer.in_units // (view.layers[ell - 1].units if ell else layer.in_units)
        per_pair = kernel if layer.conv else max(1, block)
        norm = layer.norm is not None and layer.norm.affine
        out.append((w[ell + 1], w[ell], per_pair, counts[ell], layer.bias is not None, norm))
    return out


def macs(model: nn.Module, remove: Plan | None = None, *, in_shape=None) -> int:
    """Dense multiply-accumulates per input after ``remove``: ``sum_l w_{l-1} w_l`` for an MLP;
    a conv layer counts ``out x in x k_h k_w`` per output position (``in_shape = (C, H, W)``
    gives the positions)."""
    rows = _layers(model, remove, in_shape, "costs.macs")
    return sum(o * i * k * n for o, i, k, n, _, _ in rows)


def parameters(model: nn.Module, remove: Plan | None = None, *, compensate: str = "none") -> int:
    """Weights and biases of the model :func:`prunelab.surgery.remove_nodes` would return.

    ``sum_l (w_{l-1} w_l + w_l [bias])`` for an MLP; a conv layer has ``out x in x k_h k_w``
    weights, a BatchNorm two per unit. A layer without a bias keeps none, except that mean
    compensation (``compensate="mean"``) gives one to a layer that must absorb removed means
    (surgery creates it), which this count includes.
    """
    if compensate not in ("mean", "none"):
        raise ValueError(f"costs.parameters: compensate={compensate!r}; choose from mean, none")
    rows = _layers(model, remove, None, "costs.parameters", positions=False)
    absorbs = {ell + 1 for ell, nodes in (remove or {}).items() if list(nodes)}
    total = 0
    for ell, (o, i, k, _, bias, norm) in enumerate(rows):
        has_bias = bias or (compensate == "mean" and ell in absorbs)
        total += o * i * k + (o if has_bias else 0) + (2 * o if norm else 0)
    return total


def speedup(model: nn.Module, remove: Plan, *, in_shape=None) -> float:
    """Theoretical speed-up ``MACs(model) / MACs(model after remove)`` (>= 1)."""
    return macs(model, in_shape=in_shape) / macs(model, remove, in_shape=in_shape)
