"""Comparing networks that share an ancestry: what training moved, and what pruning changed.

Two nets that start from one initialisation ``theta0`` (say, one trained and then pruned, the
other pruned and then trained) can be compared weight by weight on the nodes both keep:

* **unmoved weights**: entries that training left at their initial value to machine precision,
  ``|w_T - w_0| <= eps |w_0|``. With Adam (and SGD) an entry whose gradient is exactly zero at
  every step never moves: Adam's moment estimates stay 0, so its step is ``0 / (0 + eps) = 0``.
  In a ReLU net that happens to every weight leaving a node that is dead on all data
  (``a_j = 0``) and every weight entering one (``phi'(z) = 0``), for as long as it stays dead
  (a first-layer node sees fixed inputs, so once dead it stays dead).
* **shift**: ``|w_T - w_0|`` of the entries that did move (the source saw about 0.59).
* **correlations**: of the two weight matrices, and of their two displacements from ``theta0``
  (which removes what both share through the initialisation).
* **roles**: the Pearson correlation over the data between node j of one net and node j of the
  other, against the correlation between non-matching nodes (the chance level).
* **certificate**: the Lipschitz bound of :mod:`prunelab.bounds` for removing node sets from
  several layers, telescoped layer by layer (METHODS.md D), against the observed loss change.

References
----------
D. Hobson (2022), "Train first vs prune first in neural networks" (weight-vs-weight scatter
plots, the weights training never moved, the Lipschitz bound in the discussion).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..base import models, ops, stats, train
from . import bounds, surgery

# --- weights -----------------------------------------------------------------------------------


def unmoved(before: Tensor, after: Tensor, *, rtol: float | None = None) -> Tensor:
    """Entries equal to machine precision: ``|after - before| <= rtol |before|``.

    ``rtol`` defaults to the machine epsilon of the inputs' dtype (1.19e-7 for float32), so
    only entries that were never updated (or moved by less than one rounding step) count;
    exactly equal zeros count too. ``before, after``: same shape -> bool, same shape.
    """
    _check_same(before, after, "unmoved")
    tol = torch.finfo(after.dtype).eps if rtol is None else _check_rtol(rtol, "unmoved")
    b, a = before.detach(), after.detach().to(before.dtype)
    return (a - b).abs() <= tol * b.abs()


@dataclass(frozen=True)
class Shift:
    """How far the entries of a weight tensor moved: ``|after - before|``.

    ``unmoved`` entries (see :func:`unmoved`) out of ``size``; ``median`` and ``mean`` of the
    absolute shift over the moved entries (nan if none moved).
    """

    size: int
    unmoved: int
    median: float
    mean: float


def weight_shift(
    before: Tensor, after: Tensor, *, rtol: float | None = None, where: Tensor | None = None
) -> Shift:
    """The unmoved count and the typical shift ``|after - before|`` of the moved entries.

    Parameters
    ----------
    before, after : Tensor
        The same weights before and after training (any equal shapes).
    rtol : float, optional
        Tolerance of :func:`unmoved` (default: machine epsilon of the dtype).
    where : Tensor of bool, optional
        Only the entries marked True count (same shape), e.g. :func:`incident` entries.

    Returns
    -------
    Shift
    """
    still = unmoved(before, after, rtol=rtol)
    shift = (after.detach().double() - before.detach().double()).abs()
    if where is not None:
        _check_same(before, where, "weight_shift")
        where = where.to(torch.bool)
        still, shift = still[where], shift[where]
    moved = shift[~still]  # [P_moved]
    if moved.numel() == 0:
        return Shift(still.numel(), int(still.sum()), math.nan, math.nan)
    # the lower median for an even count (torch's convention), an actual observed shift
    return Shift(still.numel(), int(still.sum()), moved.median().item(), moved.mean().item())


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of the entries of ``a`` and ``b`` (equal shapes); nan if one is
    constant."""
    _check_same(a, b, "pearson")
    return stats.pearson(a.detach(), b.detach())


