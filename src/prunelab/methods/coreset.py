"""Coreset pruning: importance sampling of weights and neurons, with the sample sizes behind it.

A dense layer ``z = a W.T + b`` (``W: [H_out, H_in]``) is pruned by sampling its weights (or the
neurons feeding it) *with replacement* from an importance distribution ``q`` and reweighting what
was drawn so that the pruned layer is unbiased:

    n ~ Multinomial(m, q),      w_hat_j = w_j n_j / (m q_j)      (E[w_hat] = w)

Two families of ``q`` (METHODS.md A):

* **data-dependent sensitivities** (Baykal et al. 2019a, b; Liebenwein et al. 2020): on a batch
  S of inputs, the relative importance of weight ``j`` of neuron ``i`` is
  ``g_ij(x) = w_ij a_j(x) / sum_k w_ik a_k(x)`` and its sensitivity is ``s_ij = max_{x in S}
  g_ij(x)``, with signed weights split into ``W = W+ - W-`` and each part sampled on its own
  (:func:`sensitivities`, :func:`sample_weights`, :func:`prune_weights_sipp`); keeping the top
  sensitivities instead gives deterministic SiPP with an exact error bound on S
  (:func:`top_sensitivity`, :func:`deterministic_bound`). The neuron version (PFP) takes
  ``s_j = max_x max_i max(g+_ij, g-_ij)`` over the next layer (:func:`prune_neurons_pfp`);
* **the data-independent neuron coreset** of Mussay et al. (2020): neuron ``p = [W_p, b_p]``
  is drawn with ``Pr(p) ∝ omega(p) |phi(beta ||p||)|``, ``omega(p) = max_i |W_next[i, p]|``,
  for inputs ``[x; 1]`` in the L2 ball of radius ``beta`` (:func:`mussay_probabilities`,
  :func:`prune_neurons_mussay`).

Sample sizes come from a registry of bounds that all read ``m(eps) = (a + b eps) / eps^2``
(:data:`BOUNDS`, :func:`sample_size`, and the exact inverse :func:`implied_epsilon`); the
number of distinct units kept by ``m`` draws is random, with mean ``E[U(m)] = sum_j (1 - (1 -
q_j)^m)`` (:func:`expected_unique`), which :func:`samples_for_size` inverts for sparsity-first
pruning (Gordon 2021). Layer-by-layer composition of errors (CoreNet) closes the module.

Neuron pruning returns a *physically smaller* ``nn.Sequential``; weight pruning returns a copy
with the sparse weight. The input model is never modified. Every random step takes a
``torch.Generator``; sampling counts are exact multinomial draws in float64.

References
----------
Baykal, Liebenwein, Gilitschenski, Feldman, Rus (2019a). Data-dependent coresets for
compressing neural networks with applications to generalization bounds. ICLR 2019 ("CoreNet").
Baykal, Liebenwein, Gilitschenski, Feldman, Rus (2019b). SiPPing neural networks:
sensitivity-informed provable pruning of neural networks. arXiv 1910.05422 ("SiPP").
Liebenwein, Baykal, Lang, Feldman, Rus (2020). Provable filter pruning for efficient neural
networks. ICLR 2020 ("PFP"); code github lucaslie/torchprune.
Mussay, Osadchy, Braverman, Zhou, Feldman (2020). Data-independent neural pruning via
coresets. ICLR 2020.
Gordon (2021). When are neural pruning approximation bounds useful? ICLR 2021 submission.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..base import models, ops

_CHUNK_ELEMENTS = 2**24  # largest [2, n, H_out, H_in] block of relative importances at once
_DIRECT_DRAWS = 2**22  # up to this many draws in all, sample indices; beyond, binomial counts
_CEIL_SLACK = 1e-12  # m = ceil(x (1 - slack)): float noise in x never adds a whole sample
MONOTONE = ("relu", "leaky_relu", "tanh", "sigmoid", "identity")  # Mussay's bound needs these

Number = float | int | Tensor


# --- sensitivities ---------------------------------------------------------------------------


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


# --- sample sizes ------------------------------------------------------------------------------
# Every bound reads m(eps) = (a + b eps) / eps^2 with (a, b) from (delta, S, constants), so one
# closed form inverts them all: eps(m) = (b + sqrt(b^2 + 4 a m)) / (2 m).


def _bernstein(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] m = S (6 + 2 eps) ln(2/delta) / (3 eps^2): A = S ln(2/delta) / 3, (6A, 2A)."""
    A = S * torch.log(2 / delta) / 3
    return 6 * A, 2 * A


def _hoeffding(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] draws in [0, F]: m = ln(2/delta) / (2 eps^2) for error eps F."""
    return torch.log(2 / delta) / 2 * torch.ones_like(S), torch.zeros_like(S)


def _hoeffding_signed(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] draws in [-F, F]: m = 2 ln(2/delta) / eps^2 for error eps F."""
    return 2 * torch.log(2 / delta) * torch.ones_like(S), torch.zeros_like(S)


def _corenet(delta: Tensor, S: Tensor, *, K: float, eta: float) -> tuple[Tensor, Tensor]:
    """[recall] CoreNet: m = 8 S K log(8 eta / delta) / eps^2 (eta = number of neurons)."""
    return 8 * S * K * torch.log(8 * eta / delta), torch.zeros_like(S)


