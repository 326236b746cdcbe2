"""Many pruned models at once: evaluate removal plans batched, and compare criteria over a sweep.

A removal plan ``{hidden layer: [node, ...]}`` (:func:`prunelab.criteria.select`) is a 0/1 node
mask (:func:`plan_masks`). Removing nodes without compensation equals zeroing them, so the
pruned models' outputs are :func:`prunelab.masks.masked_logits`. With *mean compensation*
(:func:`prunelab.surgery.remove_nodes`, ``compensate="mean"``) a removed node is replaced by
its mean over reference data ``x_ref``, taken in the network pruned so far. With mask
``m^l: [H_l]`` per hidden layer this is, layer by layer,

    z^{l+1} = W^{l+1} (m^l * a^l + (1 - m^l) * abar^l) + b^{l+1}
            = (W^{l+1} * m^l) a^l + [b^{l+1} + W^{l+1} ((1 - m^l) * abar^l)]

with ``abar^l`` the mean of ``a^l`` over ``x_ref`` passed through the same (replaced) layers
below: one bias shift per mask, so every mask is still one batched product
(:func:`removal_logits`). :func:`masked_equivalent` gives the same shift as a full-size model
copy, so that training under a node mask (``ensemble.fit_many(node_masks=...)``) equals training the
physically pruned model.

:func:`compare` summarises a sweep of criteria over removal fractions and seeds the way a fair
comparison needs: the normalised area under each curve, its paired difference to a baseline
criterion on the same seeds, and ranks, each with a Student-t interval over seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import models, ops, stats
from ..base.data import Dataset
from . import masks as engine
from . import masks_conv

COMPENSATIONS = ("none", "mean")

Plan = Mapping[int, Iterable[int]]


def plan_masks(
    plans: Sequence[Plan], sizes: Sequence[int], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """0/1 node masks ``[M, H]`` of ``M`` removal plans: row ``i`` is 0 on ``plans[i]``'s nodes.

    ``sizes`` are the hidden widths (:func:`prunelab.models.hidden_sizes`); nodes are numbered
    layer by layer as in every node mask.

    Raises
    ------
    ValueError
        For a hidden layer or node index out of range (the message names the plan and layer).
    """
    sizes = [int(s) for s in sizes]
    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    out = torch.ones(len(plans), offsets[-1], dtype=dtype)
    for i, plan in enumerate(plans):
        for ell, nodes in plan.items():
            if not 0 <= ell < len(sizes):
                raise ValueError(
                    f"plan_masks: plans[{i}] names hidden layer {ell}; sizes are {sizes}"
                )
            index = torch.as_tensor(list(nodes), dtype=torch.long)
            if len(index) and not bool(((index >= 0) & (index < sizes[ell])).all()):
                raise ValueError(
                    f"plan_masks: plans[{i}][{ell}] holds a node index outside [0, {sizes[ell]})"
                )
            out[i, offsets[ell] + index] = 0
    return out


def removal_logits(
    model: nn.Module,
    x: Tensor,
    masks: Tensor,
    *,
    compensate: str = "none",
    x_ref: Tensor | None = None,
    chunk_bytes: int = engine.DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """Logits of every pruned model ``masks[m]`` describes, on ``x``, all at once.

    ``compensate="none"``: the nodes with mask 0 are deleted (zeroed), as
    :func:`prunelab.masks.masked_logits`. ``compensate="mean"``: they are replaced by their mean
    over ``x_ref``, layer by layer in the network pruned so far (module docstring), which equals
    ``surgery.remove_nodes(model, plan, compensate="mean", x=x_ref)(x)``. Fractional masks
    interpolate between a node and its mean. No loop over masks.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, with at least one hidden layer (dropout
        as identity). Not modified.
    x : Tensor[N, D]
        Inputs the pruned models are evaluated on; computation follows its dtype and device.
    masks : Tensor[M, H]
        Node masks, 1 = keep, 0 = remove (:func:`plan_masks`).
    compensate : {"none", "mean"}
    x_ref : Tensor[N_ref, D], optional
        Data the means are taken over (required for ``"mean"``), e.g. training points.
    chunk_bytes : int
        Budget for the temporaries of one chunk of masks.

    Returns
    -------
    Tensor[M, N, C]

    Raises
    ------
    ValueError
        For an unknown ``compensate``, ``"mean"`` without ``x_ref``, or bad shapes (see
        :func:`prunelab.masks.prepare`).
    """
    if compensate not in COMPENSATIONS:
        raise ValueError(f"removal_logits: compensate={compensate!r}; choose from {COMPENSATIONS}")
    if compensate == "none":
        return engine.masked_logits(model, x, masks, chunk_bytes=chunk_bytes)
    if not isinstance(x_ref, Tensor) or not isinstance(x, Tensor):
        raise ValueError(
            "removal_logits: compensate='mean' needs reference data x_ref=Tensor[N_ref, D] "
            "for the removed nodes' means (and x a Tensor)"
        )
    if not ops.parse(model, method="removal_logits").dense:
        return _held_logits(model, x, masks, x_ref, chunk_bytes)
    net = models.parse(model, method="removal_logits")
    xs, refs = net.inputs(x), net.inputs(x_ref)
    if refs.dim() != 2 or refs.shape[0] == 0 or xs.dim() != 2 or refs.shape[1] != xs.shape[1]:
        raise ValueError(
            f"removal_logits: x_ref must be a non-empty [N_ref, D] like x {tuple(xs.shape)}; "
            f"got {tuple(x_ref.shape)}"
        )
    R = refs.shape[0]
    both = torch.cat([refs.to(xs), xs])  # [R + N, D]: the means come from the first R points
    layers, a1, masks, sizes = engine.prepare(model, both, masks, method="removal_logits")
    M, N, C = masks.shape[0], xs.shape[0], layers[-1].weight.shape[0]
    out = a1.new_empty(M, N, C)
    abar1 = a1[:, :R].mean(1)  # [H1], shared by every mask
    budget = engine.per_mask_bytes(layers, R + N, a1.element_size()) // 2
    with torch.no_grad():
        for sl in engine.chunks(M, budget, chunk_bytes):
            a, abar = a1, abar1
            for layer, m in zip(layers, engine.split(masks[sl], sizes), strict=True):
                bias = layer.bias + ((1 - m) * abar) @ layer.weight.T  # [Mc, H_out]
                W_m = layer.weight * m[:, None, :]  # [Mc, H_out, H_in]
                z = torch.matmul(W_m, a).add_(bias[:, :, None])  # [Mc, H_out, R + N]
                a = models.phi(layer.activation, z, layer.slope)
                abar = a[:, :, :R].mean(2)  # [Mc, H_out] in the network pruned so far
            out[sl] = a[:, :, R:].transpose(1, 2)  # [Mc, C, N] -> [Mc, N, C]
    return out


def _held_logits(model, x: Tensor, masks: Tensor, x_ref: Tensor, chunk_bytes: int) -> Tensor:
    """:func:`removal_logits` with ``"mean"`` on a convnet: the op engine's held units."""
    method = "removal_logits"
    if x_ref.shape[1:] != x.shape[1:] or x_ref.shape[0] == 0:
        raise ValueError(
            f"{method}: x_ref must be non-empty samples shaped like x's {list(x.shape[1:])}; got "
            f"{tuple(x_ref.shape)}"
        )
    both = torch.cat([x_ref.to(x), x])  # the means come from the first R rows
    view, both, masks = engine.conv_inputs(model, both, masks, method=method)
    p = masks_conv.plan(view, both, nonneg=True, ref=x_ref.shape[0])
    Mc = masks_conv.chunk_size(p, chunk_bytes=chunk_bytes, backward=False)
    with torch.no_grad():
        return torch.cat([masks_conv.held(p, m) for m in masks.split(Mc)])


