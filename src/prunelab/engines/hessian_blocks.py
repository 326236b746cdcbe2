"""Exact Hessian blocks of the mean cross-entropy for one layer, and their off-diagonal mass.

For a parsed MLP (``models.parse``) with ``z^l = a^{l-1} W^l.T + b^l`` and the mean loss
``L = (1/N) sum_n l_n``, the weights of layer l reach the loss only through ``z^l``, linearly,
and samples do not interact, so the Hessian block of ``theta_l = (W^l, b^l)`` is exactly

    d^2 L / d theta_l d theta_l = sum_n H_z[n] (x) (abar_n abar_n^T),     abar_n = [a^{l-1}_n, 1]

a sum of Kronecker products of the per-sample pre-activation Hessian ``H_z[n] = d^2 (l_n / N) /
dz^l_n dz^l_n`` (``[H_l, H_l]``, closed form ``(diag p - p p^T) / N`` at the logits, from
``torch.func.hessian`` of the layers above otherwise, so curved activations are exact too) and
the input's outer product. No Hessian of the whole network is formed. This is what Optimal
Brain Surgeon needs per layer (:func:`prunelab.criteria.obs`), and what measures how far the
Hessian is from the diagonal that Optimal Brain Damage assumes (:func:`offdiagonal_ratio`).

Dropout counts as identity (evaluation mode). Parameters are ordered as in
``torch.cat([W.reshape(-1), b])``: row-major weights, then the bias.

Shapes: N samples, H units of the layer, D its inputs, P its parameters, C classes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import models, ops
from . import curvature

# Largest intermediate (elements) built at once; larger batches are split over samples.
_MAX_ELEMENTS = 2**24


# --- validation ------------------------------------------------------------------------------


def _setup(model: nn.Module, x: Tensor, y: Tensor, layer: int | str | None, method: str):
    """Validate once; return the parsed net, the layer index (or None), ``x`` [N, D] and ``y``."""
    net = models.parse(model, method=method)
    if len({id(d.linear) for d in net.layers}) < len(net.layers):
        raise ValueError(f"{method}: a Linear module appears twice in the model (shared weights)")
    x = net.check_x(x, method)
    y = net.check_labels(y, x.shape[0], method)
    index = None if layer is None else _layer_index(net, layer, method)
    return net, index, x, y


def _layer_index(net: models.Net, layer: int | str, method: str) -> int:
    names = [d.name for d in net.layers]
    if isinstance(layer, str):
        if layer not in names:
            raise KeyError(f"{method}: layer {layer!r}: choose from {names}")
        return names.index(layer)
    if isinstance(layer, bool):
        raise TypeError(f"{method}: layer must be an int or a Linear's name, not a bool")
    try:
        k = operator.index(layer)
    except TypeError:
        raise TypeError(
            f"{method}: layer must be an int or a Linear's name; got {type(layer).__name__}"
        ) from None
    if not -len(names) <= k < len(names):
        raise ValueError(
            f"{method}: layer {k} out of range; the model has {len(names)} Linear layers {names}"
        )
    return k % len(names)


# --- per-sample pre-activation Hessians ------------------------------------------------------


def _inputs_and_pre(net: models.Net, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Input ``a^{k-1}`` [N, D] and pre-activation ``z^k`` [N, H] of layer k (dropout off)."""
    with torch.no_grad():
        a, z, _ = ops.records(net.view, x)[k]
        return a, z


