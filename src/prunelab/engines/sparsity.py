"""Weight-sparsity sweeps on any op view: one ranking, nested masks, each level from the last.

The masks of a sweep nest: level ``t`` prunes everything level ``t - 1`` prunes and the
entries ranked next. Run level by level in increasing order, every op's output is kept from
the previous level and recomputed only where something changed. What changed is passed from
op to op as nothing, some channels (or features) with their change ``delta = new - old``, or
everything:

* an op whose input did not change and that holds no newly pruned entries keeps its output
  (the layers below the first one pruned at this level cost nothing);
* an affine op (Linear or Conv2d, BatchNorm folded with scale ``s``) is linear in its weight
  and in its input, so with ``W`` its weights at the previous level and ``E`` the entries
  ``e = (o, d)`` first pruned at this level

      y_t = y_{t-1} + s * (W[:, S] delta_S) - sum_{e in E} s_o W_e x_e    (x_e: what W_e reads)

  (``Affine.response`` over the changed input units ``S`` only, ``Affine.add_sparse`` for
  the entries; a pruned bias ``b_o`` subtracts ``s_o b_o``): ``2 N Q`` per entry (``Q`` output
  positions) instead of a whole layer, used while fewer than ``SPARSE_SHARE`` of the entries
  are new and fewer than ``CHANNEL_SHARE`` of the input units changed; otherwise the layer
  runs afresh with its masked weights, as a pruned model would run it;
* channel-wise ops (activations, pools) recompute only the changed channels, Flatten maps
  channels to their features, Dropout and Identity pass them on.

The first layer's input never changes, so it runs afresh only when many of its entries are
new at once. Each level's outputs carry the rounding of the updates since the op last ran
afresh, about that of one fresh layer in the same dtype per update (LeNet-5 in float32, 99
levels: losses within 3e-7 of a fresh model's, no accuracy differing). Nothing is copied per
level but what changes.

Shapes: N samples, C classes; a layer's weight ``W: [H_out, ...]`` with ``P`` entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from ..base import ops

SPARSE_SHARE = 1 / 16  # update entry by entry while fewer than this share of W is new
CHANNEL_SHARE = 1 / 3  # update by the input's change while fewer than this share of it changed

# what changed at an op's output: nothing (None), everything (ALL), or (units [S], delta [N, S,
# ...]), the delta only where an affine op reads it
ALL = "all"


def sweep_logits(
    view: ops.View,
    seq: Mapping[str, Tensor],
    counts: Tensor,
    order: list[int],
    x: Tensor,
    chunk_bytes: int,
) -> Iterator[tuple[list[int], Tensor]]:
    """Yield ``(levels, logits [Lc, C, N])`` chunk by chunk for the levels in ``order``.

    Parameters
    ----------
    view : ops.View
        The model (evaluation mode: dropout off, BatchNorm on its running statistics).
    seq : mapping of str to Tensor
        Per prunable parameter (``f"{layer}.weight"`` / ``".bias"``), its flat entry indices
        in pruning order.
    counts : Tensor[L, U]
        Entries pruned at each level, per parameter (columns in the order of ``seq``).
    order : list of int
        Level indices with non-decreasing counts (the masks nest).
    x : Tensor[N, *in]
        Validated inputs, as the first op reads them.
    chunk_bytes : int
        Budget of one chunk's logits and of a Linear's gathered columns in an entry-by-entry
        update.
    """
    col = {name: j for j, name in enumerate(seq)}
    state: list[Tensor | None] = [None] * len(view.ops)  # each op's output at the last level
    kept: dict[int, dict[str, Tensor]] = {}  # each layer's weights masked at the last level
    done = {name: 0 for name in seq}  # entries pruned by the last level
    a0 = view.inputs(x)
    want = _reads_delta(view)
    per_level = view.out_features * x.shape[0] * x.element_size()
    size = max(1, min(len(order), chunk_bytes // per_level))  # levels per yielded chunk
    with torch.no_grad():
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            out = x.new_empty(len(idx), view.out_features, x.shape[0])  # [Lc, C, N]
            for t, i in enumerate(idx):
                now = {name: int(counts[i, j]) for name, j in col.items()}
                a, change = a0, None
                for k, op in enumerate(view.ops):
                    if state[k] is None:  # the first level: everything runs
                        change = ALL
                    if isinstance(op, ops.Affine):
                        pruned = _Pruned(op, seq, done, now, kept.setdefault(k, {}))
                        a, change = _affine(op, a, state[k], change, pruned, want[k], chunk_bytes)
                    else:
                        a, change = _passive(op, a, state[k], change, want[k])
                    state[k] = a
                done = now
                out[t].copy_(a.T)  # the state may be updated in place at later levels
            yield idx, out


class _Pruned:
    """One layer's entries pruned between the last level and this one, and its weights masked
    at the last level (``kept``, updated in place by :meth:`advance`)."""

    def __init__(self, op: ops.Affine, seq, done, now, kept: dict[str, Tensor]) -> None:
        self.op, self.seq, self.kept = op, seq, kept
        self.weight, self.bias = f"{op.name}.weight", f"{op.name}.bias"
        self.new = {n: seq[n][done[n] : now[n]] for n in (self.weight, self.bias) if n in seq}
        self.count = sum(len(e) for e in self.new.values())
        if not kept:  # the raw tensors, copied: the model is not modified
            for name, t in zip((self.weight, self.bias), op.raw(), strict=True):
                if name in seq:
                    kept[name] = t.detach().clone()

    def rows(self) -> Tensor:
        """The output units holding a newly pruned entry, sorted."""
        per = {self.weight: self.op.weight[0].numel(), self.bias: 1}  # entries per unit
        return torch.cat([e // per[n] for n, e in self.new.items()]).unique()

    def advance(self) -> dict[str, Tensor]:
        """Zero the new entries in ``kept``, which then holds this level's masked weights."""
        for name, e in self.new.items():
            if len(e):
                self.kept[name].view(-1)[e] = 0
        return self.kept


