"""Sampling with replacement: multinomial counts, distinct units, and SiPP's weight sampling.

``n ~ Multinomial(m, q)`` and the unbiased reweighting ``w_hat_j = w_j n_j / (m q_j)``; the
number of distinct units kept by ``m`` draws has mean ``E[U(m)] = sum_j (1 - (1 - q_j)^m)``
(:func:`expected_unique`), which :func:`samples_for_size` inverts for sparsity-first pruning
(Gordon 2021). Deterministic SiPP (:func:`top_sensitivity`, :func:`deterministic_bound`) keeps
the top sensitivities instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sample_sizes import Number
from .sensitivity import split_signs

_DIRECT_DRAWS = 2**22  # up to this many draws in all, sample indices; beyond, binomial counts


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
        idx = _on(
            generator, safe, lambda t: torch.multinomial(t, max(M, 1), True, generator=generator)
        )
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
        p_j = cond[:, j].contiguous().to(generator.device)
        counts[:, j] = torch.binomial(rem.to(generator.device), p_j, generator=generator).to(
            q.device
        )
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
        idx = _on(generator, q, lambda t: torch.multinomial(t, chunk, True, generator=generator))
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


def _on(generator: torch.Generator, t: Tensor, draw) -> Tensor:
    """``draw(t)`` on the generator's device (a CPU generator draws on the CPU), back on ``t``'s."""
    return draw(t.to(generator.device)).to(t.device)
