"""K MLPs of one architecture as stacked tensors: forward and backward, points last.

Weights are stacked ``W_l: [K, H_l, H_{l-1}]``, ``b_l: [K, H_l]``, and every activation is kept
points-last, ``a_l: [K, H_l, B]``, so each layer is one batched GEMM with a long inner dimension
(and the first layer, when all models see the same inputs, one flat GEMM). The mean
cross-entropy of each model and its gradient are computed by a hand-written backward pass:

    delta_L = (softmax(f) - onehot(y)) / B                      [K, C, B]
    dW_l = delta_l a_{l-1}^T,   db_l = sum_n delta_l            [K, H_l, H_{l-1}], [K, H_l]
    delta_{l-1} = (W_l^T delta_l) * r_{l-1} * phi'(z_{l-1})     (r: node and dropout masks)

This is what :func:`prunelab.ensemble.fit_many` trains with; it equals autograd on each model
separately (checked in the tests) and avoids the per-op overhead of K small models. A training
loop passes one :class:`Workspace`, so the ``[K, H, B]`` activations and deltas (megabytes
each) are written into the same memory every step instead of being allocated afresh: on a
small CPU that allocation, not the arithmetic, is what the step would otherwise cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import models


class Workspace:
    """Reusable output tensors of one training loop, keyed by their role in the step.

    ``get(key, shape, like)`` returns the same tensor for the same key, shape, dtype and device
    on every call (contents undefined), so a step's large intermediates are allocated once; a
    short last mini-batch gets tensors of its own instead of reallocating the full-size ones
    every epoch. A :class:`Cache` written into a workspace is valid until the next step that
    uses it.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple, Tensor] = {}

    def get(self, key: object, shape: tuple[int, ...], like: Tensor) -> Tensor:
        full_key = (key, tuple(shape), like.dtype, like.device)
        t = self._tensors.get(full_key)
        if t is None:
            t = self._tensors[full_key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


def _empty(ws: Workspace | None, key: object, shape: tuple[int, ...], like: Tensor) -> Tensor:
    if ws is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return ws.get(key, shape, like)


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
    u = torch.rand(shape, generator=g, dtype=like.dtype, device=g.device).to(like.device)
    return (u >= p).to(like.dtype) / (1 - p)


def _mul(x: Tensor, r: Tensor | None) -> Tensor:
    return x if r is None else x * r


def forward(
    net: models.Net,
    Ws: list[Tensor],
    bs: list[Tensor | None],
    xT: Tensor,
    node_masks: list[Tensor] | None = None,
    dropout: torch.Generator | None = None,
    workspace: Workspace | None = None,
) -> tuple[Tensor, Cache]:
    """Logits ``[K, C, B]`` of K stacked MLPs.

    ``xT`` is ``[D, B]`` (the same inputs for every model) or ``[K, D, B]``. ``node_masks`` are
    per hidden layer ``[K or 1, H_l, 1]``; ``dropout`` is the generator of the dropout masks
    (None: evaluation mode). With a ``workspace`` the logits and the cache live in its tensors
    and are overwritten by the next call that uses it.
    """
    K = Ws[0].shape[0]
    B = xT.shape[-1]
    if dropout is not None and net.input_dropout > 0:
        xT = xT * _drop((K, *xT.shape[-2:]), net.input_dropout, xT, dropout)
    cache = Cache(xT, [], [], [], [])
    a = xT
    for i, (layer, W, b) in enumerate(zip(net.layers, Ws, bs, strict=True)):
        H = W.shape[1]
        z = _empty(workspace, ("z", i), (K, H, B), W)
        if a.dim() == 2:  # shared inputs: one flat GEMM for all K models
            torch.mm(W.reshape(K * H, -1), a, out=z.view(K * H, B))
        else:
            torch.bmm(W, a, out=z)
        if b is not None:
            z += b.unsqueeze(2)
        r_pre = _drop((K, H, B), layer.dropout_pre, z, dropout)
        if r_pre is not None:
            z.mul_(r_pre)
        cache.z.append(z)
        cache.r_pre.append(r_pre)
        if i == len(net.layers) - 1:
            return layer.phi(z), cache
        r = _drop((K, H, B), layer.dropout, z, dropout)
        if node_masks is not None:
            r = node_masks[i] if r is None else r * node_masks[i]
        if layer.activation == "relu":  # into the workspace, then masked in place
            a = torch.clamp_min(z, 0, out=_empty(workspace, ("a", i), (K, H, B), z))
            if r is not None:
                a.mul_(r)
        else:
            a = _mul(layer.phi(z), r)
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
    K, C, B = f.shape
    yk = y.expand(K, B).unsqueeze(1)  # (K, 1, B)
    onehot = (torch.arange(C, device=f.device).view(1, C, 1) == yk).to(f.dtype)  # (K, C, B)
    m = f.amax(1, keepdim=True)
    e = (f - m).exp_()
    s = e.sum(1, keepdim=True)
    f_y = (f * onehot).sum(1, keepdim=True)  # (K, 1, B); gather on a short axis is slower
    loss = (m + s.log() - f_y).mean((1, 2))  # (K,)
    correct = (f_y == m).sum((1, 2))  # argmax along a short strided axis is slow
    return loss, correct, e.div_(s).sub_(onehot).div_(B)


def backward(
    net: models.Net,
    Ws: list[Tensor],
    bs: list[Tensor | None],
    cache: Cache,
    delta: Tensor,
    workspace: Workspace | None = None,
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Gradients ``dW_l [K, H_l, H_{l-1}]`` and ``db_l [K, H_l]`` of the summed model losses.

    ``delta`` (``dL/df``, ``[K, C, B]``) is overwritten.
    """
    L = len(net.layers)
    dWs: list[Tensor] = [None] * L  # type: ignore[list-item]
    dbs: list[Tensor | None] = [None] * L
    for i in range(L - 1, -1, -1):
        layer = net.layers[i]
        if layer.activation == "relu":  # fused kernel, in place: delta * (z > 0)
            torch.ops.aten.threshold_backward.grad_input(delta, cache.z[i], 0, grad_input=delta)
        elif layer.activation != "identity":
            delta = delta * models.derivatives(layer.activation, cache.z[i], layer.slope)[0]
        if cache.r_pre[i] is not None:
            delta.mul_(cache.r_pre[i])  # d / d (pre-dropout) z, (K, H_i, B)
        prev = cache.a[i - 1] if i > 0 else cache.inputs
        K, H, B = delta.shape
        if prev.dim() == 2:  # shared inputs [D, B]: one flat GEMM
            dWs[i] = (delta.reshape(K * H, B) @ prev.T).reshape(K, H, -1)
        else:
            dWs[i] = torch.bmm(delta, prev.transpose(1, 2))
        if bs[i] is not None:
            dbs[i] = delta.sum(2)
        if i > 0:
            below = _empty(workspace, ("delta", i - 1), tuple(cache.z[i - 1].shape), delta)
            delta = torch.bmm(Ws[i].transpose(1, 2), delta, out=below)
            if cache.r[i - 1] is not None:
                delta.mul_(cache.r[i - 1])
    return dWs, dbs
