"""Diagonal curvature of the mean cross-entropy, exact and estimated, on MLPs and convnets.

For a parsed MLP (``models.parse``) with layers ``z^l = a^{l-1} W^l.T + b^l``, ``a^l = phi(z^l)``
and logits ``f = a^L``, the loss is the mean cross-entropy ``L = (1/N) sum_n l_n``. Every
weight ``W^l_ij`` reaches the loss only through ``z^l_{n,i}``, linearly, and samples do not
interact, so

    d^2L / d(W^l_ij)^2 = sum_n [H_z^l]_{n,ii} (a^{l-1}_{n,j})^2,
    d^2L / d(b^l_i)^2  = sum_n [H_z^l]_{n,ii}

with ``H_z^l[n] = d^2L / dz^l_n dz^l_n`` the per-sample Hessian w.r.t. the pre-activations
(``[H_l, H_l]``). Its diagonal comes from a backward recursion (Dangel, Kunstner & Hennig 2020):

    H_a^L = Lambda_n / N = S S^T,    S = diag(sqrt p) Q / sqrt N,   Q Q^T = I - sqrt p sqrt p^T
    H_z^l = diag(phi'(z^l)) H_a^l diag(phi'(z^l)) + diag(r^l),    r^l = phi''(z^l) * dL/da^l
    H_a^{l-1} = W^l.T H_z^l W^l

The recursion keeps ``H_z^l`` as a factor ``sum_v w_v B_v B_v^T`` whose columns ``B_v`` are
propagated by ``B <- diag(phi') W.T B``: the C - 1 columns of ``S`` (weight 1; ``Q`` spans the
rank C - 1 projection, see :func:`_output_factor`) and, for every later
layer ``m`` whose activation has ``phi'' != 0``, its ``H_m`` diag-embedded residual columns with
signed weights ``r^m`` (BackPACK's ``DiagHessian`` splits them into ``sqrt(max(+-r, 0))`` pairs;
one signed set is the same sum with half the columns). The diagonal is then a sum of squares,
``diag H_z = sum_v w_v B_v**2``, never a Hessian; one layer below m the residual needs no
columns, since ``diag(W.T diag(r) W) = r @ W**2``. Piecewise-linear activations (ReLU,
LeakyReLU, identity) have no residual, so for them the exact diagonal costs only the C - 1
columns and equals the diagonal of the generalised Gauss-Newton matrix (Martens 2014; METHODS.md B).

Dropout is treated as in evaluation mode (identity) whatever ``model.training`` says; the
model is never modified and no ``.grad`` is left behind. Results follow the parameters' dtype
and device.

Convnets: the same recursion runs op by op (:func:`_op_backward`), every parameter entering
its layer's output linearly, so with the unfolded input ``X = unfold(x)`` and BatchNorm scale
``s``, ``diag H[W_hd] = sum_n sum_v w_v (s_h sum_pos B_v[h, pos] X[d, pos])^2`` plus the
residual term. ``docs/curvature.md`` derives it, with max-pool routing (:class:`_Routed`), the
per-unit curvature along a channel, and the costs.

Shapes: N samples, C classes, H units, P parameters; ``V`` counts factor columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import checks, models, ops, stats

# Largest factor tensor [V, N, H] built at once; larger batches are split over samples.
_MAX_FACTOR_ELEMENTS = 2**25
_CURVED = frozenset(models.ACTIVATIONS) - models.PIECEWISE_LINEAR  # phi'' != 0
DIRECTIONS = ("mask", "mean")  # a unit's direction: its activation, or its mean minus it


# --- validation and the forward pass -----------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One dense layer as the curvature code sees it."""

    name: str  # parameter prefix
    W: Tensor  # [H_out, H_in], detached
    b: Tensor | None  # [H_out], detached
    kind: str  # activation, with the GELU approximation resolved
    slope: float


def _prepare(model: nn.Module, x: Tensor, y: Tensor, method: str, *, shared: bool = False):
    """Validate ``(model, x, y)`` once; return the op view, the layers, the flat inputs and the
    labels.

    ``shared=True`` accepts a Linear module used twice (fine for activation curvature, which
    never accumulates per parameter).
    """
    net = models.parse(model, method=method)
    if not shared and len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError(
            f"{method}: a Linear module appears twice in the model (shared weights); the "
            f"layer-wise curvature recursion needs distinct layers"
        )
    layers = [
        _Layer(
            layer.name,
            layer.weight.detach(),
            None if layer.bias is None else layer.bias.detach(),
            layer.activation,
            layer.slope,
        )
        for layer in net.layers
    ]
    x = net.check_x(x, method)
    return net.view, layers, x, net.check_labels(y, x.shape[0], method)


def _forward(view: ops.View, layers: list[_Layer], x: Tensor):
    """Forward pass; returns per-layer (input a^{l-1} [N, H_in], phi' [N, H], phi'' or None)
    and the logits [N, C]."""
    params = {f"{layer.name}.weight": layer.W for layer in layers}
    params |= {f"{layer.name}.bias": layer.b for layer in layers if layer.b is not None}
    recs = ops.records(view, x, params=params)
    out = [
        (a_in, *models.derivatives(layer.kind, z, layer.slope))
        for layer, (a_in, z, _) in zip(layers, recs, strict=True)
    ]
    return out, recs[-1][2]  # the logits, after an output activation if there is one


def _accumulate(out: dict[str, Tensor], layer: _Layer, h_z: Tensor, a_in: Tensor) -> None:
    """Add sum_n h_z[n, i] a_in[n, j]^2 to the weight entry and sum_n h_z[n, i] to the bias."""
    terms = {f"{layer.name}.weight": h_z.T @ a_in.square()}  # [H_out, N] @ [N, H_in]
    if layer.b is not None:
        terms[f"{layer.name}.bias"] = h_z.sum(0)
    for name, term in terms.items():
        if name in out:
            out[name] += term
        else:
            out[name] = term


