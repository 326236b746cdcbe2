"""Physically removing hidden nodes from an MLP, with the next bias absorbing their mean.

Removing node i of hidden layer l deletes row i of ``W^l`` and ``b^l`` and column i of
``W^{l+1}``. With mean compensation the next layer's bias absorbs what the node carried on
average (Hobson 2022, "Train first vs prune first in neural networks"; Evci et al. 2018, mean
replacement):

    b^{l+1}_k  <-  b^{l+1}_k + sum_{i removed} W^{l+1}_{ki} abar^l_i,    abar^l_i = mean_n a^l_{n,i}

so the pruned network equals the original with the removed nodes held at their means. A node
that is constant on the data is removed without changing any output.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import models

COMPENSATIONS = ("mean", "none")


def remove_nodes(
    model: nn.Module,
    remove: Mapping[int, Iterable[int]],
    *,
    compensate: str = "mean",
    x: Tensor | None = None,
) -> nn.Sequential:
    """A new, physically smaller copy of ``model`` without the listed hidden nodes.

    With ``compensate="mean"`` the means are taken layer by layer from the input, in the
    network *as pruned so far*: the mean of a node of hidden layer l is computed on ``x``
    passed through the model whose earlier hidden layers are already pruned and compensated.
    Each compensation therefore sees exactly the inputs it will receive, and the result equals
    the original model with the removed nodes replaced by their means in that order (layer 0
    first). With ``compensate="none"`` the nodes are simply deleted, which equals zeroing them.

        b^{l+1} <- b^{l+1} + W^{l+1}[:, R_l] abar^l_{R_l}       (R_l: removed nodes of layer l)

    Activations, ``Dropout``, ``Flatten`` and ``Identity`` modules are kept in place (copied);
    means are computed with dropout off (evaluation mode), which leaves them unchanged in
    expectation. A ``Linear`` that appears twice in ``model`` (shared weights) becomes two
    independent ``Linear`` modules in the copy. The copy keeps ``model``'s module names,
    dtype, device, ``requires_grad`` flags and training mode; ``model`` is not modified.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts.
    remove : mapping of int to iterable of int
        Hidden-layer index (0-based among hidden layers) to the indices of the nodes to
        remove from it (a list, tuple or integer tensor); empty lists are allowed.
    compensate : {"mean", "none"}
        Fold the removed nodes' mean activation over ``x`` into the next bias, or not. If the
        next ``Linear`` has no bias and compensation is needed, one is created.
    x : Tensor[N, D], optional
        Data for the means; required for ``"mean"``. Converted to the weights' dtype and
        device.

    Returns
    -------
    nn.Sequential
        The pruned copy: hidden layer l has ``H_l - len(remove[l])`` nodes.

    Raises
    ------
    TypeError
        If ``model`` is unsupported, ``remove`` is not a mapping, an index is not an integer,
        or ``x`` is not a floating-point tensor.
    ValueError
        For an unknown ``compensate``, a hidden layer or node index out of range, a duplicate
        index, removing every node of a layer, ``"mean"`` without ``x``, or ``x`` of the
        wrong shape, empty or non-finite.

    References
    ----------
    D. Hobson (2022), "Train first vs prune first in neural networks" (mean-bias replacement);
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission, https://openreview.net/forum?id=BJxRVnC5Fm.

    Examples
    --------
    >>> model = models.mlp((2, 5, 3), seed=0)
    >>> small = remove_nodes(model, {0: [1, 3]}, x=torch.randn(10, 2))
    >>> small[0].out_features, small[2].in_features
    (3, 3)
    """
    net = models.parse(model, method="remove_nodes")
    if compensate not in COMPENSATIONS:
        raise ValueError(
            f"remove_nodes: compensate={compensate!r}; choose from {list(COMPENSATIONS)}"
        )
    removed = _check_remove(net, remove)
    if compensate == "mean" and x is None:
        raise ValueError(
            "remove_nodes: compensate='mean' needs data x to take the removed nodes' means; "
            "pass x=Tensor[N, D] or use compensate='none'"
        )
    a = _check_x(net, x) if compensate == "mean" else None
    linears = _pruned_linears(net, removed, a)
    position = {layer.position: i for i, layer in enumerate(net.layers)}
    children = OrderedDict()
    # not named_children(), which skips a module's second occurrence
    for i, (name, module) in enumerate(model._modules.items()):
        children[name] = linears[position[i]] if i in position else copy.deepcopy(module)
    return nn.Sequential(children).train(model.training)


def _pruned_linears(
    net: models.Net, removed: dict[int, Tensor], a: Tensor | None
) -> list[nn.Linear]:
    """New Linear modules, layer by layer; with data ``a`` [N, D], compensate by the means."""
    out: list[nn.Linear] = []
    cols: Tensor | None = None  # kept inputs of the current layer (None: all)
    shift: Tensor | None = None  # [H_l] bias shift from the previous layer's removed means
    with torch.no_grad():
        for ell, layer in enumerate(net.layers):
            W = layer.weight.detach()  # [H_out, H_in]
            b = None if layer.bias is None else layer.bias.detach()
            if cols is not None:
                W = W[:, cols]
            if shift is not None:
                b = shift if b is None else b + shift
            R = removed.get(ell)  # removed rows of this layer (None for the output layer)
            keep = None if R is None else _complement(R, W.shape[0])
            if a is not None and R is not None:
                a = layer.phi(F.linear(a, W, b))  # [N, H_l] in the network pruned so far
                abar = a[:, R].mean(0)  # [|R|]
                shift = net.layers[ell + 1].weight.detach()[:, R] @ abar  # [H_{l+1}]
                a = a[:, keep]
            else:
                shift = None
                if a is not None and ell < len(net.hidden):
                    a = layer.phi(F.linear(a, W, b))
            if keep is not None:
                W, b = W[keep], None if b is None else b[keep]
            out.append(models.linear(W, b, like=layer.linear))
            cols = keep
    return out


def _complement(R: Tensor, H: int) -> Tensor:
    """Indices in ``range(H)`` not in ``R``, ascending."""
    keep = torch.ones(H, dtype=torch.bool, device=R.device)
    keep[R] = False
    return keep.nonzero().squeeze(1)


def _check_remove(net: models.Net, remove: Mapping[int, Iterable[int]]) -> dict[int, Tensor]:
    """Validate ``remove``; return {hidden layer: sorted node indices} for non-empty entries."""
    if not isinstance(remove, Mapping):
        raise TypeError(
            "remove_nodes: remove must be a mapping {hidden_layer: [node, ...]}; "
            f"got {type(remove).__name__}"
        )
    sizes = net.hidden_sizes
    device = net.layers[0].weight.device
    out: dict[int, Tensor] = {}
    for key, nodes in remove.items():
        ell = _index(key, f"remove_nodes: hidden-layer key {key!r}")
        if not 0 <= ell < len(sizes):
            raise ValueError(
                f"remove_nodes: hidden layer {ell} out of range; the model has {len(sizes)} "
                f"hidden layer(s) with sizes {sizes} (keys 0..{len(sizes) - 1})"
            )
        H = sizes[ell]
        if isinstance(nodes, Tensor):
            if nodes.is_floating_point() or nodes.is_complex() or nodes.dtype == torch.bool:
                raise TypeError(
                    f"remove_nodes: remove[{ell}] must hold integer node indices; got {nodes.dtype}"
                )
            nodes = nodes.reshape(-1).tolist()
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
            raise TypeError(
                f"remove_nodes: remove[{ell}] must be a list of node indices; "
                f"got {type(nodes).__name__}"
            )
        index = [_index(i, f"remove_nodes: remove[{ell}] entry {i!r}") for i in nodes]
        bad = [i for i in index if not 0 <= i < H]
        if bad:
            raise ValueError(
                f"remove_nodes: remove[{ell}] holds node index {bad[0]} out of range; hidden "
                f"layer {ell} ({net.hidden[ell].name}) has {H} nodes (0..{H - 1})"
            )
        if len(set(index)) < len(index):
            dup = next(i for i in index if index.count(i) > 1)
            raise ValueError(f"remove_nodes: remove[{ell}] lists node {dup} more than once")
        if len(index) == H:
            raise ValueError(
                f"remove_nodes: remove[{ell}] removes all {H} nodes of hidden layer {ell} "
                f"({net.hidden[ell].name}); keep at least one"
            )
        if index:
            out[ell] = torch.tensor(sorted(index), dtype=torch.long, device=device)
    return out


def _index(value: object, what: str) -> int:
    """``value`` as a Python int; bools and non-integers raise a TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer; got {type(value).__name__}") from None


def _check_x(net: models.Net, x: Tensor) -> Tensor:
    """Validate the data for the means; return it as ``[N, D]`` in the weights' dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            "remove_nodes: x must be a floating-point tensor [N, D]; got "
            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
        )
    xs = net.inputs(x)
    D = net.in_features
    if xs.dim() != 2 or xs.shape[1] != D:
        raise ValueError(
            f"remove_nodes: x must have shape [N, {D}] (after the model's Flatten); "
            f"got shape {tuple(x.shape)}"
        )
    if xs.shape[0] == 0:
        raise ValueError("remove_nodes: x holds no samples; the means need at least one")
    if not bool(torch.isfinite(xs).all()):
        raise ValueError("remove_nodes: x holds NaN or inf values")
    W = net.layers[0].weight
    return xs.detach().to(device=W.device, dtype=W.dtype)
