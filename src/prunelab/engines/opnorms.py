"""Operator norms of linear maps given as functions, and the l2 Lipschitz constant of max pooling.

The certificates of :mod:`prunelab.bounds` multiply the l2 operator norms of the linear pieces
of a network (a convolution at its actual input size, with an eval-mode BatchNorm folded in,
an average pool, a Flatten, and their compositions), never the norm of a kernel reshaped to a
matrix. A linear map is handed over as a function ``fn: Tensor[B, *in] -> Tensor[B, *out]``:

* small maps (``D_out * D_in <= MAX_DENSE`` entries) are built densely, by applying ``fn`` to
  the identity basis (or its adjoint to the output basis, whichever is smaller), and their
  norm is the largest singular value (``torch.linalg.matrix_norm(ord=2)``): exact;
* larger maps use Lanczos on ``A^T A`` (``A^T`` by autograd) with full reorthogonalisation,
  from a seeded random start, until the residual ``r`` of the top Ritz pair is below ``tol``
  times its Ritz value ``theta``; the value returned is ``sqrt(theta + r)``. ``theta`` never
  exceeds ``lambda_max(A^T A)`` (Cauchy interlacing) and some eigenvalue lies within ``r`` of
  it, so with the top eigenvalue found (what Lanczos from a random start does) the result is
  at most ``r / (2 theta) <= tol / 2`` (relatively) *above* the norm, never below it. Power
  iteration is not used: on convolutions, whose top singular values crowd together, it is
  still about 1e-3 low after 200 steps where Lanczos is converged to 1e-11 in under 100.

``sets`` restricts the map to some input channels (the first input axis): the norm of
``A R_S`` with ``R_S`` the embedding of the channels ``S``, for several sets at once (one
Lanczos run per set, batched).

Max pooling is not linear; each output is the largest input of its window, so
``|max_W u - max_W v| <= max_W |u - v|`` and ``||pool(u) - pool(v)||_2^2 <= sum_i m_i
(u_i - v_i)^2``, with ``m_i`` the number of windows holding input i. Its l2 Lipschitz constant
is ``sqrt(max_i m_i)`` (attained by moving one input that is the maximum of all its windows):
1 for non-overlapping windows, 2 for 3x3 windows with stride 2 (:func:`pool_multiplicity`).
In the infinity norm every max pool is 1-Lipschitz.

Shapes: ``B`` maps or vectors at once, ``D_in``/``D_out`` the flattened sizes of one sample.

References
----------
C. Lanczos (1950), "An iteration method for the solution of the eigenvalue problem of linear
differential and integral operators", J. Res. Nat. Bur. Standards 45; G. Golub & C. Van Loan,
"Matrix Computations", 4th ed., Sec. 10.1 (Lanczos, Ritz values, the residual bound);
H. Sedghi, V. Gupta & P. Long (2019), "The singular values of convolutional layers", ICLR
(why a conv's norm is not its kernel's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

MAX_DENSE = 2**20  # largest dense matrix (entries) whose SVD gives the norm exactly
MAX_ITER = 400  # Lanczos steps at most (each is one application of A and of A^T)
_CHUNK = 2**22  # elements of one batch of basis vectors when building a dense matrix

LinearMap = Callable[[Tensor], Tensor]


def dense_matrix(fn: LinearMap, in_shape: Sequence[int], like: Tensor) -> Tensor:
    """The matrix ``A: [D_out, D_in]`` of the linear map ``fn`` on inputs ``[*in_shape]``.

    Columns are ``fn`` of the identity basis, or, when the output is smaller, rows are the
    adjoint (autograd) of the output basis; in chunks. ``like`` gives the dtype and device.
    """
    D_in = math.prod(in_shape)
    D_out = fn(like.new_zeros(1, *in_shape)).numel()
    step = max(1, _CHUNK // max(D_in, D_out))
    if D_out < D_in:
        eye = torch.eye(D_out, dtype=like.dtype, device=like.device)
        return torch.cat(
            [_rows(fn, in_shape, eye[i : i + step], like) for i in range(0, D_out, step)]
        )
    eye = torch.eye(D_in, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        cols = [
            fn(eye[i : i + step].view(-1, *in_shape)).reshape(-1, D_out)
            for i in range(0, D_in, step)
        ]
    return torch.cat(cols).T  # [D_out, D_in]


def _rows(fn: LinearMap, in_shape: Sequence[int], basis: Tensor, like: Tensor) -> Tensor:
    """``basis @ A`` for output vectors ``basis: [K, D_out]``: K adjoint applications at once."""
    K = basis.shape[0]
    v = like.new_zeros(K, *in_shape).requires_grad_(True)
    with torch.enable_grad():
        out = fn(v).reshape(K, -1)
        return torch.autograd.grad(out, v, basis)[0].reshape(K, -1)


def spectral_norms(
    fn: LinearMap,
    in_shape: Sequence[int],
    like: Tensor,
    *,
    sets: Sequence[Sequence[int]] | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """l2 operator norm of the linear map ``fn`` on ``[*in_shape]``, or of ``fn`` restricted
    to each channel set in ``sets`` (indices along ``in_shape[0]``).

    Parameters
    ----------
    fn : callable
        A linear map ``Tensor[B, *in_shape] -> Tensor[B, *out]``, differentiable by autograd.
    in_shape : sequence of int
        One input's shape.
    like : Tensor
        Dtype and device of the computation.
    sets : sequence of sequences of int, optional
        Channel sets ``S``; the norm of ``A R_S`` is returned for each.
    tol : float, optional
        Lanczos tolerance on ``r / theta`` (default ``1e-10`` in float64, ``1e-5`` in float32).
    generator : torch.Generator, optional
        Lanczos start vectors (default a fresh generator seeded 0 on ``like``'s device).

    Returns
    -------
    Tensor
        A scalar, or ``[len(sets)]``.
    """
    D_in = math.prod(in_shape)
    D_out = fn(like.new_zeros(1, *in_shape)).numel()
    C, rest = in_shape[0], D_in // in_shape[0]
    if D_in * D_out <= MAX_DENSE:
        A = dense_matrix(fn, in_shape, like).view(D_out, C, rest)
        if sets is None:
            return torch.linalg.matrix_norm(A.reshape(D_out, D_in), ord=2)
        return torch.stack(
            [torch.linalg.matrix_norm(A[:, list(S)].reshape(D_out, -1), ord=2) for S in sets]
        )
    if tol is None:
        tol = 1e-10 if like.dtype == torch.float64 else 1e-5
    if generator is None:
        generator = torch.Generator(device=like.device).manual_seed(0)
    if sets is None:
        return _lanczos_norms(fn, in_shape, None, like, tol, generator)[0]
    out = like.new_empty(len(sets))
    by_size: dict[int, list[int]] = {}
    for i, S in enumerate(sets):
        by_size.setdefault(len(S), []).append(i)
    for idx in by_size.values():  # equal-size sets run as one batch
        index = torch.tensor([list(sets[i]) for i in idx], device=like.device)
        out[idx] = _lanczos_norms(fn, in_shape, index, like, tol, generator)
    return out


def _lanczos_norms(fn, in_shape, index, like, tol, generator) -> Tensor:
    """Top singular value of ``A R_S`` for each row of ``index: [B, |S|]`` (None: ``A``)."""
    C, rest = in_shape[0], math.prod(in_shape) // in_shape[0]
    B = 1 if index is None else index.shape[0]
    n = math.prod(in_shape) if index is None else index.shape[1] * rest

    def embed(v: Tensor) -> Tensor:  # [B, n] -> [B, *in_shape], zero outside the set
        if index is None:
            return v.view(B, *in_shape)
        full = v.new_zeros(B, C, rest)
        spread = index[:, :, None].expand(B, index.shape[1], rest)
        return full.scatter(1, spread, v.view(B, -1, rest)).view(B, *in_shape)

    def gram(v: Tensor) -> Tensor:  # A^T A v per batch row
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            out = fn(embed(v))
            return torch.autograd.grad(out, v, out.detach())[0]

    return lanczos_top(gram, B, n, like, tol=tol, generator=generator).sqrt()


def lanczos_top(
    matvec: Callable[[Tensor], Tensor],
    B: int,
    n: int,
    like: Tensor,
    *,
    tol: float,
    generator: torch.Generator,
    max_iter: int | None = None,
) -> Tensor:
    """Largest eigenvalue (plus the Ritz residual, see the module docstring) of B symmetric
    positive semi-definite operators at once: ``matvec: [B, n] -> [B, n]``. Returns ``[B]``."""
    steps = min(n, MAX_ITER if max_iter is None else max_iter)
    q = torch.randn(B, n, generator=generator, dtype=like.dtype, device=generator.device)
    q = q.to(like.device)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    Q = [q]  # orthonormal Lanczos vectors, each [B, n]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    tiny = torch.finfo(like.dtype).tiny ** 0.5
    for _ in range(steps):
        w = matvec(Q[-1])
        alphas.append((w * Q[-1]).sum(1))
        basis = torch.stack(Q, 1)  # [B, k, n]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - torch.einsum("bk,bkn->bn", torch.einsum("bkn,bn->bk", basis, w), basis)
        beta = torch.linalg.vector_norm(w, dim=1)
        betas.append(beta)
        top, resid = _ritz(alphas, betas)
        if bool((resid <= tol * top.abs()).all()) or len(Q) == steps:
            break
        Q.append(torch.where(beta[:, None] > tiny, w / beta.clamp_min(tiny)[:, None], 0.0))
    return top + resid


def _ritz(alphas: list[Tensor], betas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Top Ritz value of the tridiagonal ``T_k`` and its residual ``beta_k |s_k|``: [B] each."""
    T = torch.diag_embed(torch.stack(alphas, 1))
    if len(alphas) > 1:
        off = torch.stack(betas[:-1], 1)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    theta, S = torch.linalg.eigh(T)
    return theta[:, -1], betas[-1] * S[:, -1, -1].abs()


def pool_multiplicity(pool: Callable[[Tensor], Tensor], size: Sequence[int], like: Tensor) -> int:
    """``max_i m_i``: the most windows of the 2-d max pool ``pool`` that hold one input, on
    inputs of spatial ``size`` (H, W).

    The windows of a 2-d pool are products of row and column intervals, so ``m_(h, w) =
    m_h m_w``. ``m_h`` is read off the pool itself: an image that is 1 on row h and 0 elsewhere
    pools to 1 exactly at the outputs whose window rows hold h (every window holds an input
    column), ``m_h W_out`` of them; the same for columns.
    """
    H, W = size
    rows = torch.zeros(H, 1, H, W, dtype=like.dtype, device=like.device)
    rows[torch.arange(H), 0, torch.arange(H), :] = 1
    cols = torch.zeros(W, 1, H, W, dtype=like.dtype, device=like.device)
    cols[torch.arange(W), 0, :, torch.arange(W)] = 1
    out_r, out_c = pool(rows), pool(cols)  # [H, 1, H_out, W_out], [W, 1, H_out, W_out]
    H_out, W_out = out_r.shape[-2:]
    m_h = out_r.sum((1, 2, 3)) / W_out
    m_w = out_c.sum((1, 2, 3)) / H_out
    return round(m_h.max().item()) * round(m_w.max().item())
