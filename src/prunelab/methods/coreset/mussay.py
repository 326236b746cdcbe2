"""Mussay et al.'s (2020) data-independent neuron coreset.

Neuron ``p = [W_p, b_p]`` is drawn with ``Pr(p) ∝ omega(p) |phi(beta ||p||)|``, ``omega(p) =
max_i |W_next[i, p]|``, for inputs ``[x; 1]`` in the L2 ball of radius ``beta``
(:func:`mussay_probabilities`); :func:`mussay_scale` and :func:`mussay_bound_name` give the
additive error bound (METHODS.md A4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...base import models

MONOTONE = ("relu", "leaky_relu", "tanh", "sigmoid", "identity")  # Mussay's bound needs these


def _mussay_terms(
    W: Tensor, b: Tensor | None, W_next: Tensor, beta: float, activation: str, slope: float
) -> Tensor:
    """``omega(p) Phi(p)`` per neuron: the bound on ``|W_next[i, p] phi(p . x~)|`` over the ball."""
    if activation not in MONOTONE:
        raise ValueError(
            f"Mussay coreset: activation {activation!r} is not monotone; choose from {MONOTONE}"
        )
    if not beta > 0:
        raise ValueError(f"Mussay coreset: beta (input ball radius) must be > 0; got {beta}")
    if W_next.dim() != 2 or W_next.shape[1] != W.shape[0]:
        raise ValueError(
            f"Mussay coreset: W_next must be [H_next, {W.shape[0]}]; got {list(W_next.shape)}"
        )
    bias = torch.zeros_like(W[:, 0]) if b is None else b
    points = torch.cat((W, bias.unsqueeze(1)), dim=1)  # p = [W_p, b_p]: (H, H_in + 1)
    r = beta * points.norm(dim=1)  # max of |p . x~| over ||x~|| <= beta
    # |phi(p . x~)| <= max(|phi(r)|, |phi(-r)|) for monotone phi; = |phi(beta ||p||)| if phi >= 0
    Phi = torch.maximum(
        models.phi(activation, r, slope).abs(), models.phi(activation, -r, slope).abs()
    )
    omega = W_next.abs().amax(dim=0)  # max_i |W_next[i, p]|
    return omega * Phi


def mussay_probabilities(
    W: Tensor,
    b: Tensor | None,
    W_next: Tensor,
    beta: float,
    *,
    activation: str = "relu",
    slope: float = 0.01,
) -> Tensor:
    """Mussay et al.'s neuron distribution ``Pr(p) ∝ omega(p) |phi(beta ||p||)|``.

    Neuron ``p`` of the layer is the point ``p = [W_p, b_p]`` and its inputs are ``x~ = [x;
    1]`` with ``||x~|| <= beta``; ``omega(p) = max_i |W_next[i, p]|`` shares one coreset among
    all next-layer neurons (Mussay et al. 2020, Alg. 1 and the official ``coreset.py``). For
    activations that can be negative (tanh, LeakyReLU, identity) ``|phi(beta ||p||)|`` becomes
    ``max(|phi(beta ||p||)|, |phi(-beta ||p||)|)``, the bound on ``|phi(p . x~)|`` over the
    ball; for ReLU and sigmoid the two agree. For ReLU ``beta`` cancels.

    Parameters
    ----------
    W : Tensor [H, H_in]
        Weights of the layer whose neurons are sampled.
    b : Tensor [H] or None
        Its bias (None for a layer without bias).
    W_next : Tensor [H_next, H]
        The next layer's weights, which read the neurons.
    beta : float
        Radius of the input ball, e.g. :func:`ball_radius` of the layer's inputs.
    activation : str
        The layer's activation, one of ``MONOTONE``.
    slope : float
        Negative slope for ``leaky_relu``.

    Returns
    -------
    Tensor [H], sums to 1.
    """
    t = _mussay_terms(W, b, W_next, beta, activation, slope)
    if not bool(t.sum() > 0):
        raise ValueError("mussay_probabilities: every neuron has omega(p) phi(beta ||p||) = 0")
    return t / t.sum()


def mussay_scale(
    W: Tensor,
    b: Tensor | None,
    W_next: Tensor,
    beta: float,
    *,
    activation: str = "relu",
    slope: float = 0.01,
) -> float:
    """Scale ``F = sum_p omega(p) |phi(beta ||p||)|`` of the additive bound: error ``<= eps F``.

    For fixed ``x~`` and next neuron ``i`` every draw ``T_i = W_next[i, p] phi(p . x~) / Pr(p)``
    has ``|T_i| <= F``, so with ``m`` from :func:`sample_size` (``"hoeffding"`` when ``W_next >=
    0`` and ``phi >= 0``, else ``"hoeffding_signed"``; ``union = H_next`` for all next neurons
    at once) the next layer's pre-activation moves by at most ``eps F`` with probability ``>= 1
    - delta`` (METHODS.md A4, [derived]). ``F`` is linear in a global factor on ``W_next`` and,
    for ReLU, in ``beta``. Arguments as in :func:`mussay_probabilities`.
    """
    return float(_mussay_terms(W, b, W_next, beta, activation, slope).sum())


def mussay_bound_name(W_next: Tensor, activation: str) -> str:
    """``"hoeffding"`` if every draw is non-negative (``W_next >= 0``, ``phi >= 0``), else signed."""
    nonnegative = bool((W_next >= 0).all()) and activation in ("relu", "sigmoid")
    return "hoeffding" if nonnegative else "hoeffding_signed"


def ball_radius(a: Tensor) -> float:
    """``beta = max_n ||[a_n; 1]||_2``: the smallest ball holding the inputs ``a: [N, H_in]``."""
    return float(torch.sqrt((a.detach() ** 2).sum(1) + 1).max())
