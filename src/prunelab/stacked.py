"""K MLPs of one architecture as stacked tensors: forward and backward, points last.

Weights are stacked ``W_l: [K, H_l, H_{l-1}]``, ``b_l: [K, H_l]``, and every activation is kept
points-last, ``a_l: [K, H_l, B]``, so each layer is one batched GEMM with a long inner dimension
(and the first layer, when all models see the same inputs, one flat GEMM). The mean
cross-entropy of each model and its gradient are computed by a hand-written backward pass:

    delta_L = (softmax(f) - onehot(y)) / B                      [K, C, B]
    dW_l = delta_l a_{l-1}^T,   db_l = sum_n delta_l            [K, H_l, H_{l-1}], [K, H_l]
    delta_{l-1} = (W_l^T delta_l) * r_{l-1} * phi'(z_{l-1})     (r: node and dropout masks)

This is what :func:`prunelab.train.fit_many` trains with; it equals autograd on each model
separately (checked in the tests) and avoids the per-op overhead of K small models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import models


@dataclass
class Cache:
    """What the backward pass needs from the forward pass of one batch."""

    inputs: Tensor  # [D, B] shared or [K, D, B] per model
    z: list[Tensor]  # pre-activations [K, H_l, B] (after pre-activation dropout)
    a: list[Tensor]  # post-activation, post-mask values [K, H_l, B] (hidden layers)
    r_pre: list[Tensor | None]  # multiplicative masks on z (dropout before the activation)
    r: list[Tensor | None]  # multiplicative masks on a (dropout after it, node masks)


def _drop(
    shape: tuple[int, ...], p: float, like: Tensor, g: torch.Generator | None
) -> Tensor | None:
    if g is None or p == 0:
        return None
    return (torch.rand(shape, generator=g, dtype=like.dtype) >= p).to(like.dtype) / (1 - p)


def _mul(x: Tensor, r: Tensor | None) -> Tensor:
    return x if r is None else x * r


def forward(
    net: models.Net,
    Ws: list[Tensor],
    bs: list[Tensor | None],
    xT: Tensor,
    node_masks: list[Tensor] | None = None,
    dropout: torch.Generator | None = None,
) -> tuple[Tensor, Cache]:
    """Logits ``[K, C, B]`` of K stacked MLPs.

    ``xT`` is ``[D, B]`` (the same inputs for every model) or ``[K, D, B]``. ``node_masks`` are
    per hidden layer ``[K or 1, H_l, 1]``; ``dropout`` is the generator of the dropout masks
    (None: evaluation mode).
    """
    K = Ws[0].shape[0]
    B = xT.shape[-1]
    if dropout is not None and net.input_dropout > 0:
        xT = xT * _drop((K, *xT.shape[-2:]), net.input_dropout, xT, dropout)
    cache = Cache(xT, [], [], [], [])
    a = xT
    for i, (layer, W, b) in enumerate(zip(net.layers, Ws, bs, strict=True)):
        H = W.shape[1]
        if a.dim() == 2:  # shared inputs: one flat GEMM for all K models
            z = (W.reshape(K * H, -1) @ a).reshape(K, H, B)
        else:
            z = torch.bmm(W, a)  # (K, H, B)
        if b is not None:
            z += b.unsqueeze(2)
        r_pre = _drop((K, H, B), layer.dropout_pre, z, dropout)
        z = _mul(z, r_pre)
        cache.z.append(z)
        cache.r_pre.append(r_pre)
        a = layer.phi(z)
        if i == len(net.layers) - 1:
            return a, cache
        r = _drop((K, H, B), layer.dropout, z, dropout)
        if node_masks is not None:
            r = node_masks[i] if r is None else r * node_masks[i]
        a = _mul(a, r)
        cache.r.append(r)
        cache.a.append(a)
    raise AssertionError("unreachable")


def cross_entropy(f: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-model mean cross-entropy ``[K]``, correct counts ``[K]`` and ``dL_k/df`` ``[K, C, B]``.

    A prediction is correct when the true class attains the maximum logit (exact ties, which
    have probability zero for trained float weights, count as correct).

    ``f: [K, C, B]`` logits, ``y: [B]`` or ``[K, B]`` labels. Softmax over the short class axis
    is written out (torch's softmax is slow along a non-contiguous axis of length 2).
    """
    K, _, B = f.shape
    yk = y.expand(K, B).unsqueeze(1)  # (K, 1, B)
    m = f.amax(1, keepdim=True)
    e = (f - m).exp_()
    s = e.sum(1, keepdim=True)
    f_y = f.gather(1, yk)  # (K, 1, B)
    loss = (m + s.log() - f_y).mean((1, 2))  # (K,)
    correct = (f_y == m).sum((1, 2))  # argmax along a short strided axis is slow
    delta = e.div_(s)
    delta.scatter_add_(1, yk, torch.full_like(f[:, :1], -1.0))
    return loss, correct, delta.div_(B)


def backward(
    net: models.Net, Ws: list[Tensor], bs: list[Tensor | None], cache: Cache, delta: Tensor
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Gradients ``dW_l [K, H_l, H_{l-1}]`` and ``db_l [K, H_l]`` of the summed model losses."""
    L = len(net.layers)
    dWs: list[Tensor] = [None] * L  # type: ignore[list-item]
    dbs: list[Tensor | None] = [None] * L
    for i in range(L - 1, -1, -1):
        layer = net.layers[i]
        if layer.activation == "relu":  # fused kernel: delta * (z > 0)
            delta = torch.ops.aten.threshold_backward(delta, cache.z[i], 0)
        elif layer.activation != "identity":
            delta = delta * models.derivatives(layer.activation, cache.z[i], layer.slope)[0]
        delta = _mul(delta, cache.r_pre[i])  # d / d (pre-dropout) z, (K, H_i, B)
        prev = cache.a[i - 1] if i > 0 else cache.inputs
        K, H, B = delta.shape
        if prev.dim() == 2:  # shared inputs [D, B]: one flat GEMM
            dWs[i] = (delta.reshape(K * H, B) @ prev.T).reshape(K, H, -1)
        else:
            dWs[i] = torch.bmm(delta, prev.transpose(1, 2))
        if bs[i] is not None:
            dbs[i] = delta.sum(2)
        if i > 0:
            delta = _mul(torch.bmm(Ws[i].transpose(1, 2), delta), cache.r[i - 1])
    return dWs, dbs