class Metrics(NamedTuple):
    """Test metrics of M pruned models (:func:`removal_metrics`)."""

    loss: Tensor  # [M] mean cross-entropy
    accuracy: Tensor  # [M]
    majority: Tensor  # [M] share of points given the most common predicted class


def majority_share(pred: Tensor, classes: int) -> Tensor:
    """``max_c (1/N) #{n : pred[..., n] = c}``: how much of the data one class takes.

    ``pred: [..., N]`` predicted classes in ``[0, classes)``; returns ``[...]``, from
    ``1/classes`` (predictions spread evenly) to 1 (every point given one class). A perfect
    classifier gives the largest class's share of the data; a value rising well above it as
    parts are removed means the predictions collapse toward a single class.
    """
    if pred.is_floating_point() or pred.dim() == 0 or pred.shape[-1] == 0:
        raise ValueError(
            f"majority_share: pred must be integer class predictions [..., N] with N >= 1; got "
            f"{pred.dtype} of shape {tuple(pred.shape)}"
        )
    if int(pred.min()) < 0 or int(pred.max()) >= classes:
        raise ValueError(
            f"majority_share: pred must lie in [0, {classes}); got range "
            f"[{int(pred.min())}, {int(pred.max())}]"
        )
    counts = torch.zeros(*pred.shape[:-1], classes, dtype=torch.long, device=pred.device)
    pred = pred.long()
    counts.scatter_add_(-1, pred, torch.ones_like(pred))
    return counts.amax(-1).double() / pred.shape[-1]


