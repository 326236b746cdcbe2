"""Exact Hessian blocks of the mean cross-entropy for one layer, and their off-diagonal mass.

A layer (a Linear or a Conv2d, an eval-mode BatchNorm after it folded in: ``z = s (W * a) + c``
per output unit) reaches the loss ``L = (1/N) sum_n l_n`` only through its output ``z_n``,
linearly in ``theta = (W, b)``, and samples do not interact, so the Hessian block of ``theta``
is exactly

    d^2 L / d theta d theta = sum_n J_n^T H_z[n] J_n,      H_z[n] = d^2 (l_n / N) / dz_n dz_n

with ``J_n = dz_n / d theta``: ``dz_{n,o,p} / dW_{o,j} = s_o U_n[j, p]`` and ``dz_{n,o,p} / db_o
= s_o``, ``U_n`` the unfolded input (im2col, ``[C_in k_h k_w, P]`` over the ``P`` output
positions; a Linear has ``P = 1`` and ``U_n = a_n``). For a Linear this is the sum of
Kronecker products ``H_z[n] (x) abar_n abar_n^T``. ``H_z[n]`` comes in one of two exact forms:

* dense, ``[O P, O P]``: the softmax Hessian ``(diag p - p p^T) / N`` at the logits, else
  ``torch.func.hessian`` of the per-sample loss of the ops above (curved activations exact);
* factored, ``H_z[n] = sum_v B_v B_v^T`` with ``B_v = J_{f,z}^T S_v`` the ``C`` columns of the
  softmax Hessian's factor (:func:`prunelab.curvature._output_factor`) pulled back by one
  batched vector-Jacobian product, exact when every activation above is piecewise linear;
  then the block is ``G^T G`` with rows ``G_{n,v} = J_n^T B_{n,v}`` (per-sample parameter
  gradients of the columns), never an ``[O P, O P]`` matrix: what a conv layer needs.

No Hessian of the whole network is formed. This is what Optimal Brain Surgeon needs per
layer (:func:`prunelab.criteria.obs`) and what measures how far the Hessian is from the
diagonal that Optimal Brain Damage assumes (:func:`offdiagonal_ratio`).

Dropout counts as identity (evaluation mode). Parameters are ordered as in
``torch.cat([W.reshape(-1), b])``: row-major weights (a conv's ``[O, C_in, k_h, k_w]``), then
the bias. The BatchNorm's own parameters are not part of a layer's block.

Shapes: N samples, O output units of the layer (features or channels), P its output positions,
J its inputs per unit (``D`` for a Linear, ``C_in k_h k_w`` for a conv), C classes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import checks, ops
from . import curvature

# Largest intermediate (elements) built at once; larger batches are split over samples.
_MAX_ELEMENTS = 2**24


# --- validation ------------------------------------------------------------------------------


def _setup(model: nn.Module, x: Tensor, y: Tensor, layer: int | str | None, method: str):
    """Validate once; return the op view, the layer index (or None), ``x`` and ``y``."""
    view = ops.parse(model, method=method)
    view.check_eval(method)
    if len({id(op.module) for op in view.layers}) < len(view.layers):
        raise ValueError(
            f"{method}: a Linear or Conv2d module appears twice in the model (shared weights)"
        )
    x = view.check_x(x, method)
    y = view.check_labels(y, x.shape[0], method)
    index = None if layer is None else _layer_index(view, layer, method)
    return view, index, x, y


def _layer_index(view: ops.View, layer: int | str, method: str) -> int:
    names = [op.name for op in view.layers]
    if isinstance(layer, str):
        if layer not in names:
            raise KeyError(f"{method}: layer {layer!r}: choose from {names}")
        return names.index(layer)
    if isinstance(layer, bool):
        raise TypeError(f"{method}: layer must be an int or a layer's name, not a bool")
    try:
        k = operator.index(layer)
    except TypeError:
        raise TypeError(
            f"{method}: layer must be an int or a layer's name; got {type(layer).__name__}"
        ) from None
    if not -len(names) <= k < len(names):
        raise ValueError(
            f"{method}: layer {k} out of range; the model has {len(names)} Linear or Conv2d "
            f"layers {names}"
        )
    return k % len(names)


# --- per-sample output Hessians --------------------------------------------------------------


def _inputs_and_pre(view: ops.View, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Input ``a`` [N, *in] and output ``z`` [N, *out] of layer k (BatchNorm folded, dropout
    off)."""
    with torch.no_grad():
        a, z, _ = ops.records(view, x)[k]
        return a, z


def _start(view: ops.View, k: int) -> int:
    """Index in ``view.ops`` of the first op after layer k."""
    return view.ops.index(view.layers[k]) + 1