def _sipp(delta: Tensor, S: Tensor, *, K: float, eta: float, c: float) -> tuple[Tensor, Tensor]:
    """[recall] SiPP/PFP: m = (6 + 2 eps) S K log(c eta / delta) / eps^2."""
    X = S * K * torch.log(c * eta / delta)
    return 6 * X, 2 * X


def _torchprune(
    delta: Tensor, S: Tensor, *, C: float = 3.0, patches: int = 1, kernel: int = 1
) -> tuple[Tensor, Tensor]:
    """[code] torchprune: m = 3 (6 + 2 eps) alpha S / eps^2, alpha = 2 C ln(8 (p + 1) kappa / delta)."""
    alpha = 2 * C * torch.log(8 * (patches + 1) * kernel / delta)
    return 18 * alpha * S, 6 * alpha * S


#: Sample-size bounds by name: ``(delta, S, **constants) -> (a, b)`` with ``m = (a + b eps)/eps^2``.
BOUNDS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "bernstein": _bernstein,
    "hoeffding": _hoeffding,
    "hoeffding_signed": _hoeffding_signed,
    "corenet": _corenet,
    "sipp": _sipp,
    "torchprune": _torchprune,
}
_NEEDS_SENSITIVITY = frozenset({"bernstein", "corenet", "sipp", "torchprune"})


def _coefficients(
    fn: str, delta: Number, sensitivity: Number | None, bound: str, union: int, constants: Mapping
) -> tuple[Tensor, Tensor]:
    if bound not in BOUNDS:
        raise KeyError(f"{fn}: bound {bound!r}; choose from {sorted(BOUNDS)}")
    d = torch.as_tensor(delta, dtype=torch.float64)
    if not bool(((d > 0) & (d < 1)).all()):
        raise ValueError(f"{fn}: delta must be in (0, 1); got {delta}")
    if not (isinstance(union, int) and union >= 1):
        raise ValueError(
            f"{fn}: union (events in the union bound) must be an int >= 1; got {union}"
        )
    if sensitivity is None:
        if bound in _NEEDS_SENSITIVITY:
            raise ValueError(f"{fn}: bound {bound!r} needs the total sensitivity S")
        sensitivity = 1.0
    S = torch.as_tensor(sensitivity, dtype=torch.float64)
    if not bool((S >= 0).all()) or not bool(torch.isfinite(S).all()):
        raise ValueError(f"{fn}: sensitivity must be finite and >= 0; got {sensitivity}")
    rule = BOUNDS[bound]
    params = inspect.signature(rule).parameters
    known = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    required = [p for p in known if params[p].default is inspect.Parameter.empty]
    unknown = sorted(set(constants) - set(known))
    missing = [p for p in required if p not in constants]
    if unknown or missing:
        raise ValueError(
            f"{fn}: bound {bound!r} takes constants {known} (required: {required}); "
            f"got {sorted(constants)}"
        )
    return rule(d / union, S, **constants)


def _like(value: Tensor, *inputs: object) -> Number:
    """Return a Python number when every input was one, else the tensor."""
    if any(isinstance(x, Tensor) for x in inputs):
        return value
    return value.item()