def _chunks(N: int, per_sample: int, budget: int | None = None) -> list[slice]:
    """Sample slices so that each factor tensor stays under the memory budget (default
    ``_MAX_FACTOR_ELEMENTS``)."""
    budget = _MAX_FACTOR_ELEMENTS if budget is None else budget
    size = max(1, budget // max(per_sample, 1))
    return [slice(i, min(i + size, N)) for i in range(0, N, size)]


def _op_budget() -> int:
    """The op-generic path's working budget in elements: a quarter of the dense path's. Its
    many large temporaries run faster when they stay smaller (fresh large allocations fault
    their pages in): LeNet-5's diagonal on CPU took 0.43 s at 2**23 and 0.64 s at 2**25."""
    return _MAX_FACTOR_ELEMENTS // 4


def _output_factor(logits: Tensor, N: int) -> Tensor:
    """C - 1 columns S with ``S S^T = (diag(p) - p p^T) / N``, column-major: ``[V=C-1, N, C]``.

    ``Lambda = diag(sqrt p)(I - tau tau^T) diag(sqrt p)`` with ``tau = sqrt p`` a unit vector
    (BackPACK, ``crossentropyloss.py``, backpropagates its C columns). ``I - tau tau^T`` is a
    rank C - 1 projection, ``Q Q^T`` for the first C - 1 columns of the Householder reflection
    ``I - 2 u u^T / |u|^2``, ``u = tau + e_C`` (it swaps ``e_C`` and ``-tau``; ``|u|^2 = 2 +
    2 tau_C >= 2``, so no cancellation). So ``S = diag(tau) Q / sqrt(N)``:

        S[v, n, i] = tau_i (delta_iv - tau_v u_i / (1 + tau_C)) / sqrt(N),    v < C

    one column fewer to propagate than BackPACK's. Columns lead so that sums over them run over
    contiguous slabs.
    """
    tau = torch.softmax(logits, dim=1).sqrt()  # [N, C]
    u = tau.clone()
    u[:, -1] += 1
    c = tau[:, :-1].T / (1 + tau[:, -1])  # [C-1, N]: tau_v / (1 + tau_C)
    eye = torch.eye(tau.shape[1], dtype=tau.dtype, device=tau.device)[:-1, None, :]  # [v, 1, i]
    S = eye * tau - c[:, :, None] * (tau * u)  # [v, n, i], i contiguous for the GEMMs
    return S / math.sqrt(N)


def _zero_like_params(model: nn.Module, out: dict[str, Tensor]) -> dict[str, Tensor]:
    """Order ``out`` as ``model.named_parameters()`` and shape it like the parameters."""
    result = {}
    for name, param in model.named_parameters():
        value = out.get(name)
        result[name] = torch.zeros_like(param.detach()) if value is None else value.detach()
    return result


# --- exact diagonal Hessian, diagonal GGN, Becker-LeCun ---------------------------------


def _diag_curvature(model, x, y, *, method: str, residuals: bool) -> dict[str, Tensor]:
    """The backward factor recursion; ``residuals=False`` gives the GGN diagonal."""
    op_view = ops.parse(model, method=method)
    if not op_view.dense:
        return _op_diag(model, op_view, x, y, method, "hessian" if residuals else "ggn")
    view, layers, x, y = _prepare(model, x, y, method)
    N = x.shape[0]
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for rows in _chunks(N, _factor_elements(layers, residuals)):
            _backward_factor(view, layers, x[rows], y[rows], N, residuals, out)
    return _zero_like_params(model, out)


def _factor_elements(layers: list[_Layer], residuals: bool) -> int:
    """Factor elements per sample, for the memory budget: at step k the factor has
    ``V_k = C + (curved widths H_m, m > k)`` columns of length ``max(H_k, H_{k-1})``."""
    C = layers[-1].W.shape[0]
    per_sample, V = C * C, C
    for k in range(len(layers) - 1, 0, -1):
        H_out, H_in = layers[k].W.shape
        if residuals and k + 1 < len(layers) and layers[k + 1].kind in _CURVED:
            V += layers[k + 1].W.shape[0]
        per_sample = max(per_sample, V * max(H_out, H_in))
    return per_sample


def _backward_factor(view, layers, x, y, N, residuals, out, visit=None) -> None:
    """Accumulate the exact (or GGN) diagonal of one chunk of samples into ``out``.

    ``B`` [V, n, H_k] holds the columns of the factor of H_a^k, ``w`` [V, n] their signed
    weights (None: all ones). The residual ``diag(r)`` of the layer above is kept pending:
    its share of diag H_a^k is exactly ``r @ W**2`` (one GEMM), and it becomes H columns only
    if it must travel further down. ``out=None`` skips the parameter accumulation; ``visit``,
    if given, is called as ``visit(k, h_a, a)`` for every hidden layer k with the per-sample
    ``diag H_a^k`` [n, H_k] and the activations ``a^k`` [n, H_k].
    """
    records, logits = _forward(view, layers, x)
    B = _output_factor(logits, N)  # [V, n, H_L]: columns of the factor of H_a^L
    w = None  # [V, n] signed column weights; None means all ones (GGN columns only)
    pending = None  # (r [n, H_{k+1}], W^{k+1}): diag(r) at z^{k+1}, not yet expanded
    g_a = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)) / N
    for k in range(len(layers) - 1, -1, -1):
        layer, (a_in, d1, d2) = layers[k], records[k]
        # diag H_z^k = phi'^2 (sum_v w_v B_v^2 + r_above @ W_above^2) + r^k
        if w is None:
            h_z = torch.einsum("vnh,vnh->nh", B, B)  # [n, H_k]
        else:
            h_z = torch.einsum("vn,vnh,vnh->nh", w, B, B)
        if pending is not None:
            h_z += pending[0] @ pending[1].square()  # diag(W.T diag(r) W) = r @ W^2
        if visit is not None and k < len(layers) - 1:
            visit(k, h_z.clone(), records[k + 1][0])  # diag H_a^k, before phi'; a^k
        h_z *= d1 if layer.kind == "relu" else d1.square()  # ReLU: phi' in {0, 1}
        r = d2 * g_a if residuals and d2 is not None else None  # [n, H_k] phi'' * dL/da
        if r is not None:
            h_z += r
        if out is not None:
            _accumulate(out, layer, h_z, a_in)
        if k == 0:
            break
        if pending is not None:
            # W.T diag(r) W = sum_i r_i W[i] W[i]^T: columns W[i] (weights r_i), same for all n
            r_above, W_above = pending
            n, H_above = r_above.shape
            w = B.new_ones(B.shape[:2]) if w is None else w
            B = torch.cat([B, W_above[:, None, :].expand(H_above, n, -1)], dim=0)
            w = torch.cat([w, r_above.T], dim=0)
        B = B.mul_(d1) @ layer.W  # diag(phi') B, then [V, n, H_k] @ [H_k, H_{k-1}]
        pending = None if r is None else (r, layer.W)
        if residuals:
            g_a = (g_a * d1) @ layer.W  # dL/da^{k-1} [n, H_{k-1}]