@dataclass(frozen=True)
class Descendants:
    """Two descendants ``a, b`` of one weight tensor ``origin`` (e.g. two training runs).

    ``correlation``: Pearson(a, b); ``shift_correlation``: Pearson(a - origin, b - origin),
    with what both inherit from the origin taken out; ``equal``: entries with ``a = b`` to
    machine precision (on the diagonal of a scatter of b against a: in practice those neither
    run moved); ``a``, ``b``: each one's :class:`Shift` from the origin.
    """

    correlation: float
    shift_correlation: float
    equal: int
    a: Shift
    b: Shift


def descendants(origin: Tensor, a: Tensor, b: Tensor, *, rtol: float | None = None) -> Descendants:
    """Compare two descendants ``a, b`` of ``origin`` entry by entry (all three the same shape).

    Returns
    -------
    Descendants
    """
    _check_same(origin, a, "descendants")
    _check_same(origin, b, "descendants")
    return Descendants(
        correlation=pearson(a, b),
        shift_correlation=pearson(a.detach() - origin.detach(), b.detach() - origin.detach()),
        equal=int(unmoved(a, b, rtol=rtol).sum()),
        a=weight_shift(origin, a, rtol=rtol),
        b=weight_shift(origin, b, rtol=rtol),
    )


def kept_nodes(model: nn.Module, remove: Mapping[int, Iterable[int]]) -> list[Tensor]:
    """Indices of the nodes each hidden layer keeps under the plan ``remove``, ascending.

    ``remove`` as in :func:`prunelab.surgery.remove_nodes` (hidden layer -> node indices).
    Returns one LongTensor per hidden layer.
    """
    net = models.parse(model, method="kept_nodes")
    sizes = net.hidden_sizes
    bad = sorted(set(remove) - set(range(len(sizes))))
    if bad:
        raise ValueError(
            f"kept_nodes: hidden layer {bad[0]} out of range; the model has hidden sizes {sizes}"
        )
    out = []
    for ell, H in enumerate(sizes):
        keep = torch.ones(H, dtype=torch.bool)
        gone = list(remove.get(ell, []))
        if any(not 0 <= int(i) < H for i in gone):
            raise ValueError(
                f"kept_nodes: remove[{ell}] = {gone} holds an index outside 0..{H - 1} "
                f"(hidden sizes {sizes})"
            )
        keep[torch.as_tensor(gone, dtype=torch.long)] = False
        out.append(keep.nonzero().squeeze(1))
    return out


