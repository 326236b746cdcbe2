"""Validation shared by the node and weight criteria."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import models


def check_inputs(
    model: nn.Module, x: Tensor, y: Tensor | None, method: str, *, labels: bool, hidden: bool = True
) -> tuple[models.Net, Tensor, Tensor | None]:
    """Validate ``model``, ``x`` and ``y`` once; return the net, ``x`` as [N, D] and ``y``.

    ``hidden=False`` accepts a model without hidden layers (weight criteria).
    """
    net = models.parse(model, method=method)
    if hidden and not net.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes to score")
    W = net.layers[0].weight
    if not isinstance(x, Tensor):
        raise TypeError(f"{method}: x must be a torch.Tensor [N, D]; got {type(x).__name__}")
    xs = net.inputs(x)
    if xs.dim() != 2 or xs.shape[1] != net.in_features:
        raise ValueError(
            f"{method}: x must have shape [N, {net.in_features}] (after the model's Flatten); "
            f"got shape {tuple(x.shape)}"
        )
    if xs.dtype != W.dtype or xs.device != W.device:
        raise TypeError(
            f"{method}: x is {xs.dtype} on {xs.device} but the model's parameters are "
            f"{W.dtype} on {W.device}; convert one of them"
        )
    N = xs.shape[0]
    if N == 0:
        raise ValueError(f"{method}: x holds no samples")
    if not bool(torch.isfinite(xs).all()):
        raise ValueError(f"{method}: x holds NaN or inf values")
    if y is None:
        if labels:
            raise ValueError(f"{method}: this criterion uses the loss; pass labels y=Tensor[{N}]")
        return net, xs.detach(), None
    if not isinstance(y, Tensor):
        raise TypeError(f"{method}: y must be a torch.Tensor [N]; got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{method}: y must hold integer class labels; got {y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"{method}: y must have shape [{N}] like x; got {tuple(y.shape)}")
    C = net.out_features
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(
            f"{method}: y must be class labels in [0, {C}) for a model with {C} outputs; got "
            f"range [{int(y.min())}, {int(y.max())}]"
        )
    return net, xs.detach(), y.to(device=xs.device, dtype=torch.long)
