"""Node ablation: the loss under many node masks at once, and its gradient w.r.t. the masks.

For a node mask ``m: [H]`` (see :mod:`prunelab.masks`) the ablated loss is the cross-entropy

    L(m) = 1/N sum_n l_n(m),    l_n(m) = logsumexp_c f_c(x_n; m) - f_{y_n}(x_n; m),

and its gradient ``dL/dm`` says, node by node, how the loss would change if the node were
turned up a little (Hobson 2022, "Exploring toy neural nets under node removal", section 1,
"Gradients of the loss"). For 0/1 masks ``L`` is the loss of the pruned network.

Everything is batched over masks. On MLPs the dense engine of :mod:`prunelab.masks` runs one
forward and one hand-written backward per chunk of masks; on convnets (a unit is a channel,
its mask multiplies the whole feature map) the op engine of
:mod:`prunelab.engines.masks_conv` runs one batched forward and autograd's reverse pass per
chunk. Behind a max pool a mask entry of exactly 0 is a kink of the loss; the gradient there
is the one-sided derivative of turning the unit up (:func:`prunelab.engines.masks_conv.run`). With ``p = softmax(f)``, the backward starts from
``dl_n/df = p_n - e_{y_n}``; with one hidden layer it reduces to

    dL/dm_j = 1/N sum_n a_{n,j} (W_out.T (p_n - e_{y_n}))_j .

With two classes the logits enter only through the margin ``s = f_1 - f_0``: the output layer
becomes one row ``W_out[1] - W_out[0]`` and ``l_n = softplus(t_n s_n)``, ``t_n = 1 - 2 y_n``,
``dl_n/ds_n = t_n sigmoid(t_n s_n)``, which halves the work of the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import ops
from ..engines import masks as engine
from ..engines import masks_conv
from ..engines.masks import DEFAULT_CHUNK_BYTES, Affine

REDUCTIONS = ("mean", "sum")

# A loss head maps logits of one chunk, (Mc, C, N), to per-point losses (Mc, N) and, if asked,
# dl/df (Mc, C, N).
Head = Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]


def mask_losses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    reduction: str = "mean",
) -> tuple[Tensor, Tensor]:
    """Cross-entropy of ``model`` under each node mask, and its gradient w.r.t. the mask.

    ``loss[m] = 1/N sum_n CE(model_m(x_n), y_n)`` where ``model_m`` multiplies hidden unit ``j``
    (a feature, or a conv channel's whole map) by ``masks[m, j]`` after its activation, and ``grad[m] = d loss[m] / d masks[m]``. Equal to
    a loop over masks with autograd, but batched: no Python loop over masks.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.ops.parse` accepts (MLP or convnet), with at least one hidden
        layer; dropout and BatchNorm act as in evaluation mode. It is not modified.
    x : Tensor[N, *in]
        Inputs (``[N, C, H, W]`` for a convnet); the computation runs on ``x``'s device and in
        its dtype.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.
    masks : Tensor[M, H]
        Node masks, ``H = sum(hidden_sizes(model))``, nodes numbered layer by layer.
    chunk_bytes : int
        Budget for the temporaries of one chunk of masks.
    reduction : {"mean", "sum"}
        Mean (as ``F.cross_entropy``) or sum over the ``N`` points.

    Returns
    -------
    loss : Tensor[M]
    grad : Tensor[M, H]

    Raises
    ------
    ValueError
        For a bad ``x`` or ``masks`` (see :func:`prunelab.masks.masked_logits`), labels that are
        not ``[N]`` integers in ``[0, C)``, no samples, or an unknown ``reduction``.

    References
    ----------
    D. Hobson (2022), "Exploring toy neural nets under node removal", section 1.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"mask_losses: reduction {reduction!r}: choose from {list(REDUCTIONS)}")
    if not ops.parse(model, method="mask_losses").dense:
        loss, grad = _conv_losses(model, x, y, masks, chunk_bytes, "mask_losses", grad=True)
        loss, grad = loss.sum(1), grad
        N = loss.new_tensor(x.shape[0])
        return (loss / N, grad / N) if reduction == "mean" else (loss, grad)
    layers, a1, masks, sizes = engine.prepare(model, x, masks, method="mask_losses")
    layers, head = _cross_entropy_head(layers, y, a1, method="mask_losses")
    N, M = a1.shape[1], masks.shape[0]
    loss, grad = a1.new_empty(M), a1.new_empty(M, sum(sizes))
    per_mask = engine.per_mask_bytes(layers, N, a1.element_size())
    for sl in engine.chunks(M, per_mask, chunk_bytes):
        blocks = engine.split(masks[sl], sizes)
        f, cache = engine.forward(layers, a1, blocks)  # (Mc, C, N)
        point_loss, df = head(f, True)  # (Mc, N), (Mc, C, N)
        loss[sl] = point_loss.sum(1)
        grad[sl] = engine.backward(layers, a1, blocks, cache, df)  # (Mc, H)
    if reduction == "mean":
        loss, grad = loss.div_(N), grad.div_(N)
    return loss, grad


def mask_point_losses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """Cross-entropy of every point under every node mask (for loss heatmaps).

    ``out[m, n] = CE(model_m(x_n), y_n)``; ``out.mean(1)`` is :func:`mask_losses`'s loss.

    Parameters
    ----------
    model, x, y, masks, chunk_bytes
        As in :func:`mask_losses`.

    Returns
    -------
    Tensor[M, N]
    """
    if not ops.parse(model, method="mask_point_losses").dense:
        method = "mask_point_losses"
        return _conv_losses(model, x, y, masks, chunk_bytes, method, grad=False)[0]
    layers, a1, masks, sizes = engine.prepare(model, x, masks, method="mask_point_losses")
    layers, head = _cross_entropy_head(layers, y, a1, method="mask_point_losses")
    N, M = a1.shape[1], masks.shape[0]
    out = a1.new_empty(M, N)
    per_mask = engine.per_mask_bytes(layers, N, a1.element_size()) // 2  # no gradients
    for sl in engine.chunks(M, per_mask, chunk_bytes):
        f, _ = engine.forward(layers, a1, engine.split(masks[sl], sizes))
        out[sl] = head(f, False)[0]
    return out


def point_mask_gradients(
    model: nn.Module, x: Tensor, y: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Gradient of each point's loss w.r.t. a node mask (for gradient heatmaps).

    ``out[n, j] = d CE(model_m(x_n), y_n) / d m_j`` at ``m = mask`` (default: all ones, the
    unpruned network); ``out.mean(0)`` is :func:`mask_losses`'s gradient for that mask
    (Hobson 2022, section 1, "Heatmap of Gradient").

    Parameters
    ----------
    model, x, y
        As in :func:`mask_losses`.
    mask : Tensor[H], optional
        One node mask.

    Returns
    -------
    Tensor[N, H]
    """
    method = "point_mask_gradients"
    sizes = ops.parse(model, method=method).hidden_sizes
    if mask is None:
        mask = torch.ones(sum(sizes))
    if not isinstance(mask, Tensor) or mask.shape != (sum(sizes),):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"{method}: mask must be one node mask of shape [{sum(sizes)}] (hidden sizes "
            f"{sizes}); got {got}"
        )
    view, xs, m = engine.conv_inputs(model, x, mask[None], method=method)
    N = xs.shape[0]
    y = _labels(y, N, view.out_features, xs.device, method)
    # one copy of the mask per point: d(sum of losses)/d(copy n) is point n's gradient
    m = m.expand(N, -1).clone().requires_grad_(True)  # (N, H)
    with torch.enable_grad():
        scales = dict(enumerate(m.split(sizes, dim=1)))  # per point: [N, H_l]
        at = masks_conv.points(view, nonneg=bool((m >= 0).all()))
        f = masks_conv.run(view, xs, 0, scales, at)
        (grad,) = torch.autograd.grad(F.cross_entropy(f, y, reduction="sum"), m)
    return grad


def _conv_losses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    chunk_bytes: int,
    method: str,
    *,
    grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Per-point losses ``[M, N]`` and, with ``grad``, d(their sum over points)/d(masks)
    ``[M, H]`` on the op engine (:mod:`prunelab.engines.masks_conv`)."""
    view, xs, masks = engine.conv_inputs(model, x, masks, method=method)
    y = _labels(y, xs.shape[0], view.out_features, xs.device, method)
    p = masks_conv.plan(view, xs, nonneg=bool((masks >= 0).all()))
    order, rows = masks_conv.grouped(p, masks, grad=grad)
    Mc = masks_conv.chunk_size(p, chunk_bytes=chunk_bytes, backward=grad, rows=rows)
    points, grads = [], []
    for m in (masks if order is None else masks[order]).split(Mc):
        point, g = masks_conv.losses(p, y, m, grad=grad, loss=masks_conv.cross_entropy, rows=rows)
        points.append(point)
        grads.append(g)
    point, g = torch.cat(points), (torch.cat(grads) if grad else None)
    if order is None:
        return point, g
    back = torch.argsort(order)
    return point[back], (g[back] if grad else None)


def _cross_entropy_head(
    layers: tuple[Affine, ...], y: Tensor, a1: Tensor, *, method: str
) -> tuple[tuple[Affine, ...], Head]:
    """Validate ``y`` and pick the loss head; for two classes, swap in the margin row."""
    out = layers[-1]
    y = _labels(y, a1.shape[1], out.weight.shape[0], a1.device, method)
    if out.weight.shape[0] == 2 and out.activation == "identity":
        margin = Affine(out.weight[1:] - out.weight[:1], out.bias[1:] - out.bias[:1])  # (1, H_L)
        t = (1 - 2 * y).to(a1.dtype)  # (N,)
        return (*layers[:-1], margin), lambda s, need_grad: _binary_ce(s, t, need_grad)
    index = y.view(1, 1, -1)
    return layers, lambda f, need_grad: _ce(f, index, need_grad)


def _labels(y: Tensor, N: int, C: int, device: torch.device, method: str) -> Tensor:
    """``y`` as ``long`` on ``device`` after checking it holds ``N`` labels in ``[0, C)``."""
    if N == 0:
        raise ValueError(f"{method}: x holds no samples; the mean loss needs at least one")
    if not isinstance(y, Tensor):
        raise TypeError(f"{method}: y must be a torch.Tensor; got {type(y).__name__}")
    if y.shape != (N,) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"{method}: y must be integer class labels of shape [{N}]; "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    y = y.to(device=device, dtype=torch.long)
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(
            f"{method}: labels y must lie in [0, {C}) for a model with {C} outputs; "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    return y


def _binary_ce(s: Tensor, t: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``l = softplus(t s)`` and ``dl/ds = t sigmoid(t s)`` for margins ``s: (Mc, 1, N)``."""
    u = s * t  # (Mc, 1, N): margin of the other class over the true one
    # softplus(u) = u + log1p(exp(-u)) is u to rounding once exp(-u) < eps: exact in any dtype
    threshold = -math.log(torch.finfo(u.dtype).eps)
    loss = F.softplus(u, threshold=threshold).squeeze(1)  # (Mc, N)
    return loss, (torch.sigmoid(u).mul_(t) if need_grad else None)


def _ce(f: Tensor, index: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``l = logsumexp(f) - f_y`` and ``dl/df = softmax(f) - e_y`` for ``f: (Mc, C, N)``."""
    index = index.expand(f.shape[0], 1, -1)  # (Mc, 1, N)
    f_y = f.gather(1, index)
    f_max = f.amax(1, keepdim=True)
    e = (f - f_max).exp_()  # (Mc, C, N)
    total = e.sum(1, keepdim=True)
    loss = (total.log() + f_max - f_y).squeeze(1)  # (Mc, N)
    if not need_grad:
        return loss, None
    p = e.div_(total)
    return loss, p.scatter_add_(1, index, torch.full_like(f_y, -1.0))


# --- statistics of mask gradients (Hobson 2022, section 1, "Is that node on") -----------------


def log_mask_gradients(loss: Tensor, grad: Tensor) -> Tensor:
    """Gradient of the log-loss w.r.t. the mask: ``d log L / dm = (dL/dm) / L``.

    ``loss: [M]`` and ``grad: [M, H]`` as :func:`mask_losses` returns them; returns ``[M, H]``.
    A loss that is not positive has no logarithm: ``ValueError``.
    """
    if loss.dim() != 1 or grad.dim() != 2 or grad.shape[0] != loss.shape[0]:
        raise ValueError(
            f"log_mask_gradients: expected loss [M] and grad [M, H]; got {list(loss.shape)} and "
            f"{list(grad.shape)}"
        )
    if not (loss > 0).all():
        raise ValueError("log_mask_gradients: every loss must be > 0 (log L is undefined at 0)")
    return grad / loss[:, None]


def on_off(grad: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """The gradients of units that are on (``m == 1``) and of those that are off (``m == 0``).

    ``grad, m: [M, H]``; returns two flat tensors (their lengths add up to ``M H`` for 0/1
    masks). The source split d log L / d m at p = 0.5 this way: on 0.056, off -0.173.
    """
    if grad.shape != m.shape:
        raise ValueError(
            f"on_off: grad and m must have the same shape; got {list(grad.shape)}, {list(m.shape)}"
        )
    return grad[m == 1], grad[m == 0]


def node_on_off_means(grad: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per unit ``[H]``: the mean gradient over the masks where it is on, and where it is off
    (NaN where a unit is never on, or never off). ``grad, m: [M, H]``."""
    on_off(grad, m)  # validates the shapes
    return (
        torch.where(m == 1, grad, torch.nan).nanmean(0),
        torch.where(m == 0, grad, torch.nan).nanmean(0),
    )
