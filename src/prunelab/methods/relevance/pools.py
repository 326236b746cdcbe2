"""Max pools backwards: each window's maximum rule, the winners' routing, and DeepLIFT's
split between the input's and the reference's winners. Shapes: ``a: [N, C, H, W]`` the pool's
input, ``b, R: [N, C, H_out, W_out]`` its output and the relevance there."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from ...base import ops
from .rules import MAXIMUM_RULES, _div


def _max_pool(op: ops.Pool, a: Tensor) -> tuple[Tensor, Tensor]:
    """The max pool's output and each output's winner (:meth:`prunelab.ops.Pool.winners`)."""
    return op.winners(a)


def _route(R: Tensor, index: Tensor, like: Tensor, into: Tensor | None = None) -> Tensor:
    """Every output's ``R`` to its winner (the max pool's own backward, without tie splitting).
    R: [N, C, H_out, W_out], index: R's shape or one row of it -> like's shape [N, C, H, W],
    added in place to ``into`` (a fresh tensor of that shape) if given."""
    N, C = R.shape[:2]
    HW = like[0, 0].numel()
    if into is None:
        into = R.new_zeros(N, C, *like.shape[2:])
    if index.shape[0] == 1 < N:  # one reference for every sample: one flat index, no copies
        flat = (index[0] + HW * torch.arange(C, device=R.device)[:, None, None]).flatten()
        into.view(N, C * HW).index_add_(1, flat, R.reshape(N, -1))  # [N, C H W]
    else:
        into.view(N, C, HW).scatter_add_(2, index.flatten(2), R.flatten(2))
    return into


def _route_ref(R: Tensor, b: Tensor, b_ref: Tensor, win: Tensor, win_ref: Tensor, a: Tensor):
    """Winner takes all against a reference (Shrikumar et al. 2017; Captum's max-pool rule).

    ``b - b_ref = (max(b, b_ref) - b_ref) + (b - max(b, b_ref))``: ``R(b)`` is split in these
    proportions between the input's winner and the reference's (all to the input's winner
    when ``b = b_ref``). Each share lands where ``a - a_ref`` is non-zero, so the Q form
    ``R / (a - a_ref)`` stays finite and summation-to-delta holds. Shapes as :func:`_route`.
    """
    db = b - b_ref
    w = torch.where(db == 0, 1, _div(torch.maximum(b, b_ref) - b_ref, db))  # input's share
    return _route(R * (1 - w), win_ref, a, into=_route(R * w, win, a))


def _axis(n_in: int, n_out: int, k: int, s: int, p: int, d: int, adaptive: bool) -> Tensor:
    """Input indices of each pooling window along one axis, ``[n_out, K]``, -1 outside the
    input (in the padding). Adaptive: ``[floor(o n_in / n_out), ceil((o+1) n_in / n_out))``;
    otherwise ``o s - p + i d`` for ``i < k``."""
    o = torch.arange(n_out)
    if adaptive:
        start, end = (o * n_in) // n_out, ((o + 1) * n_in + n_out - 1) // n_out
        i = start[:, None] + torch.arange(int((end - start).max()))
        return torch.where(i < end[:, None], i, -1)
    i = o[:, None] * s - p + torch.arange(k) * d
    return torch.where((i >= 0) & (i < n_in), i, -1)


def _windows(op: ops.Pool, size: Sequence[int], out_size: Sequence[int]) -> Tensor:
    """Flat input index (into ``H * W``) of every member of every window of a max pool,
    ``[H_out W_out, K]``; ``H * W`` marks a place outside the input (padding, ceil_mode)."""
    m, (H, W), (H_o, W_o) = op.module, size, out_size
    adaptive = op.adaptive
    if adaptive:
        geometry = [(0, 0, 0, 0)] * 2
    else:
        k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        geometry = list(zip(k, s, p, d, strict=True))
    rows = _axis(H, H_o, *geometry[0], adaptive)[:, None, :, None]  # [H_o, 1, K_h, 1]
    cols = _axis(W, W_o, *geometry[1], adaptive)[None, :, None, :]  # [1, W_o, 1, K_w]
    flat = torch.where((rows >= 0) & (cols >= 0), rows * W + cols, H * W)  # [H_o, W_o, K_h, K_w]
    return flat.reshape(H_o * W_o, -1)


def _tiles(op: ops.Pool) -> tuple[int, int] | None:
    """(k_h, k_w) when the windows tile the input (kernel = stride, no padding or dilation):
    then they are a reshape, with no gather."""
    m = op.module
    if op.adaptive:
        return None
    k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
    return k if k == s and p == (0, 0) and d == (1, 1) and not m.ceil_mode else None


def _per_window(rule: str, op: ops.Pool, a: Tensor, R: Tensor) -> Tensor:
    """``MAXIMUM_RULES[rule]`` on every pooling window: a [N, C, H, W], R [N, C, H_o, W_o] ->
    [N, C, H, W] (members of several windows sum their shares). Outside the input a window
    holds -inf, which no rule gives a share."""
    (N, C, H, W), (H_o, W_o) = a.shape, R.shape[2:]
    tiles = _tiles(op)
    if tiles is not None:  # [N, C, H_o, k_h, W_o, k_w] -> one row per window
        k_h, k_w = tiles
        v = a[:, :, : H_o * k_h, : W_o * k_w].reshape(N, C, H_o, k_h, W_o, k_w)
        v = v.permute(0, 1, 2, 4, 3, 5).reshape(-1, k_h * k_w)
        split = MAXIMUM_RULES[rule](v, R.reshape(-1)).view(N, C, H_o, W_o, k_h, k_w)
        split = split.permute(0, 1, 2, 4, 3, 5).reshape(N, C, H_o * k_h, W_o * k_w)
        return F.pad(split, (0, W - W_o * k_w, 0, H - H_o * k_h))  # rows no window reads
    idx = _windows(op, (H, W), (H_o, W_o)).to(a.device)  # [L, K]
    L, K = idx.shape
    vals = F.pad(a.flatten(2), (0, 1), value=-math.inf)[:, :, idx]  # [N, C, L, K]
    split = MAXIMUM_RULES[rule](vals.reshape(-1, K), R.reshape(-1)).view(N, C, L * K)
    out = a.new_zeros(N, C, H * W + 1).scatter_add(2, idx.flatten().expand(N, C, -1), split)
    return out[:, :, : H * W].reshape(N, C, H, W)


def _max_step(
    rule: str, mode: str, op: ops.Pool, fwd: tuple, ref: tuple, delta: tuple, S: Tensor
) -> Tensor:
    """A max pool ``b = max over each window of a`` backwards, by ``MAXIMUM_RULES[rule]``.

    The rules split ``R(b)`` (R space). ``mode``: "signal" (the gradient rule is the pool's own
    backward), "r" (S is R) or "q" (S is Q: R(b) = (b - b_ref) Q(b) and Q(a) = R(a) /
    (a - a_ref)). ``fwd = (a, b, winners)``, ``ref = (b_ref, winners_ref)`` (Nones for a zero
    reference), ``delta = (a - a_ref, b - b_ref)``.
    """
    (a, b, win), (b_ref, win_ref), (da, db) = fwd, ref, delta
    if rule == "gradient" and mode == "signal":
        return _route(S, win, a)
    R = S if mode == "r" else db * S
    if rule == "radial":
        R = _per_window(rule, op, a, R)
    elif b_ref is None:
        R = _route(R, win, a)
    else:
        R = _route_ref(R, b, b_ref, win, win_ref, a)
    return R if mode == "r" else _div(R, da)
