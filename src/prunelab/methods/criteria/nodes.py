"""Importance criteria for hidden units, as a plain registry of functions.

Every node criterion is called as ``fn(model, x, y=None, *, generator=None)`` and returns one
score tensor ``[H_l]`` per hidden layer; **higher means more important**, so pruning removes
the lowest scores (:func:`select`). ``x`` is the data the statistics are taken over and ``y``
its labels (needed by the criteria that use the loss: ``LABELLED``). A unit (a "node") is an
output feature of a Linear or an output channel of a Conv2d, read after its activation;
units are numbered layer by layer. Notation, per hidden layer l, sample n and (for a channel)
position s of its feature map (dropout as identity, BatchNorm folded, evaluation mode):

    a_{n,j,s}   activation of unit j (a Linear feature has one position)
    abar_j = (1/(N P)) sum_{n,s} a_{n,j,s}     mean over samples and the P positions
    g_{n,j,s} = d l_n / d a_{n,j,s}            per-sample gradient of the cross-entropy l_n
    L = (1/N) sum_n l_n                        the mean cross-entropy; a unit mask m_j
                                               multiplies the whole feature map after phi

Statistics are population statistics over samples *and positions* (divide by N P), so they
describe exactly the empirical distribution of ``x`` (as :mod:`prunelab.bounds` does); for an
MLP P = 1 and they are the per-node statistics over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...base import checks, ops, stats
from ...engines import curvature
from .. import bounds
from .checks import check_view

SCOPES = ("layer", "global")

NodeCriterion = Callable[..., list[Tensor]]


# --- data-free and activation-statistic criteria ---------------------------------------------


def random(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Uniform random scores ``s_j ~ U[0, 1)``, the baseline every criterion must beat.

    Drawn layer by layer from ``generator`` (default a fresh generator seeded 0, so a call
    without one is reproducible); on the generator's device, returned on ``x``'s.
    """
    view, x, _ = check_view(model, x, y, "random", labels=False)
    g = checks.generator(generator, "criteria.random") or torch.Generator().manual_seed(0)
    return [
        torch.rand(H, generator=g, dtype=x.dtype, device=g.device).to(x.device)
        for H in view.hidden_sizes
    ]


