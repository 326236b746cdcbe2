"""What a pruned MLP costs: its layer widths, parameter count and dense multiply-accumulates.

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

import itertools
from collections.abc import Iterable, Mapping

from torch import nn

from ..base import models

Plan = Mapping[int, Iterable[int]]  # hidden layer -> node indices to remove (criteria.select)


def widths(model: nn.Module, remove: Plan | None = None) -> list[int]:
    """Layer widths ``[D, H_1 - |R_1|, ..., H_L - |R_L|, C]`` of ``model`` after ``remove``.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts.
    remove : mapping of int to iterable of int, optional
        A removal plan as :func:`prunelab.criteria.select` returns and
        :func:`prunelab.surgery.remove_nodes` takes (hidden layer to node indices).

    Raises
    ------
    ValueError
        For a hidden layer out of range, duplicate or out-of-range node indices, or a plan that
        removes every node of a layer (the message names the layer).
    """
    net = models.parse(model, method="costs.widths")
    sizes = net.hidden_sizes
    out = [net.in_features, *sizes, net.out_features]
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


def macs(model: nn.Module, remove: Plan | None = None) -> int:
    """Dense multiply-accumulates per input, ``sum_l w_{l-1} w_l``, after ``remove``."""
    w = widths(model, remove)
    return sum(a * b for a, b in itertools.pairwise(w))


def parameters(model: nn.Module, remove: Plan | None = None, *, compensate: str = "none") -> int:
    """Weights and biases of the model :func:`prunelab.surgery.remove_nodes` would return.

    ``sum_l (w_{l-1} w_l + w_l [bias])``. A layer without a bias keeps none, except that mean
    compensation (``compensate="mean"``) gives one to a layer that must absorb removed means
    (surgery creates it), which this count includes.
    """
    if compensate not in ("mean", "none"):
        raise ValueError(f"costs.parameters: compensate={compensate!r}; choose from mean, none")
    net = models.parse(model, method="costs.parameters")
    w = widths(model, remove)
    absorbs = {ell + 1 for ell, nodes in (remove or {}).items() if list(nodes)}
    total = 0
    for ell, layer in enumerate(net.layers):
        has_bias = layer.bias is not None or (compensate == "mean" and ell in absorbs)
        total += w[ell] * w[ell + 1] + (w[ell + 1] if has_bias else 0)
    return total


def speedup(model: nn.Module, remove: Plan) -> float:
    """Theoretical speed-up ``MACs(model) / MACs(model after remove)`` (>= 1)."""
    return macs(model) / macs(model, remove)
