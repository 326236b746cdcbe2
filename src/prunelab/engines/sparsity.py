"""Weight-sparsity sweeps on any op view: one ranking, nested masks, each level from the last.

The masks of a sweep nest: level ``t`` prunes everything level ``t - 1`` prunes and the
entries ranked next. Run level by level in increasing order, every op's output is kept from
the previous level and recomputed only where something changed:

* an op whose input did not change and that holds no newly pruned entries keeps its output
  (the layers below the first one pruned at this level cost nothing);
* an affine op (Linear or Conv2d, BatchNorm folded) whose input did not change updates its
  output by the entries ``e = (o, d)`` first pruned at this level, exactly as the layer is
  linear in its weight:

      y_t[:, o] = y_{t-1}[:, o] - s_o W_e x_e          (x_e = dz_o / dW_e, ``Affine.entry_inputs``)

  with ``s_o`` the folded BatchNorm scale (1 without one); a pruned bias ``b_o`` subtracts
  ``s_o b_o``. That is ``2 N P_out`` per entry (``P_out`` output positions) instead of a
  whole layer, when few entries are new (fewer than ``SPARSE_SHARE`` of the layer's);
* any op whose input changed runs again, an affine op with its masked weights (one dense
  layer, as a fresh pruned model would run it).

The first layer's input never changes, so it is only ever updated entry by entry; each
level's output carries the rounding of the subtractions since its last dense run, about that
of one fresh layer in the same dtype. Nothing is copied per level but the outputs that
change.

Shapes: N samples, C classes; a layer's weight ``W: [H_out, ...]`` with ``P`` entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from ..base import ops

SPARSE_SHARE = 1 / 16  # update entry by entry while fewer than this share of W is new


def sweep_logits(
    view: ops.View,
    seq: Mapping[str, Tensor],
    counts: Tensor,
    order: list[int],
    x: Tensor,
    chunk_bytes: int,
) -> Iterator[tuple[list[int], Tensor]]:
    """Yield ``([level], logits [1, C, N])`` for the levels in ``order`` (increasing sparsity).

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
        Budget of one entry-by-entry update's gathered inputs.
    """
    col = {name: j for j, name in enumerate(seq)}
    state: list[Tensor | None] = [None] * len(view.ops)  # each op's output at the last level
    done = {name: 0 for name in seq}  # entries pruned by the last level
    a0 = view.inputs(x)
    with torch.no_grad():
        for i in order:
            now = {name: int(counts[i, j]) for name, j in col.items()}
            a, changed = a0, False
            for k, op in enumerate(view.ops):
                if isinstance(op, ops.Affine):
                    new = {n: seq[n][done[n] : now[n]] for n in _names(op) if n in seq}
                    out, changed = _affine(op, a, state[k], changed, new, seq, now, chunk_bytes)
                elif changed or state[k] is None:
                    out, changed = op.apply(a, training=False), True
                else:
                    out = state[k]
                state[k] = a = out
            done = now
            yield [i], a.T[None].clone()  # [1, C, N]; the state may be updated in place later


def _names(op: ops.Affine) -> tuple[str, str]:
    return f"{op.name}.weight", f"{op.name}.bias"


def _affine(
    op: ops.Affine,
    a: Tensor,
    prev: Tensor | None,
    changed: bool,
    new: dict[str, Tensor],
    seq: Mapping[str, Tensor],
    now: dict[str, int],
    chunk_bytes: int,
) -> tuple[Tensor, bool]:
    """The op's output at this level and whether it changed (module docstring)."""
    n_new = sum(len(e) for e in new.values())
    if prev is not None and not changed:
        if n_new == 0:
            return prev, False
        if n_new < SPARSE_SHARE * op.weight.numel():
            return _subtract(op, a, prev, new, chunk_bytes), True
    params = {}
    for name, t in zip(_names(op), op.raw(), strict=True):
        if name in seq:  # the raw tensor with its first now[name] entries (in order) zeroed
            mask = torch.ones(t.numel(), dtype=t.dtype, device=t.device)
            mask[seq[name][: now[name]]] = 0
            params[name] = t.detach() * mask.view(t.shape)
    return op.apply(a, params, training=False), True


def _subtract(
    op: ops.Affine, a: Tensor, y: Tensor, new: dict[str, Tensor], chunk_bytes: int
) -> Tensor:
    """``y`` (updated in place) minus the contributions ``s_o W_e x_e`` and ``s_o b_o`` of the
    newly pruned entries."""
    W, b = (None if t is None else t.detach() for t in op.raw())
    st = op.scale_shift()
    s = torch.ones(W.shape[0], dtype=y.dtype, device=y.device) if st is None else st[0]
    spatial = [1] * (y.dim() - 2)
    e = new.get(f"{op.name}.weight")
    if e is not None and len(e):
        o = e // W[0].numel()  # output unit of each entry
        coef = -(s[o] * W.reshape(-1)[e])  # [E]
        per_entry = a.shape[0] * max(1, y[0, 0].numel()) * y.element_size()
        step = max(1, chunk_bytes // (4 * per_entry))
        for sl in range(0, len(e), step):
            x_e = op.entry_inputs(a, e[sl : sl + step])  # [N, E, *spatial]
            y.index_add_(1, o[sl : sl + step], x_e * coef[sl : sl + step].view(1, -1, *spatial))
    o = new.get(f"{op.name}.bias")
    if o is not None and len(o):
        shift = torch.zeros_like(s).index_add_(0, o, s[o] * b[o])  # [H_out]
        y -= shift.view(1, -1, *spatial)
    return y
