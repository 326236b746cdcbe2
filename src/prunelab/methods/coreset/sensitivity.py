"""Data-dependent sensitivities of weights and neurons (SiPP, PFP, CoreNet).

On a batch S of inputs, the relative importance of weight ``j`` of neuron ``i`` is
``g_ij(x) = w_ij a_j(x) / sum_k w_ik a_k(x)`` and its sensitivity is ``s_ij = max_{x in S}
g_ij(x)``, with signed weights split into ``W = W+ - W-`` and each part taken on its own
(Baykal et al. 2019a, b). The neuron version (PFP, Liebenwein et al. 2020) takes ``s_j = max_x
max_i max(g+_ij, g-_ij)`` over the next layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 2**24  # largest [2, n, H_out, H_in] block of relative importances at once


def split_signs(W: Tensor) -> Tensor:
    """Positive and negative parts ``[W+, W-] = [max(W, 0), max(-W, 0)]``, so ``W = W+ - W-``.

    ``W: [H_out, H_in] -> [2, H_out, H_in]``.
    """
    return torch.stack((W.clamp(min=0), (-W).clamp(min=0)))


def _nonnegative(a: Tensor) -> Tensor:
    """``[a+; a-]`` stacked as samples when ``a`` has negative entries (torchprune), else ``a``."""
    if bool((a < 0).any()):
        return torch.cat((a.clamp(min=0), (-a).clamp(min=0)))
    return a


def _check_layer(W: Tensor, a: Tensor, fn: str) -> None:
    if W.dim() != 2:
        raise ValueError(f"{fn}: W must be a matrix [H_out, H_in]; got shape {list(W.shape)}")
    if a.dim() != 2 or a.shape[1] != W.shape[1] or a.shape[0] == 0:
        raise ValueError(
            f"{fn}: a must be [N, {W.shape[1]}] with N >= 1 (inputs of a layer with W "
            f"{list(W.shape)}); got shape {list(a.shape)}"
        )
    if not (bool(torch.isfinite(W).all()) and bool(torch.isfinite(a).all())):
        raise ValueError(f"{fn}: W and a must be finite")


def _importance(parts: Tensor, a: Tensor) -> Tensor:
    """``g[p, n, i, j] = parts[p, i, j] a[n, j] / sum_k parts[p, i, k] a[n, k]`` (0 where 0/0)."""
    num = parts.unsqueeze(1) * a[None, :, None, :]  # (2, N, H_out, H_in)
    den = num.sum(-1, keepdim=True)  # (2, N, H_out, 1)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0)


def relative_importance(W: Tensor, a: Tensor) -> Tensor:
    """Relative importances ``g_ij(x) = w_ij a_j(x) / sum_k w_ik a_k(x)`` of each signed part.

    For non-negative weights and inputs, ``g_ij(x) in [0, 1]`` and ``sum_j g_ij(x) = 1``
    wherever the neuron's input is non-zero (Baykal et al. 2019a, eq. for g; METHODS.md A1).
    Signed weights are split, ``W = W+ - W-``, and ``g`` is computed for each part. Negative
    inputs are split the same way, ``a = a+ - a-``, and ``a+`` and ``a-`` enter as separate
    samples (as torchprune's tracker does). A sample on which a neuron's part has no input
    (``sum_k w_ik a_k(x) = 0``) gets ``g = 0``.

    Parameters
    ----------
    W : Tensor [H_out, H_in]
        The layer's weights (bias excluded: it is not sampled).
    a : Tensor [N, H_in]
        The layer's inputs on the batch S.

    Returns
    -------
    Tensor [2, N', H_out, H_in]
        ``g[0]`` for ``W+``, ``g[1]`` for ``W-``; ``N' = N``, or ``2N`` when ``a`` has negative
        entries (rows ``N..2N-1`` are the ``a-`` samples).
    """
    _check_layer(W, a, "relative_importance")
    return _importance(split_signs(W), _nonnegative(a))


def sensitivities(W: Tensor, a: Tensor) -> Tensor:
    """Empirical sensitivities ``s_ij = max_{x in S} g_ij(x)`` of every weight, per signed part.

    ``g`` is :func:`relative_importance`; the maximum runs over the batch in chunks, so memory
    stays bounded for wide layers. The total sensitivity of neuron ``i``'s part is ``S_i =
    sum_j s_ij`` (``1 <= S_i <= H_in`` when the part is active on S) and its sampling
    distribution is ``q_ij = s_ij / S_i`` (Baykal et al. 2019a, 2019b; torchprune
    ``base_sens_tracker``).

    Parameters
    ----------
    W : Tensor [H_out, H_in]
        Weights of the layer to sparsify.
    a : Tensor [N, H_in]
        Its inputs on the sensitivity batch S (e.g. :func:`layer_inputs`).

    Returns
    -------
    Tensor [2, H_out, H_in]
        ``s[0]`` for ``W+ = max(W, 0)``, ``s[1]`` for ``W- = max(-W, 0)``; zero wherever the
        part's weight is zero.
    """
    _check_layer(W, a, "sensitivities")
    parts = split_signs(W)
    a = _nonnegative(a)
    n = max(1, _CHUNK_ELEMENTS // max(1, 2 * W.numel()))  # samples per chunk
    s = torch.zeros_like(parts)
    for chunk in a.split(n):
        s = torch.maximum(s, _importance(parts, chunk).amax(1))
    return s


def neuron_sensitivities(W_next: Tensor, a: Tensor) -> Tensor:
    """PFP sensitivity of each input neuron ``j``: ``s_j = max_x max_i max(g+_ij(x), g-_ij(x))``.

    Liebenwein et al. (2020), Sec. 3 (torchprune ``PFPTracker``). ``W_next: [H_next, H]``
    reads the neurons; ``a: [N, H]`` are their activations on S. Returns ``s: [H]``.
    """
    return sensitivities(W_next, a).amax(dim=(0, 1))
