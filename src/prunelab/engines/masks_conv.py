"""Many unit masks at once on any op view: the batched mask engine for convnets.

A unit mask ``m: Tensor[M, H]`` holds one factor per unit, units numbered layer by layer (a
Linear's output features, a Conv2d's output channels); a channel's factor multiplies its whole
feature map after the activation (as :func:`prunelab.ops.forward`'s ``scales``). The dense
engine (:mod:`prunelab.engines.masks`) serves MLPs; this one serves every other view. No loop
over masks:

* **Shared prefix.** Everything up to the first hidden layer's units depends on no mask and is
  computed once, and so are the ops between those units and the layer that reads them when
  they commute with a per-channel factor: average pooling, Flatten, Dropout, Identity, and max
  pooling when every factor is non-negative (``max(m a) = m max(a)`` for ``m >= 0``).
* **Folded first reader.** The reader ``z = s (A a~) + c`` of the first masked layer (``A``
  its linear map, ``s`` its BatchNorm scale, ``c`` the response to a zero input, biases and
  BatchNorm shift included) is linear in the masked input ``a~ = m a``, so per mask

      z[m] = c + sum_j m_j P_j,    P_j = s (A (a * e_j))          (e_j: unit j alone)

  The ``P_j`` are computed once for all masks; each chunk of masks is then one GEMM
  ``[Mc, H_0 + 1] @ [H_0 + 1, N * |z|]`` (the last column of ones picks up ``c``), about ``k_h k_w`` times cheaper than running the reader's
  convolution per mask. When ``P`` would exceed ``shared_bytes`` the prefix's output is
  repeated per mask instead.
* **The rest** runs as one batch of ``Mc * N`` samples through :func:`prunelab.ops.forward`
  (mask ``m`` of the chunk on rows ``m N .. m N + N - 1``), and the gradient w.r.t. the masks
  is autograd's reverse pass through that one batched graph.

* **Shared rows.** Masks that agree on the first layer's factors agree on everything from the
  folded reader to the next layer's multiplier (for LeNet-5, conv2's ReLU and max pool), so
  :class:`Rows` runs that segment once per distinct row ``u`` and looks it up per mask; the
  gradient w.r.t. the row is ``T_u^T g`` with ``T_u = J_seg(z_u) P`` (one forward-mode
  derivative per first-layer unit). Random 0/1 masks over LeNet-5's 6 conv1 channels have at
  most 64 distinct rows, so 1000 masks run that segment 64 times instead of 1000.

Chunks of ``Mc`` masks are sized so the per-mask activations, kept for the reverse pass, fit
``chunk_bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jvp, vmap

from ..base import ops

SHARED_BYTES = 2**28  # the folded reader's P: 256 MiB at most, else the plain path


@dataclass(frozen=True)
class Plan:
    """A validated problem: the view, the shared prefix and how the first reader is run.

    ``shared``: input of op ``start`` (``[N, *shape]``), mask-independent; ``P``: the folded
    first reader, ``[H_0 + 1, N * prod(z)]``, its last row ``c`` for every sample (None: op
    ``start`` runs per mask on ``shared`` scaled by the first layer's masks); ``c``: the
    reader's response to zero, ``[1, *z]``;
    ``per_sample``: elements per sample of every per-mask activation after the prefix.
    """

    view: ops.View
    shared: Tensor
    start: int
    block: int
    P: Tensor | None
    c: Tensor | None
    z_shape: tuple[int, ...]
    per_sample: int
    sizes: list[int]
    at: list[int]
    ref: int = 0  # rows of ``shared`` that are reference data for held units (:func:`held`)
    Q: Tensor | None = None  # [H_0, prod(z)]: the reader's response to unit j held at its mean
    units: Tensor | None = None  # [N, *unit shape]: the first layer's units, for held units
    abar: Tensor | None = None  # [H_0]: their means over the reference rows


def plan(
    view: ops.View, x: Tensor, *, nonneg: bool, ref: int = 0, shared_bytes: int = SHARED_BYTES
) -> Plan:
    """The shared prefix of ``x`` (validated ``[N, *in]``) and the folded first reader.

    ``nonneg``: every mask factor is >= 0, so a max pool after the first masked units can be
    shared too. ``ref > 0``: the first ``ref`` rows of ``x`` are reference data whose means
    removed units are held at (:func:`held`).
    """
    sizes = view.hidden_sizes
    first_units = view.unit_ops[0]
    with torch.no_grad():
        a = view.inputs(x)
        for op in view.ops[: first_units + 1]:
            a = op.apply(a, training=False)
        units = a
        start = first_units + 1
        while not isinstance(view.ops[start], ops.Affine):
            op = view.ops[start]
            if isinstance(op, ops.Pool) and op.routing and not nonneg:
                break
            a = op.apply(a, training=False)
            start += 1
        reader = view.ops[start]
        N = a.shape[0]
        block = a[0].numel() // sizes[0]  # a channel's positions (1 for a Linear's feature)
        P = c = None
        z_shape: tuple[int, ...] = ()
        if isinstance(reader, ops.Affine):
            z_shape = tuple(reader.apply(a[:1], training=False).shape[1:])
            if (sizes[0] + 1) * N * math.prod(z_shape) * a.element_size() <= shared_bytes:
                P, c = _fold(reader, a, sizes[0])
        per_sample = _per_sample(view, a[:1], start, z_shape if P is not None else None)
        Q = abar = None
        if ref:
            abar = units[:ref].transpose(0, 1).reshape(sizes[0], -1).mean(1)
            if P is not None:
                Q = _held_rows(view, first_units + 1, start, abar, units[:1])
    at = points(view, nonneg=nonneg)
    if not ref or P is not None:
        units = None
    return Plan(view, a, start, block, P, c, z_shape, per_sample, sizes, at, ref, Q, units, abar)


def _held_rows(view: ops.View, first: int, start: int, abar: Tensor, like: Tensor) -> Tensor:
    """``Q: [H_0, prod(z)]``: row ``j`` is ``s (A u_j)``, the reader's answer to unit ``j`` held
    at ``abar_j`` everywhere (through the pools between; near the border of a zero-padded conv
    it depends on the position), the other units at 0."""
    H0 = len(abar)
    u = torch.zeros(H0, *like.shape[1:], dtype=like.dtype, device=like.device)
    u.view(H0, H0, -1)[range(H0), range(H0)] = abar[:, None]  # one constant map per unit
    for op in view.ops[first:start]:
        u = op.apply(u, training=False)
    reader = view.ops[start]
    r = reader.response(u)
    st = reader.scale_shift()
    if st is not None:
        r = r * st[0].view(-1, *[1] * (r.dim() - 2))
    return r.reshape(H0, -1)


def _fold(reader: ops.Affine, a: Tensor, H0: int) -> tuple[Tensor, Tensor]:
    """``P: [H_0 + 1, N * prod(z)]``: rows ``P_j = s (A (a * e_j))`` and a last row ``c`` (the
    response to 0, biases and BatchNorm shift included) per sample; and ``c: [1, *z]``."""
    N = a.shape[0]
    st = reader.scale_shift()
    units = a.view(N, H0, -1)
    rows = []
    for j in range(H0):  # a loop over the reader's input units, once, not over masks
        u = torch.zeros_like(units)
        u[:, j] = units[:, j]
        r = reader.response(u.view_as(a))
        if st is not None:
            r = r * st[0].view(-1, *[1] * (r.dim() - 2))
        rows.append(r.reshape(-1))
    c = reader.apply(torch.zeros_like(a[:1]), training=False)  # [1, *z]
    rows.append(c.expand(N, *c.shape[1:]).reshape(-1))  # the last row: c, for a factor 1
    return torch.stack(rows), c


def _per_sample(view: ops.View, a: Tensor, start: int, z_shape) -> int:
    """Elements per sample of the activations the per-mask batch keeps, on one sample."""
    total = 0
    if z_shape is not None:
        a = view.ops[start].apply(a, training=False)
        start += 1
    total += a.numel()
    for op in view.ops[start:]:
        a = op.apply(a, training=False)
        total += a.numel()
    return total


def chunk_size(p: Plan, *, chunk_bytes: int, backward: bool, rows: Rows | None = None) -> int:
    """Masks per chunk: per mask ``N`` samples of ``per_sample`` elements (from ``rows.stop``
    on with ``rows``), about 3 copies each (activation, saved input, gradient) with a reverse
    pass, 1 without."""
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive int; got {chunk_bytes!r}")
    per_sample = p.per_sample if rows is None else rows.per_sample()
    per_mask = p.shared.shape[0] * per_sample * p.shared.element_size() * (3 if backward else 1)
    return max(1, chunk_bytes // max(1, per_mask))


def points(view: ops.View, *, nonneg: bool) -> list[int]:
    """Per hidden layer, the op before which its multiplier is applied: the first op after its
    units that does not commute with a per-channel factor (a layer, a Flatten, or a max pool
    when some factor is negative). Pooling before scaling does less work, and at a factor of
    0 it gives the one-sided derivative of turning the unit up (see :func:`run`)."""
    out = []
    for k in view.unit_ops:
        j = k + 1
        while isinstance(view.ops[j], ops.Pass) or (
            isinstance(view.ops[j], ops.Pool) and (nonneg or not view.ops[j].routing)
        ):
            j += 1
        out.append(j)
    return out


def run(view: ops.View, a: Tensor, start: int, scales: dict[int, Tensor], at: list[int]) -> Tensor:
    """``view.ops[start:]`` on ``a``, multiplying hidden layer ``l``'s units by ``scales[l]``
    (``[B, H_l]``) just before op ``at[l]`` (:func:`points`); evaluation mode.

    Equal to :func:`prunelab.ops.forward` with ``scales`` where the function is differentiable.
    Behind a max pool a factor of exactly 0 is a kink (every pooled value of the zeroed map
    ties at 0): autograd's convention there picks the window's first position, while scaling
    after the pool gives ``lim_{t -> 0+} (L(m + t e_j) - L(m)) / t``, the change from turning
    the unit up a little, which is what a mask gradient is read as.
    """
    k = start
    for ell in sorted(scales, key=lambda ell: at[ell]):
        if at[ell] < start:
            continue
        a = _ops(view, a, k, at[ell])
        s = scales[ell]
        a, k = a * s.view(*s.shape, *[1] * (a.dim() - 2)), at[ell]
    return _ops(view, a, k, len(view.ops))


def _monotone(op: ops.Op) -> bool:
    """A non-decreasing activation: it commutes with a max pool, ``max phi(z) = phi(max z)``."""
    if not isinstance(op, ops.Activation):
        return False
    return op.activation in ("relu", "tanh", "sigmoid", "identity") or (
        op.activation == "leaky_relu" and op.slope >= 0
    )


def _ops(view: ops.View, a: Tensor, start: int, stop: int) -> Tensor:
    """``view.ops[start:stop]`` on ``a`` (evaluation mode), a non-decreasing activation followed
    by a max pool run as the pool first: the same values, and the same gradients (the pool
    routes from the same input, ties included: at a window of ReLU zeros both give 0), on a
    quarter of the elements behind a 2x2 pool."""
    k = start
    while k < stop:
        op = view.ops[k]
        nxt = view.ops[k + 1] if k + 1 < stop else None
        if _monotone(op) and isinstance(nxt, ops.Pool) and nxt.routing:
            a = op.apply(nxt.apply(a, training=False), training=False)
            k += 2
        else:
            a = op.apply(a, training=False)
            k += 1
    return a


def logits(p: Plan, masks: Tensor, rows: Rows | None = None) -> Tensor:
    """Logits of one chunk of masks ``[Mc, H]`` (autograd flows to ``masks``): ``[Mc, N, C]``;
    with ``rows`` (:func:`grouped`), the segment after the folded reader is looked up per
    distinct first-layer row."""
    Mc, N = masks.shape[0], p.shared.shape[0]
    blocks = masks.split(p.sizes, dim=1)
    if rows is not None:
        a, start = rows(blocks[0]).reshape(Mc * N, *rows.shape), rows.stop
    elif p.P is not None:  # z[m] = c + sum_j m_j P_j: one GEMM for the chunk
        ones = masks.new_ones(Mc, 1)
        a = (torch.cat([blocks[0], ones], 1) @ p.P).view(Mc * N, *p.z_shape)
        start = p.start + 1
    else:  # the prefix's output repeated per mask, scaled by the first layer's masks
        m0 = blocks[0].repeat_interleave(p.block, dim=1).view(Mc, 1, *p.shared.shape[1:])
        a = (p.shared[None] * m0).reshape(Mc * N, *p.shared.shape[1:])
        start = p.start
    scales = {ell: b.repeat_interleave(N, dim=0) for ell, b in enumerate(blocks) if ell > 0}
    return run(p.view, a, start, scales, p.at).view(Mc, N, -1)


class Rows:
    """The segment ``view.ops[start + 1 : stop]`` after the folded reader, run once per distinct
    row ``u`` of first-layer factors (``stop``: the next layer's multiplier, :func:`points`):

        S_u = seg(z_u),   z_u = c + sum_j u_j P_j,   T_u[j] = J_seg(z_u) P_j   (jvp)

    Calling it on a chunk's first-layer rows ``[Mc, H_0]`` returns ``S_u`` per mask,
    ``[Mc, N, *shape]``, with d/d(row) = ``T_u^T g``: autograd's derivative at ``z_u``. Rows
    are remembered from one chunk to the next, so masks sorted by row (:func:`grouped`) run
    each row once.
    """

    def __init__(self, p: Plan, *, grad: bool):
        if p.P is None:
            raise ValueError("Rows needs the folded first reader (Plan.P)")
        self.p, self.grad = p, grad
        later = [at for at in p.at[1:] if at > p.start]
        self.stop = min(later, default=len(p.view.ops))
        z = torch.zeros(1, *p.z_shape, dtype=p.P.dtype, device=p.P.device)
        self.shape = tuple(_ops(p.view, z, p.start + 1, self.stop).shape[1:])
        self.memo: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    def per_sample(self) -> int:
        """Elements per sample of the per-mask activations from ``stop`` on."""
        p = self.p
        z = torch.zeros(1, *p.z_shape, dtype=p.P.dtype, device=p.P.device)
        return _per_sample(p.view, _ops(p.view, z, p.start + 1, self.stop), self.stop, None)

    def _row(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """``S_u`` ``[N * prod(shape)]`` and, with a gradient, ``T_u`` ``[H_0, N * prod(shape)]``."""
        p, N, H0 = self.p, self.p.shared.shape[0], self.p.sizes[0]
        z = (torch.cat([u, u.new_ones(1)]) @ p.P).view(N, *p.z_shape)

        def seg(a: Tensor) -> Tensor:
            return _ops(p.view, a, p.start + 1, self.stop)

        if not self.grad:
            return seg(z).reshape(-1), None
        directions = p.P[:H0].view(H0, N, *p.z_shape)
        with torch.enable_grad():  # the pools' autograd path, which has forward derivatives
            S, T = vmap(lambda d: jvp(seg, (z,), (d,)), out_dims=(None, 0))(directions)
        return S.reshape(-1), T.reshape(H0, -1)

    def __call__(self, m0: Tensor) -> Tensor:
        U, inverse = torch.unique(m0.detach(), dim=0, return_inverse=True)
        keys = [tuple(u.tolist()) for u in U]
        memo = {k: self.memo.get(k) or self._row(u) for k, u in zip(keys, U, strict=True)}
        self.memo = memo  # the next chunk's rows start where this chunk's end
        S = torch.stack([memo[k][0] for k in keys])
        T = torch.stack([memo[k][1] for k in keys]) if self.grad else None
        out = _Lookup.apply(m0, S, T, inverse)
        return out.view(m0.shape[0], self.p.shared.shape[0], *self.shape)


class _Lookup(torch.autograd.Function):
    """``S[inverse]`` with d/d(m0) = ``T[inverse[m]] g[m]`` per mask (see :class:`Rows`)."""

    @staticmethod
    def forward(ctx, m0: Tensor, S: Tensor, T: Tensor | None, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(T, inverse)
        return S[inverse]

    @staticmethod
    def backward(ctx, g: Tensor):
        T, inverse = ctx.saved_tensors
        out = g.new_empty(len(inverse), T.shape[1])
        for k in range(T.shape[0]):  # a loop over distinct rows, not over masks
            at = (inverse == k).nonzero().squeeze(1)
            out[at] = g[at] @ T[k].T
        return out, None, None, None


def grouped(p: Plan, masks: Tensor, *, grad: bool) -> tuple[Tensor | None, Rows | None]:
    """A permutation putting masks with equal first-layer rows next to each other, and the
    :class:`Rows` that serves them; ``(None, None)`` where sharing does not pay: no folded
    reader, or more distinct rows ``K`` than ``M / (H_0 + 1)`` with a gradient (each row costs
    ``H_0`` derivatives and a value) or ``M / 2`` without."""
    if p.P is None:
        return None, None
    m0 = masks[:, : p.sizes[0]]
    _, inverse = torch.unique(m0, dim=0, return_inverse=True)
    K = int(inverse.max()) + 1 if len(inverse) else 0
    if K * (p.sizes[0] + 1 if grad else 2) > masks.shape[0]:
        return None, None
    return torch.argsort(inverse, stable=True), Rows(p, grad=grad)


def held(p: Plan, masks: Tensor) -> Tensor:
    """Logits ``[Mc, N - ref, C]`` of one chunk of 0/1 masks with every removed unit held at its
    mean instead of zeroed (mean compensation): per mask and layer in order,

        a^l <- m^l a^l + (1 - m^l) abar^l(m),    abar^l(m) = the mean of a^l over the reference
                                                   rows and positions, in the network so held

    which equals ``surgery.remove_nodes(model, plan, compensate="mean", x=reference)`` on the
    other rows. The first layer's means depend on no mask: its held units enter the folded
    reader as ``(1 - m) @ Q``.
    """
    Mc, N, R = masks.shape[0], p.shared.shape[0], p.ref
    blocks = masks.split(p.sizes, dim=1)
    m0 = blocks[0]
    if p.P is not None:
        z = (torch.cat([m0, m0.new_ones(Mc, 1)], 1) @ p.P).view(Mc, N, *p.z_shape)
        a = (z + ((1 - m0) @ p.Q).view(Mc, 1, *p.z_shape)).view(Mc * N, *p.z_shape)
        k = p.start + 1
    else:  # the first layer's units repeated per mask, held, then every op after them
        shape = p.units.shape[1:]
        keep = m0.view(Mc, 1, -1, *[1] * (len(shape) - 1))
        a = p.units[None] * keep + (1 - keep) * p.abar.view(1, 1, -1, *[1] * (len(shape) - 1))
        a, k = a.reshape(Mc * N, *shape), p.view.unit_ops[0] + 1
    for ell in range(1, len(p.sizes)):
        u = p.view.unit_ops[ell]
        if u >= k:
            a, k = ops.forward(p.view, a, start=k, stop=u + 1, training=False), u + 1
        b = a.view(Mc, N, *a.shape[1:])
        dims = [1, *range(3, b.dim())]  # reference rows and positions
        abar = b[:, :R].mean(dim=dims, keepdim=True)  # [Mc, 1, H_l, 1, ...]
        keep = blocks[ell].view(Mc, 1, -1, *[1] * (b.dim() - 3))
        a = (b * keep + (1 - keep) * abar).view_as(a)
    f = ops.forward(p.view, a, start=k, training=False)
    return f.view(Mc, N, -1)[:, R:]


def losses(
    p: Plan,
    y: Tensor,
    masks: Tensor,
    *,
    grad: bool,
    loss: Callable[[Tensor, Tensor], Tensor],
    rows: Rows | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-point losses ``[Mc, N]`` of one chunk and, with ``grad``, d(sum of them)/d(masks)."""
    with torch.enable_grad() if grad else torch.no_grad():
        m = masks.detach().requires_grad_(grad)
        f = logits(p, m, rows)
        point = loss(f, y)
        if not grad:
            return point, None
        (g,) = torch.autograd.grad(point.sum(), m)
    return point.detach(), g


def cross_entropy(f: Tensor, y: Tensor) -> Tensor:
    """``CE(f[m, n], y[n])`` for logits ``[Mc, N, C]``: ``[Mc, N]``."""
    Mc, N, C = f.shape
    return F.cross_entropy(f.reshape(Mc * N, C), y.repeat(Mc), reduction="none").view(Mc, N)
