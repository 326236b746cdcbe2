"""The sparsity sweep: loss and accuracy at many weight-sparsity levels from one ranking."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...base import models, ops
from ...engines import sparsity, stacked
from .checks import WEIGHT_SCOPES, check_level, check_scores, check_unshared, prunable


@dataclass
class Sweep:
    """Loss and accuracy of a model pruned to each sparsity level, from one ranking."""

    levels: Tensor  # [L] requested sparsities
    pruned: Tensor  # [L] entries pruned (int64)
    loss: Tensor  # [L] mean cross-entropy on the evaluation data
    accuracy: Tensor  # [L] fraction of argmax predictions equal to y
    removed_score: Tensor  # [L] sum of the pruned entries' scores (float64)


def sparsity_sweep(
    model: nn.Module,
    scores: Mapping[str, Tensor],
    levels: Sequence[float],
    x: Tensor,
    y: Tensor,
    *,
    scope: str = "global",
    biases: bool = False,
    chunk_bytes: int = 2**28,
) -> Sweep:
    """Loss and accuracy at many sparsity levels without copying the model per level.

    Level ``s`` prunes what ``prune_weights(model, scores, s, scope=scope, biases=biases)``
    prunes. The scores are sorted once; every entry gets its rank ``r`` (over all layers, or
    within its tensor), and the mask at a level that prunes ``k`` entries is ``r >= k``.

    A convnet reuses, level after level, what did not change; an MLP runs chunks of levels at
    once, updating the first layer's pre-activations by only the newly pruned entries
    (``docs/sweeps.md``). Dropout counts as identity. ``removed_score`` sums the pruned entries'
    scores: with OBD saliencies it is OBD's predicted loss increase.

    Parameters
    ----------
    model : nn.Sequential
        A model the op view takes (:func:`prunelab.ops.parse`), MLP or convnet (BatchNorm in
        evaluation mode), without a Linear or Conv2d module used twice.
    scores : mapping of str to Tensor
        As :func:`prune_weights`.
    levels : sequence of float
        Sparsities in [0, 1], any order (duplicates allowed).
    x : Tensor[N, *in]
        Evaluation inputs as the model takes them (converted to the parameters' dtype and
        device).
    y : Tensor[N]
        Integer class labels in ``[0, C)``.
    scope : {"global", "layer"}
    biases : bool
        As :func:`prune_weights`.
    chunk_bytes : int
        Memory budget of one chunk of levels (stacked weights and activations; on a convnet,
        of the inputs one entry-by-entry update gathers).

    Returns
    -------
    Sweep
        One entry per level, in the order given.

    References
    ----------
    The curves equal a loop of ``torch.nn.utils.prune.global_unstructured(...,
    L1Unstructured)`` (or ``l1_unstructured`` per layer) and evaluation on magnitude scores,
    up to ties (``tests/test_weight_pruning.py``, ``benchmarks/sparsity_sweep.py``,
    ``benchmarks/sparsity_sweep_conv.py``).
    """
    view = ops.parse(model, method="sparsity_sweep")
    check_unshared(view, "sparsity_sweep")
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"sparsity_sweep: scope={scope!r}; choose from {list(WEIGHT_SCOPES)}")
    params = prunable(view, biases)
    flat = check_scores(params, scores, "sparsity_sweep")
    if isinstance(levels, Tensor):
        levels = levels.tolist()
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise ValueError("sparsity_sweep: levels must be a non-empty sequence of floats in [0, 1]")
    levels = [check_level(s, "sparsity_sweep: levels entry") for s in levels]
    x, y = _check_eval_data(view, x, y)
    ranks, counts, removed = _ranks(params, flat, levels, scope)  # counts [L, U]
    order = sorted(range(len(levels)), key=lambda i: levels[i])
    loss = torch.empty(len(levels), dtype=torch.float64)
    accuracy = torch.empty(len(levels), dtype=torch.float64)
    if view.dense:  # an MLP: the dense engine below
        net = models.parse(model, method="sparsity_sweep")
        chunks = _sweep_logits(net, ranks, counts, order, x.flatten(1), chunk_bytes)
    else:
        chunks = sparsity.sweep_logits(view, ranks, counts, order, x, chunk_bytes)
    for idx, logits in chunks:
        f = logits.double()  # [Lc, C, N]
        lse = torch.logsumexp(f, 1)  # [Lc, N]
        loss[idx] = (lse - f.gather(1, y.expand(len(idx), -1)[:, None]).squeeze(1)).mean(1).cpu()
        predicted = logits.transpose(1, 2).contiguous().argmax(2)  # [Lc, N], first maximum
        accuracy[idx] = (predicted == y).double().mean(1).cpu()
    return Sweep(
        torch.tensor(levels, dtype=torch.float64),
        counts.sum(1),
        loss,
        accuracy,
        removed,
    )


def _check_eval_data(view: ops.View, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate evaluation data; return ``x`` as the first op reads it, in the weights' dtype,
    and ``y`` [N]. A BatchNorm must be in evaluation mode."""
    view.check_eval("sparsity_sweep")
    xs = view.check_x(x, "sparsity_sweep", convert=True)
    return xs, view.check_labels(y, xs.shape[0], "sparsity_sweep")