def sample_size(
    eps: Number,
    delta: Number,
    sensitivity: Number | None = None,
    *,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Number:
    """Number of i.i.d. draws ``m`` that meets a relative (or additive) error ``eps`` w.p. 1 - delta.

    Every bound in :data:`BOUNDS` has the form ``m = ceil((a + b eps) / eps^2)``:

    ``"bernstein"`` [derived, METHODS.md A1]
        ``m_B = ceil(S (6 + 2 eps) ln(2/delta) / (3 eps^2))``. For fixed x with ``g_j(x) <=
        s_j``, each draw ``T = w_J a_J / (q_J z)`` lies in ``[0, S]`` with mean 1 and variance
        ``<= S``, so Bernstein's inequality gives ``P(|z_hat/z - 1| >= eps) <= 2 exp(-3 m eps^2
        / (S (6 + 2 eps)))``.
    ``"hoeffding"`` [derived, A4]
        ``m = ceil(ln(2/delta) / (2 eps^2))``: draws in ``[0, F]``, additive error ``eps F``
        (Mussay's coreset with non-negative outgoing weights). ``sensitivity`` is ignored.
    ``"hoeffding_signed"`` [derived, A4]
        ``m = ceil(2 ln(2/delta) / eps^2)``: draws in ``[-F, F]``.
    ``"corenet"`` [recall, Baykal et al. 2019a]
        ``m = ceil(8 S K log(8 eta / delta) / eps^2)``; constants ``K`` and ``eta`` (number of
        neurons).
    ``"sipp"`` [recall, Baykal et al. 2019b; Liebenwein et al. 2020]
        ``m = ceil((6 + 2 eps) S K log(c eta / delta) / eps^2)``; constants ``K``, ``eta``, ``c``
        (confirm against the paper before relying on them).
    ``"torchprune"`` [code, lucaslie/torchprune ``sipp_allocator``]
        ``m = ceil(3 (6 + 2 eps) alpha S / eps^2)``, ``alpha = 2 C ln(8 (p + 1) kappa /
        delta)``; constants ``C=3``, ``patches=1`` (p), ``kernel=1`` (kappa) for Linear layers.

    Parameters
    ----------
    eps : float or Tensor
        Target error (> 0); relative for the sensitivity bounds, a fraction of ``F`` for Hoeffding.
    delta : float or Tensor
        Failure probability in (0, 1).
    sensitivity : float or Tensor, optional
        Total sensitivity ``S = sum_j s_j`` (>= 0; ``S = 0`` needs no samples). Tensors give
        one sample size per entry, e.g. ``S: [2, H_out]`` from ``sensitivities(...).sum(-1)``.
    bound : str
        A key of :data:`BOUNDS`.
    union : int
        Number of events covered at once by a union bound: ``delta`` is replaced by
        ``delta / union`` (e.g. ``union = H_next`` for every next-layer neuron of Mussay's bound).
    **constants
        The bound's constants, see above.

    Returns
    -------
    int, or int64 Tensor when any argument is a tensor.

    Raises
    ------
    KeyError
        If ``bound`` is unknown.
    ValueError
        For ``eps <= 0``, ``delta`` outside (0, 1), a negative ``sensitivity``, or missing or
        unknown constants.
    """
    e = torch.as_tensor(eps, dtype=torch.float64)
    if not bool((e > 0).all()) or not bool(torch.isfinite(e).all()):
        raise ValueError(f"sample_size: eps must be finite and > 0; got {eps}")
    a, b = _coefficients("sample_size", delta, sensitivity, bound, union, constants)
    m = torch.ceil((a + b * e) / e**2 * (1 - _CEIL_SLACK)).to(torch.int64)
    return _like(m, eps, delta, sensitivity)


def implied_epsilon(
    m: Number,
    delta: Number,
    sensitivity: Number | None = None,
    *,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Number:
    """The error ``eps`` that ``m`` draws guarantee: the exact inverse of :func:`sample_size`.

    Solving ``m eps^2 = a + b eps`` for ``eps > 0`` gives

        eps(m) = (b + sqrt(b^2 + 4 a m)) / (2 m),

    which for Bernstein (``a = 6A``, ``b = 2A``, ``A = S ln(2/delta) / 3``) is ``(A + sqrt(A^2
    + 6 A m)) / m`` (METHODS.md A1, A5) and for Hoeffding ``sqrt(a / m)``. Used by
    sparsity-first pruning: choose ``m``, report the ``eps`` it guarantees. Zero sensitivity
    gives ``eps = 0``; ``m = 0`` gives ``inf``.

    Parameters are those of :func:`sample_size`, with ``m >= 0`` in place of ``eps``.

    Returns
    -------
    float, or float64 Tensor when any argument is a tensor.
    """
    mt = torch.as_tensor(m, dtype=torch.float64)
    if not bool((mt >= 0).all()):
        raise ValueError(f"implied_epsilon: m must be >= 0; got {m}")
    a, b = _coefficients("implied_epsilon", delta, sensitivity, bound, union, constants)
    eps = (b + torch.sqrt(b**2 + 4 * a * mt)) / (2 * mt)
    eps = torch.where(a + b == 0, 0.0, eps)
    return _like(eps, m, delta, sensitivity)


# --- sampling ----------------------------------------------------------------------------------


def sample_counts(q: Tensor, m: Number, *, generator: torch.Generator) -> Tensor:
    """Counts ``n`` of ``m`` i.i.d. draws with replacement from ``q``: ``n ~ Multinomial(m, q)``.

    Exact for any ``m`` (up to 2^53): few draws are sampled as indices
    (``torch.multinomial`` with replacement); many are drawn as a chain of binomials, ``n_j ~
    Bin(m - sum_{k<j} n_k, q_j / sum_{k>=j} q_k)``, whose cost is ``O(n)`` tensor operations
    whatever ``m`` is.

    Parameters
    ----------
    q : Tensor [..., n]
        Non-negative weights of each batch row (normalised here); a row with ``m > 0`` needs a
        positive sum.
    m : int or Tensor
        Number of draws, broadcastable to ``q.shape[:-1]``.
    generator : torch.Generator
        Source of randomness.

    Returns
    -------
    Tensor [..., n], int64, with ``n.sum(-1) == m``.
    """
    if q.dim() == 0 or not bool((q >= 0).all()) or not bool(torch.isfinite(q).all()):
        raise ValueError("sample_counts: q must be a finite, non-negative tensor [..., n]")
    batch, n = q.shape[:-1], q.shape[-1]
    q = q.detach().to(torch.float64).reshape(-1, n)  # (R, n)
    total = q.sum(-1, keepdim=True)
    q = torch.where(total > 0, q / torch.where(total > 0, total, 1), 0)
    mt = torch.as_tensor(m, dtype=torch.float64, device=q.device)
    if not bool((mt >= 0).all()) or not bool((mt == mt.round()).all()):
        raise ValueError(f"sample_counts: m must be non-negative integers; got {m}")
    rem = mt.expand(batch).reshape(-1).clone()  # (R,)
    if bool(((rem > 0) & (total[:, 0] == 0)).any()):
        raise ValueError("sample_counts: a row of q sums to zero but asks for m > 0 draws")
    R, M = rem.shape[0], int(rem.max()) if rem.numel() else 0
    if M * R <= _DIRECT_DRAWS:  # few draws: draw the indices themselves
        safe = torch.where(total > 0, q, 1.0)  # rows with m = 0 may have q = 0
        idx = torch.multinomial(safe, max(M, 1), replacement=True, generator=generator)
        valid = torch.arange(max(M, 1), device=q.device) < rem.unsqueeze(1)  # (R, M)
        counts = torch.zeros_like(q).scatter_add_(1, idx, valid.to(q.dtype))
        return counts.to(torch.int64).reshape(*batch, n)
    tail = q.flip(-1).cumsum(-1).flip(-1)  # sum_{k >= j} q_k
    cond = torch.where(tail > 0, q / torch.where(tail > 0, tail, 1), 0).clamp(0, 1)
    last = torch.where(q > 0, torch.arange(n, device=q.device), -1).amax(-1)  # (R,)
    rows = torch.nonzero(last >= 0).squeeze(1)
    cond[rows, last[rows]] = 1.0  # whatever remains goes to the last unit with q > 0
    counts = torch.zeros_like(q)
    for j in range(n):
        counts[:, j] = torch.binomial(rem, cond[:, j].contiguous(), generator=generator)
        rem = rem - counts[:, j]
    return counts.to(torch.int64).reshape(*batch, n)


def sample_until_distinct(q: Tensor, k: int, *, generator: torch.Generator) -> tuple[Tensor, int]:
    """Draw i.i.d. from ``q`` until ``k`` distinct units have been drawn (Mussay et al.'s code).

    Returns the counts ``n: [n]`` (int64) and the number of draws ``m = n.sum()``; the last
    draw is the first of the k-th distinct unit. ``q: [n]`` needs at least ``k`` positive
    entries.
    """
    if q.dim() != 1 or not bool((q >= 0).all()):
        raise ValueError(f"sample_until_distinct: q must be non-negative [n]; got {list(q.shape)}")
    support = int((q > 0).sum())
    if not 0 <= k <= support:
        raise ValueError(
            f"sample_until_distinct: k must be in [0, {support}] (units with q > 0); got {k}"
        )
    q = q.detach().to(torch.float64)
    counts = torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
    seen, m = 0, 0
    chunk = max(64, 4 * k)
    while seen < k:
        idx = torch.multinomial(q, chunk, replacement=True, generator=generator)  # (chunk,)
        first = torch.full_like(counts, chunk).scatter_reduce(
            0, idx, torch.arange(chunk, device=q.device), "amin"
        )  # first position of each unit within the chunk
        new = (first[idx] == torch.arange(chunk, device=q.device)) & (counts[idx] == 0)
        reached = torch.nonzero(seen + new.cumsum(0) >= k)
        stop = int(reached[0]) + 1 if len(reached) else chunk
        counts += torch.bincount(idx[:stop], minlength=q.shape[0])
        seen += int(new[:stop].sum())
        m += stop
    return counts, m


def expected_unique(p: Tensor, m: Number) -> Tensor:
    """Expected number of distinct units in ``m`` draws: ``E[U(m)] = sum_j (1 - (1 - p_j)^m)``.

    Gordon (2021); torchprune ``base_util.expected_unique``. ``p: [..., n]`` probabilities
    along the last axis, ``m`` broadcastable to ``p.shape[:-1]``. Returns float64 ``[...]``.
    Computed as ``-expm1(m log1p(-p_j))`` for accuracy at small ``p_j``.
    """
    p = p.detach().to(torch.float64)
    mt = torch.as_tensor(m, dtype=torch.float64, device=p.device).unsqueeze(-1)
    return (-torch.expm1(mt * torch.log1p(-p))).sum(-1)


def samples_for_size(p: Tensor, k: Number) -> Tensor:
    """Sparsity-first sample count: the smallest ``m`` with ``E[U(m)] >= k`` (bisection).

    ``E[U(m)]`` (:func:`expected_unique`) increases with ``m``, so doubling then bisection finds
    ``m* = min{m : E[U(m)] >= k}`` exactly (torchprune ``adapt_sample_size``; METHODS.md A5).

    Parameters
    ----------
    p : Tensor [..., n]
        Sampling probabilities along the last axis.
    k : int or Tensor
        Target number of distinct units, broadcast against ``p.shape[:-1]``; ``0 <= k < n+``
        where ``n+`` counts the units with ``p > 0`` (``E[U]`` only tends to ``n+``), or
        ``k = n+ = 1``.

    Returns
    -------
    Tensor [...], int64.
    """
    p = p.detach().to(torch.float64)
    kt = torch.as_tensor(k, dtype=torch.float64, device=p.device)
    batch = torch.broadcast_shapes(p.shape[:-1], kt.shape)
    p, kt = p.expand(*batch, p.shape[-1]), kt.expand(batch)
    support = (p > 0).sum(-1)
    bad = (kt < 0) | (kt > support) | ((kt == support) & (support > 1))
    if bool(bad.any()):
        raise ValueError(
            f"samples_for_size: k must be in [0, n+) with n+ = units with p > 0 "
            f"(E[U(m)] < n+ for every finite m); got k={k} with n+={support.tolist()}"
        )
    lo = torch.zeros_like(kt)  # E[U(lo)] < k (or k = 0)
    hi = torch.ones_like(kt)
    while bool((expected_unique(p, hi) < kt).any()):
        hi = torch.where(expected_unique(p, hi) < kt, 2 * hi, hi)
    while bool((hi - lo > 1).any()):
        mid = torch.floor((lo + hi) / 2)
        ok = expected_unique(p, mid) >= kt
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return torch.where(kt <= 0, 0, hi).to(torch.int64)


def sample_weights(W: Tensor, s: Tensor, m: Number, *, generator: torch.Generator) -> Tensor:
    """SiPP random sparsification: sample each neuron's weights by sensitivity and reweight.

    For each output neuron ``i`` and part ``W+``/``W-`` (Baykal et al. 2019b, Alg. SPARSIFY),
    draw ``m`` indices i.i.d. from ``q_ij = s_ij / S_i`` with replacement and set ``w_hat_ij =
    w_ij n_ij / (m q_ij)`` (0 if never drawn); then ``W_hat = W_hat+ - W_hat-``. Each part is
    unbiased, ``E[W_hat] = W``, on the weights with ``s_ij > 0`` (the others are dropped: they
    never fired on S). A part with ``S_i = 0`` gets no samples.

    Parameters
    ----------
    W : Tensor [H_out, H_in]
    s : Tensor [2, H_out, H_in]
        Sensitivities from :func:`sensitivities`.
    m : int or Tensor
        Draws per part and neuron, broadcastable to ``[2, H_out]`` (e.g. ``sample_size(eps,
        delta, s.sum(-1))``).
    generator : torch.Generator

    Returns
    -------
    Tensor [H_out, H_in], same dtype as ``W``, with at most ``m`` non-zeros per part and row.
    """
    if s.shape != (2, *W.shape) or not bool((s >= 0).all()):
        raise ValueError(
            f"sample_weights: s must be non-negative [2, {W.shape[0]}, {W.shape[1]}] "
            f"(from sensitivities(W, a)); got shape {list(s.shape)}"
        )
    S = s.sum(-1)  # (2, H_out)
    mt = torch.as_tensor(m, dtype=torch.float64, device=W.device).expand(S.shape)
    mt = torch.where(S > 0, mt, 0)
    n = sample_counts(s, mt, generator=generator).to(torch.float64)  # (2, H_out, H_in)
    q = s.to(torch.float64) / torch.where(S > 0, S, 1).unsqueeze(-1).to(torch.float64)
    scale = torch.where(n > 0, n / (mt.unsqueeze(-1) * torch.where(q > 0, q, 1)), 0)
    parts = split_signs(W.detach()).to(torch.float64) * scale
    return (parts[0] - parts[1]).to(W.dtype)


def top_sensitivity(s: Tensor, keep: Number) -> Tensor:
    """Deterministic SiPP: keep the ``keep`` weights of each neuron with the largest sensitivity.

    Each weight belongs to one part, so it is ranked by ``s[0] + s[1]``; kept weights are not
    reweighted (torchprune ``SiPPAllocator``, deterministic). ``s: [2, H_out, H_in]``, ``keep``
    an int or ``[H_out]``. Returns the kept mask ``[H_out, H_in]`` (bool); ``W_hat = W * mask``.
    """
    score = s.sum(0)  # (H_out, H_in)
    H_out, H_in = score.shape
    k = torch.as_tensor(keep, device=s.device).expand(H_out)
    if bool(((k < 0) | (k > H_in)).any()):
        raise ValueError(f"top_sensitivity: keep must be in [0, {H_in}]; got {keep}")
    order = score.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(H_in, device=s.device).expand(H_out, H_in)
    )
    return rank < k.unsqueeze(1)


def deterministic_bound(W: Tensor, s: Tensor, kept: Tensor, a: Tensor) -> Tensor:
    """Error bound of deterministic SiPP: ``|z_i - z_hat_i| <= R+_i W+_i |a| + R-_i W-_i |a|``.

    ``R_i = sum_{j dropped} s_ij`` per part. For ``x`` in S the dropped share of each part is
    ``sum_{j dropped} g_ij(x) <= R_i``, so the bound holds on S with no failure probability; for
    non-negative weights and inputs it reads ``z - z_hat = z sum_{j dropped} g_j(x) <= R z``
    (METHODS.md A1). ``W: [H_out, H_in]``, ``s: [2, H_out, H_in]``, ``kept: [H_out, H_in]``
    bool, ``a: [N, H_in]`` -> ``[N, H_out]``.
    """
    R = (s * ~kept).sum(-1)  # (2, H_out)
    parts = split_signs(W)
    return R[0] * (a.abs() @ parts[0].T) + R[1] * (a.abs() @ parts[1].T)


# --- Mussay et al.'s data-independent neuron coreset -----------------------------------------


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


# --- whole models ------------------------------------------------------------------------------


class Pruned(NamedTuple):
    """A pruned copy of a model and what the sampling did.

    ``model`` is a new ``nn.Sequential`` (the input is untouched). ``samples`` is the number of
    i.i.d. draws ``m`` (``[2, H_out]`` per part and neuron for weights, a scalar for neurons;
    None for deterministic pruning). ``kept`` is the bool mask of what survived: ``[H_out,
    H_in]`` weights, or ``[H]`` neurons of the pruned hidden layer.
    """

    model: nn.Sequential
    samples: Tensor | None
    kept: Tensor


def _parse(model: nn.Module, fn: str, activations: Sequence[str] | None = None) -> models.Net:
    net = models.parse(model, method=fn, activations=activations)
    if len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError(f"{fn}: a Linear module appears twice in the model (shared weights)")
    return net


def _layer_index(net: models.Net, layer: int, fn: str, *, hidden: bool) -> int:
    n = len(net.hidden) if hidden else len(net.layers)
    what = "hidden layer" if hidden else "dense layer"
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ValueError(f"{fn}: layer must be a {what} index in [0, {n}); got {layer!r}")
    return layer % n


def layer_inputs(model: nn.Module, layer: int, x: Tensor) -> Tensor:
    """Inputs ``a^{l-1}: [N, H_in]`` of dense layer ``layer`` (index into ``parse(model).layers``).

    Evaluation mode (dropout is the identity), no gradients; ``x`` is cast to the weights' dtype.
    """
    net = _parse(model, "coreset.layer_inputs")
    layer = _layer_index(net, layer, "coreset.layer_inputs", hidden=False)
    x = net.inputs(x).to(net.layers[0].weight.dtype)
    if layer == 0:
        return x
    with torch.no_grad():
        return ops.forward(net.view, x, taps=True, training=False)[1][layer - 1]


def _replace(model: nn.Sequential, new: Mapping[int, nn.Linear]) -> nn.Sequential:
    """A deep copy of ``model`` with the modules at the given positions replaced."""
    out = copy.deepcopy(model)
    for position, module in new.items():
        out[position] = module
    return out


def _draws(
    fn: str, eps: Number | None, samples: Number | None, delta: Number | None, **kwargs
) -> Number:
    """``m`` from exactly one of ``eps`` (with ``delta``) or ``samples``."""
    if (eps is None) == (samples is None):
        raise ValueError(f"{fn}: give exactly one of eps (with delta) or samples")
    if samples is not None:
        return samples
    if delta is None:
        raise ValueError(f"{fn}: eps needs delta, the failure probability in (0, 1)")
    return sample_size(eps, delta, **kwargs)


def _one_budget(fn: str, eps: object, samples: object, size: object) -> None:
    given = [
        name for name, v in (("eps", eps), ("samples", samples), ("size", size)) if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"{fn}: give exactly one of eps (with delta), samples (draws m) or size (distinct "
            f"neurons); got {given or 'none'}"
        )


def prune_weights_sipp(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    *,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: Number | None = None,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Pruned:
    """Sparsify the weights of one dense layer by SiPP sensitivity sampling (Baykal et al. 2019b).

    Sensitivities come from the layer's inputs on the batch ``x`` (the set S); each neuron's
    positive and negative parts get ``m = sample_size(eps, delta, S_part, bound=bound)`` draws
    (or ``samples``), and :func:`sample_weights` reweights them. Guarantee [recall]: for ``x ~
    D`` like S, ``|z_hat - z| <= eps (z+ + z-)`` with probability ``>= 1 - 2 delta`` per neuron
    and input. The bias is kept.

    Parameters
    ----------
    model : nn.Sequential
    layer : int
        Index of the dense layer in ``parse(model).layers`` (``-1``: the output layer).
    x : Tensor [N, D]
        Model inputs forming the sensitivity batch S.
    generator : torch.Generator
    eps, delta : float, optional
        Relative error and failure probability (epsilon-first).
    samples : int or Tensor, optional
        Draws per part and neuron, broadcastable to ``[2, H_out]`` (sparsity-first).
    bound, union, **constants
        Passed to :func:`sample_size`.

    Returns
    -------
    Pruned
        ``samples: [2, H_out]``; ``kept: [H_out, H_in]``.
    """
    fn = "coreset.prune_weights_sipp"
    net = _parse(model, fn)
    dense = net.layers[_layer_index(net, layer, fn, hidden=False)]
    W = dense.weight.detach()
    s = sensitivities(W, layer_inputs(model, layer, x))
    S = s.sum(-1)  # (2, H_out)
    m = _draws(fn, eps, samples, delta, sensitivity=S, bound=bound, union=union, **constants)
    m = torch.where(S > 0, torch.as_tensor(m, dtype=torch.int64).expand(S.shape), 0)
    W_hat = sample_weights(W, s, m, generator=generator)
    bias = None if dense.bias is None else dense.bias.detach()
    return Pruned(_replace(model, {dense.position: models.linear(W_hat, bias)}), m, W_hat != 0)


def prune_weights_topk(model: nn.Sequential, layer: int, x: Tensor, *, keep: Number) -> Pruned:
    """Deterministic SiPP: keep each neuron's ``keep`` most sensitive weights, no reweighting.

    Sensitivities are taken on the batch ``x``; the error on S obeys
    :func:`deterministic_bound` exactly. ``layer`` indexes ``parse(model).layers``; ``keep`` is
    an int or ``[H_out]``. Returns :class:`Pruned` with ``samples=None``.
    """
    fn = "coreset.prune_weights_topk"
    net = _parse(model, fn)
    dense = net.layers[_layer_index(net, layer, fn, hidden=False)]
    W = dense.weight.detach()
    kept = top_sensitivity(sensitivities(W, layer_inputs(model, layer, x)), keep)
    bias = None if dense.bias is None else dense.bias.detach()
    return Pruned(_replace(model, {dense.position: models.linear(W * kept, bias)}), None, kept)


def prune_neurons(
    model: nn.Sequential,
    layer: int,
    probs: Tensor,
    *,
    generator: torch.Generator,
    samples: int | None = None,
    size: int | None = None,
) -> Pruned:
    """Sample the neurons of a hidden layer from ``probs`` and build the smaller model.

    Draw ``m`` neurons i.i.d. with replacement (``samples = m``), or until ``size`` distinct
    neurons have been drawn (Mussay et al.'s code); keep the neurons with ``n_p > 0`` and scale
    the next layer's columns by ``n_p / (m Pr(p))``, which makes the next layer's
    pre-activation unbiased. The kept neurons' rows are read from the point matrix ``P = [W,
    b]``: weights from ``P[:, :-1]``, the bias from the **last** column ``P[:, -1]`` (the
    official code reads column 1, a slip; METHODS.md A4).

    Parameters
    ----------
    model : nn.Sequential
    layer : int
        Hidden-layer index (into ``parse(model).hidden``) whose neurons are sampled.
    probs : Tensor [H]
        Sampling distribution over its neurons (e.g. :func:`mussay_probabilities`).
    generator : torch.Generator
    samples, size : int
        Exactly one: the number of draws ``m``, or the number of distinct neurons to keep.

    Returns
    -------
    Pruned
        A model whose hidden layer has ``kept.sum()`` neurons; ``samples`` is ``m``.
    """
    fn = "coreset.prune_neurons"
    net = _parse(model, fn)
    layer = _layer_index(net, layer, fn, hidden=True)
    H = net.layers[layer].width
    if probs.shape != (H,) or not bool((probs >= 0).all()) or not bool(probs.sum() > 0):
        raise ValueError(f"{fn}: probs must be a distribution over the layer's {H} neurons")
    p = probs.detach().to(torch.float64) / probs.sum()
    if (samples is None) == (size is None):
        raise ValueError(f"{fn}: give exactly one of samples (draws m) or size (distinct neurons)")
    if size is not None:
        if not (isinstance(size, int) and 1 <= size <= int((p > 0).sum())):
            raise ValueError(
                f"{fn}: size must be an int in [1, {int((p > 0).sum())}] (neurons with "
                f"probability > 0); got {size!r}"
            )
        counts, m = sample_until_distinct(p, size, generator=generator)
    else:
        if not (isinstance(samples, int) and samples >= 1):
            raise ValueError(f"{fn}: samples must be an int >= 1; got {samples!r}")
        counts, m = sample_counts(p, samples, generator=generator), samples
    kept = counts > 0
    scale = torch.zeros(H, dtype=torch.float64, device=p.device)
    scale[kept] = counts[kept].to(torch.float64) / (m * p[kept])  # n_p / (m Pr(p))
    removed = {layer: (~kept).nonzero().squeeze(1)}
    new = ops.remove_units(model, net.view, removed, scale={layer: scale}, method=fn)[0]
    return Pruned(new, torch.tensor(m), kept)


def prune_neurons_mussay(
    model: nn.Sequential,
    layer: int,
    *,
    beta: float,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: int | None = None,
    size: int | None = None,
) -> Pruned:
    """Mussay et al. (2020) data-independent coreset of one hidden layer's neurons.

    ``Pr(p) = omega(p) |phi(beta ||p||)| / sum_q omega(q) |phi(beta ||q||)|`` with ``p = [W_p,
    b_p]`` and ``omega(p) = max_i |W_next[i, p]|`` (:func:`mussay_probabilities`); then
    :func:`prune_neurons`. Epsilon-first: ``m = sample_size(eps, delta, bound=
    mussay_bound_name(W_next, phi), union=H_next)``, after which, with probability ``>= 1 -
    delta``, every next-layer pre-activation at a fixed input in the ball moves by at most ``eps
    * mussay_scale(...)``. Or give ``samples`` (m draws) or ``size`` (distinct neurons).

    Parameters
    ----------
    model : nn.Sequential
        Hidden activations must be monotone (``MONOTONE``).
    layer : int
        Hidden-layer index whose neurons are sampled.
    beta : float
        Radius of the L2 ball holding the layer's inputs ``[x; 1]`` (:func:`ball_radius`).
    generator : torch.Generator
    eps, delta, samples, size
        Exactly one of ``eps`` (with ``delta``), ``samples`` or ``size``.
    """
    fn = "coreset.prune_neurons_mussay"
    net = _parse(model, fn, activations=MONOTONE)
    layer = _layer_index(net, layer, fn, hidden=True)
    dense, nxt = net.layers[layer], net.layers[layer + 1]
    W_next = nxt.weight.detach()
    bias = None if dense.bias is None else dense.bias.detach()
    probs = mussay_probabilities(
        dense.weight.detach(), bias, W_next, beta, activation=dense.activation, slope=dense.slope
    )
    _one_budget(fn, eps, samples, size)
    if eps is not None or samples is not None:
        name = mussay_bound_name(W_next, dense.activation)
        samples = int(_draws(fn, eps, samples, delta, bound=name, union=nxt.width))
    return prune_neurons(model, layer, probs, generator=generator, samples=samples, size=size)


def prune_neurons_pfp(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    *,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: int | None = None,
    size: int | None = None,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Pruned:
    """Data-dependent neuron sampling (PFP, Liebenwein et al. 2020) of one hidden layer.

    ``Pr(j) = s_j / S`` with the PFP sensitivities ``s_j = max_{x in S} max_i max(g+_ij,
    g-_ij)`` of the neurons as inputs of the next layer (:func:`neuron_sensitivities`), then
    :func:`prune_neurons`. Epsilon-first uses ``m = sample_size(eps, delta, S, bound=bound)``.
    ``x: [N, D]`` are model inputs forming S; other arguments as in
    :func:`prune_neurons_mussay`.
    """
    fn = "coreset.prune_neurons_pfp"
    net = _parse(model, fn)
    layer = _layer_index(net, layer, fn, hidden=True)
    s = neuron_sensitivities(
        net.layers[layer + 1].weight.detach(), layer_inputs(model, layer + 1, x)
    )
    _one_budget(fn, eps, samples, size)
    if eps is not None or samples is not None:
        kw = dict(sensitivity=float(s.sum()), bound=bound, union=union, **constants)
        samples = int(_draws(fn, eps, samples, delta, **kw))
    return prune_neurons(model, layer, s, generator=generator, samples=samples, size=size)


# --- layer-by-layer composition (CoreNet, Baykal et al. 2019a, Alg. 1) [recall] ---------------


def cancellation(W: Tensor, a: Tensor) -> Tensor:
    """Sign-cancellation factor ``Delta_i(x) = sum_k |w_ik a_k(x)| / |sum_k w_ik a_k(x)|``.

    ``W: [H_out, H_in]``, ``a: [N, H_in]`` -> ``[N, H_out]`` (>= 1; ``inf`` where ``z = 0`` but
    some term is not, 1 where every term is 0). It turns the per-part relative error into one
    on ``z``: ``|z_hat - z| <= eps (z+ + z-) = eps Delta |z|`` (METHODS.md A1).
    """
    num = a.abs() @ W.abs().T
    den = (a @ W.T).abs()
    return torch.where(num == 0, 1.0, num / den)


def kappa(delta: float, eta: int, eta_star: int) -> float:
    """CoreNet's slack ``kappa = sqrt(2 l) (1 + sqrt(2 l) log(8 eta eta* / delta))``, ``l = log(eta eta*)/2``.

    ``eta``: total number of neurons; ``eta_star``: largest layer width (METHODS.md A2 [recall]).
    """
    lam = math.log(eta * eta_star) / 2
    return math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * eta * eta_star / delta))


def delta_hat(Delta: Tensor, kappa: float = 0.0) -> float:
    """``Delta_hat^l = max_i mean_{x in S} Delta_i^l(x) + kappa`` from ``Delta: [N, H_out]``."""
    return float(Delta.mean(0).amax()) + kappa


def layer_epsilons(eps: float, delta_hats: Sequence[float]) -> list[float]:
    """Per-layer targets ``eps_l = eps' / prod_{k >= l} Delta_hat^k`` with ``eps' = eps / (2 (L-1))``.

    ``delta_hats`` holds ``Delta_hat^l`` for each of the ``L - 1`` weight layers, input side
    first. Sparsifying layer ``l`` to ``eps_l`` (fed by the already compressed lower layers)
    gives ``f_hat(x) in (1 +- eps) f(x)`` w.h.p. (CoreNet Alg. 1; METHODS.md A2 [recall]); with
    only the last layer pruned use ``delta_hats = [Delta_hat^L]`` (Gordon's setting).
    """
    n = len(delta_hats)
    if n == 0 or not eps > 0:
        raise ValueError(f"layer_epsilons: need eps > 0 and >= 1 layer; got {eps}, {delta_hats}")
    base = eps / (2 * n)
    return [base / math.prod(delta_hats[layer:]) for layer in range(n)]


def compounded_error(epsilons: Sequence[float]) -> float:
    """Relative output error ``prod_l (1 + eps_l) - 1`` when each positive layer errs by ``eps_l``.

    ``(1 + eps')^(L-1) - 1 <= 2 (L-1) eps'`` when ``(L-1) eps' <= 1`` (METHODS.md A2).
    """
    return math.prod(1 + e for e in epsilons) - 1