def _reads_delta(view: ops.View) -> list[bool]:
    """Per op: whether an affine op reads its output (past Dropout, Identity and Flatten), so
    that its change must carry ``delta``."""
    out, reader = [False] * len(view.ops), False
    for k in range(len(view.ops) - 1, -1, -1):
        out[k] = reader
        op = view.ops[k]
        reader = isinstance(op, ops.Affine) or (reader and isinstance(op, ops.Pass | ops.Flatten))
    return out


def _affine(op: ops.Affine, a: Tensor, y: Tensor | None, change, pruned, want: bool, chunk_bytes):
    """The op's output at this level (``y`` updated in place where it can) and its change."""
    if change is None and pruned.count == 0:
        return y, None
    if (
        change == ALL
        or pruned.count >= SPARSE_SHARE * op.weight.numel()
        or (change is not None and len(change[0]) >= CHANNEL_SHARE * a.shape[1])
    ):
        return op.apply(a, pruned.advance(), training=False), ALL
    st = op.scale_shift()
    s = torch.ones(y.shape[1], dtype=y.dtype, device=y.device) if st is None else st[0]
    if change is not None:  # y += s W[:, S] delta_S with the last level's weights
        units, delta = change
        W = pruned.kept.get(pruned.weight, op.raw()[0].detach())
        shape = (1, -1, *[1] * (y.dim() - 2))
        y += op.response(delta, {pruned.weight: W.index_select(1, units)}) * s.view(shape)
        pruned.advance()
        _subtract(op, a, y, s, pruned, chunk_bytes)
        return y, ALL
    pruned.advance()
    rows = pruned.rows()
    if not want:
        _subtract(op, a, y, s, pruned, chunk_bytes)
        return y, (rows, None)
    old = y.index_select(1, rows)
    _subtract(op, a, y, s, pruned, chunk_bytes)
    return y, (rows, y.index_select(1, rows) - old)


def _subtract(op: ops.Affine, a: Tensor, y: Tensor, s: Tensor, pruned: _Pruned, chunk_bytes):
    """Subtract, in place, the contributions ``s_o W_e x_e`` and ``s_o b_o`` of the newly
    pruned entries at the input ``a``."""
    W, b = (None if t is None else t.detach() for t in op.raw())
    spatial = [1] * (y.dim() - 2)
    e = pruned.new.get(pruned.weight)
    if e is not None and len(e):
        o = e // W[0].numel()  # output unit of each entry
        per_entry = a.shape[0] * y.element_size()  # a Linear's gathered column x[:, d]
        for sl in torch.arange(len(e), device=e.device).split(max(1, chunk_bytes // per_entry)):
            op.add_sparse(a, e[sl], -(s[o[sl]] * W.reshape(-1)[e[sl]]), y)
    o = pruned.new.get(pruned.bias)
    if o is not None and len(o):
        shift = torch.zeros_like(s).index_add_(0, o, s[o] * b[o])  # [H_out]
        y -= shift.view(1, -1, *spatial)


def _passive(op: ops.Op, a: Tensor, y: Tensor | None, change, want: bool):
    """An op without weights: its output at this level and its change."""
    if change is None:
        return y, None
    if change == ALL:
        return op.apply(a, training=False), ALL
    units, delta = change
    if isinstance(op, ops.Pass):  # the identity at evaluation time
        return a, change
    if isinstance(op, ops.Flatten):  # channel c is the block of features [c F, (c + 1) F)
        block = a[0, 0].numel()
        features = (units[:, None] * block + torch.arange(block, device=units.device)).flatten()
        return a.flatten(1), (features, None if delta is None else delta.flatten(1))
    new = op.apply(a.index_select(1, units), training=False)  # channel by channel
    delta = new - y.index_select(1, units) if want else None
    y.index_copy_(1, units, new)
    return y, (units, delta)