def _upper(view: ops.View, k: int, shape: tuple[int, ...]) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-sample loss ``l_n`` as a function of layer k's flattened output ``z_n`` and the
    label (a scalar tensor)."""
    start = _start(view, k)

    def loss(z: Tensor, y: Tensor) -> Tensor:
        f = ops.forward(view, z.view(1, *shape), training=False, start=start)
        return F.cross_entropy(f, y[None])

    return loss


def _curved_above(view: ops.View, k: int) -> bool:
    """Whether an activation with ``phi'' != 0`` follows layer k (then only the dense form of
    ``H_z`` is exact)."""
    return any(
        isinstance(op, ops.Activation) and op.activation not in ops.PIECEWISE_LINEAR
        for op in view.ops[_start(view, k) :]
    )


def pre_activation_hessians(model: nn.Module, x: Tensor, y: Tensor, layer: int | str) -> Tensor:
    """Exact per-sample Hessians of the mean loss w.r.t. one layer's output.

        H_z[n] = d^2 (l_n / N) / dz_n dz_n

    ``(diag p_n - p_n p_n^T) / N`` for the output layer (the cross-entropy Hessian of the
    logits); for a hidden layer, ``torch.func.hessian`` of the per-sample loss of the ops
    above, vectorised over samples with ``torch.func.vmap``, so the second derivatives of
    every later activation are included. ``z`` is the layer's output with its BatchNorm
    folded in, flattened channel by channel for a conv.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.ops.parse` accepts (MLP or convnet, BatchNorm in eval mode),
        without shared layers; dropout as identity.
    x : Tensor[N, *in]
        Inputs; same dtype and device as the parameters.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.
    layer : int or str
        Index among the Linear and Conv2d layers (negative counts from the output) or the
        module's qualified name (``"0"`` for ``model[0]``).

    Returns
    -------
    Tensor[N, Z, Z]
        ``Z = O`` for a Linear, ``O P`` for a conv (memory ``N Z^2``: small layers only).
    """
    view, k, x, y = _setup(model, x, y, layer, "pre_activation_hessians")
    return _pre_hessians(view, k, x, y)


def _pre_hessians(view: ops.View, k: int, x: Tensor, y: Tensor) -> Tensor:
    N = x.shape[0]
    _, z = _inputs_and_pre(view, x, k)
    if k == len(view.layers) - 1 and _start(view, k) == len(view.ops):
        p = torch.softmax(z, 1)  # [N, C]
        return (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / N
    fn = torch.func.vmap(torch.func.hessian(_upper(view, k, tuple(z.shape[1:]))))
    Z = z[0].numel()
    flat = z.reshape(N, Z)
    step = max(1, _MAX_ELEMENTS // (Z * Z * 4))
    return torch.cat([fn(flat[i : i + step], y[i : i + step]) for i in range(0, N, step)]) / N


def _output_factor(view: ops.View, k: int, z: Tensor, N: int) -> Tensor:
    """``B: [C, n, *z]``, columns with ``H_z[n] = sum_v B_v B_v^T`` when every activation
    above layer k is piecewise linear: the softmax Hessian's factor pulled back by one batched
    vector-Jacobian product of the ops above."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        f = ops.forward(view, z, training=False, start=_start(view, k))
        S = curvature._output_factor(f.detach(), N)  # [C, n, C]
        if _start(view, k) == len(view.ops):
            return S
        return torch.autograd.grad(f, z, S, is_grads_batched=True)[0]


# --- layer blocks ------------------------------------------------------------------------------


def _unfolded(op: ops.Affine, a: Tensor, bias: bool) -> Tensor:
    """``Ubar_n = [U_n; 1]``: what each weight (and the bias) multiplies, ``[n, J', P]``."""
    if op.conv:
        m = op.module
        U = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # [n, J, P]
    else:
        U = a[:, :, None]
    return torch.cat([U, U.new_ones(U.shape[0], 1, U.shape[2])], 1) if bias else U


def _scale(op: ops.Affine, like: Tensor) -> Tensor:
    """``s``: the BatchNorm's per-unit scale (ones without one), ``[O]``."""
    st = op.scale_shift()
    return like.new_ones(op.units) if st is None else st[0].to(like)


def _block_terms(view: ops.View, k: int, x: Tensor, y: Tensor, bias: bool, diag: bool) -> Tensor:
    """``sum_n J_n^T H_z[n] J_n`` as ``[O, J', O, J']`` (``diag=True``: only the ``(o, o)``
    blocks, ``[O, J', J']``), before the BatchNorm scale; chunked over samples."""
    op = view.layers[k]
    N = x.shape[0]
    a, z = _inputs_and_pre(view, x, k)
    Ou, P = op.units, z[0].numel() // op.units  # output units, positions
    Jp = _unfolded(op, a[:1], bias).shape[1]
    C = view.out_features
    factor = not _curved_above(view, k) and C * (Ou * Jp) ** 2 <= Jp * Ou * Ou * P * (P + Jp)
    shape = (Ou, Jp, Jp) if diag else (Ou, Jp, Ou, Jp)
    out = x.new_zeros(shape)
    dense = (Ou * P) ** 2 + (Jp * Jp if P == 1 else Jp * Ou * Ou * P)  # H_z, then H_z U
    per_sample = C * Ou * max(P, Jp) if factor else dense
    step = max(1, _MAX_ELEMENTS // per_sample)
    for i in range(0, N, step):
        rows = slice(i, min(i + step, N))
        U = _unfolded(op, a[rows], bias)  # [n, J', P]
        if factor:  # rows G_{n,v} = J_n^T B_{n,v}: [V n, O, J']
            B = _output_factor(view, k, z[rows], N)
            B = B.reshape(*B.shape[:2], Ou, P)  # [V, n, O, P]
            G = torch.einsum("vnop,njp->vnoj", B, U).reshape(-1, Ou, Jp)
            if diag:
                out += torch.einsum("roj,rok->ojk", G, G)
            else:
                out += (G.reshape(len(G), -1).T @ G.reshape(len(G), -1)).view(shape)
        else:  # dense H_z[n]: [n, O, P, O, P]
            H = _pre_hessians(view, k, x[rows], y[rows]).view(-1, Ou, P, Ou, P) * (
                (rows.stop - rows.start) / N
            )
            if diag:
                Hd = torch.diagonal(H, dim1=1, dim2=3)  # [n, P, P, O]
                out += torch.einsum("njp,npro,nkr->ojk", U, Hd, U)
            elif P == 1:  # a Linear: sum_n H_z[n] (x) abar_n abar_n^T as one GEMM
                n = H.shape[0]
                aa = (U[:, :, None, 0] * U[:, None, :, 0]).reshape(n, Jp * Jp)
                T = H.reshape(n, Ou * Ou).T @ aa  # [(o, q), (j, k)]
                out += T.view(Ou, Ou, Jp, Jp).permute(0, 2, 1, 3)
            else:
                HU = torch.einsum("nopqr,nkr->nopqk", H, U)  # [n, O, P, O, J']
                out += torch.einsum("njp,nopqk->ojqk", U, HU)
    return out


def _order(op: ops.Affine, with_bias: bool) -> Tensor:
    """Permutation of the flattened ``(o, j')`` coordinates into ``[W.reshape(-1), b]``."""
    J = op.weight[0].numel()
    grid = torch.arange(op.units * (J + with_bias), device=op.weight.device).view(op.units, -1)
    return torch.cat([grid[:, :J].reshape(-1), grid[:, J]]) if with_bias else grid.reshape(-1)


def layer_hessian(
    model: nn.Module, x: Tensor, y: Tensor, layer: int | str, *, bias: bool = True
) -> Tensor:
    """Exact Hessian of the mean cross-entropy w.r.t. all parameters of one Linear or Conv2d.

        d^2 L / d theta d theta = sum_n J_n^T H_z[n] J_n        (module docstring)

    A Linear's is ``sum_n H_z[n] (x) abar_n abar_n^T``, ``abar_n = [a_n, 1]``; a conv's sums the
    same over its output positions, through the unfolded input.

    Parameters
    ----------
    model, x, y, layer
        As :func:`pre_activation_hessians`.
    bias : bool
        Include the layer's bias (if it has one) after the weights.

    Returns
    -------
    Tensor[P, P]
        ``P = O J`` (+ ``O`` with the bias), ordered as ``torch.cat([W.reshape(-1), b])``;
        symmetric. Memory ``P^2`` elements: meant for layers of up to a few thousand weights.

    References
    ----------
    Hassibi & Stork (1993), "Second order derivatives for network pruning: Optimal Brain
    Surgeon", NIPS 5 (the Hessian OBS inverts); Dong, Chen & Pan (2017), "Learning to prune
    deep neural networks via layer-wise optimal brain surgeon", NIPS (per-layer blocks).
    """
    view, k, x, y = _setup(model, x, y, layer, "layer_hessian")
    op = view.layers[k]
    with_bias = bias and op.bias is not None
    T = _block_terms(view, k, x, y, with_bias, diag=False)  # [O, J', O, J']
    s = _scale(op, T)
    T = T * s[:, None, None, None] * s[None, None, :, None]
    perm = _order(op, with_bias)
    B = T.reshape(perm.numel(), perm.numel())
    return B[perm][:, perm]


def row_hessians(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    layer: int | str,
    *,
    bias: bool = True,
    rows: Tensor | None = None,
) -> Tensor:
    """The diagonal blocks of :func:`layer_hessian` that belong to single output units.

        B_o = s_o^2 sum_n sum_{p, q} [H_z[n]]_{(o,p),(o,q)} ubar_{n,p} ubar_{n,q}^T

    the exact Hessian w.r.t. ``(W[o], b_o)`` (a Linear's row, a conv's filter), ``ubar_{n,p}``
    what the filter reads at output position ``p`` (and 1 for the bias); the blocks between
    different units are left out. Memory ``R J'^2``, so a layer too large for
    :func:`layer_hessian` can still be treated unit by unit.

    Parameters
    ----------
    model, x, y, layer
        As :func:`pre_activation_hessians`.
    bias : bool
        Include each unit's bias as the last coordinate.
    rows : Tensor[R], optional
        Output units to return (default all).

    Returns
    -------
    Tensor[R, J', J']
    """
    view, k, x, y = _setup(model, x, y, layer, "row_hessians")
    op = view.layers[k]
    T = _block_terms(view, k, x, y, bias and op.bias is not None, diag=True)  # [O, J', J']
    T = T * _scale(op, T).square()[:, None, None]
    return T if rows is None else T[rows]


# --- off-diagonal mass -----------------------------------------------------------------------


def offdiagonal_ratio(H: Tensor) -> float:
    """Share of a square matrix's Frobenius norm off its diagonal.

        r = ||H - diag(H)||_F / ||H||_F  in [0, 1]

    0 for a diagonal matrix, the case in which Optimal Brain Damage's saliency ``h_kk w_k^2 / 2``
    is the exact quadratic loss change of removing several weights at once (LeCun, Denker &
    Solla 1990, the "diagonal" assumption); ``r^2`` is the fraction of ``sum_ij H_ij^2`` that
    the assumption drops.
    """
    if not isinstance(H, Tensor) or H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(
            "offdiagonal_ratio: H must be a square matrix [P, P]; got "
            f"{tuple(H.shape) if isinstance(H, Tensor) else type(H).__name__}"
        )
    total = torch.linalg.matrix_norm(H.double())
    if total == 0:
        return 0.0
    off = torch.linalg.matrix_norm(H.double() - torch.diag_embed(torch.diagonal(H.double())))
    return (off / total).item()


def offdiagonal_ratio_estimate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    probes: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Off-diagonal share of the *whole* parameter Hessian, estimated without forming it.

        ||H||_F^2 = tr(H^2) = E_v ||H v||^2   (v Rademacher),     r^2 = 1 - sum_i H_ii^2 / ||H||_F^2

    ``||H||_F^2`` by Hutchinson's estimator over ``probes`` Hessian-vector products
    (forward-over-reverse, ``torch.func``), the diagonal exactly
    (:func:`prunelab.curvature.diag_hessian`).

    Parameters
    ----------
    model, x, y
        As :func:`pre_activation_hessians` (every parameter of the model counts).
    probes : int
        Hessian-vector products, at least 2.
    generator : torch.Generator, optional
        Source of the probes (default a fresh generator seeded 0, on ``x``'s device).

    Returns
    -------
    (float, float)
        The estimate of ``r`` (clamped to [0, 1]) and the standard error of ``r^2`` (from the
        spread of ``||H v||^2`` over probes).

    References
    ----------
    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines"; Avron & Toledo (2011), "Randomized algorithms for estimating
    the trace of an implicit symmetric positive semi-definite matrix", J. ACM.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 2:
        raise ValueError(f"offdiagonal_ratio_estimate: probes must be an int >= 2; got {probes!r}")
    view, _, x, y = _setup(model, x, y, None, "offdiagonal_ratio_estimate")
    params = {n: p.detach() for n, p in model.named_parameters()}
    diag_sq = sum(h.square().sum() for h in curvature.diag_hessian(model, x, y).values())
    if checks.generator(generator, "offdiagonal_ratio_estimate") is None:
        generator = torch.Generator(device=x.device).manual_seed(0)

    grad = torch.func.grad(ops.param_loss(view, x, y))

    def norm_hv(v: dict[str, Tensor]) -> Tensor:
        hv = torch.func.jvp(grad, (params,), (v,))[1]
        return sum(t.double().square().sum() for t in hv.values())

    norms = []
    for start in range(0, probes, 16):  # 16 probes per vectorised Hessian-vector product
        k = min(16, probes - start)
        v = curvature.rademacher(params, k, generator)  # [k, *shape]
        norms.append(torch.func.vmap(norm_hv)(v))
    sq = torch.cat(norms)  # [probes] ||H v||^2
    frob = sq.mean()
    if frob <= 0:
        return 0.0, 0.0
    r2 = 1 - diag_sq.double() / frob
    se = (diag_sq.double() / frob**2) * sq.std() / math.sqrt(probes)  # delta method
    return math.sqrt(min(max(r2.item(), 0.0), 1.0)), se.item()