def diag_hessian(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Exact diagonal of the Hessian of the mean cross-entropy w.r.t. every parameter.

    Backpropagates a symmetric factor of the loss Hessian, never a Hessian (module docstring):

        diag H[W^l_ij] = sum_n [H_z^l]_{n,ii} (a^{l-1}_{n,j})^2,
        diag H[b^l_i]  = sum_n [H_z^l]_{n,ii},
        [H_z^l]_{n,ii} = sum_v w_v (B^l_{n,iv})^2 + phi''(z^l_{n,i}) dL/da^l_{n,i}

    with ``B^l`` the factor columns (the C - 1 of ``S^L``, ``S S^T = (diag p - p p^T)/N``, plus
    one per unit of each later curved activation, weighted ``r^m = phi''(z^m) dL/da^m``),
    propagated by ``B <- diag(phi'(z)) W.T B``. For ReLU, LeakyReLU and identity nets it equals
    :func:`diag_ggn`. Convnets run the same recursion op by op (``docs/curvature.md``), with
    exact entries for a BatchNorm's ``gamma`` and ``beta``.

    Parameters
    ----------
    model : nn.Sequential
        Any model the op view takes (:func:`prunelab.ops.parse`: Linear, Conv2d, pooling,
        BatchNorm in evaluation mode, Flatten, the activations); dropout counts as identity
        (evaluation mode). No Linear, Conv2d or BatchNorm may appear twice.
    x : Tensor[N, *in]
        Inputs: ``[N, D]`` (or images the model's ``Flatten`` turns into that) for an MLP,
        ``[N, C_in, H, W]`` for a convnet; same dtype and device as the parameters.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.

    Returns
    -------
    dict[str, Tensor]
        Keyed like ``model.named_parameters()``, each entry shaped like its parameter.

    Raises
    ------
    TypeError, ValueError
        For an unsupported module (the message names it, its position and the supported
        set), a module used twice, BatchNorm in training mode, or ``x``/``y`` of the wrong
        shape, dtype, device or label range; each message names this function.

    Notes
    -----
    Costs: ``docs/curvature.md``.

    References
    ----------
    Dangel, Kunstner & Hennig (2020), "BackPACK: Packing more into backprop", ICLR
    (``DiagHessian``); Dangel, Harmeling & Hennig (2020), "Modular block-diagonal curvature
    approximations for feedforward architectures", AISTATS; Martens (2014), "New insights and
    perspectives on the natural gradient method", Sec. 8 (GGN).
    """
    return _diag_curvature(model, x, y, method="diag_hessian", residuals=True)


def diag_ggn(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Diagonal of the generalised Gauss-Newton matrix G = sum_n J_n^T (Lambda_n / N) J_n.

    ``J_n = d f(x_n) / d theta`` is the logits' Jacobian and ``Lambda_n = diag(p_n) -
    p_n p_n^T`` the cross-entropy Hessian w.r.t. the logits. Computed by backpropagating the
    C - 1 columns of ``S^L`` (``S S^T = Lambda / N``) through ``B <- diag(phi') W.T B`` (a
    convnet: the ops' vector-Jacobian products) and summing squares (METHODS.md B, "Exact
    diagonal-GGN recursion"): for every activation, C - 1 columns. Equals
    :func:`diag_hessian` for piecewise-linear nets (ReLU, LeakyReLU, max pooling).

    Parameters and returns as :func:`diag_hessian`.

    References
    ----------
    Martens (2014), "New insights and perspectives on the natural gradient method"; Schraudolph
    (2002), "Fast curvature matrix-vector products"; Dangel, Kunstner & Hennig (2020), BackPACK
    ``DiagGGNExact``.
    """
    return _diag_curvature(model, x, y, method="diag_ggn", residuals=False)


def diag_hessian_activations(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """Exact per-sample diagonal of the mean-CE Hessian w.r.t. every hidden layer's activations.

    For hidden layer l (0-based among hidden layers) and sample n,

        h^l_{n,j} = d^2 L / (d a^l_{n,j})^2 = [W^{l+1}.T H_z^{l+1} W^{l+1}]_{jj},
        H_z^{l+1} = diag(phi') H_a^{l+1} diag(phi') + diag(phi''(z^{l+1}) * dL/da^{l+1})

    read off the same backward factor recursion as :func:`diag_hessian` (the C - 1 columns of
    ``S^L`` plus the residual columns of later curved layers, module docstring) one step
    before the activation's derivative is applied, so the residuals of every *later* curved
    activation are included and the result is exact for any supported activation. Samples do
    not interact, so for a node mask ``m`` multiplied in after the activation,
    ``d^2 L / dm_j^2 = sum_n (a^l_{n,j})^2 h^l_{n,j}`` (the OBD curvature of a node). On a
    convnet the diagonal is per position of every feature map, ``sum_v w_v B_v^2`` at the
    units (the residual columns of later curved activations included); a channel's mask
    curvature needs the block over its positions, :func:`diag_hessian_masks`.

    Parameters
    ----------
    model : nn.Sequential
        Any model the op view takes (as :func:`diag_hessian`); dropout counts as identity
        (evaluation mode). A module may appear twice.
    x : Tensor[N, *in]
        Inputs (``[N, D]`` for an MLP, ``[N, C_in, H, W]`` for a convnet); same dtype and
        device as the parameters.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.

    Returns
    -------
    list of Tensor[N, H_l] or Tensor[N, H_l, *spatial]
        One entry per hidden layer, shaped like its units (empty for a model without hidden layers), for the mean
        cross-entropy ``L = (1/N) sum_n l_n`` (so each entry carries the factor ``1/N``).

    Raises
    ------
    TypeError, ValueError
        As :func:`diag_hessian` (a module used twice is fine here).

    References
    ----------
    Dangel, Kunstner & Hennig (2020), "BackPACK: Packing more into backprop", ICLR;
    LeCun, Denker & Solla (1990), "Optimal Brain Damage", NIPS 2 (node saliency via a gate).
    """
    method = "diag_hessian_activations"
    op_view = ops.parse(model, method=method)
    if not op_view.dense:
        return _op_activations(op_view, x, y, method)
    view, layers, x, y = _prepare(model, x, y, method, shared=True)
    N = x.shape[0]
    out = [x.new_empty(N, layer.W.shape[0]) for layer in layers[:-1]]  # [N, H_l] each
    if not out:
        return out
    with torch.no_grad():
        for rows in _chunks(N, _factor_elements(layers, True)):

            def visit(k, h_a, a, rows=rows):
                out[k][rows] = h_a

            _backward_factor(view, layers, x[rows], y[rows], N, True, None, visit)
    return out


def diag_hessian_masks(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """Exact diagonal of the mean-CE Hessian w.r.t. unit masks, every hidden unit at once.

    A unit mask ``m`` multiplies hidden unit j of layer l after its activation (``a -> m a``,
    as in :mod:`prunelab.masks`; a channel's mask scales its whole feature map). At ``m = 1``,
    since ``m_j`` enters only through ``m_j a^l_{n,j}`` and samples do not interact,

        d^2 L / dm_j^2 = sum_n a_{n,j}^T [d^2 L / d a_n d a_n]_{jj} a_{n,j}

    with ``a_{n,j}`` the unit's activation (a scalar, or a channel's feature map and the
    Hessian's block over its positions). For an MLP this is ``sum_n (a^l_{n,j})^2 h^l_{n,j}``
    with ``h^l`` the per-sample activation diagonal of :func:`diag_hessian_activations`,
    accumulated chunk by chunk without storing it; for a convnet the op-generic path of the
    module docstring. Exact for every supported activation (the residuals of later curved
    layers are included); for piecewise-linear nets it is the Gauss-Newton value and
    non-negative. :func:`directional_curvature` with ``direction="mask"``.

    Parameters
    ----------
    model : nn.Sequential
        A model the op view takes (MLPs and convnets; BatchNorm in evaluation mode); dropout
        counts as identity. A module may appear twice.
    x : Tensor[N, *in]
        Inputs (``[N, D]`` or images for an MLP, ``[N, C, H, W]`` for a convnet); same dtype
        and device as the parameters.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.

    Returns
    -------
    list of Tensor[H_l]
        One entry per hidden layer.

    References
    ----------
    LeCun, Denker & Solla (1990), "Optimal Brain Damage", NIPS 2 (the saliency of a node
    gate is half this value under OBD's assumptions); Dangel, Kunstner & Hennig (2020),
    BackPACK (the factor recursion).
    """
    return _unit_curvature(model, x, y, "diag_hessian_masks", "mask", None)


def directional_curvature(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    direction: str = "mask",
    means: list[Tensor] | None = None,
) -> list[Tensor]:
    """Second derivative of the mean CE along each hidden unit's own direction, all at once.

        q_j = d^2/ds^2 L(a + s t_j) at s = 0 = sum_n t_{n,j}^T [d^2 L / d a_n d a_n]_{jj} t_{n,j}

    with ``t_j`` zero outside unit j and, on it, ``t_{n,j} = a_{n,j}`` (``direction="mask"``:
    scaling the unit, :func:`diag_hessian_masks`) or ``t_{n,j} = abar_j - a_{n,j}``
    (``"mean"``: moving it to its mean, the second-order term of mean replacement). For a
    channel ``t_{n,j}`` is its feature map and ``abar_j`` a constant map; the block of the
    per-sample Hessian over the channel's positions enters whole, not only its diagonal.
    Exact for every supported activation (module docstring).

    Parameters
    ----------
    model, x, y
        As :func:`diag_hessian_masks`.
    direction : {"mask", "mean"}
    means : list of Tensor[H_l], optional
        The values ``abar`` per hidden layer for ``"mean"`` (default: each unit's mean over
        ``x`` and, for a channel, over positions).

    Returns
    -------
    list of Tensor[H_l]
        One entry per hidden layer; carries ``1/N`` like ``L``.

    Raises
    ------
    TypeError, ValueError
        For an unsupported model, BatchNorm in training mode, bad ``x``/``y``, an unknown
        ``direction`` or ``means`` of the wrong shapes (the message names the argument).
    """
    return _unit_curvature(model, x, y, "directional_curvature", direction, means)


def _unit_curvature(model, x, y, method: str, direction: str, means) -> list[Tensor]:
    """Validate once, then the dense MLP recursion or the op-generic path."""
    if direction not in DIRECTIONS:
        raise ValueError(f"{method}: direction={direction!r}; choose from {list(DIRECTIONS)}")
    view = ops.parse(model, method=method)
    if view.dense:
        view, layers, x, y = _prepare(model, x, y, method, shared=True)
    else:
        layers = None
        x, y = _check_op_inputs(view, x, y, method)
    if direction == "mean":
        means = _check_means(view, x, means, method)
    if not view.hidden:
        return []
    with torch.no_grad():
        if layers is not None:
            return _dense_forms(view, layers, x, y, direction, means)
        return _op_forms(view, x, y, direction, means)


def _dense_forms(view, layers, x, y, direction, means) -> list[Tensor]:
    """The MLP path: ``sum_n t_{n,j}^2 h_{n,j}`` from the factor recursion's visits."""
    out = [x.new_zeros(layer.W.shape[0]) for layer in layers[:-1]]  # [H_l] each

    def visit(k, h_a, a):
        t = a if direction == "mask" else means[k] - a  # [n, H_k]
        out[k] += (t.square() * h_a).sum(0)

    for rows in _chunks(x.shape[0], _factor_elements(layers, True)):
        _backward_factor(view, layers, x[rows], y[rows], x.shape[0], True, None, visit)
    return out


# --- op-generic path: convnets -----------------------------------------------------------


def _check_op_inputs(
    view: ops.View, x: Tensor, y: Tensor, method: str, *, shared: bool = True
) -> tuple[Tensor, Tensor]:
    """``x`` and ``y`` validated on the op view; BatchNorm must be in evaluation mode.

    ``shared=False`` refuses a Linear, Conv2d or BatchNorm module used twice: per-parameter
    diagonals sum each use's share and would miss the cross terms between the uses.
    """
    if not shared:
        modules = [m for op in view.layers for m in (op.module, op.norm) if m is not None]
        if len({id(m) for m in modules}) < len(modules):
            raise ValueError(
                f"{method}: a module appears twice in the model (shared weights); the "
                "per-parameter curvature needs every Linear, Conv2d and BatchNorm used once"
            )
    view.check_eval(method)
    x = view.check_x(x, method)
    return x, view.check_labels(y, x.shape[0], method)


def _check_means(view: ops.View, x: Tensor, means, method: str) -> list[Tensor]:
    """``means`` as one ``[H_l]`` tensor per hidden layer in ``x``'s dtype (default over x)."""
    sizes = view.hidden_sizes
    if means is None:
        acts = ops.forward(view, x, taps=True, training=False)[1]
        return [stats.unit_mean(a) for a in acts]
    if isinstance(means, Tensor) or not isinstance(means, list | tuple) or len(means) != len(sizes):
        raise ValueError(
            f"{method}: means must be a list of {len(sizes)} tensors [H_l] (hidden sizes "
            f"{sizes}); got {type(means).__name__}"
        )
    out = []
    for ell, (m, H) in enumerate(zip(means, sizes, strict=True)):
        if not isinstance(m, Tensor) or m.shape != (H,) or not bool(torch.isfinite(m).all()):
            got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"{method}: means[{ell}] must be a finite Tensor [{H}]; got {got}")
        out.append(m.detach().to(dtype=x.dtype, device=x.device))
    return out


def _op_forms(view: ops.View, x: Tensor, y: Tensor, direction: str, means) -> list[Tensor]:
    """``q_j`` of every hidden unit by the op-generic path (module docstring), chunked."""
    out = [x.new_zeros(H) for H in view.hidden_sizes]
    curved = {
        k
        for k, op in enumerate(view.ops)
        if isinstance(op, ops.Activation) and op.activation in _CURVED
    }
    for rows in _chunks(x.shape[0], _op_elements(view, x, curved)):
        _op_chunk(view, x[rows], y[rows], x.shape[0], curved, direction, means, out)
    return out


def _op_elements(view: ops.View, x: Tensor, curved: set[int]) -> int:
    """Factor or tangent elements per sample: ``max(C, widest layer with a curved activation
    after it)`` copies of the largest op output."""
    a, size = view.inputs(x[:1]), x[0].numel()
    for op in view.ops:
        a = op.apply(a, training=False)
        size = max(size, a.numel())
    widths = [
        H
        for H, k in zip(view.hidden_sizes, view.unit_ops, strict=True)
        if any(c > k for c in curved)
    ]
    return max([view.out_features, *widths]) * size


def _op_record(view: ops.View, x: Tensor) -> tuple[list[Tensor], dict, Tensor]:
    """One forward pass in evaluation mode: every op's input ``[n, *in]``, each activation's
    ``(phi', phi'')`` and each max pool's routing (keyed by op index), and the logits."""
    ins: list[Tensor] = []
    local: dict[int, tuple | _Route] = {}
    a = view.inputs(x)
    for k, op in enumerate(view.ops):
        ins.append(a)
        if isinstance(op, ops.Activation):
            local[k] = op.derivatives(a)
        elif isinstance(op, ops.Pool) and op.routing:
            local[k] = _Route(op, a)
            a = local[k].out.detach()
            continue
        a = op.apply(a, training=False)
    return ins, local, a


def _op_chunk(view, x, y, N, curved, direction, means, out) -> None:
    """Add one chunk of samples' ``q_j`` to ``out`` (see :func:`_op_forms`)."""
    ins, local, a = _op_record(view, x)
    p = torch.softmax(a, 1)
    B = _output_factor(a, N)  # [V=C, n, C]: columns of the factor of Lambda / N
    g = (p - F.one_hot(y, p.shape[1]).to(p.dtype)) / N  # dL/d(output of op k), [n, *out]
    units = {k: ell for ell, k in enumerate(view.unit_ops)}
    factors: dict[int, Tensor] = {}  # hidden layer -> B at its units [V, n, H, *spatial]
    residual: dict[int, Tensor] = {}  # curved op k -> phi''(z^k) dL/da^k
    for k in range(len(view.ops) - 1, view.unit_ops[0] - 1, -1):
        if k in units:
            factors[units[k]] = B
        if k in curved:
            residual[k] = local[k][1] * g
        if k == view.unit_ops[0]:
            break
        op = view.ops[k]
        B = _back(op, ins[k], B, local.get(k))
        if any(c < k for c in curved):  # dL/da is needed further down
            g = _back(op, ins[k], g[None], local.get(k))[0]
    for ell, k in enumerate(view.unit_ops):
        a = ins[k + 1]  # the units of hidden layer l: [n, H, *spatial]
        t = a if direction == "mask" else means[ell].view(-1, *[1] * (a.dim() - 2)) - a
        proj = factors[ell] * t  # [V, n, H, *spatial]
        proj = proj.flatten(3).sum(3) if proj.dim() > 3 else proj  # sum_pos B_v t: [V, n, H]
        out[ell] += proj.square().sum((0, 1))
        later = [c for c in sorted(curved) if c > k]
        if later:
            out[ell] += _tangent_residual(view, ins, local, residual, k, t, later[-1])


class _Route:
    """A max pool's routing at its input ``x``, recorded once as the index of the input each
    output reads (the forward's own argmax, as autograd's backward uses it): ``J^T`` scatters
    columns back to those inputs, ``J`` gathers tangents from them."""

    def __init__(self, op: ops.Pool, x: Tensor):
        self.out, idx = op.winners(x)
        self.shape = x.shape  # [n, C, H, W]
        self.idx = idx.flatten(2)  # [n, C, H_out W_out]: flat input position per output

    def back(self, G: Tensor) -> Tensor:
        """``J^T G_v``: ``[V, n, *out] -> [V, n, *in]`` (outputs sharing an input add up)."""
        V = G.shape[0]
        out = G.new_zeros(V, *self.shape[:2], self.shape[2] * self.shape[3])
        out.scatter_add_(3, self.idx.expand(V, *self.idx.shape), G.flatten(3))
        return out.view(V, *self.shape)

    def ahead(self, T: Tensor) -> Tensor:
        """``J T_j``: ``[J, n, *in] -> [J, n, *out]``."""
        J = T.shape[0]
        out = T.flatten(3).gather(3, self.idx.expand(J, *self.idx.shape))
        return out.view(J, *self.out.shape)


@dataclass(frozen=True)
class _Routed:
    """Columns ``J^T G`` behind a max pool, kept at the pool's output: ``G: [V, n, C, Q]`` over
    its ``Q`` outputs per channel and the route that scatters them to the input. Nonzero only
    at the winners (a quarter of a 2x2 pool's input), so a conv read below contracts its
    unfolded input gathered there (:func:`_affine_diag`), never the scattered columns."""

    G: Tensor
    route: _Route

    def times(self, d: Tensor) -> _Routed:
        """An activation's ``diag(phi')``, read at the winners: ``d: [n, C, H, W]``."""
        return _Routed(self.G * self.gather(d), self.route)

    def gather(self, t: Tensor) -> Tensor:
        """``t[n, c, win]``: ``[n, C, *in] -> [n, C, Q]``."""
        return t.flatten(2).gather(2, self.route.idx)


def _back(op: ops.Op, x: Tensor, G: Tensor, local) -> Tensor:
    """``J(x)^T G_v`` for every column: ``G: [V, n, *out] -> [V, n, *in]`` by the op's vjp."""
    if isinstance(op, ops.Activation):
        return G * local[0]
    if isinstance(local, _Route):
        return local.back(G)
    V, n = G.shape[:2]
    xs = x[:1].expand(V * n, *x.shape[1:])  # the op is linear: its vjp reads only x's shape
    return op.vjp(xs, G.reshape(V * n, *G.shape[2:])).view(V, n, *x.shape[1:])


def _ahead(op: ops.Op, T: Tensor, local) -> Tensor:
    """Forward tangents ``J(x) T_j``: ``T: [J, n, *in] -> [J, n, *out]``."""
    if isinstance(op, ops.Activation):
        return T * local[0]
    if isinstance(local, _Route):
        return local.ahead(T)
    J, n = T.shape[:2]
    flat = T.reshape(J * n, *T.shape[2:])
    if isinstance(op, ops.Affine):  # the folded linear part: s * (W u)
        z = op.response(flat)
        st = op.scale_shift()
        if st is not None:
            z = z * st[0].view(-1, *[1] * (z.dim() - 2))
    else:  # average pool, Flatten, Dropout/Identity: linear
        z = op.apply(flat, training=False)
    return z.view(J, n, *z.shape[1:])


def _tangent_residual(view, ins, local, residual, k, t, stop) -> Tensor:
    """``sum_n sum_{curved m > k} sum_i r^m_{n,i} (dz^m_{n,i}/dt_j)^2`` for every unit j of
    the layer read at op k, by forward tangents (one per unit, batched): ``[H]``."""
    H = t.shape[1]
    eye = torch.eye(H, dtype=t.dtype, device=t.device).view(H, 1, H, *[1] * (t.dim() - 2))
    T = eye * t  # [J=H, n, H, *spatial]: tangent j is t on unit j, 0 elsewhere
    total = t.new_zeros(H)
    for m in range(k + 1, stop + 1):
        if m in residual:  # T is dz^m/dt at the activation's input
            total += (T.square() * residual[m]).flatten(1).sum(1)
        if m < stop:
            T = _ahead(view.ops[m], T, local.get(m))
    return total


# --- op-generic per-parameter curvature: convnets -----------------------------------------


def _op_backward(view, x, y, N, mode, stop, on_affine=None, on_unit=None) -> None:
    """Walk one chunk of samples from the logits back to op ``stop``.

    Holds the per-sample Hessian of the mean CE (or its estimator's stand-in) w.r.t. the
    output of op k as ``sum_v w_v B_v B_v^T + diag(r)``: ``B: [V, n, *out]`` columns, ``w:
    [V, n]`` signed weights (None: all ones), ``r: [n, *out]`` (None: zero). Each op maps it
    to its input by ``J^T H J``: an activation gives ``diag(phi') H diag(phi') + diag(phi''
    dL/da)`` (the residual, for ``"hessian"`` and ``"becker_lecun"``), a Flatten, Pass or max
    pool keeps a diagonal diagonal (a max pool's ``J`` routes each output from one input, so
    ``J^T diag(r) J = diag(J^T r)``), an Affine or average pool does not (module docstring).
    ``on_affine(op, x_k, B, w, r)`` sees every Affine op at its output, ``on_unit(l, B, w,
    r)`` every hidden layer's units; both must add up what they see (the columns may come in
    several blocks).

    ``mode`` sets the start at the logits and what happens to a ``diag(r)`` that meets an
    Affine or average pool: ``"hessian"`` (the C - 1 columns of ``S``; ``diag(r)`` becomes
    signed columns, exact), ``"ggn"`` (the columns, no residuals), ``"fisher"`` (the one
    column ``grad l_n / sqrt N``), ``"becker_lecun"`` (no columns, ``r = diag(Lambda) / N``;
    only the diagonal ``(J o J)^T r`` of ``J^T diag(r) J`` is kept).
    """
    ins, local, f = _op_record(view, x)
    p = torch.softmax(f, 1)
    g = (p - F.one_hot(y, p.shape[1]).to(p.dtype)) / N  # dL/d(output of op k): [n, *out]
    B = w = r = None
    if mode in ("hessian", "ggn"):
        B = _output_factor(f, N)  # [V, n, C]: Lambda / N = S S^T
    elif mode == "fisher":
        B = g[None] * math.sqrt(N)  # [1, n, C]: (grad l_n) / sqrt(N), one column per sample
    else:
        r = p * (1 - p) / N  # Becker & LeCun: the diagonal of Lambda / N
    curved = []
    if mode in ("hessian", "becker_lecun"):
        curved = [k for k, op in enumerate(view.ops) if _is_curved(op)]
    walk = _Walk(view, ins, local, stop, mode, on_affine, on_unit)
    walk.run(len(view.ops) - 1, B, w, r, g, curved)


@dataclass(frozen=True)
class _Walk:
    """The backward walk of :func:`_op_backward` over one chunk's recorded forward pass."""

    view: ops.View
    ins: list[Tensor]  # every op's input [n, *in]
    local: dict  # activation: (phi', phi''); max pool: its _Route
    stop: int
    mode: str
    on_affine: Callable | None
    on_unit: Callable | None

    def run(self, start, B, w, r, g, curved, visit: bool = True) -> None:
        """From the output of op ``start`` (whose callbacks run only if ``visit``) down."""
        units = {k: ell for ell, k in enumerate(self.view.unit_ops)}
        for k in range(start, self.stop - 1, -1):
            op, x_k, loc = self.view.ops[k], self.ins[k], self.local.get(k)
            if visit or k < start:
                if self.on_unit is not None and k in units:
                    self.on_unit(units[k], B, w, r)
                if self.on_affine is not None and isinstance(op, ops.Affine):
                    self.on_affine(op, x_k, B, w, r)
            if k == self.stop:
                break
            if isinstance(op, ops.Activation):
                if isinstance(B, _Routed):
                    B = B.times(loc[0])
                else:
                    B = None if B is None else B.mul_(loc[0])  # B is this walk's own: in place
                r = None if r is None else r * loc[0].square()
                if k in curved:  # diag(phi'' dL/da)
                    r = loc[1] * g if r is None else r + loc[1] * g
            elif r is not None:
                if isinstance(op, ops.Flatten | ops.Pass):
                    r = r.reshape(x_k.shape)
                elif isinstance(loc, _Route):  # J^T diag(r) J = diag(J^T r)
                    r = loc.back(r[None])[0]
                elif self.mode == "hessian":  # an Affine or average pool: diag(r) as columns
                    self.columns(k, r)
                    r = None
                else:  # Becker-LeCun: keep the diagonal (J o J)^T r only
                    r = op.vjp(x_k, r, squared=True)
            if isinstance(loc, _Route) and B is not None and self.routed(k):
                B = _Routed(B.flatten(3), loc)
            elif B is not None and not isinstance(op, ops.Activation):
                B = _back(op, x_k, B, loc)
            if curved and curved[0] < k:  # dL/da is needed further down
                g = _back(op, x_k, g[None], loc)[0]

    def routed(self, k: int) -> bool:
        """Whether the columns behind the max pool at op ``k`` can stay at its output
        (:class:`_Routed`): below it come only activations and then the walk's last op, a
        conv, and no callback reads the columns at the activations."""
        below = self.view.ops[self.stop + 1 : k]
        last = self.view.ops[self.stop]
        return (
            self.on_unit is None
            and isinstance(last, ops.Affine)
            and last.conv
            and all(isinstance(op, ops.Activation) for op in below)
        )

    def columns(self, k: int, r: Tensor) -> None:
        """``diag(r)`` at the output of op k as signed columns ``e_i`` (weight ``r_i``) for the
        positions i where some sample's ``r`` is non-zero, walked down in blocks that keep
        ``[V, n, *shape]`` within the memory budget at every op below (no residuals: those of
        lower activations travel with the main walk)."""
        n = r.shape[0]
        flat = r.reshape(n, -1)  # [n, D]
        idx = flat.ne(0).any(0).nonzero().squeeze(1)  # [D'] positions in use
        width = max(r[0].numel(), _column_elements(self.view, self.ins, self.stop, k))
        size = max(1, _op_budget() // (n * width))
        for block in idx.split(size):
            E = r.new_zeros(len(block), n, flat.shape[1])  # [V, n, D]: e_i for every sample
            E[torch.arange(len(block), device=r.device), :, block] = 1
            self.run(k, E.view(len(block), *r.shape), flat[:, block].T, None, None, [], False)


def _is_curved(op: ops.Op) -> bool:
    """Whether ``op`` is an activation with ``phi'' != 0`` (tanh, sigmoid, GELU)."""
    return isinstance(op, ops.Activation) and op.activation in _CURVED


def _wsq(B: Tensor, w: Tensor | None) -> Tensor:
    """``sum_v w_v B_v^2``: ``[V, n, ...] -> [n, ...]``."""
    return B.square().sum(0) if w is None else torch.einsum("vn,vn...->n...", w, B.square())


def _affine_diag(out: dict[str, Tensor], op: ops.Affine, x, B, w, r) -> None:
    """Add the diagonal w.r.t. ``op``'s parameters to ``out``, from ``H_y = sum_v w_v B_v
    B_v^T + diag(r)`` at its output ``y`` (see :func:`_op_backward`).

    ``y = s z + t`` per unit with ``z = W * x + b (+ o)`` and, for a folded BatchNorm, ``s =
    gamma / sqrt(var + eps)`` (else ``s = 1``). Every parameter enters ``y`` linearly, so its
    diagonal is ``sum_v w_v (B_v . dy/dtheta)^2 + sum_pos r (dy/dtheta)^2`` per sample, with

        W[h, d]:  dy_{h,pos}/dW = s_h X[d, pos]   (X = unfold(x), im2col; a Linear: L = 1)
        b[h]:     s_h;     gamma[h]: zhat_{h,pos} = (z - mu) / sqrt(var + eps);     beta[h]: 1
    """
    n, H = x.shape[0], op.units
    st = op.scale_shift()
    s = None if st is None else st[0][:, None]  # [H, 1]
    if op.conv:
        X = _unfold(op.module, x)  # [n, D, L]
    else:
        X = x.reshape(n, -1, 1)  # [n, D, 1]
    terms: dict[str, Tensor] = {}
    rz = None
    if r is not None:
        ry = r.reshape(n, H, -1)  # [n, H, L]
        rz = ry if s is None else ry * s.square()
        terms["bias"] = rz.sum((0, 2))
    routed = B if isinstance(B, _Routed) else None
    if B is not None:
        By = B.G if routed else B.reshape(B.shape[0], n, H, -1)  # [V, n, H, L or Q]
        Bz = By if s is None else By * s  # the factor at z
        terms["bias"] = terms.get("bias", 0) + _wsq(Bz.sum(3), w).sum(0)
    if not terms:
        return
    if op.conv:  # per (v, n): Bz_v [H, L] @ X_n^T [L, D], then squared
        weight = 0 if rz is None else torch.bmm(rz, X.square().transpose(1, 2)).sum(0)
        if routed:  # per (n, h): X_n at the winners [D, Q] @ Bz [Q, V]; no copy of Bz
            D, Q = X.shape[1], Bz.shape[3]
            idx = routed.route.idx.view(n, H, 1, Q).expand(n, H, D, Q)
            Xg = X[:, None].expand(n, H, D, X.shape[2]).gather(3, idx)  # [n, H, D, Q]
            M = torch.bmm(Xg.view(n * H, D, Q), Bz.permute(1, 2, 3, 0).reshape(n * H, Q, -1))
            M = M.view(n, H, D, -1).square_()  # [n, H, D, V]
            weight = weight + (M.sum((0, 3)) if w is None else torch.einsum("vn,nhdv->hd", w, M))
        elif B is not None:  # one batched GEMM over samples (faster than one per column)
            V = Bz.shape[0]
            M = torch.bmm(Bz.transpose(0, 1).reshape(n, V * H, -1), X.transpose(1, 2))
            M = M.view(n, V, H, -1).transpose(0, 1).square_()  # [V, n, H, D]
            weight = weight + (M.sum((0, 1)) if w is None else torch.einsum("vn,vnhd->hd", w, M))
    else:  # rank one per sample: sum_v w (Bz_v x)^2 = (sum_v w Bz_v^2) x^2
        h = 0 if rz is None else rz[..., 0]
        h = h if B is None else h + _wsq(Bz[..., 0], w)  # [n, H]
        weight = h.T @ X[:, :, 0].square()
    terms["weight"] = weight
    names = {"weight": f"{op.name}.weight"}
    if op.bias is not None:
        names["bias"] = f"{op.name}.bias"
    if op.norm is not None:
        at = routed.gather if routed else None
        _norm_diag(terms, names, op, x, By if B is not None else None, w, r, at)
    for key, name in names.items():
        term = terms[key].reshape(op.module.weight.shape if key == "weight" else -1)
        out[name] = out[name] + term if name in out else term


def _unfold(m: nn.Conv2d, x: Tensor) -> Tensor:
    """``F.unfold`` (im2col) for the conv ``m``: ``[n, C_in, H, W] -> [n, C_in k_h k_w, L]``,
    column ``(c, i, j)`` at output ``(r, q)`` holding ``x_pad[c, i d_h + r s_h, j d_w + q s_w]``.

    A strided view of the padded input copied once: ``F.unfold``'s CPU kernel is one to two
    orders of magnitude slower on small kernels.
    """
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = m.kernel_size, m.padding, m.stride, m.dilation
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x.contiguous()
    n, C, H, W = xp.shape
    H_out, W_out = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    s0, s1, s2, s3 = xp.stride()
    view = xp.as_strided(
        (n, C, kh, kw, H_out, W_out), (s0, s1, dh * s2, dw * s3, sh * s2, sw * s3)
    )  # [n, C, k_h, k_w, H_out, W_out]
    return view.reshape(n, C * kh * kw, H_out * W_out)


def _norm_diag(terms, names, op: ops.Affine, x, By, w, r, at=None) -> None:
    """The BatchNorm's ``gamma`` and ``beta`` terms (``dy/dgamma = zhat``, ``dy/dbeta = 1``);
    ``at``: where routed columns ``By`` sit (:meth:`_Routed.gather`)."""
    n, H, bn = x.shape[0], op.units, op.norm
    b = op.bias
    z = op.response(x)  # [n, H, *spatial]: z = W * x + b (+ o), before the BatchNorm
    per_unit = [1] * (z.dim() - 2)
    if b is not None:
        z = z + b.view(-1, *per_unit)
    if op.offset is not None:
        z = z + op.offset.offset
    mu, var = (t.to(z).view(-1, *per_unit) for t in op.running())
    zhat = ((z - mu) * torch.rsqrt(var + bn.eps)).reshape(n, H, -1)  # [n, H, L]
    gamma = beta = 0
    if By is not None:
        zb = zhat if at is None else at(zhat.view(n, H, *z.shape[2:]))
        gamma = _wsq((By * zb).sum(3), w).sum(0)
        beta = _wsq(By.sum(3), w).sum(0)
    if r is not None:
        ry = r.reshape(n, H, -1)
        gamma = gamma + (ry * zhat.square()).sum((0, 2))
        beta = beta + ry.sum((0, 2))
    if bn.weight is not None:
        terms["gamma"], names["gamma"] = gamma, f"{op.norm_name}.weight"
    if bn.bias is not None:
        terms["beta"], names["beta"] = beta, f"{op.norm_name}.bias"


def _column_elements(view: ops.View, ins: list[Tensor], lo: int, hi: int) -> int:
    """Elements per sample and factor column of the largest tensor the walk holds at ops
    ``lo..hi``: the column at an op's input or output, or a conv's per-sample weight
    contraction ``[H, C_in k_h k_w]``. ``ins``: every op's input (and the logits), ``[n, ...]``."""
    worst = 0
    for k in range(lo, hi + 1):
        op = view.ops[k]
        worst = max(worst, ins[k][0].numel(), ins[k + 1][0].numel() if k + 1 < len(ins) else 0)
        if isinstance(op, ops.Affine) and op.conv:
            worst = max(worst, op.units * op.weight[0].numel())
    return worst


def _walk_elements(view: ops.View, x: Tensor, mode: str) -> int:
    """Elements per sample that :func:`_op_backward` holds at once: the factor ``[V, n, *]``
    (``V = C`` columns plus one per position of every curved activation's input: few samples
    with all their residual columns at once run fastest; where one sample's columns exceed the
    budget, :meth:`_Walk.columns` splits them into blocks), each conv's unfolded input and the
    recorded forward pass, for the memory budget."""
    ins, a = [], view.inputs(x[:1])
    for op in view.ops:
        ins.append(a)
        a = op.apply(a, training=False)
    ins.append(a)
    V = {"hessian": view.out_features, "ggn": view.out_features}.get(mode, 1)
    if mode == "hessian":  # plus one column per residual position (at most one block's worth)
        V += sum(ins[k][0].numel() for k, op in enumerate(view.ops) if _is_curved(op))
    unfolded = [
        _unfold(op.module, ins[k]).numel()
        for k, op in enumerate(view.ops)
        if isinstance(op, ops.Affine) and op.conv
    ]
    factor = V * _column_elements(view, ins, 0, len(view.ops) - 1)
    return factor + max(unfolded, default=0) + sum(t.numel() for t in ins)


def _op_diag(model: nn.Module, view: ops.View, x, y, method: str, mode: str) -> dict[str, Tensor]:
    """A per-parameter diagonal on any model the op view takes (validated here)."""
    x, y = _check_op_inputs(view, x, y, method, shared=False)
    N = x.shape[0]
    stop = next(k for k, op in enumerate(view.ops) if isinstance(op, ops.Affine))
    out: dict[str, Tensor] = {}

    def on_affine(op, x_k, B, w, r):
        _affine_diag(out, op, x_k, B, w, r)

    with torch.no_grad():
        for rows in _chunks(N, _walk_elements(view, x, mode), _op_budget()):
            _op_backward(view, x[rows], y[rows], N, mode, stop, on_affine=on_affine)
    return _zero_like_params(model, out)


def _op_activations(view: ops.View, x, y, method: str) -> list[Tensor]:
    """:func:`diag_hessian_activations` on any model the op view takes (validated here)."""
    x, y = _check_op_inputs(view, x, y, method)
    if not view.hidden:
        return []
    parts: list[list[Tensor]] = [[] for _ in view.hidden]
    with torch.no_grad():
        for rows in _chunks(x.shape[0], _walk_elements(view, x, "hessian"), _op_budget()):
            acc: dict[int, Tensor] = {}  # this chunk's diagonal per hidden layer

            def on_unit(ell, B, w, r, acc=acc):
                h = _wsq(B, w) if r is None else _wsq(B, w) + r  # [n, H, *spatial]
                acc[ell] = acc[ell] + h if ell in acc else h

            _op_backward(
                view, x[rows], y[rows], x.shape[0], "hessian", view.unit_ops[0], None, on_unit
            )
            for ell, h in acc.items():
                parts[ell].append(h)
    return [torch.cat(chunks) for chunks in parts]


def becker_lecun_diag(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The OBD-era diagonal approximation that drops the cross terms between units.

    Per sample, the recursion keeps only the diagonal ``h^l`` of ``H_z^l``:

        h^L = phi'(z^L)^2 diag(Lambda / N) + phi''(z^L) dL/da^L,   diag(Lambda) = p (1 - p)
        h^l = phi'(z^l)^2 ((W^{l+1})^2).T h^{l+1} + phi''(z^l) dL/da^l

    and ``diag H[W^l_ij] ~ sum_n h^l_{n,i} (a^{l-1}_{n,j})^2``. It drops
    ``sum_{k != m} W_ki W_mi [H_z]_km``, so it is exact only for the output layer; about one
    extra backward pass. On a convnet every op maps the diagonal by its squared Jacobian,
    ``h_in = (J o J)^T h_out`` (``op.vjp(..., squared=True)``: a conv with ``W**2``, an average
    pool with its squared weights, a max pool by its routing, which is exact), plus ``phi''
    dL/da`` at activations, and a parameter's entry is ``sum_n sum_pos h (dy/dtheta)^2``
    (a conv: ``(s^2 h) @ X**2`` over the unfolded input). Parameters and returns as
    :func:`diag_hessian`.

    References
    ----------
    Becker & LeCun (1988), "Improving the convergence of back-propagation learning with second
    order methods"; LeCun, Denker & Solla (1990), "Optimal Brain Damage", NIPS 2, Sec. 3.
    """
    op_view = ops.parse(model, method="becker_lecun_diag")
    if not op_view.dense:
        return _op_diag(model, op_view, x, y, "becker_lecun_diag", "becker_lecun")
    view, layers, x, y = _prepare(model, x, y, "becker_lecun_diag")
    N = x.shape[0]
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        records, logits = _forward(view, layers, x)
        p = torch.softmax(logits, 1)
        h_a = p * (1 - p) / N  # [N, C] diagonal of Lambda / N
        g_a = (p - F.one_hot(y, p.shape[1]).to(p.dtype)) / N
        for k in range(len(layers) - 1, -1, -1):
            layer, (a_in, d1, d2) = layers[k], records[k]
            h_z = d1.square() * h_a + (0 if d2 is None else d2 * g_a)  # [N, H_l]
            _accumulate(out, layer, h_z, a_in)
            h_a = h_z @ layer.W.square()  # [N, H_{l-1}]
            g_a = (g_a * d1) @ layer.W
    return _zero_like_params(model, out)


# --- empirical Fisher and Hutchinson ------------------------------------------------------


def empirical_fisher_diag(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Diagonal empirical Fisher: the mean over samples of squared per-sample gradients.

    With ``L = (1/N) sum_n l_n`` and ``l_n`` the cross-entropy of sample n,

        F = (1/N) sum_n (grad l_n)^2,    F[W^l_ij] = (1/N) sum_n (delta^l_{n,i})^2 (a^{l-1}_{n,j})^2

    with ``delta^l_n = dl_n / dz^l_n``. Note the scale: the per-sample gradients are of
    ``l_n``, not of the summand ``l_n / N`` of ``L``, which puts ``F`` on the scale of
    :func:`diag_ggn` (``E_{y ~ p}[grad l_n grad l_n^T] = J_n^T Lambda_n J_n``). This is the
    quantity several pruning libraries call "Hessian" importance: Torch-Pruning's
    ``GroupHessianImportance`` ("Grouped Optimal Brain Damage") averages ``grad(l_n)**2``
    over per-sample backward passes of an unreduced loss and scores ``w**2 * F``. It is not
    the Hessian, and it equals the GGN only in expectation over labels drawn from the
    model's own predictions, not on the true labels. On a convnet the per-sample gradient of a
    conv weight is ``delta_n X_n^T`` with the unfolded input ``X_n``: the factor machinery of
    :func:`diag_hessian` with the one column ``(p_n - e_{y_n}) / sqrt(N)``. Parameters and
    returns as :func:`diag_hessian`.

    References
    ----------
    Martens (2014), "New insights and perspectives on the natural gradient method", Sec. 11;
    Kunstner, Hennig & Balles (2019), "Limitations of the empirical Fisher approximation",
    NeurIPS.
    """
    op_view = ops.parse(model, method="empirical_fisher_diag")
    if not op_view.dense:
        return _op_diag(model, op_view, x, y, "empirical_fisher_diag", "fisher")
    view, layers, x, y = _prepare(model, x, y, "empirical_fisher_diag")
    N = x.shape[0]
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        records, logits = _forward(view, layers, x)
        g_a = torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        for k in range(len(layers) - 1, -1, -1):
            layer, (a_in, d1, _) = layers[k], records[k]
            delta = g_a * d1  # [N, H_l] per-sample dl_n / dz^l_n
            _accumulate(out, layer, delta.square() / N, a_in)
            g_a = delta @ layer.W
    return _zero_like_params(model, out)


def rademacher(params: dict[str, Tensor], k: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``k`` Rademacher probes per parameter, ``v: [k, *shape]`` with entries +-1 (each with
    probability 1/2), in the parameter's dtype and device: ``E[v v^T] = I``, so
    ``E[v * (H v)] = diag(H)`` and ``E ||H v||^2 = ||H||_F^2``."""
    return {
        n: torch.randint(0, 2, (k, *p.shape), generator=generator, device=generator.device)
        .to(device=p.device, dtype=p.dtype)
        .mul_(2)
        .sub_(1)
        for n, p in params.items()
    }


def hutchinson_diag(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    probes: int = 100,
    generator: torch.Generator | None = None,
    *,
    return_std: bool = False,
    chunk: int = 16,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Hutchinson estimate of the Hessian diagonal: mean over Rademacher probes of v * (H v).

        diag H ~ (1/K) sum_k v_k * (H v_k),    v_k in {-1, +1}^P,  E[v v^T] = I

    Unbiased; the per-probe variance of entry i is ``sum_{j != i} H_ij^2``. Each ``H v`` is a
    forward-over-reverse Hessian-vector product (``torch.func.jvp`` of ``torch.func.grad``) of
    the op view's loss (:func:`prunelab.ops.param_loss`, evaluation mode, so MLPs and convnets
    alike), batched over ``chunk`` probes at a time with ``torch.func.vmap``.

    Parameters
    ----------
    model, x, y
        As :func:`diag_hessian` (any model the op view takes).
    probes : int
        Number K of Rademacher probes, at least 1 (2 or more for ``return_std``).
    generator : torch.Generator, optional
        Source of the probes (on the parameters' device); default a fresh generator seeded 0.
    return_std : bool
        Also return the standard error of each estimated entry: the sample standard deviation
        of the K per-probe values ``v_k * (H v_k)`` divided by ``sqrt(K)``.
    chunk : int
        Probes evaluated together (memory grows linearly with it).

    Returns
    -------
    dict[str, Tensor] or (dict, dict)
        The estimate, and with ``return_std`` its standard error, keyed like
        ``model.named_parameters()``.

    References
    ----------
    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines"; Bekas, Kokiopoulou & Saad (2007), "An estimator for the
    diagonal of a matrix", Appl. Numer. Math. 57; Yao et al. (2021), "AdaHessian".
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"hutchinson_diag: probes must be a positive integer; got {probes!r}")
    if return_std and probes < 2:
        raise ValueError(f"hutchinson_diag: return_std needs probes >= 2; got {probes}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"hutchinson_diag: chunk must be a positive integer; got {chunk!r}")
    view = ops.parse(model, method="hutchinson_diag")
    if view.dense:
        view, _, x, y = _prepare(model, x, y, "hutchinson_diag")
    else:
        x, y = _check_op_inputs(view, x, y, "hutchinson_diag", shared=False)
    params = {n: p.detach() for n, p in model.named_parameters()}
    if checks.generator(generator, "hutchinson_diag") is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    grad_fn = torch.func.grad(ops.param_loss(view, x, y))

    def v_hv(v: dict[str, Tensor]) -> dict[str, Tensor]:
        hv = torch.func.jvp(grad_fn, (params,), (v,))[1]
        return {n: v[n] * hv[n] for n in v}

    total = {n: torch.zeros_like(p) for n, p in params.items()}
    total_sq = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, probes, chunk):
        k = min(chunk, probes - start)
        v = rademacher(params, k, generator)  # [k, *shape]
        samples = torch.func.vmap(v_hv)(v)  # [k, *shape] per-probe v * Hv
        for n, s in samples.items():
            total[n] += s.sum(0)
            total_sq[n] += s.square().sum(0)
    mean = {n: t / probes for n, t in total.items()}
    if not return_std:
        return mean
    var = {  # unbiased sample variance of the per-probe values
        n: ((total_sq[n] - probes * mean[n].square()) / (probes - 1)).clamp_min(0) for n in mean
    }
    return mean, {n: (v / probes).sqrt() for n, v in var.items()}


def flatten(diag: dict[str, Tensor]) -> Tensor:
    """Concatenate a per-parameter dict into one vector ``[P]`` in the dict's order."""
    return torch.cat([t.reshape(-1) for t in diag.values()])


# Every estimator is called as fn(model, x, y) -> {param_name: Tensor shaped like the param};
# hutchinson_diag takes optional (probes, generator) with defaults (100, seeded 0).
ESTIMATORS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "exact": diag_hessian,
    "ggn": diag_ggn,
    "fisher": empirical_fisher_diag,
    "hutchinson": hutchinson_diag,
    "becker_lecun": becker_lecun_diag,
}