def removal_metrics(
    model: nn.Module,
    data: Dataset,
    masks: Tensor,
    *,
    compensate: str = "none",
    x_ref: Tensor | None = None,
    chunk_bytes: int = engine.DEFAULT_CHUNK_BYTES,
) -> Metrics:
    """Mean cross-entropy, accuracy and prediction collapse on ``data`` of every pruned model.

    ``loss[m] = (1/N) sum_n CE(f_m(x_n), y_n)``, ``accuracy[m] = (1/N) sum_n 1[argmax f_m(x_n)
    = y_n]`` and ``majority[m] = max_c (1/N) sum_n 1[argmax f_m(x_n) = c]``
    (:func:`majority_share`) with ``f_m`` from :func:`removal_logits` (ties in argmax go to the
    lower class, as ``torch.argmax``). Arguments as there; ``data.y`` integer labels in
    ``[0, C)``.

    Returns
    -------
    Metrics
        ``(loss, accuracy, majority)``, each ``Tensor[M]``.
    """
    f = removal_logits(
        model, data.x, masks, compensate=compensate, x_ref=x_ref, chunk_bytes=chunk_bytes
    )
    M, N, C = f.shape
    y = data.y.to(device=f.device, dtype=torch.long)
    if y.shape != (N,) or int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(
            f"removal_metrics: data.y must hold {N} labels in [0, {C}); got shape "
            f"{tuple(data.y.shape)}, range [{int(data.y.min())}, {int(data.y.max())}]"
        )
    loss = F.cross_entropy(f.transpose(1, 2), y.expand(M, N), reduction="none").mean(1)
    pred = f.argmax(2)  # [M, N]
    accuracy = (pred == y).to(f.dtype).mean(1)
    return Metrics(loss, accuracy, majority_share(pred, C).to(f.dtype))


def masked_equivalent(
    model: nn.Module, remove: Plan, *, compensate: str = "mean", x: Tensor | None = None
) -> tuple[nn.Sequential, Tensor]:
    """A full-size copy of ``model`` and a node mask ``[H]`` that together act as the pruned model.

    ``copy`` under ``mask`` (nodes multiplied by 0 after their activation, e.g.
    ``train.evaluate(copy, data, node_masks=mask)``) computes the same function as
    ``surgery.remove_nodes(model, remove, compensate=compensate, x=x)``: with ``"mean"`` the
    copy's next-layer biases absorb ``W^{l+1}[:, R_l] abar^l_{R_l}``, the means taken over ``x``
    layer by layer in the network pruned so far. Training the copy under the mask
    (``ensemble.fit_many(..., node_masks=masks)``) trains exactly the pruned model: removed nodes
    get zero gradients, so Adam and SGD leave their weights untouched. This lets pruned models of
    different shapes train together in one stacked ``fit_many`` call.

    Raises
    ------
    ValueError
        For an unknown ``compensate``, ``"mean"`` without ``x``, a bad plan (see
        :func:`plan_masks`), or a model that uses one ``Linear`` twice.
    """
    if compensate not in COMPENSATIONS:
        raise ValueError(
            f"masked_equivalent: compensate={compensate!r}; choose from {COMPENSATIONS}"
        )
    view = ops.parse(model, method="masked_equivalent")
    if len({id(layer.module) for layer in view.layers}) < len(view.layers):
        raise ValueError("masked_equivalent: a layer module is used twice (shared weights)")
    if compensate == "mean" and not isinstance(x, Tensor):
        raise ValueError("masked_equivalent: compensate='mean' needs data x=Tensor[N, ...]")
    mask = plan_masks([remove], view.hidden_sizes)[0]
    if compensate == "none":
        return copy.deepcopy(model), mask.to(view.dtype)
    removed = {
        ell: (m == 0).nonzero().squeeze(1)
        for ell, m in enumerate(mask.to(view.device).split(view.hidden_sizes))
    }
    x = view.check_x(x, "masked_equivalent", convert=True)
    return ops.remove_units(model, view, removed, x=x, keep_shape=True)


