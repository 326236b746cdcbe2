"""Many node masks at once: the batched engine behind node ablation.

MLPs run on the dense engine of this module; every other model (convolutions, pooling,
BatchNorm), where a conv layer's units are its output channels, runs on the op engine of
:mod:`prunelab.engines.masks_conv`. :func:`masked_logits` and :mod:`prunelab.ablation` pick
the engine. The dense engine:

A node mask ``m: Tensor[M, H]`` holds one weight per hidden node (``H`` = total hidden width,
nodes numbered layer by layer) and multiplies each node after its activation:

    a^1 = phi(W1 x + b1),   ã^l = a^l * m^l,   a^{l+1} = phi(W_{l+1} ã^l + b_{l+1}),
    f = W_out ã^L + b_out

(Hobson 2022, "Exploring toy neural nets under node removal", section 1: the ``on_nodes``
input.) The engine evaluates all ``M`` masks with batched matmuls, never a loop over masks:

* the first hidden layer ``a^1`` depends on no mask: it is computed once and shared by every
  chunk of masks;
* every mask is folded into the weights that read its layer, ``W_{l+1} ã^l = (W_{l+1} * m^l) a^l``
  (per mask ``W_{l+1} * m^l: [H_{l+1}, H_l]``); on the shared ``a^1`` this makes one GEMM
  ``[Mc * H2, H1] @ [H1, N]`` per chunk, with one hidden layer it is the fold of the masks into
  the output weights, and later layers are one ``bmm`` per chunk;
* the gradient w.r.t. a mask is a GEMM too (see :func:`backward`);
* masks are processed in chunks of ``Mc`` sized to a memory budget (``chunk_bytes``).

Inside a chunk, per-mask tensors are laid out points last, ``(Mc, H, N)``: the layout both the
shared GEMM and ``bmm`` produce, and the one in which elementwise work runs over contiguous
memory.

:func:`forward` and :func:`backward` are the engine (``backward`` is the hand-written reverse
pass for d(scalar)/d(mask), used by :mod:`prunelab.ablation`); :func:`masked_logits` is the
public forward, :func:`hidden_activations` the unmasked one. :func:`bernoulli`,
:func:`flip_paths` and :func:`removals` make the masks of the source's experiments. Dropout is
treated as at evaluation time (identity).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..base import checks, models, ops
from . import masks_conv

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Affine",
    "Prepared",
    "backward",
    "bernoulli",
    "chunks",
    "flip_paths",
    "forward",
    "hidden_activations",
    "hidden_sizes",
    "masked_logits",
    "per_mask_bytes",
    "prepare",
    "removals",
    "split",
]

DEFAULT_CHUNK_BYTES = 2**24  # 16 MiB of temporaries per chunk: cache-friendly, measured

_NEEDS_Z = (
    "gelu",
    "gelu_tanh",
    "leaky_relu",
)  # activations whose derivative is not a function of a = phi(z)


class Affine(NamedTuple):
    """One layer as plain tensors: ``z = W a + b``, then ``phi(z)`` (``W: [H_out, H_in]``)."""

    weight: Tensor
    bias: Tensor
    activation: str = "identity"
    slope: float = 0.0


class Prepared(NamedTuple):
    """Validated inputs of the engine.

    ``layers`` are the dense layers after the first (the first one is consumed by ``a1``),
    ``a1: [H1, N]`` the shared, mask-independent first hidden layer (points last),
    ``masks: [M, H]`` in the compute dtype, ``sizes`` the hidden widths.
    """

    layers: tuple[Affine, ...]
    a1: Tensor
    masks: Tensor
    sizes: list[int]


def prepare(model: nn.Module, x: Tensor, masks: Tensor, *, method: str) -> Prepared:
    """Validate ``x`` and ``masks`` against ``model`` and compute the shared prefix ``a^1``.

    Computation follows ``x``: its device, and its dtype if floating (else the weights').
    Weights are detached copies-on-need (``Tensor.to``); the model is never modified.

    Raises
    ------
    TypeError
        If ``x`` or ``masks`` is not a tensor, or ``model`` is not a supported Sequential.
    ValueError
        If the model has no hidden layer, ``x`` does not have the model's ``D`` input
        features, ``masks`` is not ``[M, H]`` or holds non-finite values.
    """
    net = models.parse(model, method=method)
    sizes = net.hidden_sizes
    if not sizes:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes to mask")
    for name, t in (("x", x), ("masks", masks)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{method}: {name} must be a torch.Tensor; got {type(t).__name__}")
    D, H = net.in_features, sum(sizes)
    xs = net.inputs(checks.tensor(x, method, "x"))
    if xs.dim() != 2 or xs.shape[1] != D:
        raise ValueError(
            f"{method}: x must have shape [N, {D}] ({D} input features"
            f"{', flattened' if net.flatten else ''}); got shape {tuple(x.shape)}"
        )
    if masks.dim() != 2 or masks.shape[1] != H:
        raise ValueError(
            f"{method}: masks must have shape [M, {H}] (H = total hidden width, hidden sizes "
            f"{sizes}); got shape {tuple(masks.shape)}"
        )
    weight = net.layers[0].weight
    dtype = xs.dtype if xs.is_floating_point() else weight.dtype
    masks = checks.tensor(
        masks.detach().to(device=xs.device, dtype=dtype), method, "masks", nonempty=False
    )
    layers = tuple(_affine(layer, xs.device, dtype) for layer in net.layers)
    first = layers[0]
    z1 = torch.addmm(first.bias[:, None], first.weight, xs.detach().to(dtype).T)  # (H1, N)
    a1 = _phi(first, z1, inplace=True)
    return Prepared(layers[1:], a1, masks, sizes)


def conv_inputs(
    model: nn.Module, x: Tensor, masks: Tensor, *, method: str
) -> tuple[ops.View, Tensor, Tensor]:
    """Validate ``x`` and ``masks`` for the op engine (:mod:`.masks_conv`); return the view of
    a model in evaluation mode and ``x``'s dtype (a copy where needed), ``x`` and ``masks``.

    Computation follows ``x``: its device, and its dtype if floating (else the weights').
    """
    view = ops.parse(model, method=method)
    if not view.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no units to mask")
    for name, t in (("x", x), ("masks", masks)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{method}: {name} must be a torch.Tensor; got {type(t).__name__}")
    dtype = x.dtype if x.is_floating_point() else view.dtype
    if dtype != view.dtype or x.device != view.device or any(m.training for m in model.modules()):
        model = copy.deepcopy(model).to(device=x.device, dtype=dtype).eval()
        view = ops.parse(model, method=method)
    xs = view.check_x(x, method, convert=True)
    sizes = view.hidden_sizes
    H = sum(sizes)
    if masks.dim() != 2 or masks.shape[1] != H:
        raise ValueError(
            f"{method}: masks must have shape [M, {H}] (H = total number of units, per hidden "
            f"layer {sizes}; a conv layer's units are its channels); got shape "
            f"{tuple(masks.shape)}"
        )
    masks = masks.detach().to(device=xs.device, dtype=dtype)
    return view, xs, checks.tensor(masks, method, "masks", nonempty=False)


def _affine(layer: models.Dense, device: torch.device, dtype: torch.dtype) -> Affine:
    """The detached weights of one parsed layer on ``device``/``dtype`` (zero bias if none)."""
    weight = layer.weight.detach().to(device=device, dtype=dtype)
    bias = layer.bias
    bias = weight.new_zeros(weight.shape[0]) if bias is None else bias.detach().to(weight)
    return Affine(weight, bias, layer.activation, layer.slope)


def chunks(M: int, per_mask_bytes: int, chunk_bytes: int) -> list[slice]:
    """Slices of ``range(M)`` with ``Mc = chunk_bytes // per_mask_bytes`` masks each (>= 1)."""
    if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive int; got {chunk_bytes!r}")
    Mc = max(1, chunk_bytes // max(1, per_mask_bytes))
    return [slice(start, min(start + Mc, M)) for start in range(0, M, Mc)]


def per_mask_bytes(layers: Sequence[Affine], N: int, itemsize: int) -> int:
    """About the bytes of temporaries one mask needs in :func:`forward` plus :func:`backward`.

    Per point: 3 tensors per per-mask layer (activation or logits, backpropagated gradient,
    its product with phi'); per layer: the folded weights ``W * m`` and ``G``.
    """
    per_point = sum(3 * layer.weight.shape[0] for layer in layers)
    per_layer = sum(2 * layer.weight.numel() for layer in layers)
    return itemsize * (N * per_point + per_layer)


def split(masks: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Per-layer blocks of ``masks: [Mc, H]``: ``[Mc, H_1], ..., [Mc, H_L]`` (views)."""
    return list(masks.split(list(sizes), dim=1))


def forward(
    layers: Sequence[Affine], a1: Tensor, blocks: Sequence[Tensor]
) -> tuple[Tensor, list[tuple[Tensor, Tensor | None]]]:
    """Outputs of one chunk of masks, and what :func:`backward` needs.

    Parameters
    ----------
    layers : sequence of Affine
        Layers 2..L+1 (the last one is the output layer).
    a1 : Tensor[H1, N]
        Shared first hidden layer activations, points last.
    blocks : sequence of Tensor
        Mask blocks ``[Mc, H_l]`` for hidden layers 1..L (see :func:`split`).

    Returns
    -------
    f : Tensor[Mc, C, N]
        Outputs (logits), points last.
    cache : list of (a, z)
        Per layer of ``layers``: its activations ``a: [Mc, H_out, N]`` (before any mask; the
        last is ``f``) and the pre-activations ``z`` where the activation's derivative needs
        them (else None).
    """
    cache: list[tuple[Tensor, Tensor | None]] = []
    a = a1
    for layer, m in zip(layers, blocks, strict=True):
        z = _masked_linear(a, m, layer)  # (Mc, H_out, N)
        keep_z = layer.activation in _NEEDS_Z
        a = _phi(layer, z, inplace=not keep_z)
        cache.append((a, z if keep_z else None))
    return a, cache


def backward(
    layers: Sequence[Affine],
    a1: Tensor,
    blocks: Sequence[Tensor],
    cache: Sequence[tuple[Tensor, Tensor | None]],
    df: Tensor,
) -> Tensor:
    """Gradient of a scalar ``S`` w.r.t. the masks of one chunk, given ``df = dS/df``.

    Reverse pass of :func:`forward`. With ``z^{l+1} = (W_{l+1} * m^l) a^l + b_{l+1}`` and
    ``δ^{l+1} = dS/dz^{l+1}: [H_{l+1}, N]`` (per mask),

        dS/dm^l_j = sum_k W_{l+1,kj} G_{kj},    G = δ^{l+1} (a^l).T       (a GEMM over points)
        δ^l = phi'(z^l) * ((W_{l+1} * m^l).T δ^{l+1}),    δ^{L+1} = phi'(z^{L+1}) * df.

    Parameters
    ----------
    df : Tensor[Mc, C, N]
        Gradient of ``S`` w.r.t. the outputs of :func:`forward`.

    Returns
    -------
    Tensor[Mc, H]
    """
    grads: list[Tensor] = []
    delta = df
    for k in reversed(range(len(layers))):
        layer, m = layers[k], blocks[k]
        W = layer.weight  # (H_out, H_in)
        delta = _PHI_BACKWARD[layer.activation](delta, *cache[k], layer.slope)  # dS/dz
        if k == 0:  # shared a1: one GEMM, G.T = a1 δ.T, the orientation MKL runs fastest
            Mc, H_out, N = delta.shape
            G_t = (a1 @ delta.reshape(Mc * H_out, N).T).view(-1, Mc, H_out)  # (H1, Mc, H_out)
            grads.append((G_t * W.T[:, None, :]).sum(2).T)  # (Mc, H1)
            break
        a = cache[k - 1][0]  # input of layer k: (Mc, H_in, N)
        G = torch.bmm(delta, a.transpose(1, 2))  # (Mc, H_out, H_in)
        grads.append((G * W).sum(1))  # (Mc, H_in)
        delta = torch.bmm((W * m[:, None, :]).transpose(1, 2), delta)  # dS/dã: (Mc, H_in, N)
    return torch.cat(grads[::-1], dim=1)


def _masked_linear(a: Tensor, m: Tensor, layer: Affine) -> Tensor:
    """``(W * m) a + b`` per mask, for a shared ``a: [H_in, N]`` or ``a: [Mc, H_in, N]``."""
    W_m = layer.weight * m[:, None, :]  # (Mc, H_out, H_in)
    # a shared a: one GEMM (Mc * H_out, H_in) @ (H_in, N); a per-mask a: one bmm
    return torch.matmul(W_m, a).add_(layer.bias[:, None])  # (Mc, H_out, N)


def _phi(layer: Affine, z: Tensor, *, inplace: bool = False) -> Tensor:
    """The layer's activation, in place on ``z`` where that is allowed."""
    if inplace and layer.activation == "relu":
        return z.relu_()
    if inplace and layer.activation == "tanh":
        return z.tanh_()
    if inplace and layer.activation == "sigmoid":
        return z.sigmoid_()
    return models.phi(layer.activation, z, layer.slope)


# g * phi'(z) for each activation, given a = phi(z) and z (None unless in _NEEDS_Z): the
# single-pass kernels autograd itself uses.
_PHI_BACKWARD = {
    "relu": lambda g, a, z, slope: torch.ops.aten.threshold_backward(g, a, 0),
    "leaky_relu": lambda g, a, z, slope: torch.ops.aten.leaky_relu_backward(g, z, slope, False),
    "tanh": lambda g, a, z, slope: torch.ops.aten.tanh_backward(g, a),
    "sigmoid": lambda g, a, z, slope: torch.ops.aten.sigmoid_backward(g, a),
    "gelu": lambda g, a, z, slope: torch.ops.aten.gelu_backward(g, z),
    "gelu_tanh": lambda g, a, z, slope: torch.ops.aten.gelu_backward(g, z, approximate="tanh"),
    "identity": lambda g, a, z, slope: g,
}


def hidden_sizes(model: nn.Module) -> list[int]:
    """Units per hidden layer (the blocks of a unit mask ``[M, H]``); a conv layer's units are
    its output channels."""
    return ops.parse(model, method="hidden_sizes").hidden_sizes


def hidden_activations(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Activations of every hidden layer, unmasked (evaluation mode): ``[N, H_l]`` for a
    Linear, ``[N, H_l, h, w]`` for a Conv2d (a channel's feature map).

    On an MLP ``torch.cat(hidden_activations(model, x), 1)`` is ``[N, H]``, units numbered as
    in a mask.
    """
    view = ops.parse(model, method="hidden_activations")
    xs = view.check_x(x, "hidden_activations")
    with torch.no_grad():
        return ops.forward(view, xs, taps=True, training=False)[1]


# --- mask generators (Hobson 2022, section 1) -----------------------------------------------


def bernoulli(
    M: int, H: int, p: float, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``M`` random 0/1 node masks ``[M, H]``, each node on independently with probability ``p``."""
    _check_counts(M=M, H=H)
    checks.real(p, "masks.bernoulli", "p (a probability)", low=0.0, high=1.0)
    checks.instance(generator, torch.Generator, "masks.bernoulli", "generator", "a torch.Generator")
    return (torch.rand(M, H, generator=generator) < p).to(dtype)


def flip_paths(
    P: int, H: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``P`` walks ``[P, H + 1, H]`` from a random 0/1 mask to its complement, one flip a step.

    Each walk starts at ``b ~ Bernoulli(1/2)^H`` and flips the nodes in a uniformly random
    order ``pi``: step ``k`` holds ``b`` with nodes ``pi_1..pi_k`` flipped, so step ``H`` is
    ``1 - b`` (Hobson 2022, section 1, "How much does N flips matter").
    """
    _check_counts(P=P, H=H)
    checks.instance(
        generator, torch.Generator, "masks.flip_paths", "generator", "a torch.Generator"
    )
    start = torch.rand(P, H, generator=generator) < 0.5  # (P, H)
    when = torch.rand(P, H, generator=generator).argsort(1).argsort(1)  # step that flips node j
    flipped = torch.arange(H + 1)[None, :, None] > when[:, None, :]  # (P, H + 1, H)
    return (start[:, None, :] ^ flipped).to(dtype)


def removals(
    H: int, groups: Sequence[Sequence[int]], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """All-ones node masks ``[len(groups), H]``, row ``i`` with the nodes ``groups[i]`` set to 0."""
    _check_counts(H=H)
    rows = [i for i, group in enumerate(groups) for _ in group]
    nodes = [int(j) for group in groups for j in group]
    if any(not 0 <= j < H for j in nodes):
        raise ValueError(f"removals: node indices must lie in [0, {H}); got {sorted(set(nodes))}")
    out = torch.ones(len(groups), H, dtype=dtype)
    out[rows, nodes] = 0
    return out


def _check_counts(**counts: int) -> None:
    """Raise unless every named count is a non-negative int."""
    for name, n in counts.items():
        checks.integer(n, "masks", name, minimum=0)


def masked_logits(
    model: nn.Module, x: Tensor, masks: Tensor, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Tensor:
    """Logits of ``model`` on ``x`` under each of ``M`` node masks, all at once.

    ``f[m] = model(x)`` with every hidden unit ``j`` multiplied by ``masks[m, j]`` after its
    activation (a 0 removes the unit, a 1 keeps it, fractions scale it); a conv layer's units
    are its channels, and a channel's factor multiplies its whole feature map. Dropout and
    BatchNorm act as in evaluation mode. The result carries no autograd graph; for d(loss)/d(mask) use
    :func:`prunelab.ablation.mask_losses`.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.ops.parse` accepts (an MLP or a convnet), with at least one
        hidden layer.
    x : Tensor[N, *in]
        Inputs: ``[N, D]`` or images an MLP reads flattened; ``[N, C, H, W]`` for a convnet.
    masks : Tensor[M, H]
        Unit masks, ``H = sum(hidden_sizes(model))``, units numbered layer by layer; any real
        (bool, int or float) dtype.
    chunk_bytes : int
        Budget for the temporaries of one chunk of masks.

    Returns
    -------
    Tensor[M, N, C]
        On ``x``'s device, in ``x``'s dtype (the weights' dtype if ``x`` is not floating).

    Raises
    ------
    ValueError
        If ``x`` is not ``[N, D]``, ``masks`` is not ``[M, H]`` (the message gives ``H`` and the
        hidden sizes), or ``masks`` holds NaN or inf.

    Examples
    --------
    >>> model = models.mlp((2, 3, 2), seed=0)
    >>> masked_logits(model, torch.zeros(5, 2), torch.ones(4, 3)).shape
    torch.Size([4, 5, 2])
    """
    if not ops.parse(model, method="masked_logits").dense:
        view, xs, masks = conv_inputs(model, x, masks, method="masked_logits")
        p = masks_conv.plan(view, xs, nonneg=bool((masks >= 0).all()))
        order, rows = masks_conv.grouped(p, masks, grad=False)
        Mc = masks_conv.chunk_size(p, chunk_bytes=chunk_bytes, backward=False, rows=rows)
        with torch.no_grad():
            ms = masks if order is None else masks[order]
            f = torch.cat([masks_conv.logits(p, m, rows) for m in ms.split(Mc)])
        return f if order is None else f[torch.argsort(order)]
    layers, a1, masks, sizes = prepare(model, x, masks, method="masked_logits")
    N, M, C = a1.shape[1], masks.shape[0], layers[-1].weight.shape[0]
    out = a1.new_empty(M, N, C)
    # forward only: the budget covers the activations, not the gradients
    budget = per_mask_bytes(layers, N, a1.element_size()) // 2
    for sl in chunks(M, budget, chunk_bytes):
        f, _ = forward(layers, a1, split(masks[sl], sizes))
        out[sl] = f.transpose(1, 2)  # (Mc, C, N) -> (Mc, N, C)
    return out
