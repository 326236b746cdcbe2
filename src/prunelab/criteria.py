"""Importance criteria for hidden nodes (and, later, weights), as plain registries of functions.

Every node criterion is called as ``fn(model, x, y=None, *, generator=None)`` and returns one
score tensor ``[H_l]`` per hidden layer; **higher means more important**, so pruning removes
the lowest scores (:func:`select`). ``x`` is the data the statistics are taken over and ``y``
its labels (needed by the criteria that use the loss: ``LABELLED``). Notation, per hidden layer
l and sample n (dropout as identity, evaluation mode):

    a_{n,j}   activation of node j (after the activation function),  abar_j = (1/N) sum_n a_{n,j}
    g_{n,j} = d l_n / d a_{n,j}    per-sample gradient of the cross-entropy l_n
    L = (1/N) sum_n l_n            the mean cross-entropy; a node mask m multiplies a after phi

Statistics over the data are population statistics (divide by N), so they describe exactly
the empirical distribution of ``x`` (as :mod:`prunelab.bounds` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bounds, curvature, hessian_blocks, models

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
    net, x, _ = _inputs(model, x, y, "random", labels=False)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return [
        torch.rand(H, generator=g, dtype=x.dtype, device=g.device).to(x.device)
        for H in net.hidden_sizes
    ]


def activation_std(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Population standard deviation of each node's activation over the data.

        sigma_j = sqrt((1/N) sum_n (a_{n,j} - abar_j)^2)

    A node with sigma_j = 0 is constant on the data: replacing it by its mean (folding it into
    the next bias) changes no output. The criterion of the source (Hobson 2022, "Train first
    vs prune first in neural networks": "prune the nodes with the smallest standard
    deviation"); also Variance-Based Pruning (Berisha, Mehnert & Condurache 2025).
    """
    _, x, acts = _activations(model, x, y, "activation_std")
    return [a.std(0, correction=0) for a in acts]