def activation_std(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Population standard deviation of each unit's activation over the data (and positions).

        sigma_j = sqrt((1/(N P)) sum_{n,s} (a_{n,j,s} - abar_j)^2)

    A unit with sigma_j = 0 is constant on the data: replacing it by its mean (folding it into
    the next bias; for a channel, a constant map) changes no output. The criterion of the
    source (Hobson 2022, "Train first vs prune first in neural networks": "prune the nodes
    with the smallest standard deviation"); also Variance-Based Pruning (Berisha, Mehnert &
    Condurache 2025).
    """
    _, x, acts = _activations(model, x, y, "activation_std")
    return [_samples(a).std(0, correction=0) for a in acts]


def activation_mean_abs(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Mean absolute activation ``s_j = (1/(N P)) sum_{n,s} |a_{n,j,s}|``: what zeroing removes.

    The RMS version ``sqrt(E a_j^2)`` enters the zeroing certificate
    (:func:`prunelab.bounds.node_bounds` with ``replace="zero"``).
    """
    _, x, acts = _activations(model, x, y, "activation_mean_abs")
    return [_samples(a).abs().mean(0) for a in acts]


def apoz(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """One minus the Average Percentage of Zeros: ``s_j = 1 - (1/(N P)) sum_{n,s} 1[a = 0]``.

    Hu et al. count zeros over N examples and the M = P output positions of a channel, and
    prune the units with the *highest* APoZ; returning ``1 - APoZ`` (the fraction of samples
    and positions on which the unit is active) keeps "higher = more important". A dead ReLU
    unit scores 0. Exact zeros occur for ReLU; for activations without a zero-output region
    (tanh, sigmoid, GELU, LeakyReLU) almost every unit scores 1, so the criterion says
    little there.

    References
    ----------
    H. Hu, R. Peng, Y.-W. Tai & C.-K. Tang (2016), "Network trimming: a data-driven neuron
    pruning approach towards efficient deep architectures", arXiv:1607.03250, Sec. 3.
    """
    _, x, acts = _activations(model, x, y, "apoz")
    return [1 - (_samples(a) == 0).to(a.dtype).mean(0) for a in acts]


def weight_in_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Norm of each unit's incoming weights ``s_j = ||W^l[j]||_2`` (bias excluded). Data-free.

    ``W^l[j]`` is row j of a Linear's weight or filter j of a Conv2d (over input channels
    and kernel positions), as the module stores it: a BatchNorm after the layer is *not*
    folded in (the folded filter's norm is ``|gamma_j| / sqrt(var_j + eps)`` times this), as
    in filter-norm pruning (Li et al. 2017, "Pruning filters for efficient ConvNets").
    """
    view, x, _ = check_view(model, x, y, "weight_in_norm", labels=False)
    return [
        torch.linalg.vector_norm(layer.weight.detach().flatten(1), dim=1) for layer in view.hidden
    ]


def weight_out_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Norm of the weights that read each unit, ``s_j = ||W^{l+1}[:, j]||_2``. Data-free.

    ``W^{l+1}`` is the next Linear or Conv2d's weight as the module stores it (its
    BatchNorm not folded in, as :func:`weight_in_norm`). A Conv2d reads channel j through
    ``W[:, j]`` (all output channels and kernel positions); a Linear after a Flatten reads it
    through the block of columns of its flattened (and possibly pooled) feature map.
    """
    view, x, _ = check_view(model, x, y, "weight_out_norm", labels=False)
    return [_reader_norm(view, ell, folded=False) for ell in range(len(view.hidden))]


def std_out_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Scale-aware variance score ``s_j = sigma_j ||W'^{l+1}[:, j]||_2`` (METHODS.md C, D).

    ``sigma_j`` as :func:`activation_std`, ``W'^{l+1}[:, j]`` the weights that read unit j as
    :func:`weight_out_norm` but with the reader's BatchNorm folded in (the effective weights
    the unit's deviation is multiplied by), so without BatchNorm it is ``activation_std *
    weight_out_norm``. Unlike ``sigma_j`` alone it is invariant to moving a positive factor
    between a ReLU unit's incoming and outgoing weights; for an MLP it is :func:`lipschitz`
    without the downstream factor, which is shared by a layer's nodes (for a channel the
    certificate reads the reader's operator norm and the map's size instead).
    """
    view, x, acts = _activations(model, x, y, "std_out_norm")
    return [
        _samples(a).std(0, correction=0) * _reader_norm(view, ell, folded=True)
        for ell, a in enumerate(acts)
    ]


def lipschitz(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Certified bound on E|Delta loss| from mean-replacing each unit alone (METHODS.md D).

        B_j = sqrt(2) K_j sqrt(P_l) sigma_j,   for an MLP (P_l = 1)
        K_j = ||W^{l+1}[:, j]||_2 prod_{k=l+2}^{L} Lip(phi_{k-1}) ||W^k||_2

    and for a convnet ``K_j`` the product of the operator norms along the path from channel j
    to the logits (:mod:`prunelab.bounds`); the same numbers as
    :func:`prunelab.bounds.node_bounds` with its defaults: ranking by it ranks by a
    guarantee, ``(1/N) sum_n |l_n(pruned) - l_n| <= B_j`` on ``x``.
    """
    _, x, _ = check_view(model, x, y, "lipschitz", labels=False)
    return bounds.node_bounds(model, x)


# --- loss-based criteria -----------------------------------------------------------------------


def taylor(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """First-order Taylor importance, gate form: the squared gradient w.r.t. a unit gate.

        T_j = (dL/dm_j)^2 at m = 1,    dL/dm_j = (1/N) sum_n sum_s a_{n,j,s} g_{n,j,s}

    with ``m_j`` a gate multiplying unit j (a channel's whole map) after its activation and
    ``L`` the mean cross-entropy over ``x`` (the batch loss). For ReLU and other positively
    homogeneous activations ``dL/dm_j = sum_i W_ji dL/dW_ji + b_j dL/db_j`` (METHODS.md C).
    One forward and one backward pass (no parameter gradients).

    References
    ----------
    P. Molchanov, A. Mallya, S. Tyree, I. Frosio & J. Kautz (2019), "Importance estimation for
    neural network pruning", CVPR, Eq. 8 (group form with a gate; code: method 22).
    """
    view, x, y = check_view(model, x, y, "taylor", labels=True)
    acts, grads = _forward_backward(view, x, y)
    return [stats.position_sum(a * g).mean(0).square() for a, g in zip(acts, grads, strict=True)]


def mean_replacement(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Mean Replacement Saliency: the first-order change of each sample's loss, averaged in abs.

        MRS_j = (1/N) sum_n |sum_s (abar_j - a_{n,j,s}) g_{n,j,s}|

    the first-order change of ``l_n`` when unit j is held at its mean (a channel at the
    constant map ``abar_j``), in absolute value per sample: the ``is_abs=True`` variant of
    Evci et al. (their default), with ``abar`` taken over the same ``x`` (and positions) and
    ``g`` the gradient of each sample's own loss ``l_n``. (Evci et al. average over positions
    inside the abs, a factor ``1/P`` per layer; the sum is the actual first-order change.) It
    is the first-order estimate of ``E|Delta l|`` that :func:`lipschitz` certifies. A unit
    that is constant on ``x`` scores exactly 0.

    References
    ----------
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission, https://openreview.net/forum?id=BJxRVnC5Fm; code google-research/deadunits,
    ``layers.py`` ``TaylorScorer``.
    """
    view, x, y = check_view(model, x, y, "mean_replacement", labels=True)
    acts, grads = _forward_backward(view, x, y)
    return [
        stats.position_sum((stats.per_unit(stats.unit_mean(a), a) - a) * g).abs().mean(0)
        for a, g in zip(acts, grads, strict=True)
    ]


def obd_mask(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Exact second derivative of the mean loss w.r.t. each unit's mask, all units at once.

        h_j = d^2 L / dm_j^2 at m = 1 = sum_n a_{n,j}^T [d^2 L / d a_n d a_n]_{jj} a_{n,j}

    exact because ``m_j`` enters only through ``m_j a_{n,j}`` (a channel's whole map, so the
    Hessian's block over its positions) and samples do not interact. It comes from a factor
    backprop with C columns, plus the residual ``phi'' dL/da`` terms of every later curved
    activation, so tanh/sigmoid/GELU nets are exact too
    (:func:`prunelab.curvature.diag_hessian_masks`). No loop over units. The OBD saliency of
    removing the unit (``delta m = -1``) under OBD's extremal assumption is ``h_j / 2``,
    which ranks identically; for ReLU nets ``h_j >= 0`` (Gauss-Newton), for curved
    activations it can be negative.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 5 (saliency
    ``h_kk u_k^2 / 2``), applied to a node gate; exact diagonal via Dangel, Kunstner & Hennig
    (2020), BackPACK.
    """
    _, x, y = check_view(model, x, y, "obd_mask", labels=True)
    return curvature.diag_hessian_masks(model, x, y)


def obd_mask_delta(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Quadratic estimate of the loss change from zeroing each unit alone (mask 1 -> 0).

        Delta L_j ~ -dL/dm_j + (1/2) d^2 L / dm_j^2
                  = -(1/N) sum_n sum_s a_{n,j,s} g_{n,j,s} + (1/2) h_j

    with ``h_j`` from :func:`obd_mask`: OBD's expansion without the extremal assumption
    (the gradient term kept) and without cross terms between units. Signed: a negative value
    predicts that removing the unit lowers the loss.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 2.
    """
    view, x, y = check_view(model, x, y, "obd_mask_delta", labels=True)
    acts, grads = _forward_backward(view, x, y)
    h_m = curvature.diag_hessian_masks(model, x, y)
    return [
        -stats.position_sum(a * g).mean(0) + 0.5 * h
        for a, g, h in zip(acts, grads, h_m, strict=True)
    ]


def mean_replacement_delta(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Quadratic estimate of the loss change from mean-replacing each unit alone.

        Delta L_j ~ (1/N) sum_n sum_s g_{n,j,s} d_{n,j,s}
                    + (1/2) sum_n d_{n,j}^T [d^2 L / d a_n d a_n]_{jj} d_{n,j},
        d_{n,j} = abar_j - a_{n,j}

    the second-order expansion of METHODS.md C along the direction that moves unit j to its
    mean (exact up to third order in the per-sample deviations; no cross terms between
    units). For a channel ``d_{n,j}`` is a whole feature map and the quadratic form uses the
    Hessian's full block over its positions, not only its diagonal. Signed. Zero for a
    constant unit.

    References
    ----------
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission (first-order term); second-order term from
    :func:`prunelab.curvature.directional_curvature` (``direction="mean"``).
    """
    view, x, y = check_view(model, x, y, "mean_replacement_delta", labels=True)
    acts, grads = _forward_backward(view, x, y)
    means = [stats.unit_mean(a) for a in acts]  # abar_j over samples and positions
    q = curvature.directional_curvature(model, x, y, direction="mean", means=means)
    out = []
    for a, g, abar, q_l in zip(acts, grads, means, q, strict=True):
        d = stats.per_unit(abar, a) - a  # [N, H_l, *spatial] abar - a
        out.append(stats.position_sum(g * d).mean(0) + 0.5 * q_l)
    return out


# --- public entry point and selection ------------------------------------------------------


def node_scores(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Scores of every hidden node by criterion ``name``; higher = more important.

    Parameters
    ----------
    name : str
        A key of ``NODE_CRITERIA``.
    model : nn.Sequential
        A model :func:`prunelab.ops.parse` accepts (an MLP or a convnet: Conv2d, pooling,
        BatchNorm in evaluation mode, Flatten), with at least one hidden layer; dropout counts
        as identity. Not modified.
    x : Tensor[N, *in]
        Data: ``[N, D]`` (or images, flattened like the model's ``Flatten``) for an MLP,
        ``[N, C, H, W]`` for a convnet; same dtype and device as the parameters.
    y : Tensor[N], optional
        Integer labels in ``[0, C)``; required by the criteria in ``LABELLED``.
    generator : torch.Generator, optional
        Randomness of ``"random"`` (default a fresh generator seeded 0).

    Returns
    -------
    list of Tensor[H_l]
        One score per node, one tensor per hidden layer, in ``x``'s dtype and device.

    Raises
    ------
    KeyError
        For an unknown criterion (the message lists the valid names).
    TypeError, ValueError
        For an unsupported model or bad ``x``/``y`` (the message names the argument).

    Examples
    --------
    >>> from prunelab import models
    >>> model = models.mlp((2, 4, 3), seed=0)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    >>> [s.shape for s in node_scores("taylor", model, x, y)]
    [torch.Size([4])]
    """
    if name not in NODE_CRITERIA:
        raise KeyError(f"node criterion {name!r}: choose from {sorted(NODE_CRITERIA)}")
    checks.generator(generator, "criteria.node_scores")
    return NODE_CRITERIA[name](model, x, y, generator=generator)


def select(
    scores: Sequence[Tensor],
    *,
    fraction: float | None = None,
    count: int | None = None,
    scope: str = "layer",
    min_keep: int = 1,
) -> dict[int, list[int]]:
    """Turn node scores into a removal plan for :func:`prunelab.surgery.remove_nodes`.

    The lowest scores are removed: ``count`` nodes, or ``round(fraction * H)`` (Python's
    round, half to even, as ``torch.nn.utils.prune``), per layer (``scope="layer"``, H =
    the layer's width) or over the whole network (``scope="global"``, H = total width, ranked
    on the raw scores, so normalise them first if layers are on different scales). Every layer
    keeps at least ``min_keep`` nodes; a global selection skips the nodes of a layer that has
    reached that floor. Ties go to the lower (layer, index) first, so the result is
    deterministic.

    Parameters
    ----------
    scores : sequence of Tensor[H_l]
        As returned by :func:`node_scores`.
    fraction : float, optional
        In [0, 1]; give exactly one of ``fraction`` and ``count``.
    count : int, optional
        Number of nodes to remove per layer (``"layer"``) or in total (``"global"``).
    scope : {"layer", "global"}
    min_keep : int
        Nodes every layer keeps, at least 1.

    Returns
    -------
    dict[int, list[int]]
        Hidden layer to the ascending indices of its nodes to remove; layers with nothing to
        remove are left out.

    Raises
    ------
    ValueError
        For bad arguments, non-finite scores, or a request that would leave a layer with
        fewer than ``min_keep`` nodes (the message gives the numbers).
    """
    scores = _check_scores(scores)
    if (fraction is None) == (count is None):
        raise ValueError(
            f"select: give exactly one of fraction and count; got {fraction=}, {count=}"
        )
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"select: fraction must be a number in [0, 1]; got {fraction!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"select: count must be a non-negative int; got {count!r}")
    if scope not in SCOPES:
        raise ValueError(f"select: scope={scope!r}; choose from {list(SCOPES)}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
        raise ValueError(f"select: min_keep must be an int >= 1; got {min_keep!r}")
    sizes = [s.numel() for s in scores]

    def amount(H: int) -> int:
        return count if count is not None else round(fraction * H)

    if scope == "layer":
        plan = {}
        for ell, s in enumerate(scores):
            k = amount(sizes[ell])
            if k > sizes[ell] - min_keep:
                raise ValueError(
                    f"select: removing {k} of the {sizes[ell]} nodes of hidden layer {ell} would "
                    f"keep fewer than min_keep={min_keep}"
                )
            if k:
                order = torch.sort(s, stable=True).indices[:k]
                plan[ell] = sorted(order.tolist())
        return plan
    k = amount(sum(sizes))
    caps = [max(0, H - min_keep) for H in sizes]
    if k > sum(caps):
        raise ValueError(
            f"select: removing {k} of {sum(sizes)} nodes would leave some layer (sizes {sizes}) "
            f"with fewer than min_keep={min_keep}; at most {sum(caps)} can go"
        )
    flat = torch.cat([s.detach().to("cpu", torch.float64) for s in scores])
    layer_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    taken = [0] * len(sizes)
    plan: dict[int, list[int]] = {}
    for i in torch.sort(flat, stable=True).indices.tolist():  # ties: lower (layer, index) first
        if k == 0:
            break
        ell = int(layer_of[i])
        if taken[ell] < caps[ell]:
            taken[ell] += 1
            plan.setdefault(ell, []).append(i - offsets[ell])
            k -= 1
    return {ell: sorted(plan[ell]) for ell in sorted(plan)}


# --- shared passes and validation -----------------------------------------------------------


def _activations(model, x, y, method) -> tuple[ops.View, Tensor, list[Tensor]]:
    """Validate, then the units of every hidden layer: ``[N, H_l]`` or ``[N, H_l, *spatial]``."""
    view, x, _ = check_view(model, x, y, method, labels=False)
    with torch.no_grad():
        return view, x, ops.forward(view, x, taps=True, training=False)[1]


def _forward_backward(view: ops.View, x: Tensor, y: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Hidden activations a^l and per-sample gradients g^l = dl_n/da^l_n, shaped like the units.

    One forward pass and one backward pass through the activations only (no weight gradients),
    from ``dl_n/df = p - e_y`` at the logits (:func:`prunelab.ops.unit_gradients`).
    """

    def dl_df(f: Tensor) -> Tensor:
        return torch.softmax(f, 1) - F.one_hot(y, f.shape[1]).to(f.dtype)

    return ops.unit_gradients(view, x, dl_df)


def _samples(a: Tensor) -> Tensor:
    """A unit tensor as one row per (sample, position): ``[N, H, *spatial] -> [N P, H]``
    (``[N, H]`` unchanged), so that statistics over dim 0 run over samples and positions."""
    return a if a.dim() == 2 else a.movedim(1, -1).reshape(-1, a.shape[1])


def _reader_norm(view: ops.View, ell: int, *, folded: bool) -> Tensor:
    """``||W^{l+1}[:, j]||_2`` for every unit j of hidden layer l: ``[H_l]``.

    The reader's weight ``[H_out, H_l * block]`` (a Linear; ``block`` columns per channel
    behind a Flatten) or ``[H_out, H_l, k_h, k_w]`` (a Conv2d), as ``[H_out, H_l, -1]``.
    """
    reader = view.layers[ell + 1]
    W = reader.folded()[0] if folded else reader.weight
    return torch.linalg.vector_norm(
        W.detach().reshape(W.shape[0], view.hidden_sizes[ell], -1), dim=(0, 2)
    )


def _check_scores(scores: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(scores, Tensor) or not isinstance(scores, Sequence) or not scores:
        raise TypeError("select: scores must be a non-empty list of 1-D tensors, one per layer")
    out = []
    for ell, s in enumerate(scores):
        if not isinstance(s, Tensor) or s.dim() != 1 or s.numel() == 0:
            raise ValueError(
                f"select: scores[{ell}] must be a non-empty 1-D tensor [H_{ell}]; got "
                f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}"
            )
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"select: scores[{ell}] holds NaN or inf values")
        out.append(s.detach())
    return out


# --- registries (every name in one place) ----------------------------------------------------

NODE_CRITERIA: dict[str, NodeCriterion] = {
    "random": random,
    "activation_std": activation_std,
    "activation_mean_abs": activation_mean_abs,
    "apoz": apoz,
    "weight_in_norm": weight_in_norm,
    "weight_out_norm": weight_out_norm,
    "std_out_norm": std_out_norm,
    "lipschitz": lipschitz,
    "taylor": taylor,
    "mean_replacement": mean_replacement,
    "obd_mask": obd_mask,
    "obd_mask_delta": obd_mask_delta,
    "mean_replacement_delta": mean_replacement_delta,
}
# criteria that need labels y (they read the loss)
LABELLED = frozenset(
    {"taylor", "mean_replacement", "obd_mask", "obd_mask_delta", "mean_replacement_delta"}
)
