"""Validation shared by the node and weight criteria."""

from __future__ import annotations

from torch import Tensor, nn

from ...base import models


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
    if y is None:
        if labels:
            raise ValueError(
                f"{method}: this criterion uses the loss; pass labels y=Tensor[{xs.shape[0]}]"
            )
        return net, xs, None
    return net, xs, net.check_labels(y, xs.shape[0], method)