def activation_mean_abs(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Mean absolute activation ``s_j = (1/N) sum_n |a_{n,j}|``: what zeroing a node removes.

    The RMS version ``sqrt(E a_j^2)`` enters the zeroing certificate
    (:func:`prunelab.bounds.node_bounds` with ``replace="zero"``).
    """
    _, x, acts = _activations(model, x, y, "activation_mean_abs")
    return [a.abs().mean(0) for a in acts]


def apoz(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """One minus the Average Percentage of Zeros: ``s_j = 1 - (1/N) sum_n 1[a_{n,j} = 0]``.

    Hu et al. prune the units with the *highest* APoZ; returning ``1 - APoZ`` (the fraction of
    samples on which the node is active) keeps "higher = more important". A dead ReLU unit
    scores 0. Exact zeros occur for ReLU; for activations without a zero-output region (tanh,
    sigmoid, GELU, LeakyReLU) almost every node scores 1, so the criterion says little there.

    References
    ----------
    H. Hu, R. Peng, Y.-W. Tai & C.-K. Tang (2016), "Network trimming: a data-driven neuron
    pruning approach towards efficient deep architectures", arXiv:1607.03250, Sec. 3.
    """
    _, x, acts = _activations(model, x, y, "apoz")
    return [1 - (a == 0).to(a.dtype).mean(0) for a in acts]


def weight_in_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Norm of each node's incoming weights ``s_j = ||W^l[j, :]||_2`` (bias excluded). Data-free."""
    net, x, _ = _inputs(model, x, y, "weight_in_norm", labels=False)
    return [torch.linalg.vector_norm(d.weight.detach(), dim=1) for d in net.hidden]


def weight_out_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Norm of each node's outgoing weights ``s_j = ||W^{l+1}[:, j]||_2``. Data-free."""
    net, x, _ = _inputs(model, x, y, "weight_out_norm", labels=False)
    return [
        torch.linalg.vector_norm(net.layers[ell + 1].weight.detach(), dim=0)
        for ell in range(len(net.hidden))
    ]


def std_out_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Scale-aware variance score ``s_j = sigma_j ||W^{l+1}[:, j]||_2`` (METHODS.md C, D).

    ``sigma_j`` as :func:`activation_std`. Unlike ``sigma_j`` alone it is invariant to moving
    a positive factor between a ReLU node's incoming and outgoing weights; it is
    :func:`lipschitz` without the downstream factor, which is shared by a layer's nodes.
    """
    net, x, acts = _activations(model, x, y, "std_out_norm")
    return [
        a.std(0, correction=0)
        * torch.linalg.vector_norm(net.layers[ell + 1].weight.detach(), dim=0)
        for ell, a in enumerate(acts)
    ]


def lipschitz(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Certified bound on E|Delta loss| from mean-replacing each node alone (METHODS.md D).

        B_j = sqrt(2) ||W^{l+1}[:, j]||_2 prod_{k=l+2}^{L} Lip(phi_{k-1}) ||W^k||_2 sigma_j

    the same numbers as :func:`prunelab.bounds.node_bounds` with its defaults: ranking by it
    ranks by a guarantee, ``(1/N) sum_n |l_n(pruned) - l_n| <= B_j`` on ``x``.
    """
    _, x, _ = _inputs(model, x, y, "lipschitz", labels=False)
    return bounds.node_bounds(model, x)


# --- loss-based criteria -----------------------------------------------------------------------


def taylor(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """First-order Taylor importance, gate form: the squared gradient w.r.t. a node gate.

        T_j = (dL/dm_j)^2 at m = 1,    dL/dm_j = (1/N) sum_n a_{n,j} g_{n,j}

    with ``m_j`` a gate multiplying node j after its activation and ``L`` the mean
    cross-entropy over ``x`` (the batch loss). For ReLU and other positively homogeneous
    activations ``dL/dm_j = sum_i W_ji dL/dW_ji + b_j dL/db_j`` (METHODS.md C). One forward and
    one backward pass (no parameter gradients).

    References
    ----------
    P. Molchanov, A. Mallya, S. Tyree, I. Frosio & J. Kautz (2019), "Importance estimation for
    neural network pruning", CVPR, Eq. 8 (group form with a gate; code: method 22).
    """
    net, x, y = _inputs(model, x, y, "taylor", labels=True)
    acts, grads = _forward_backward(net, x, y)
    return [(a * g).mean(0).square() for a, g in zip(acts, grads, strict=True)]


def mean_replacement(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Mean Replacement Saliency: the first-order change of each sample's loss, averaged in abs.

        MRS_j = (1/N) sum_n |(abar_j - a_{n,j}) g_{n,j}|

    the absolute-value variant of Evci et al. (``is_abs=True``, their default), with ``abar``
    taken over the same ``x`` and ``g`` the gradient of each sample's own loss ``l_n``. It is
    the first-order estimate of ``E|Delta l|`` that :func:`lipschitz` certifies. A unit that is
    constant on ``x`` scores exactly 0.

    References
    ----------
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission, https://openreview.net/forum?id=BJxRVnC5Fm; code google-research/deadunits,
    ``layers.py`` ``TaylorScorer``.
    """
    net, x, y = _inputs(model, x, y, "mean_replacement", labels=True)
    acts, grads = _forward_backward(net, x, y)
    return [((a.mean(0) - a) * g).abs().mean(0) for a, g in zip(acts, grads, strict=True)]


def obd_mask(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Exact second derivative of the mean loss w.r.t. each node's mask, all nodes at once.

        h_j = d^2 L / dm_j^2 at m = 1 = sum_n a_{n,j}^2 [d^2 L / d a_n d a_n]_{jj}

    exact because ``m_j`` enters only through ``m_j a_{n,j}`` and samples do not interact. The
    per-sample diagonals come from a factor backprop with C columns, plus the residual
    ``phi'' dL/da`` columns of every later curved activation, so tanh/sigmoid/GELU nets are
    exact too (:func:`prunelab.curvature.diag_hessian_masks`). No loop over nodes. The OBD
    saliency of removing the node (``delta m = -1``) under OBD's extremal assumption is
    ``h_j / 2``, which ranks identically; for ReLU nets ``h_j >= 0`` (Gauss-Newton), for
    curved activations it can be negative.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 5 (saliency
    ``h_kk u_k^2 / 2``), applied to a node gate; exact diagonal via Dangel, Kunstner & Hennig
    (2020), BackPACK.
    """
    _, x, y = _inputs(model, x, y, "obd_mask", labels=True)
    return curvature.diag_hessian_masks(model, x, y)


def obd_mask_delta(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Quadratic estimate of the loss change from zeroing each node alone (mask 1 -> 0).

        Delta L_j ~ -dL/dm_j + (1/2) d^2 L / dm_j^2
                  = -(1/N) sum_n a_{n,j} g_{n,j} + (1/2) h_j

    with ``h_j`` from :func:`obd_mask`: OBD's expansion without the extremal assumption
    (the gradient term kept) and without cross terms between nodes. Signed: a negative value
    predicts that removing the node lowers the loss.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 2.
    """
    net, x, y = _inputs(model, x, y, "obd_mask_delta", labels=True)
    acts, grads = _forward_backward(net, x, y)
    h_m = curvature.diag_hessian_masks(model, x, y)
    return [-(a * g).mean(0) + 0.5 * h for a, g, h in zip(acts, grads, h_m, strict=True)]


def mean_replacement_delta(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Quadratic estimate of the loss change from mean-replacing each node alone.

        Delta L_j ~ (1/N) sum_n g_{n,j} (abar_j - a_{n,j})
                    + (1/2) sum_n [d^2 L / d a_n d a_n]_{jj} (abar_j - a_{n,j})^2

    the second-order expansion of METHODS.md C (exact up to third order in the per-sample
    deviations; no cross terms between nodes). Signed. Zero for a constant node.

    References
    ----------
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission (first-order term); second-order term from
    :func:`prunelab.curvature.diag_hessian_activations`.
    """
    net, x, y = _inputs(model, x, y, "mean_replacement_delta", labels=True)
    acts, grads = _forward_backward(net, x, y)
    h_a = curvature.diag_hessian_activations(model, x, y)
    out = []
    for a, g, h in zip(acts, grads, h_a, strict=True):
        d = a.mean(0) - a  # [N, H_l] abar - a
        out.append((g * d).mean(0) + 0.5 * (h * d.square()).sum(0))
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
        A model :func:`prunelab.models.parse` accepts, with at least one hidden layer; dropout
        counts as identity. Not modified.
    x : Tensor[N, D]
        Data (flattened like the model's ``Flatten``), same dtype and device as the parameters.
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
    >>> model = models.mlp((2, 4, 3), seed=0)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    >>> [s.shape for s in node_scores("taylor", model, x, y)]
    [torch.Size([4])]
    """
    if name not in NODE_CRITERIA:
        raise KeyError(f"node criterion {name!r}: choose from {sorted(NODE_CRITERIA)}")
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


def _activations(model, x, y, method) -> tuple[models.Net, Tensor, list[Tensor]]:
    """Validate, then the hidden activations [N, H_l] of every hidden layer."""
    net, x, _ = _inputs(model, x, y, method, labels=False)
    return net, x, net.activations(x)


def _forward_backward(net: models.Net, x: Tensor, y: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Hidden activations a^l [N, H_l] and per-sample gradients g^l = dl_n/da^l_n [N, H_l].

    One forward pass and one backward pass through the activations only (no weight gradients):
    ``g^L = p - e_y`` at the logits, ``g^{l} = (g^{l+1} * phi'(z^{l+1})) W^{l+1}``.
    """
    with torch.no_grad():
        acts, slopes = [], []
        a = x
        for ell, dense in enumerate(net.hidden):
            z = F.linear(a, dense.weight, dense.bias)  # [N, H_l]
            a = dense.phi(z)
            acts.append(a)  # phi'(z^0) is never needed: the backward stops at a^0
            slopes.append(models.derivatives(dense.activation, z, dense.slope)[0] if ell else None)
        out = net.layers[-1]
        f = F.linear(a, out.weight, out.bias)  # [N, C]
        g = torch.softmax(f, 1) - F.one_hot(y, f.shape[1]).to(f.dtype)  # [N, C] dl_n/df
        grads = []
        delta = g  # dl_n/dz^{l+1}
        for ell in range(len(net.hidden) - 1, -1, -1):
            g_a = delta @ net.layers[ell + 1].weight.detach()  # [N, H_l]
            grads.append(g_a)
            if ell > 0:
                delta = g_a * slopes[ell]
    return acts, grads[::-1]


def _inputs(
    model: nn.Module, x: Tensor, y: Tensor | None, method: str, *, labels: bool, hidden: bool = True
) -> tuple[models.Net, Tensor, Tensor | None]:
    """Validate ``model``, ``x`` and ``y`` once; return the net, ``x`` as [N, D] and ``y``.

    ``hidden=False`` accepts a model without hidden layers (weight criteria).
    """
    net = models.parse(model, method=method)
    if hidden and not net.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes to score")
    W = net.layers[0].weight
    if not isinstance(x, Tensor):
        raise TypeError(f"{method}: x must be a torch.Tensor [N, D]; got {type(x).__name__}")
    xs = net.inputs(x)
    if xs.dim() != 2 or xs.shape[1] != net.in_features:
        raise ValueError(
            f"{method}: x must have shape [N, {net.in_features}] (after the model's Flatten); "
            f"got shape {tuple(x.shape)}"
        )
    if xs.dtype != W.dtype or xs.device != W.device:
        raise TypeError(
            f"{method}: x is {xs.dtype} on {xs.device} but the model's parameters are "
            f"{W.dtype} on {W.device}; convert one of them"
        )
    N = xs.shape[0]
    if N == 0:
        raise ValueError(f"{method}: x holds no samples")
    if not bool(torch.isfinite(xs).all()):
        raise ValueError(f"{method}: x holds NaN or inf values")
    if y is None:
        if labels:
            raise ValueError(f"{method}: this criterion uses the loss; pass labels y=Tensor[{N}]")
        return net, xs.detach(), None
    if not isinstance(y, Tensor):
        raise TypeError(f"{method}: y must be a torch.Tensor [N]; got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{method}: y must hold integer class labels; got {y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"{method}: y must have shape [{N}] like x; got {tuple(y.shape)}")
    C = net.out_features
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(
            f"{method}: y must be class labels in [0, {C}) for a model with {C} outputs; got "
            f"range [{int(y.min())}, {int(y.max())}]"
        )
    return net, xs.detach(), y.to(device=xs.device, dtype=torch.long)


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
# Weight criteria (``weight_scores(name, model, x, y) -> {param_name: Tensor}``) get their own
# registry ``WEIGHT_CRITERIA`` below, on the same pattern.


# --- weight criteria ---------------------------------------------------------------------------
#
# Every weight criterion is called as ``fn(model, x, y=None, *, generator=None)`` and returns
# one score tensor per parameter, keyed and shaped like ``model.named_parameters()`` (weights
# and biases; :func:`prunelab.surgery.prune_weights` leaves biases alone unless asked).
# **Higher means more important**: pruning removes the lowest scores. Notation: theta one
# parameter entry, L the mean cross-entropy over (x, y) with dropout as identity,
# g = dL/dtheta, h = d^2 L / dtheta^2 (the exact diagonal, :mod:`prunelab.curvature`).

WeightCriterion = Callable[..., dict[str, Tensor]]
GRASP_TEMPERATURE = 200.0  # Wang et al. (2020) divide the logits by T = 200
HUTCHINSON_PROBES = 100  # Rademacher probes of obd_hutchinson
OBS_DAMPING = 1e-4  # H + lambda I with lambda = OBS_DAMPING * mean(diag H)
OBS_MAX_BLOCK = 2500  # layers with more parameters get one block per output unit


def obd_saliency(w: Tensor, h_diag: Tensor) -> Tensor:
    """OBD saliency ``s_k = h_kk w_k^2 / 2``. ``w, h_diag: [P] -> [P]`` (any equal shapes).

    The loss increase from zeroing ``w_k`` predicted by the quadratic expansion at a minimum
    (gradient term dropped) without cross terms (LeCun, Denker & Solla 1990, Eq. 5).
    """
    return 0.5 * h_diag * w**2


def obs_saliency(w: Tensor, h_inv: Tensor) -> Tensor:
    """OBS saliency ``L_q = w_q^2 / (2 [H^-1]_qq)``. ``w: [P]``, ``h_inv: [P, P] -> [P]``.

    The quadratic loss increase from zeroing ``w_q`` when every other weight moves optimally
    (:func:`obs_update`); never more than OBD's ``h_qq w_q^2 / 2`` for a positive definite H,
    since ``1 / [H^-1]_qq <= h_qq`` (Hassibi & Stork 1993, Eq. 5).
    """
    return w**2 / (2 * torch.diagonal(h_inv))


def obs_update(w: Tensor, h_inv: Tensor, remove: Tensor) -> tuple[Tensor, Tensor]:
    """Optimal Brain Surgeon: zero the weights ``Q = remove`` and move the rest optimally.

        delta w = -H^-1 E_Q (E_Q^T H^-1 E_Q)^-1 w_Q,     L_Q = w_Q^T (E_Q^T H^-1 E_Q)^-1 w_Q / 2

    the minimiser of the quadratic ``delta w^T H delta w / 2`` subject to ``w_Q + delta w_Q =
    0`` and its value. For one weight q this is Hassibi & Stork's ``delta w = -(w_q /
    [H^-1]_qq) H^-1 e_q`` with ``L_q`` of :func:`obs_saliency`; for several at once it is the
    multi-weight form of Kurtic et al. (2022, "The Optimal BERT Surgeon", Eq. 3) and Frantar &
    Alistarh (2022, "Optimal Brain Compression").

    Parameters
    ----------
    w : Tensor[P]
    h_inv : Tensor[P, P]
        The inverse Hessian (damped if H is singular).
    remove : Tensor[Q]
        Integer indices into ``w``.

    Returns
    -------
    (Tensor[P], Tensor[])
        The updated weights (exactly zero on ``Q``) and ``L_Q``.
    """
    Q = remove.reshape(-1)
    lam = torch.linalg.solve(h_inv[Q][:, Q], w[Q])  # (E_Q^T H^-1 E_Q)^-1 w_Q
    new = w - h_inv[:, Q] @ lam
    new[Q] = 0  # exact zeros (the formula gives them up to rounding)
    return new, 0.5 * (w[Q] @ lam)


def hessian_gradient_product(
    loss_fn: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor]
) -> dict[str, Tensor]:
    """``H g`` of a scalar ``loss_fn(params)`` by double backpropagation (GraSP's way).

        z = g^T stopgrad(g),   dz/dtheta = H g     (g = d loss / d theta, H its Hessian)

    Parameters
    ----------
    loss_fn : callable
        A pure function of a dict of tensors returning a scalar.
    params : dict of str to Tensor
        Where to evaluate; not modified.

    Returns
    -------
    dict of str to Tensor
        ``H g`` keyed and shaped like ``params`` (zeros where the loss does not depend on it).

    References
    ----------
    C. Wang, G. Zhang & R. Grosse (2020), "Picking winning tickets before training by
    preserving gradient flow", ICLR, Eq. 8; code alecwangcq/GraSP ``pruner/GraSP.py``.
    """
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        g = torch.autograd.grad(loss_fn(leaves), list(leaves.values()), create_graph=True)
        z = sum((gi * gi.detach()).sum() for gi in g)
        hg = torch.autograd.grad(z, list(leaves.values()), allow_unused=True)
    return {
        n: torch.zeros_like(p) if t is None else t.detach()
        for (n, p), t in zip(leaves.items(), hg, strict=True)
    }


def magnitude(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Weight magnitude ``s = |theta|``, the classic baseline. Data-free.

    Ranking all layers together by it is ``torch.nn.utils.prune.global_unstructured`` with
    ``L1Unstructured``; layer by layer it is ``l1_unstructured`` (Han, Pool, Tran & Dally
    2015, "Learning both weights and connections for efficient neural networks", NIPS).
    """
    _weight_inputs(model, x, y, "magnitude", labels=False)
    return {n: p.detach().abs() for n, p in model.named_parameters()}


def random_weights(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Uniform random scores ``s ~ U[0, 1)``, the floor every criterion must beat.

    Drawn parameter by parameter from ``generator`` (default a fresh generator seeded 0, so a
    call without one is reproducible); returned on the parameters' device.
    """
    _weight_inputs(model, x, y, "random", labels=False)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return {
        n: torch.rand(p.shape, generator=g, dtype=p.dtype, device=g.device).to(p.device)
        for n, p in model.named_parameters()
    }


def _obd(model, x, y, method: str, estimator: Callable[..., dict[str, Tensor]], **kwargs):
    """OBD saliency with the diagonal of ``estimator``."""
    _, x, y = _weight_inputs(model, x, y, method, labels=True)
    h = estimator(model, x, y, **kwargs)
    return {n: obd_saliency(p.detach(), h[n]) for n, p in model.named_parameters()}


def obd(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Optimal Brain Damage saliency with the exact Hessian diagonal: ``s = h theta^2 / 2``.

    ``h`` from :func:`prunelab.curvature.diag_hessian` (exact for every supported activation;
    equal to the Gauss-Newton diagonal for ReLU nets). Under OBD's assumptions (a minimum, a
    quadratic loss, no cross terms) ``s`` is the loss increase from zeroing the weight.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 5; METHODS.md B.
    """
    return _obd(model, x, y, "obd", curvature.diag_hessian)


def obd_ggn(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``G theta^2 / 2`` with the generalised Gauss-Newton diagonal.

    ``G`` from :func:`prunelab.curvature.diag_ggn`; equal to :func:`obd` for piecewise-linear
    nets, non-negative always (LeCun et al. 1990, Eq. 5; Martens 2014, Sec. 8).
    """
    return _obd(model, x, y, "obd_ggn", curvature.diag_ggn)


def obd_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``F theta^2 / 2`` with the diagonal empirical Fisher ``F = mean_n g_n^2``.

    ``F`` from :func:`prunelab.curvature.empirical_fisher_diag` (per-sample gradients of
    ``l_n`` on the true labels): the approximation several pruning libraries call "Hessian"
    importance (LeCun et al. 1990, Eq. 5; Kunstner, Hennig & Balles 2019 on its limits).
    """
    return _obd(model, x, y, "obd_fisher", curvature.empirical_fisher_diag)


def obd_hutchinson(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``h theta^2 / 2`` with a Hutchinson estimate of the Hessian diagonal.

    ``h ~ (1/K) sum_k v_k * (H v_k)`` over ``K = HUTCHINSON_PROBES`` Rademacher probes drawn
    from ``generator`` (:func:`prunelab.curvature.hutchinson_diag`; Bekas, Kokiopoulou & Saad
    2007). Unbiased but noisy; the estimate can be negative where the true value is small.
    """
    return _obd(
        model,
        x,
        y,
        "obd_hutchinson",
        curvature.hutchinson_diag,
        probes=HUTCHINSON_PROBES,
        generator=generator,
    )


def obd_becker_lecun(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency with the Becker-LeCun diagonal, the approximation OBD itself used.

    ``h`` from :func:`prunelab.curvature.becker_lecun_diag`, which drops the cross terms
    between units in its backward recursion (exact only at the output layer); LeCun et al.
    (1990), Sec. 3; Becker & LeCun (1988).
    """
    return _obd(model, x, y, "obd_becker_lecun", curvature.becker_lecun_diag)


def obs(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    damping: float = OBS_DAMPING,
    max_block: int = OBS_MAX_BLOCK,
) -> dict[str, Tensor]:
    """Optimal Brain Surgeon saliency per layer: ``L_q = theta_q^2 / (2 [H_l^-1]_qq)``.

    ``H_l`` is the exact Hessian block of all parameters of the layer that holds ``q``
    (weights and bias; :func:`prunelab.hessian_blocks.layer_hessian`), damped to
    ``H_l + lambda I`` with ``lambda = damping * mean(diag H_l)`` (Hassibi & Stork start their
    recursive inverse from ``alpha^-1 I``, the same regulariser; it also makes weights that
    never matter, e.g. on always-zero inputs, score about 0). Blocks between layers are left
    out, as in layer-wise OBS. A layer with more than ``max_block`` parameters is treated one
    output unit at a time (its row blocks, :func:`prunelab.hessian_blocks.row_hessians`), which
    also drops the blocks between units; cost ``2 N H D^2`` for an ``H x D`` layer.
    ``L_q`` is the quadratic loss increase after the compensating update
    :func:`obs_update`, which :func:`prunelab.surgery.obs_prune` applies. It can be negative
    where H is indefinite (curved activations).

    References
    ----------
    B. Hassibi & D. Stork (1993), "Second order derivatives for network pruning: Optimal Brain
    Surgeon", NIPS 5, Eq. 5; X. Dong, S. Chen & S. Pan (2017), "Learning to prune deep neural
    networks via layer-wise optimal brain surgeon", NIPS.
    """
    net, x, y = _weight_inputs(model, x, y, "obs", labels=True)
    if not damping >= 0:
        raise ValueError(f"obs: damping must be >= 0; got {damping!r}")
    out: dict[str, Tensor] = {}
    for k, layer in enumerate(net.layers):
        W, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
        H_out, H_in = W.shape
        theta = W if b is None else torch.cat([W, b[:, None]], 1)  # [H, D'] rows (W_i, b_i)
        if theta.numel() <= max_block:
            h_inv = damped_inverse(hessian_blocks.layer_hessian(model, x, y, k), damping)
            w = W.reshape(-1) if b is None else torch.cat([W.reshape(-1), b])  # bias last
            s = obs_saliency(w.double(), h_inv).to(W.dtype)
            out[f"{layer.name}.weight"] = s[: W.numel()].reshape(H_out, H_in)
            if b is not None:
                out[f"{layer.name}.bias"] = s[W.numel() :]
        else:
            s = torch.empty_like(theta)
            for rows in row_groups(H_out, theta.shape[1], max_block):
                blocks = hessian_blocks.row_hessians(model, x, y, k, rows=rows)
                h_inv = damped_inverse(blocks, damping)  # [R, D', D']
                s[rows] = (theta[rows].double() ** 2 / (2 * torch.diagonal(h_inv, 0, 1, 2))).to(
                    s.dtype
                )
            out[f"{layer.name}.weight"] = s[:, :H_in]
            if b is not None:
                out[f"{layer.name}.bias"] = s[:, H_in]
    return {n: out[n] for n, _ in model.named_parameters()}


def damped_inverse(H: Tensor, damping: float) -> Tensor:
    """``(H + lambda I)^-1`` in float64, ``lambda = damping * mean(diag H)`` (per matrix).

    ``H: [..., P, P]`` (a batch of square matrices) ``-> [..., P, P]``. With a zero diagonal
    mean, ``lambda = damping``.
    """
    H = H.double()
    mean = torch.diagonal(H, 0, -2, -1).mean(-1)  # [...]
    lam = damping * torch.where(mean > 0, mean, torch.ones_like(mean))
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    return torch.linalg.inv(H + lam[..., None, None] * eye)


def row_groups(units: int, width: int, max_block: int) -> list[Tensor]:
    """Output units in groups whose OBS row blocks ``[R, width, width]`` hold about 2^24 elements.

    Raises a ValueError if even one unit's block (``width`` parameters) exceeds ``max_block``.
    """
    if width > max_block:
        raise ValueError(
            f"obs: a layer with {width} parameters per unit is too large even unit by unit "
            f"(max_block={max_block}); raise max_block or use another criterion"
        )
    return list(torch.arange(units).split(max(1, 2**24 // (width * width))))


def snip(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``s_j = |theta_j g_j| / sum_k |theta_k g_k|``.

    ``|dL(c * theta)/dc_j|`` at ``c = 1`` for a multiplicative mask c, normalised so that the
    scores of the *weights* (not the biases) sum to 1; biases are scored on the same scale.
    Meant for a minibatch at initialisation, but defined for any model and data.

    References
    ----------
    N. Lee, T. Ajanthan & P. Torr (2019), "SNIP: Single-shot network pruning based on
    connection sensitivity", ICLR, Eq. 6; code ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``.
    """
    net, x, y = _weight_inputs(model, x, y, "snip", labels=True)
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.func.grad(_param_loss(net, x, y))(params)
    s = {n: (p * g[n]).abs() for n, p in params.items()}
    return _normalised(net, s)


def grasp(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """GraSP importance ``theta * (H g) / |sum_weights (-theta * (H g))|`` (sign flipped).

    GraSP scores ``S = -theta * (H g)`` with ``g`` and ``H`` the gradient and Hessian of the
    loss with logits divided by ``T = GRASP_TEMPERATURE`` and removes the *largest* S, the
    weights whose removal reduces gradient flow least; returning ``-S`` keeps "higher = more
    important". ``H g`` by double backpropagation (:func:`hessian_gradient_product`).
    Normalised by ``|sum S|`` over the weights, as the reference code does.

    References
    ----------
    C. Wang, G. Zhang & R. Grosse (2020), "Picking winning tickets before training by
    preserving gradient flow", ICLR, Eq. 8; code alecwangcq/GraSP ``pruner/GraSP.py``.
    """
    net, x, y = _weight_inputs(model, x, y, "grasp", labels=True)
    params = {n: p.detach() for n, p in model.named_parameters()}
    hg = hessian_gradient_product(_param_loss(net, x, y, GRASP_TEMPERATURE), params)
    S = {n: -p * hg[n] for n, p in params.items()}
    total = sum(S[f"{d.name}.weight"].sum() for d in net.layers).abs()
    if total == 0:
        return {n: -s for n, s in S.items()}
    return {n: -s / total for n, s in S.items()}


def synflow(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """SynFlow synaptic saliency ``S = |theta * dR/dtheta|`` of the linearised network.

        R = 1^T f(1; |theta|)

    the sum of the outputs of the network with every parameter replaced by its absolute value,
    on an all-ones input (only ``x``'s width is used; data-free), dropout as identity, computed
    in float64. For ReLU (and LeakyReLU, identity) nets every unit is active on this input, and
    the scores are conserved layer by layer: the weights of layer l together with all biases
    of layers ``>= l`` score exactly ``R`` (Tanaka et al., Theorem 2, with biases). The paper
    prunes iteratively (100 rounds, keeping ``rho^(k/n)`` at round k); this is one round.

    References
    ----------
    H. Tanaka, D. Kunin, D. Yamins & S. Ganguli (2020), "Pruning neural networks without any
    data by iteratively conserving synaptic flow", NeurIPS, Eq. 2 and Algorithm 1; code
    ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``.
    """
    net, x, _ = _weight_inputs(model, x, y, "synflow", labels=False)
    params = {n: p.detach().abs().double() for n, p in model.named_parameters()}
    ones = torch.ones(1, net.in_features, dtype=torch.float64, device=x.device)

    def R(p: dict[str, Tensor]) -> Tensor:
        a = ones
        for layer in net.layers:
            a = layer.phi(F.linear(a, p[f"{layer.name}.weight"], p.get(f"{layer.name}.bias")))
        return a.sum()

    dR = torch.func.grad(R)(params)
    dtype = x.dtype
    return {n: (p * dR[n]).abs().to(dtype) for n, p in params.items()}


def weight_scores(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Scores of every parameter entry by criterion ``name``; higher = more important.

    Parameters
    ----------
    name : str
        A key of ``WEIGHT_CRITERIA``.
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, without shared Linear modules; dropout
        counts as identity. Not modified.
    x : Tensor[N, D]
        Data (flattened like the model's ``Flatten``), same dtype and device as the parameters.
        The data-free criteria (``magnitude``, ``random``, ``synflow``) only check it.
    y : Tensor[N], optional
        Integer labels in ``[0, C)``; required by the criteria in ``WEIGHT_LABELLED``.
    generator : torch.Generator, optional
        Randomness of ``"random"`` and ``"obd_hutchinson"`` (default seeded 0).

    Returns
    -------
    dict of str to Tensor
        Keyed and shaped like ``model.named_parameters()`` (weights and biases), in the
        parameters' dtype and device.

    Raises
    ------
    KeyError
        For an unknown criterion (the message lists the valid names).
    TypeError, ValueError
        For an unsupported model or bad ``x``/``y`` (the message names the argument).

    Examples
    --------
    >>> model = models.mlp((2, 4, 3), seed=0)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    >>> {n: s.shape for n, s in weight_scores("snip", model, x, y).items()}["0.weight"]
    torch.Size([4, 2])
    """
    if name not in WEIGHT_CRITERIA:
        raise KeyError(f"weight criterion {name!r}: choose from {sorted(WEIGHT_CRITERIA)}")
    return WEIGHT_CRITERIA[name](model, x, y, generator=generator)


def _weight_inputs(model, x, y, method: str, *, labels: bool):
    """Validate for a weight criterion: any number of hidden layers, no shared Linear."""
    net, x, y = _inputs(model, x, y, method, labels=labels, hidden=False)
    if len({id(d.linear) for d in net.layers}) < len(net.layers):
        raise ValueError(
            f"{method}: a Linear module appears twice in the model (shared weights); weight "
            "criteria score each parameter once, so use distinct layers"
        )
    return net, x, y


def _param_loss(
    net: models.Net, x: Tensor, y: Tensor, temperature: float = 1.0
) -> Callable[[dict[str, Tensor]], Tensor]:
    """Mean cross-entropy of logits / temperature as a pure function of a parameter dict."""

    def loss(p: dict[str, Tensor]) -> Tensor:
        a = x
        for layer in net.layers:
            a = layer.phi(F.linear(a, p[f"{layer.name}.weight"], p.get(f"{layer.name}.bias")))
        return F.cross_entropy(a / temperature, y)

    return loss


def _normalised(net: models.Net, s: dict[str, Tensor]) -> dict[str, Tensor]:
    """Divide every score by the sum over the weight matrices (left as is if that is 0)."""
    total = sum(s[f"{d.name}.weight"].sum() for d in net.layers)
    return s if total == 0 else {n: t / total for n, t in s.items()}


WEIGHT_CRITERIA: dict[str, WeightCriterion] = {
    "magnitude": magnitude,
    "random": random_weights,
    "obd": obd,
    "obd_ggn": obd_ggn,
    "obd_fisher": obd_fisher,
    "obd_hutchinson": obd_hutchinson,
    "obd_becker_lecun": obd_becker_lecun,
    "obs": obs,
    "snip": snip,
    "grasp": grasp,
    "synflow": synflow,
}
# weight criteria that need labels y (they read the loss)
WEIGHT_LABELLED = frozenset(
    {"obd", "obd_ggn", "obd_fisher", "obd_hutchinson", "obd_becker_lecun", "obs", "snip", "grasp"}
)
