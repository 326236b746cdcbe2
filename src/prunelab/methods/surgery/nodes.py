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

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from ...base import models, ops

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
    removed = ops.check_remove(net.view, remove, method="remove_nodes", what="node")
    if compensate == "mean" and x is None:
        raise ValueError(
            "remove_nodes: compensate='mean' needs data x to take the removed nodes' means; "
            "pass x=Tensor[N, D] or use compensate='none'"
        )
    a = net.check_x(x, "remove_nodes", convert=True) if compensate == "mean" else None
    return ops.remove_units(model, net.view, removed, x=a, method="remove_nodes")[0]
