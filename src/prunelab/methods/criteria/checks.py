"""Validation shared by the node and weight criteria."""

from __future__ import annotations

from torch import Tensor, nn

from ...base import models, ops


def check_inputs(
    model: nn.Module, x: Tensor, y: Tensor | None, method: str, *, labels: bool, hidden: bool = True
) -> tuple[models.Net, Tensor, Tensor | None]:
    """Validate ``model``, ``x`` and ``y`` once; return the net, ``x`` as [N, D] and ``y``.

    ``hidden=False`` accepts a model without hidden layers (weight criteria).
    """
    net = models.parse(model, method=method)
    if hidden and not net.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes to score")
    xs = net.check_x(x, method)
    return net, xs, _check_y(net.view, xs, y, method, labels)


def check_view(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    method: str,
    *,
    labels: bool,
    hidden: bool = True,
) -> tuple[ops.View, Tensor, Tensor | None]:
    """Validate ``model``, ``x`` and ``y`` once for a unit or weight criterion, MLP or convnet;
    return the op view, ``x`` as its first op reads it and ``y``.

    A model the dense MLP view takes (no Conv2d, pooling or BatchNorm) is validated by it
    (:func:`check_inputs`), so an MLP's errors are those of :func:`prunelab.models.parse`;
    any other model by the op view, with BatchNorm required in evaluation mode.
    ``hidden=False`` accepts a model without hidden layers (weight criteria).
    """
    view = ops.parse(model, method=method)
    if view.dense:
        net, xs, y = check_inputs(model, x, y, method, labels=labels, hidden=hidden)
        return net.view, xs, y
    if hidden and not view.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes to score")
    view.check_eval(method)  # a BatchNorm in training mode cannot be folded
    xs = view.check_x(x, method)
    return view, xs, _check_y(view, xs, y, method, labels)


def _check_y(view: ops.View, xs: Tensor, y: Tensor | None, method: str, labels: bool):
    if y is None:
        if labels:
            raise ValueError(
                f"{method}: this criterion uses the loss; pass labels y=Tensor[{xs.shape[0]}]"
            )
        return None
    return view.check_labels(y, xs.shape[0], method)