def _upper(net: models.Net, k: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-sample loss ``l_n`` as a function of ``z^k_n`` [H] and the label (a scalar tensor)."""
    view = net.view
    start = view.ops.index(view.layers[k]) + 1  # the ops after layer k's pre-activation
    params = {
        f"{d.name}.{n}": t.detach() for d in net.layers for n, t in d.linear.named_parameters()
    }

    def loss(z: Tensor, y: Tensor) -> Tensor:
        f = ops.forward(view, z[None], params=params, training=False, start=start)
        return F.cross_entropy(f, y[None])

    return loss


def pre_activation_hessians(model: nn.Module, x: Tensor, y: Tensor, layer: int | str) -> Tensor:
    """Exact per-sample Hessians of the mean loss w.r.t. one layer's pre-activations.

        H_z[n] = d^2 (l_n / N) / dz^l_n dz^l_n

    ``(diag p_n - p_n p_n^T) / N`` for the output layer (the cross-entropy Hessian of the
    logits); for a hidden layer, ``torch.func.hessian`` of the per-sample loss of the layers
    above, vectorised over samples with ``torch.func.vmap``, so the second derivatives of
    every later activation are included.

    Parameters
    ----------
    model : nn.Sequential
        A model ``models.parse`` accepts, without shared Linear modules; dropout as identity.
    x : Tensor[N, D]
        Inputs; same dtype and device as the parameters.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.
    layer : int or str
        Index among the Linear layers (negative counts from the output) or the Linear's
        qualified name (``"0"`` for ``model[0]``).

    Returns
    -------
    Tensor[N, H, H]
    """
    net, k, x, y = _setup(model, x, y, layer, "pre_activation_hessians")
    return _pre_hessians(net, k, x, y)


def _pre_hessians(net: models.Net, k: int, x: Tensor, y: Tensor) -> Tensor:
    N = x.shape[0]
    _, z = _inputs_and_pre(net, x, k)
    if k == len(net.layers) - 1 and net.layers[k].activation == "identity":
        p = torch.softmax(z, 1)  # [N, C]
        return (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / N
    fn = torch.func.vmap(torch.func.hessian(_upper(net, k)))
    H = z.shape[1]
    step = max(1, _MAX_ELEMENTS // (H * H * 4))
    return torch.cat([fn(z[i : i + step], y[i : i + step]) for i in range(0, N, step)]) / N


# --- layer blocks ------------------------------------------------------------------------------


def _augment(a: Tensor, bias: bool) -> Tensor:
    """``[a, 1]`` when the bias belongs to the block, else ``a``: [N, D'] ."""
    return torch.cat([a, a.new_ones(a.shape[0], 1)], 1) if bias else a


def _has_bias(net: models.Net, k: int, bias: bool) -> bool:
    return bias and net.layers[k].bias is not None


def layer_hessian(
    model: nn.Module, x: Tensor, y: Tensor, layer: int | str, *, bias: bool = True
) -> Tensor:
    """Exact Hessian of the mean cross-entropy w.r.t. all parameters of one Linear layer.

        d^2 L / d theta d theta = sum_n H_z[n] (x) abar_n abar_n^T,   abar_n = [a^{l-1}_n, 1]

    with ``H_z`` from :func:`pre_activation_hessians` (module docstring). Built with one GEMM
    ``[H*H, N] @ [N, D'*D']`` per chunk of samples.

    Parameters
    ----------
    model, x, y, layer
        As :func:`pre_activation_hessians`.
    bias : bool
        Include the layer's bias (if it has one) after the weights.

    Returns
    -------
    Tensor[P, P]
        ``P = H * D`` (+ ``H`` with the bias), ordered as ``torch.cat([W.reshape(-1), b])``;
        symmetric. Memory ``P^2`` elements: meant for layers of up to a few thousand weights.

    References
    ----------
    Hassibi & Stork (1993), "Second order derivatives for network pruning: Optimal Brain
    Surgeon", NIPS 5 (the Hessian OBS inverts); Dong, Chen & Pan (2017), "Learning to prune
    deep neural networks via layer-wise optimal brain surgeon", NIPS (per-layer blocks).
    """
    net, k, x, y = _setup(model, x, y, layer, "layer_hessian")
    with_bias = _has_bias(net, k, bias)
    a = _augment(_inputs_and_pre(net, x, k)[0], with_bias)  # [N, D']
    Hz = _pre_hessians(net, k, x, y)  # [N, H, H]
    N, D = a.shape
    H = Hz.shape[1]
    T = a.new_zeros(H * H, D * D)
    step = max(1, _MAX_ELEMENTS // (H * H + D * D))
    for i in range(0, N, step):
        aa = (a[i : i + step, :, None] * a[i : i + step, None, :]).reshape(-1, D * D)
        T += Hz[i : i + step].reshape(-1, H * H).T @ aa  # [(i,k), (j,m)]
    B = T.reshape(H, H, D, D).permute(0, 2, 1, 3).reshape(H * D, H * D)  # [(i,j), (k,m)]
    if not with_bias:
        return B
    order = torch.arange(H * D, device=B.device).reshape(H, D)
    perm = torch.cat([order[:, :-1].reshape(-1), order[:, -1]])  # weights row-major, then bias
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

        B_i = sum_n [H_z[n]]_{ii} abar_n abar_n^T,     abar_n = [a^{l-1}_n, 1]

    the exact Hessian w.r.t. ``(W^l[i, :], b^l_i)``; the blocks between different units are
    left out. Memory ``R D'^2`` and cost ``2 N R D'^2`` for R rows, so a layer too large for
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
    Tensor[R, D', D']
    """
    net, k, x, y = _setup(model, x, y, layer, "row_hessians")
    a = _augment(_inputs_and_pre(net, x, k)[0], _has_bias(net, k, bias))  # [N, D']
    h = torch.diagonal(_pre_hessians(net, k, x, y), dim1=1, dim2=2)  # [N, H]
    if rows is not None:
        h = h[:, rows]
    return torch.einsum("ni,nj,nk->ijk", h, a, a)


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
    net, _, x, y = _setup(model, x, y, None, "offdiagonal_ratio_estimate")
    params = {n: p.detach() for n, p in model.named_parameters()}
    diag_sq = sum(h.square().sum() for h in curvature.diag_hessian(model, x, y).values())
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)

    grad = torch.func.grad(ops.param_loss(net.view, x, y))

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