def surviving_weights(model: nn.Module, layer: int, remove: Mapping[int, Iterable[int]]) -> Tensor:
    """The weight matrix of Linear ``layer`` restricted to the nodes ``remove`` keeps.

    ``W^layer[kept outputs, kept inputs]``: rows are the kept nodes of hidden layer ``layer``
    (all outputs for the last layer), columns the kept nodes of hidden layer ``layer - 1``
    (all inputs for layer 0). ``layer`` counts the model's Linear layers from 0. Equal to the
    weight of that layer in ``surgery.remove_nodes(model, remove, compensate="none")`` (mean
    compensation changes only biases). Returns a detached copy ``[H_out', H_in']``.
    """
    net = models.parse(model, method="surviving_weights")
    L = len(net.layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < L:
        raise ValueError(
            f"surviving_weights: layer must be a Linear index in 0..{L - 1}; got {layer!r}"
        )
    keep = kept_nodes(model, remove)
    W = net.layers[layer].weight.detach()  # [H_out, H_in]
    if layer < L - 1:
        W = W[keep[layer]]
    if layer > 0:
        W = W[:, keep[layer - 1]]
    return W.clone()


# --- nodes and decisions -------------------------------------------------------------------------


def silent(acts: list[Tensor]) -> list[Tensor]:
    """Units whose activation is exactly zero on every sample (and every position of a
    channel's map): bool ``[H_l]`` per layer, from ``acts``: ``[N, H_l]`` or ``[N, H_l, h, w]``
    per hidden layer (as :func:`prunelab.masks.hidden_activations` returns them)."""
    return [a.abs().movedim(1, -1).reshape(-1, a.shape[1]).amax(0) == 0 for a in acts]


def dead_nodes(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Hidden nodes whose activation is exactly zero on every row of ``x``: bool ``[H_l]`` per
    layer (dropout off; :func:`silent`). Every weight into or out of such a node gets a zero
    gradient."""
    net = models.parse(model, method="dead_nodes")
    x = _as_input(net, x)
    return silent(net.activations(x))


def variation(mean: Tensor, std: Tensor) -> Tensor:
    """Coefficient of variation ``std / |mean|`` per unit ``[H]``; ``inf`` where the mean is 0."""
    return torch.where(mean != 0, std / mean.abs(), torch.inf)


def bias_like(mean: Tensor, std: Tensor, threshold: float) -> Tensor:
    """Units acting as a bias by a fixed threshold: ``std < threshold |mean|`` (bool ``[H]``).

    ``mean, std: [H]`` of each unit's activation over the data; a dead unit (mean 0) never
    qualifies.
    """
    return (std < threshold * mean.abs()) & (mean != 0)


@dataclass(frozen=True)
class Gap:
    """The bias-like units by the gap rule (:func:`bias_like_gap`): ``units`` bool ``[H]``,
    ``below`` and ``above`` the coefficients of variation either side of the gap, ``ratio =
    above / below`` (all 0 when there is no qualifying gap)."""

    units: Tensor
    below: float
    above: float
    ratio: float


def bias_like_gap(mean: Tensor, std: Tensor, *, ratio: float = 3.0, ceiling: float = 1.0) -> Gap:
    """Units acting as a bias by a gap in the distribution of ``cv = std / |mean|``.

    Sort the ``cv`` of the units with a non-zero mean, ``c_1 <= ... <= c_n``. A split ``k < n``
    qualifies if ``c_k < ceiling`` (a bias varies less than its mean) and ``c_{k+1} / c_k >=
    ratio`` (a gap); the units with ``cv <= c_k`` for the largest qualifying ``k`` are
    bias-like (the whole cluster of nearly constant units), none if no split qualifies.
    ``mean, std: [H]``. Unlike a fixed threshold, the rule does not split such a cluster.
    """
    if ratio <= 1 or ceiling <= 0:
        raise ValueError(
            f"bias_like_gap: ratio must be > 1 and ceiling > 0; got {ratio}, {ceiling}"
        )
    cv = variation(mean.double(), std.double())
    live = torch.isfinite(cv)
    c = cv[live].sort().values.clamp_min(1e-300)
    none = Gap(torch.zeros(len(mean), dtype=torch.bool), 0.0, 0.0, 0.0)
    if len(c) < 2:
        return none
    gaps = c[1:] / c[:-1]
    ok = ((gaps >= ratio) & (c[:-1] < ceiling)).nonzero().flatten()
    if len(ok) == 0:
        return none
    k = int(ok[-1])
    return Gap(live & (cv <= c[k]), c[k].item(), c[k + 1].item(), gaps[k].item())


def died(before: nn.Module, after: nn.Module, x: Tensor) -> list[Tensor]:
    """Nodes dead on ``x`` in ``after`` but alive in ``before`` (same widths): bool ``[H_l]``.

    E.g. ``before`` the initialisation and ``after`` the trained net: the nodes that training
    killed.
    """
    old, new = dead_nodes(before, x), dead_nodes(after, x)
    if [len(d) for d in old] != [len(d) for d in new]:
        raise ValueError(
            f"died: the models have hidden sizes {[len(d) for d in old]} and "
            f"{[len(d) for d in new]}; they must be equal"
        )
    return [n & ~o for o, n in zip(old, new, strict=True)]


def incident(rows: Tensor, cols: Tensor) -> Tensor:
    """Entries of a weight matrix ``[H_out, H_in]`` in a marked row or a marked column.

    ``rows: bool [H_out]`` marks output nodes (their incoming weights are rows), ``cols: bool
    [H_in]`` input nodes (their outgoing weights are columns). Returns bool ``[H_out, H_in]``.
    """
    return rows.to(torch.bool)[:, None] | cols.to(torch.bool)[None, :]


def coactive(model: nn.Module, x: Tensor, layer: int) -> Tensor:
    """Which entries of Linear ``layer`` can get a gradient from the rows of ``x``.

    The gradient of ``W[i, j]`` is ``sum_n delta_{n,i} a_{n,j}`` with ``delta_{n,i} =
    phi'(z_{n,i}) (...)``, so it is exactly zero unless some row n has both ``a_{n,j} != 0``
    (input node j of the layer: the previous hidden layer's activation, or the input) and
    ``phi'(z_{n,i}) != 0`` (output node i; always for the output layer). For ReLU: the two
    nodes are active on a common row. A dead node is the extreme case. ``layer`` counts the
    Linear layers from 0. Returns bool ``[H_out, H_in]``.
    """
    net = models.parse(model, method="coactive")
    L = len(net.layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < L:
        raise ValueError(f"coactive: layer must be a Linear index in 0..{L - 1}; got {layer!r}")
    x = _as_input(net, x)
    dense = net.layers[layer]
    with torch.no_grad():
        a, z, _ = ops.records(net.view, x)[layer]  # [N, H_in], [N, H_out]
        gate = models.derivatives(dense.activation, z, dense.slope)[0] != 0
    return (gate.double().T @ (a != 0).double()) > 0


def activation_correlation(model_a: nn.Module, model_b: nn.Module, x: Tensor) -> list[Tensor]:
    """Pearson correlation over ``x`` of every node of ``model_a`` with every node of ``model_b``.

    ``corr^l[j, k] = cov(a^l_j, b^l_k) / (sd(a^l_j) sd(b^l_k))`` per hidden layer l, with
    population moments over the rows of ``x``; nan where a node is constant on ``x``. The two
    models need the same number of hidden layers (widths may differ).

    Returns
    -------
    list of Tensor[H_l(a), H_l(b)], float64.
    """
    net_a = models.parse(model_a, method="activation_correlation")
    net_b = models.parse(model_b, method="activation_correlation")
    if len(net_a.hidden) != len(net_b.hidden):
        raise ValueError(
            f"activation_correlation: the models have {len(net_a.hidden)} and "
            f"{len(net_b.hidden)} hidden layers; they must have the same number"
        )
    out = []
    for a, b in zip(
        net_a.activations(_as_input(net_a, x)), net_b.activations(_as_input(net_b, x)), strict=True
    ):
        a, b = a.double(), b.double()  # [N, H_a], [N, H_b]
        # constant nodes by exact range, not by a centred sd that rounding leaves at 1e-17
        live = (a.amax(0) > a.amin(0))[:, None] & (b.amax(0) > b.amin(0))[None, :]
        a, b = a - a.mean(0), b - b.mean(0)
        cov = a.T @ b / a.shape[0]  # [H_a, H_b]
        scale = a.square().mean(0).sqrt()[:, None] * b.square().mean(0).sqrt()[None, :]
        out.append(torch.where(live, cov / scale, torch.nan))
    return out


@dataclass(frozen=True)
class Roles:
    """Whether node j of one net plays the role of node j of another (one hidden layer).

    ``matched[j]``: correlation of the two nets' node j (nan if constant in either);
    ``unmatched``: mean correlation over the pairs j != k, the level two unrelated nodes of
    these nets reach; ``matched_mean``: nan-ignoring mean of ``matched``.
    """

    matched: Tensor
    matched_mean: float
    unmatched: float


def roles(model_a: nn.Module, model_b: nn.Module, x: Tensor) -> list[Roles]:
    """Matched vs unmatched node correlations per hidden layer (equal hidden widths needed).

    Returns
    -------
    list of Roles, one per hidden layer.
    """
    out = []
    for ell, corr in enumerate(activation_correlation(model_a, model_b, x)):
        H_a, H_b = corr.shape
        if H_a != H_b:
            raise ValueError(
                f"roles: hidden layer {ell} has {H_a} nodes in model_a and {H_b} in model_b; "
                "node j can only be matched with node j when the widths are equal"
            )
        diagonal = torch.eye(H_a, dtype=torch.bool)
        matched = corr.diagonal().clone()
        off = corr[~diagonal]
        out.append(Roles(matched, _nanmean(matched), _nanmean(off)))
    return out


def agreement(model_a: nn.Module, model_b: nn.Module, x: Tensor) -> float:
    """Fraction of the rows of ``x`` that both models put in the same class (argmax)."""
    a = train.predict(model_a, x).argmax(1)
    b = train.predict(model_b, x).argmax(1)
    return (a == b).double().mean().item()


# --- the certificate for removing nodes from several layers --------------------------------------


@dataclass(frozen=True)
class Certificate:
    """Lipschitz certificates against the observed loss change for one removal plan.

    Per pruned hidden layer (``layers``, ascending), the step that replaces that layer's nodes
    by their means in the network already pruned below it: ``bound`` (the downstream-norm
    certificate of :func:`prunelab.bounds.expected_bound`), ``source`` (the discussion's
    product of all operator norms, :func:`prunelab.bounds.source_bound`) and ``observed``,
    the mean absolute loss change of that step. ``total_bound = sum(bound)`` certifies
    ``total_observed``, the mean absolute per-sample change from all removals together
    (triangle inequality); ``loss_change`` is the signed change of the mean loss.
    """

    layers: list[int]
    bound: Tensor
    source: Tensor
    observed: Tensor
    total_bound: float
    total_observed: float
    loss_change: float


def removal_certificate(
    model: nn.Module, x: Tensor, y: Tensor, remove: Mapping[int, Iterable[int]]
) -> Certificate:
    """Telescoped certificate for mean-replacing the nodes ``remove`` lists (METHODS.md D).

    With l_0 the per-sample loss of ``model`` and l_k that after the first k pruned layers
    (each replaced by its mean over ``x`` in the net pruned so far, as
    ``surgery.remove_nodes(..., compensate="mean", x=x)`` does),

        (1/N) sum_n |l_K - l_0| <= sum_k (1/N) sum_n |l_k - l_{k-1}| <= sum_k B_k,
        B_k = sqrt(2) ||W^{l+1}[:, S_k]||_2 prod_{m >= l+2} ||W^m||_2 sqrt(sum_{j in S_k} var_j)

    with every factor evaluated on the partially pruned net. Exact for the empirical
    distribution of ``x`` (the bound is not a high-probability statement about other data).

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, with 1-Lipschitz activations.
    x : Tensor[N, D], y : Tensor[N]
        Data and labels; ``x`` in the parameters' dtype.
    remove : mapping of int to iterable of int
        Hidden layer -> nodes to remove (as :func:`prunelab.surgery.remove_nodes`).

    Returns
    -------
    Certificate
    """
    plan = {int(k): sorted(int(i) for i in v) for k, v in remove.items() if len(list(v))}
    if not plan:
        raise ValueError("removal_certificate: remove lists no node; nothing to certify")
    current = model
    steps, bound, source, observed = [], [], [], []
    for ell in sorted(plan):
        S = plan[ell]
        bound.append(bounds.expected_bound(current, x, ell, S, replace="mean"))
        source.append(bounds.source_bound(current, x, ell, S))
        step = bounds.loss_change(current, x, y, ell, S, replace="mean")  # [N] l_k - l_{k-1}
        observed.append(step.abs().mean())
        steps.append(step)
        current = surgery.remove_nodes(current, {ell: S}, compensate="mean", x=x)
    total = torch.stack(steps).sum(0)  # [N] l_K - l_0
    bound_t = torch.stack(bound)
    return Certificate(
        layers=sorted(plan),
        bound=bound_t,
        source=torch.stack(source),
        observed=torch.stack(observed),
        total_bound=bound_t.sum().item(),
        total_observed=total.abs().mean().item(),
        loss_change=total.mean().item(),
    )


# --- helpers ---------------------------------------------------------------------------------------


def _nanmean(v: Tensor) -> float:
    finite = v[~v.isnan()]
    return finite.mean().item() if finite.numel() else math.nan


def _as_input(net: models.Net, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            "x must be a floating-point tensor [N, D]; got "
            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
        )
    W = net.layers[0].weight
    return net.inputs(x).to(dtype=W.dtype, device=W.device)


def _check_same(a: Tensor, b: Tensor, method: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{method}: expected tensors; got {type(a).__name__}, {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(
            f"{method}: the tensors must have the same shape; got {list(a.shape)} and "
            f"{list(b.shape)}"
        )


def _check_rtol(rtol: float, method: str) -> float:
    if not (isinstance(rtol, int | float) and not isinstance(rtol, bool) and rtol >= 0):
        raise ValueError(f"{method}: rtol must be a number >= 0; got {rtol!r}")
    return float(rtol)