# --- comparing criteria over a sweep ---------------------------------------------------------


def ranks(values: Tensor, *, dim: int = 0, descending: bool = True) -> Tensor:
    """Rank of each entry among the entries along ``dim``, 1 = best; ties share their mean rank.

        rank_i = 1 + #{j : v_j better than v_i} + (#{j != i : v_j = v_i}) / 2

    ("better" = larger if ``descending``, else smaller), as ``scipy.stats.rankdata(method=
    "average")`` on ``-v`` (resp. ``v``). Returns a float tensor shaped like ``values``.
    """
    v = values.movedim(dim, 0).double()  # [K, ...]
    a, b = v[None], v[:, None]  # [1, K, ...] others, [K, 1, ...] self
    better = (a > b) if descending else (a < b)
    ties = (a == b).sum(1) - 1
    return (1 + better.sum(1) + 0.5 * ties).movedim(0, dim)


def curve_area(values: Tensor, fractions: Sequence[float]) -> Tensor:
    """Normalised area under curves ``values[..., F]`` over ``fractions[F]`` (trapezoid rule).

        area = (1 / (f_F - f_1)) integral_{f_1}^{f_F} v(f) df

    the mean height of the curve; for a single fraction, the value itself.
    """
    f = torch.as_tensor(list(fractions), dtype=torch.float64)
    v = values.double()
    if v.shape[-1] != len(f):
        raise ValueError(
            f"curve_area: values end in {v.shape[-1]} points but there are {len(f)} fractions"
        )
    if len(f) == 1:
        return v[..., 0]
    if not bool((f.diff() > 0).all()):
        raise ValueError(f"curve_area: fractions must increase; got {list(fractions)}")
    return torch.trapezoid(v, f, dim=-1) / (f[-1] - f[0])


@dataclass
class Comparison:
    """Criteria compared over fractions and seeds (``K`` criteria, ``S`` seeds).

    ``area[K, S]``: normalised area under each criterion's curve per seed; ``area_mean`` and
    ``area_half`` its mean and interval half-width over seeds; ``delta_*``: the paired
    difference ``area - area[baseline]`` seed by seed (same trained nets, same data), so an
    interval that excludes 0 says the criterion differs from the baseline; ``rank_*``: the rank
    among the criteria (1 = best) at each (seed, fraction), averaged over fractions, then its
    mean and half-width over seeds. ``higher_is_better`` records the direction.
    """

    area: Tensor
    area_mean: Tensor
    area_half: Tensor
    delta_mean: Tensor
    delta_half: Tensor
    rank_mean: Tensor
    rank_half: Tensor
    higher_is_better: bool
    level: float


def compare(
    values: Tensor,
    fractions: Sequence[float],
    *,
    baseline: int,
    higher_is_better: bool = True,
    level: float = 0.95,
) -> Comparison:
    """Summarise a sweep ``values[K, S, F]`` (criteria x seeds x fractions) for a fair comparison.

    Intervals are Student-t over the ``S`` seeds (:func:`prunelab.stats.mean_interval`); the
    difference to ``baseline`` (e.g. the index of ``"random"``) is paired by seed.

    Raises
    ------
    ValueError
        If ``values`` is not ``[K, S, F]`` with ``F = len(fractions)`` or ``baseline`` is not
        a criterion index.
    """
    if values.dim() != 3 or values.shape[2] != len(fractions):
        raise ValueError(
            f"compare: values must be [K, S, F] with F = {len(fractions)} fractions; got "
            f"{tuple(values.shape)}"
        )
    K = values.shape[0]
    if not 0 <= baseline < K:
        raise ValueError(f"compare: baseline {baseline} is not a criterion index in [0, {K})")
    area = curve_area(values, fractions)  # [K, S]
    area_mean, area_half = stats.mean_interval(area, dim=1, level=level)
    delta_mean, delta_half = stats.mean_interval(area - area[baseline], dim=1, level=level)
    rank = ranks(values, dim=0, descending=higher_is_better).mean(2)  # [K, S]
    rank_mean, rank_half = stats.mean_interval(rank, dim=1, level=level)
    return Comparison(
        area,
        area_mean,
        area_half,
        delta_mean,
        delta_half,
        rank_mean,
        rank_half,
        higher_is_better,
        level,
    )