def _ranks(
    params: dict[str, Tensor], flat: dict[str, Tensor], levels: list[float], scope: str
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Each parameter's entries in pruning order, pruned counts ``[L, U]``, removed scores ``[L]``.

    ``seq[name]`` lists the parameter's flat indices in its group's ranking (one sort of the
    scores, ties to the lower index); at level i the first ``counts[i, u]`` of them are pruned.
    """
    names = list(params)
    groups = [names] if scope == "global" else [[n] for n in names]
    seq: dict[str, Tensor] = {}
    counts = torch.zeros(len(levels), len(names), dtype=torch.long)
    removed = torch.zeros(len(levels), dtype=torch.float64)
    for group in groups:
        s = torch.cat([flat[n] for n in group])
        sorted_s, order = torch.sort(s, stable=True)
        k = torch.tensor([round(lv * len(s)) for lv in levels])  # [L] pruned in this group
        removed += torch.cat([sorted_s.new_zeros(1), sorted_s.cumsum(0)]).cpu()[k]
        sizes = torch.tensor([flat[n].numel() for n in group], device=order.device)
        ends = sizes.cumsum(0)
        unit = torch.searchsorted(ends, order, right=True)  # [n] group member of each rank
        for u, n in enumerate(group):
            member = unit == u
            seq[n] = order[member] - (ends[u] - sizes[u])
            taken = torch.cat([member.new_zeros(1, dtype=torch.long), member.cumsum(0)])
            counts[:, names.index(n)] = taken.cpu()[k]
    return seq, counts, removed


def _sweep_logits(
    net: models.Net,
    seq: dict[str, Tensor],
    counts: Tensor,
    order: list[int],
    x: Tensor,
    chunk_bytes: int,
):
    """Yield (level indices, logits ``[Lc, C, N]``) chunk by chunk, levels in ascending order.

    The first layer's pre-activations ``Z`` (points last, ``[H1, N]``) start from the unpruned
    layer; for a chunk of levels the entries pruned between consecutive levels form one sparse
    matrix ``S [Lc * H1, D + 1]`` (row ``t * H1 + r`` holds the entries of unit r first pruned
    at the chunk's level t; column D is the bias, against a row of ones), and
    ``Z_t = Z_{t-1} - (S @ [x^T; 1])_t``, written over the product in place (one pass). Each
    level's pre-activations thus carry the rounding of at most L subtractions, about that of a
    fresh dense product.
    """
    names = list(seq)
    first, upper = net.layers[0], models.Net(net.layers[1:])
    N = x.shape[0]
    H1, D = first.weight.shape
    per_level = x.element_size() * (
        2 * H1 * N
        + 2 * N * sum(d.width for d in upper.layers)
        + sum(d.weight.numel() for d in upper.layers)
    )
    size = max(1, chunk_bytes // per_level)
    pos = {
        n: torch.empty_like(e).scatter_(0, e, torch.arange(len(e), device=e.device))
        for n, e in seq.items()
    }  # position of each entry in its pruning order
    with torch.no_grad():
        W = first.weight.detach()
        b = None if first.bias is None else first.bias.detach()
        xT = torch.cat([x.T, x.new_ones(1, N)])  # [D + 1, N] points last
        ZT = W @ xT[:D]  # [H1, N] pre-activations with nothing pruned
        if b is not None:
            ZT += b[:, None]
        # each pruned first-layer tensor: its entries in pruning order as (row, column, value)
        units = []
        for name in (f"{first.name}.weight", f"{first.name}.bias"):
            if name in seq:
                e = seq[name]
                if name.endswith("weight"):
                    units.append((names.index(name), e // D, e % D, W.reshape(-1)[e]))
                else:
                    units.append((names.index(name), e, torch.full_like(e, D), b[e]))
        done = [0] * len(units)  # entries of each unit pruned before the chunk
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            Lc = len(idx)
            parts = []  # (S row, column, value) of every entry first pruned within the chunk
            for u, (j, rows, cols, vals) in enumerate(units):
                c = [done[u], *counts[idx, j].tolist()]
                for t in range(Lc):
                    if c[t + 1] > c[t]:
                        sl = slice(c[t], c[t + 1])
                        parts.append((t * H1 + rows[sl], cols[sl], vals[sl]))
                done[u] = c[-1]
            if parts:
                r, col, val = (torch.cat(p) for p in zip(*parts, strict=True))
                r, perm = torch.sort(r, stable=True)
                crow = torch.zeros(Lc * H1 + 1, dtype=torch.long, device=r.device)
                crow[1:] = torch.bincount(r, minlength=Lc * H1).cumsum(0)
                with warnings.catch_warnings():  # "CSR support is in beta", invariant checks
                    warnings.filterwarnings("ignore", "Sparse", UserWarning)
                    S = torch.sparse_csr_tensor(crow, col[perm], val[perm], (Lc * H1, D + 1))
                Z = xT.new_empty(Lc * H1, N)
                # addmm into a fresh buffer skips the zero fill and copies of ``S @ xT``
                torch.addmm(Z, S, xT, beta=0, out=Z)
                Z = Z.reshape(Lc, H1, N)  # what each level removes
            else:
                Z = ZT.new_zeros(Lc, H1, N)
            torch.sub(ZT, Z[0], out=Z[0])
            for t in range(1, Lc):  # Z_t = Z_{t-1} - removed_t, over the product in place
                torch.sub(Z[t - 1], Z[t], out=Z[t])
            ZT = Z[-1].clone()
            A = _phi_(first, Z)  # [Lc, H1, N] points last
            if not upper.layers:
                yield idx, A
                continue
            Ws = [
                _masked(d.weight.detach(), f"{d.name}.weight", pos, counts, idx)
                for d in upper.layers
            ]
            bs = [
                None
                if d.bias is None
                else _masked(d.bias.detach(), f"{d.name}.bias", pos, counts, idx)
                for d in upper.layers
            ]
            yield idx, stacked.forward(upper, Ws, bs, A)[0]


def _phi_(layer: models.Dense, z: Tensor) -> Tensor:
    """``layer.phi(z)``, in place for ReLU and LeakyReLU (``z`` is not needed afterwards)."""
    if layer.activation == "relu":
        return z.clamp_min_(0)
    if layer.activation == "leaky_relu":
        return F.leaky_relu_(z, layer.slope)
    return layer.phi(z)


def _masked(t: Tensor, name: str, pos: dict[str, Tensor], counts: Tensor, idx: list[int]) -> Tensor:
    """``t`` for every level of ``idx``, stacked ``[Lc, *t.shape]``, pruned entries zeroed."""
    if name not in pos:
        return t.expand(len(idx), *t.shape)
    j = list(pos).index(name)
    k = counts[idx, j].to(t.device).reshape(-1, *([1] * t.dim()))  # [Lc, 1, ...]
    return t * (pos[name].reshape(t.shape) >= k).to(t.dtype)
