"""Explanations held against a region, against conservation and against each other, and
training with a relevance penalty (the alignment idea of the "blame the bias" source).

The source (Hobson, part 2, "What I was hoping for regarding alignment") proposes to train a
network so that the relevance of its decision falls where a person marked the object: the
relevance computation is differentiable, so a penalty on it can be added to the loss. Here the
penalty is the share of absolute relevance that falls in a *forbidden* region F of the input,

    share_n = sum_{i in F} |R_ni| / sum_i |R_ni|,     loss = CE + lambda * mean_n share_n,

with ``R`` the input relevance of the true class from :func:`prunelab.relevance.explain` (weights
attached, so autograd differentiates through the backward rules: double backpropagation). The
source reports that it did not work: the network "goodharted" the relevance metric. The decoy
experiment of :mod:`prunelab.decoy` measures whether ours does.

Two more scores of explanations live here: how far a method is from conserving the explained
output (:func:`conservation_error`) and how much two methods agree (:func:`agreement_matrix`).

References
----------
Ross, Hughes & Doshi-Velez (2017), "Right for the right reasons: training differentiable models
by constraining their explanations", IJCAI (arXiv:1703.03717): the same idea with input
gradients. Dombrowski et al. (2019), "Explanations can be manipulated and geometry is to
blame", NeurIPS (arXiv:1906.07983): why a penalty on an explanation is easy to game.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import scipy.stats
import torch
from torch import Tensor, nn

from ..base import ops
from ..base.data import Dataset
from ..base.train import History, fit
from . import relevance

TARGETS = ("label", "predicted")
AGREEMENTS = ("spearman", "pearson")


# --- relevance in a region ---------------------------------------------------------------------


def region_share(R: Tensor, region: Tensor) -> Tensor:
    """Share of absolute relevance in ``region``: s_n = sum_{i in F} |R_ni| / sum_i |R_ni|.

    R: [N, D], region: [D] bool -> [N] in [0, 1] (0 where a row of R is all zero).
    Differentiable in R (almost everywhere).
    """
    a = R.abs()  # [N, D]
    total = a.sum(1)
    inside = (a * region.to(a.dtype)).sum(1)
    nonzero = total > 0
    return torch.where(nonzero, inside / torch.where(nonzero, total, 1), 0)


def relevance_share(
    model: nn.Module,
    x: Tensor,
    region: Tensor,
    *,
    method: str,
    target: Tensor | int | None = None,
) -> Tensor:
    """:func:`region_share` of ``explain(model, x, method=method, target=target).input``.

    Differentiable in the model's weights when grad is enabled. x: [N, D] -> [N].
    """
    _check_region(region, x.flatten(1).shape[1], "relevance_share")
    r = relevance.explain(model, x, method=method, target=target)
    return region_share(r.input.flatten(1), region.to(r.input.device))  # a convnet's [N, C, H, W]


def _check_region(region: object, D: int, where: str) -> None:
    if not isinstance(region, Tensor) or region.dtype != torch.bool or region.shape != (D,):
        got = (
            f"{region.dtype} {tuple(region.shape)}"
            if isinstance(region, Tensor)
            else type(region).__name__
        )
        raise ValueError(f"{where}: region must be a bool Tensor of shape [D] = [{D}]; got {got}")


# --- training with the penalty -----------------------------------------------------------------


# Per-epoch curves of fit_penalised: train.History, whose ``penalty`` holds the epoch means of
# the relevance share (before the weight).
PenalisedHistory = History


def fit_penalised(
    model: nn.Sequential,
    train: Dataset,
    *,
    region: Tensor,
    weight: float,
    method: str = "gradient_x_input",
    target: str = "label",
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int | None = 32,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    seed: int = 0,
    test: Dataset | None = None,
    progress: bool = True,
) -> PenalisedHistory:
    """Train ``model`` in place on CE + weight * mean share of relevance in ``region``.

    The loop is :func:`prunelab.train.fit`'s (same shuffling, optimiser and seeding; the global
    RNG is saved and restored), with the penalty added to each mini-batch loss. With
    ``weight = 0`` the penalty is only measured, and the weights are bitwise those of ``fit``.
    The cross-entropy sees the training-mode network (dropout on, if any); the penalty explains
    the eval-mode network, as :func:`prunelab.relevance.explain` does.

    Parameters
    ----------
    model : nn.Sequential
        A model that :func:`prunelab.base.ops.parse` accepts (an MLP or a convnet); trained
        in place. The penalty's double backpropagation runs through the backward rules of
        :func:`prunelab.relevance.explain`, convolutions and pools included.
    train : Dataset
        Training data, x [N, D...] as the model reads it (flattened to D features for the
        region).
    region : Tensor[D] of bool
        The forbidden input features F.
    weight : float
        lambda >= 0.
    method : str
        The relevance method of the penalty, a key of ``relevance.METHODS`` (for ReLU nets
        ``gradient_x_input`` equals LRP-0, and LRP-eps up to eps).
    target : {"label", "predicted"}
        Which output the penalised relevance explains: the true class or the predicted one.
    epochs, lr, batch_size, optimizer, weight_decay, momentum, seed, test, progress
        As in :func:`prunelab.train.fit`.

    Returns
    -------
    PenalisedHistory

    References
    ----------
    Hobson, "Visualizing neural networks, how to blame the bias" (``sources/``, part 2);
    Ross, Hughes & Doshi-Velez (2017).
    """
    if method not in relevance.METHODS:
        raise KeyError(f"fit_penalised: method {method!r}; choose from {sorted(relevance.METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"fit_penalised: target {target!r}; choose from {list(TARGETS)}")
    if isinstance(weight, bool) or not (isinstance(weight, int | float) and weight >= 0):
        raise ValueError(f"fit_penalised: weight must be a number >= 0; got {weight!r}")
    if not math.isfinite(weight):
        raise ValueError(f"fit_penalised: weight must be finite; got {weight!r}")
    first = ops.parse(model, method="alignment.fit_penalised").layers[0]
    # D: an MLP's input width (fit then names data of another width); a convnet's from the data
    D = train.x[0].numel() if first.conv else first.in_units
    _check_region(region, D, "fit_penalised")

    def share(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        t = yb if target == "label" else None
        return relevance_share(model, xb, region, method=method, target=t).mean()

    return fit(
        model,
        train,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=weight_decay,
        momentum=momentum,
        seed=seed,
        test=test,
        penalty=share,
        penalty_weight=weight,
        progress=progress,
    )


# --- conservation and agreement ----------------------------------------------------------------


def conservation_error(r: relevance.Relevance, *, include_bias: bool = True) -> Tensor:
    """|sum_i R(x_i) [+ sum_j R(b_j)] - f_t(x)| / |f_t(x)| per sample, [N].

    With ``include_bias`` the bias relevance counts (``Relevance.total``); without it the
    error is the part of the output the input relevance leaves unexplained (the biases' share,
    for a method that conserves). ``inf`` where the explained output is exactly 0.
    """
    total = r.total if include_bias else r.input.flatten(1).sum(1)
    return (total - r.output).abs() / r.output.abs()


def bias_fraction(r: relevance.Relevance) -> Tensor:
    """Share of the explained output that the biases carry: sum_j R(b_j) / f_t(x), [N]."""
    return (r.total - r.input.flatten(1).sum(1)) / r.output


def bias_per_unit(r: relevance.Relevance) -> list[Tensor]:
    """The bias relevance of every unit: R(b_c) = sum over positions p of R(b_cp) for a
    Conv2d channel c (one constant input per position), R(b_j) for a Linear unit j.

    r.bias: per layer [N, H_l] or [N, C_l, H_l, W_l] -> per layer [N, H_l] or [N, C_l].
    """
    return [b.flatten(2).sum(2) if b.dim() > 2 else b for b in r.bias]


def _rank_rows(v: Tensor) -> Tensor:
    """Average ranks along each row (ties share their mean rank), [N, D] float64."""
    ranks = scipy.stats.rankdata(v.detach().double().cpu().numpy(), axis=1)
    return torch.from_numpy(ranks).to(v.device)


def row_correlation(a: Tensor, b: Tensor, *, kind: str = "spearman") -> Tensor:
    """Correlation of each row of ``a`` with the same row of ``b``: [N, D] x [N, D] -> [N].

    ``kind``: ``"pearson"`` or ``"spearman"`` (Pearson of average ranks). NaN for a constant row.
    """
    if kind not in AGREEMENTS:
        raise ValueError(f"row_correlation: kind {kind!r}; choose from {list(AGREEMENTS)}")
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"row_correlation: need two [N, D] tensors of one shape; got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    if kind == "spearman":
        a, b = _rank_rows(a), _rank_rows(b)
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def agreement_matrix(inputs: Mapping[str, Tensor], *, kind: str = "spearman") -> Tensor:
    """Mean over samples of :func:`row_correlation` between every two methods' input relevance.

    inputs: {method: Tensor[N, D]} -> Tensor[M, M] in the order of ``inputs`` (diagonal 1;
    samples where a method's relevance is constant are left out of that pair's mean).
    """
    names = list(inputs)
    M = len(names)
    out = torch.eye(M, dtype=torch.float64)
    for i in range(M):
        for j in range(i + 1, M):
            out[i, j] = out[j, i] = row_correlation(
                inputs[names[i]], inputs[names[j]], kind=kind
            ).nanmean()
    return out
