"""Physically removing hidden nodes (MLP features, conv channels), the reader absorbing their mean.

Removing node i of hidden layer l deletes its row of ``W^l`` (a conv: its filter, and its
BatchNorm entries) and its column of ``W^{l+1}`` (a conv: input channel i; a Linear after a
Flatten: channel i's block of columns). With mean compensation the reader absorbs what the
node carried on average (Hobson 2022, "Train first vs prune first in neural networks"; Evci
et al. 2018, mean replacement):

    z^{l+1}  <-  z^{l+1} + A^{l+1} u^l,     u^l_i = abar^l_i = mean_{n,p} a^l_{n,i,p}  (i removed)

so the pruned network equals the original with the removed nodes held at their means. For a
Linear reader ``A^{l+1} u^l = W^{l+1}[:, R] abar^l_R`` goes into its bias. A zero-padded conv
reader answers a constant channel less near the border, so there the compensation depends on
the position: ``compensate="mean"`` keeps it exact with a fixed per-position
:class:`prunelab.ops.Offset` after that conv (the bias holds the interior value), and
``compensate="mean_interior"`` folds only the interior value into the bias, exact away from the
border; :func:`compensation_error` gives the error that makes at each reader. A node that is
constant on the data is removed without changing any output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from ...base import ops

COMPENSATIONS = ("mean", "mean_interior", "none")


def remove_nodes(
    model: nn.Module,
    remove: Mapping[int, Iterable[int]],
    *,
    compensate: str = "mean",
    x: Tensor | None = None,
) -> nn.Sequential:
    """A new, physically smaller copy of ``model`` without the listed hidden nodes.

    A node is a unit (a Linear's output feature or a Conv2d's output channel). With
    ``compensate="mean"`` each removed node is replaced by its mean over ``x`` (samples and, for
    a channel, positions), taken layer by layer in the network as pruned so far, and folded
    into the reader's bias:

        z^{l+1} <- z^{l+1} + A^{l+1} u^l      (u^l: removed nodes at their mean abar^l, rest 0)

    ``A^{l+1} u^l = W^{l+1}[:, R_l] abar^l_{R_l}`` for a Linear reader. Behind a zero-padded
    Conv2d the response varies with position: ``"mean"`` adds an :class:`prunelab.ops.Offset`
    after that conv (exact, fixed input size), ``"mean_interior"`` folds the interior value only
    (off at the border; :func:`compensation_error`). ``"none"`` deletes, which equals zeroing.
    ``docs/surgery.md`` explains the border, the copy's modules and the order of the means.

    Parameters
    ----------
    model : nn.Sequential
        An MLP or convnet :func:`prunelab.ops.parse` accepts; not modified.
    remove : mapping of int to iterable of int
        Hidden-layer index (0-based) to the node indices to remove (empty allowed).
    compensate : {"mean", "mean_interior", "none"}
    x : Tensor[N, *in], optional
        Data for the means; required unless ``compensate="none"``.

    Returns
    -------
    nn.Sequential
        The pruned copy: hidden layer l has ``H_l - len(remove[l])`` nodes.

    Raises
    ------
    TypeError
        Unsupported ``model``, ``remove`` not a mapping, a non-integer index, ``x`` not float.
    ValueError
        Unknown ``compensate``; a layer or node index out of range or repeated; every node of a
        layer; mean compensation without ``x``; ``x`` of the wrong shape, empty or non-finite.

    References
    ----------
    D. Hobson (2022), "Train first vs prune first in neural networks" (mean-bias replacement);
    Evci, Le Roux, Castro & Bottou (2018), "Mean replacement pruning", ICLR 2019 submission.

    Examples
    --------
    >>> model = models.mlp((2, 5, 3), seed=0)
    >>> small = remove_nodes(model, {0: [1, 3]}, x=torch.randn(10, 2))
    >>> small[0].out_features, small[2].in_features
    (3, 3)
    """
    view, removed, a = _check(model, remove, compensate, x, "remove_nodes")
    border = "interior" if compensate == "mean_interior" else "offset"
    return ops.remove_units(model, view, removed, x=a, border=border, method="remove_nodes")[0]


def compensation_error(
    model: nn.Module, remove: Mapping[int, Iterable[int]], *, x: Tensor
) -> dict[int, float]:
    """The border error of ``compensate="mean_interior"``, per hidden layer in ``remove``.

    ``err_l = max_{c,p} |s_c o_{c,p}|``: the largest difference, over the reader's output
    channels ``c`` and positions ``p``, between the reader's output (BatchNorm included) as
    :func:`remove_nodes` with ``"mean_interior"`` builds it and with the exact compensation
    ``"mean"`` on the same input, where ``o_{c,p} = (A u)_{c,p} - v_c`` is the position
    dependent part of the compensation and ``s_c`` the reader's BatchNorm scale (1 without
    one). The means are those ``"mean_interior"`` takes (layer by layer in its own network).
    0 (to rounding) where the reader is a Linear or a convolution without padding.

    Parameters
    ----------
    model, remove, x
        As for :func:`remove_nodes` (``x`` required).

    Returns
    -------
    dict of int to float
        Hidden layer -> ``err_l``, one entry per non-empty entry of ``remove``, in the units
        of the reader's output (its pre-activation).

    Examples
    --------
    >>> model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16)).eval()
    >>> err = compensation_error(model, {0: [1, 2]}, x=torch.rand(8, 3, 16, 16))
    >>> sorted(err), err[0] > 0
    ([0], True)
    """
    view, removed, a = _check(model, remove, "mean_interior", x, "compensation_error")
    return ops.compensation_error(model, view, removed, x=a, method="compensation_error")


def _check(
    model: nn.Module, remove: Mapping, compensate: str, x: Tensor | None, method: str
) -> tuple[ops.View, dict[int, Tensor], Tensor | None]:
    """The parsed view, the validated plan and ``x`` (None without compensation)."""
    view = ops.parse(model, method=method)
    if compensate not in COMPENSATIONS:
        raise ValueError(f"{method}: compensate={compensate!r}; choose from {list(COMPENSATIONS)}")
    removed = ops.check_remove(view, remove, method=method, what="node")
    if compensate == "none":
        return view, removed, None
    if x is None:
        raise ValueError(
            f"{method}: compensate={compensate!r} needs data x to take the removed nodes' "
            f"means; pass x=Tensor[N, {view.in_shape()[1:-1]}] or use compensate='none'"
        )
    return view, removed, view.check_x(x, method, convert=True)
