"""Certified bounds on the loss change from replacing hidden nodes by their mean (or zero).

Replace a set S of nodes of hidden layer l by constants c_S (their mean over the data, or 0).
Per sample the activations move by ``delta_S(x) = c_S - a_S(x)``, the next pre-activation by
``W^{l+1}[:, S] delta_S(x)``, and every later layer is Lipschitz, so the logits move by

    ||Delta f(x)||_2 <= K_S ||delta_S(x)||_2,
    K_S = ||W^{l+1}[:, S]||_2 * prod_{k=l+2}^{L} Lip(phi_{k-1}) ||W^k||_2     (spectral norms)

(downstream layers only; ``Lip(phi)`` is 1 for ReLU, tanh and LeakyReLU with slope <= 1, 1/4
for the sigmoid, about 1.129 for GELU). Cross-entropy ``l(f) = logsumexp(f) - f_y`` has
gradient ``p - e_y``, with ``||p - e_y||_2 = sqrt((1 - p_y)^2 + sum_{c != y} p_c^2) <=
sqrt(2)``, so per sample and, by Jensen, in expectation over the data,

    |Delta l(x)| <= sqrt(2) K_S ||delta_S(x)||_2,
    E |Delta l|  <= sqrt(2) K_S sqrt(E ||delta_S||_2^2) = sqrt(2) K_S sqrt(sum_{j in S} sigma_j^2)

with ``sigma_j^2`` the population variance of node j over the data (mean replacement) or
``E a_j^2`` (zeroing). This bounds the expected *absolute* change, hence also the change of
the expected loss; it holds exactly for the empirical distribution the moments are computed
on. Two refinements are offered: ``centred=True`` uses ``||P W^L||_2`` with ``P = I - 1 1^T /
C`` for the output layer (CE is invariant to adding a constant to all logits, so ``|Delta l|
<= sqrt(2) ||P Delta f||_2``), and ``norm="range"`` uses ``|Delta l| <= max_c Delta f_c -
min_c Delta f_c`` with infinity-norm operator bounds (no sqrt(2)).

Tightness: the constant sqrt(2) is a supremum, approached only when ``p`` is one-hot on a wrong
class; softmax is never one-hot, so no finite network attains the bound exactly, but it is
approached arbitrarily closely (see ``tests/test_bounds.py``: one hidden node feeding a
2-class output with a large wrong-class margin, ratio -> 1 as the margin grows).

Convnets (any model the op view takes: Conv2d, average and max pooling, eval-mode BatchNorm,
Flatten). A unit is a channel; replacing channel j by its mean holds its whole map at the
constant ``abar_j`` (the mean over samples *and* the P_l positions), so ``delta_S(x)`` is the
channels' maps minus those constants and its squared l2 norm sums over positions:

    E ||delta_S||_2^2 = P_l sum_{j in S} sigma_j^2,     sigma_j^2 over samples and positions.

From the replaced channels to the logits the network is a chain of links, each Lipschitz in
l2: a maximal run of linear ops (Conv2d and Linear with any BatchNorm folded in, average
pools, Flatten, Dropout as identity) with its *joint* operator norm at the actual input size,
computed exactly (dense SVD) or by Lanczos (:mod:`prunelab.engines.opnorms`; never the norm of
a kernel reshaped to a matrix); an activation, ``Lip(phi)``; a max pool, ``sqrt(m)`` with m
the most windows holding one input (1 without overlap). Every op before the first layer that
mixes channels acts channel by channel, so the links up to and including that reader's run
are restricted to the channels S (the norm of ``A R_S``), which is what makes the constants
differ between units. Hence

    |Delta l(x)| <= sqrt(2) K_S ||delta_S(x)||_2,   K_S = prod_links ||link||,
    E |Delta l|  <= sqrt(2) K_S sqrt(P_l sum_{j in S} sigma_j^2),

which for an MLP (P_l = 1, links = single Linears and activations) is the formula above.
``norm="range"`` uses infinity norms instead (max pools are 1-Lipschitz in it; a run's norm is
exact from its dense matrix when small, else bounded by the product of its ops' norms) and the
exact logit range of the last run. An activation after the output layer, if any, is one more
link (then ``|Delta l| <= 2 ||Delta f||_inf`` for ``"range"``, and ``centred`` gains nothing).
A convnet's operator norms depend on the input size: :func:`loss_lipschitz` and
:func:`node_lipschitz` need ``x`` (one sample is enough). :func:`source_bound` stays MLP-only.

Indices: ``layer = l`` counts hidden layers from 0; ``W^{l+1}`` is the Linear that reads hidden
layer l, ``W^L`` the output layer, ``phi_k`` the activation after ``W^k``. Dropout counts as
identity (evaluation mode). Results follow the parameters' dtype and device.

References
----------
D. Hobson (2022), "Train first vs prune first in neural networks", comment thread (the bound
with the product of all operator norms); METHODS.md D (the downstream-only form, the set,
zeroing and range versions).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import models, ops, stats
from ..engines import opnorms

REPLACEMENTS = ("mean", "zero")
NORMS = ("l2", "range")
CE_LIPSCHITZ = math.sqrt(2.0)  # sup ||p - e_y||_2 over the simplex, not attained

# sup_z |phi'(z)|; GELU's maximum is at z = sqrt(2) (phi'' = pdf(z) (2 - z^2) = 0)
_GELU_MAX = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2.0) * math.exp(-1.0) / math.sqrt(2 * math.pi)
_LIPSCHITZ = {
    "relu": 1.0,
    "tanh": 1.0,
    "identity": 1.0,
    "sigmoid": 0.25,
    "gelu": _GELU_MAX,  # 1.128904...
    "gelu_tanh": 1.128994,  # numerical maximum 1.1289931 at z = 1.4185, rounded up
}


def activation_lipschitz(activation: str, slope: float = 0.01) -> float:
    """Lipschitz constant ``sup_z |phi'(z)|`` of an activation in ``models.ACTIVATIONS``."""
    if activation == "leaky_relu":
        return max(1.0, abs(slope))
    if activation not in _LIPSCHITZ:
        raise ValueError(
            f"activation {activation!r}: choose from {sorted([*_LIPSCHITZ, 'leaky_relu'])}"
        )
    return _LIPSCHITZ[activation]


# --- Lipschitz constants of the loss w.r.t. the replaced activations -----------------------


def loss_lipschitz(
    model: nn.Module,
    layer: int,
    nodes: Iterable[int] | None = None,
    *,
    norm: str = "l2",
    centred: bool = False,
    x: Tensor | None = None,
) -> Tensor:
    """Lipschitz constant of the per-sample loss w.r.t. the activations of a node set S.

    ``|l(x; a_S + delta) - l(x; a_S)| <= L_S ||delta||`` for every sample and every ``delta``:

    * ``norm="l2"``: ``L_S = sqrt(2) ||W^{l+1}[:, S]||_2 prod_{k=l+2}^{L} Lip(phi_{k-1})
      ||W^k||_2`` with ``||delta||_2``; ``centred=True`` replaces the output weights
      ``W^L`` by ``P W^L``, ``P = I - 1 1^T / C``.
    * ``norm="range"``: ``L_S = ||W^{l+1}[:, S]||_inf prod_{k=l+2}^{L-1} Lip(phi_{k-1})
      ||W^k||_inf * Lip(phi_{L-1}) R(W^L)`` with ``||delta||_inf``, where ``||A||_inf`` is the
      largest absolute row sum and ``R(W) = max_{c, c'} ||W_c - W_c'||_1`` bounds the logit
      range, ``|Delta l| <= max_c Delta f_c - min_c Delta f_c``. If l+1 is the output layer,
      ``L_S = R(W^L[:, S])``.

    For a convnet, ``L_S = sqrt(2) K_S`` with ``K_S`` the product of the links' norms
    (module docstring), in the l2 norm of the channels' whole maps.

    Parameters
    ----------
    model : nn.Sequential
        A model the op view takes (MLP or convnet; BatchNorm in evaluation mode), with at
        least one hidden layer.
    layer : int
        Hidden-layer index (0-based among hidden layers).
    nodes : iterable of int, optional
        The node set S (distinct indices); default all nodes of the layer.
    norm : {"l2", "range"}
    centred : bool
        Project the output layer onto zero-sum logit changes (``norm="l2"`` only).
    x : Tensor[N, C, H, W], optional
        Inputs of the size the constant is for; required for a convnet (one sample is
        enough), whose operator norms depend on the spatial size.

    Returns
    -------
    Tensor
        A scalar, in the parameters' dtype.
    """
    method = "loss_lipschitz"
    net, ell = _net_layer(model, layer, method)
    S = _check_nodes(net, ell, nodes, method)
    norm, centred = _check_options(norm, centred, method)
    if isinstance(net, ops.View):
        shapes = _shapes(net, _probe(net, x, method))
        return _constants(net, ell, [S.tolist()], norm, centred, shapes, {})[0]
    if x is not None:
        net.check_x(x, method)
    W_next = _output_weight(net, ell + 1, centred)[:, S]  # [H_{l+1}, |S|]
    return _first_factor(net, ell, W_next, norm) * _downstream(net, ell, norm, centred)


def node_lipschitz(
    model: nn.Module,
    layer: int,
    *,
    norm: str = "l2",
    centred: bool = False,
    x: Tensor | None = None,
) -> Tensor:
    """:func:`loss_lipschitz` of every single node of hidden layer ``layer``: ``Tensor[H_l]``.

    For ``norm="l2"``: ``L_j = sqrt(2) ||W^{l+1}[:, j]||_2 prod_{k=l+2}^{L} Lip(phi_{k-1})
    ||W^k||_2`` (for a channel, ``sqrt(2) K_j``, module docstring). Parameters as
    :func:`loss_lipschitz`.
    """
    method = "node_lipschitz"
    net, ell = _net_layer(model, layer, method)
    norm, centred = _check_options(norm, centred, method)
    if isinstance(net, ops.View):
        shapes = _shapes(net, _probe(net, x, method))
        return _constants(net, ell, _singletons(net, ell), norm, centred, shapes, {})
    if x is not None:
        net.check_x(x, method)
    return _node_constants(net, ell, norm, centred)


def _node_constants(net: models.Net, ell: int, norm: str, centred: bool) -> Tensor:
    """``L_j`` for every node j of hidden layer l: [H_l]."""
    W_next = _output_weight(net, ell + 1, centred)  # [H_{l+1}, H_l]
    last = ell + 1 == len(net.layers) - 1
    if norm == "l2":
        first = CE_LIPSCHITZ * torch.linalg.vector_norm(W_next, dim=0)
    elif last:  # range of each column
        first = W_next.amax(0) - W_next.amin(0)
    else:
        first = W_next.abs().amax(0)
    return first * _downstream(net, ell, norm, centred)


def _output_weight(net: models.Net, k: int, centred: bool) -> Tensor:
    """``W^k`` detached, or ``P W^k`` (zero-mean columns) for the output layer if centred."""
    W = net.layers[k].weight.detach()
    if centred and k == len(net.layers) - 1:
        W = W - W.mean(0, keepdim=True)
    return W


def _first_factor(net: models.Net, ell: int, W_next: Tensor, norm: str) -> Tensor:
    """The factor of ``W^{l+1}[:, S]`` (with the CE constant for l2)."""
    if norm == "l2":
        return CE_LIPSCHITZ * torch.linalg.matrix_norm(W_next, ord=2)
    if ell + 1 == len(net.layers) - 1:
        return _logit_range(W_next)
    return W_next.abs().sum(1).amax()  # infinity-norm: largest absolute row sum


def _logit_range(W: Tensor) -> Tensor:
    """``R(W) = max_{c, c'} ||W_c - W_c'||_1``: ``max Wu - min Wu <= R(W) ||u||_inf``."""
    return torch.cdist(W[None], W[None], p=1).amax()


def _downstream(net: models.Net, ell: int, norm: str, centred: bool) -> Tensor:
    """``prod_{k=l+2}^{L} Lip(phi_{k-1}) ||W^k||`` (spectral for l2; inf-norms and R for range)."""
    W0 = net.layers[0].weight
    K = torch.ones((), dtype=W0.dtype, device=W0.device)
    last = len(net.layers) - 1
    for k in range(ell + 2, last + 1):
        below = net.layers[k - 1]
        W = _output_weight(net, k, centred)
        if norm == "l2":
            factor = torch.linalg.matrix_norm(W, ord=2)
        elif k == last:
            factor = _logit_range(W)
        else:
            factor = W.abs().sum(1).amax()
        K = K * activation_lipschitz(below.activation, below.slope) * factor
    return K


# --- convnets: the chain of links from the replaced channels to the logits ----------------


@dataclass(frozen=True)
class _Link:
    """A maximal run of linear ops, or one nonlinear op, after a hidden layer's units."""

    ops: tuple[int, ...]  # indices into view.ops
    linear: bool
    restricted: bool  # its input lies in the replaced channels (no channel mixing yet)


def _nonlinear(op: ops.Op) -> bool:
    return isinstance(op, ops.Activation) or (isinstance(op, ops.Pool) and op.routing)


def _output_activation(view: ops.View) -> bool:
    """Whether a nonlinear op follows the output layer."""
    last = view.ops.index(view.layers[-1])
    return any(_nonlinear(op) for op in view.ops[last + 1 :])


def _links(view: ops.View, ell: int) -> list[_Link]:
    """The links from hidden layer l's units (read after op ``unit_ops[l]``) to the logits."""
    links: list[_Link] = []
    run: list[int] = []
    restricted = True
    for k in range(view.unit_ops[ell] + 1, len(view.ops)):
        if not _nonlinear(view.ops[k]):
            run.append(k)
            continue
        if run:
            links.append(_Link(tuple(run), True, restricted))
            restricted = restricted and not any(isinstance(view.ops[i], ops.Affine) for i in run)
            run = []
        links.append(_Link((k,), False, restricted))
    if run:
        links.append(_Link(tuple(run), True, restricted))
    return links


def _probe(view: ops.View, x: Tensor | None, method: str) -> Tensor:
    """``x`` validated, or for a model without Conv2d a zero input (sizes are then fixed)."""
    if x is None:
        if view.conv:
            raise ValueError(
                f"{method}: the model has Conv2d layers, whose operator norms depend on the "
                f"input size; pass x=Tensor[N, {view.in_shape()[1:-1]}] (one sample is enough)"
            )
        return view.layers[0].weight.detach().new_zeros(1, view.layers[0].in_units)
    return view.check_x(x, method)


def _shapes(view: ops.View, x: Tensor) -> list[tuple[int, ...]]:
    """The input shape of one sample at every op: ``shapes[k]`` is op k's ``in``."""
    out = []
    with torch.no_grad():
        a = view.inputs(x[:1])
        for op in view.ops:
            out.append(tuple(a.shape[1:]))
            a = op.apply(a, training=False)
    return out


def _singletons(view: ops.View, ell: int) -> list[list[int]]:
    return [[j] for j in range(view.hidden_sizes[ell])]


def _set_constant(net, ell: int, S: Tensor, norm: str, centred: bool, x: Tensor) -> Tensor:
    """``L_S`` of :func:`loss_lipschitz` (``x`` validated, for a convnet's sizes)."""
    if isinstance(net, ops.View):
        return _constants(net, ell, [S.tolist()], norm, centred, _shapes(net, x), {})[0]
    L_S = _first_factor(net, ell, _output_weight(net, ell + 1, centred)[:, S], norm)
    return L_S * _downstream(net, ell, norm, centred)


def _constants(
    view: ops.View,
    ell: int,
    sets: list[list[int]],
    norm: str,
    centred: bool,
    shapes: list[tuple[int, ...]],
    cache: dict,
) -> Tensor:
    """``L_S`` for every channel set S of hidden layer l: ``[len(sets)]``.

    The product over the links of their norms (l2: joint operator norms, restricted to S up
    to the first reader; ``Lip(phi)``; ``sqrt(m)`` of a max pool), times ``sqrt(2)``; for
    ``"range"`` infinity norms, the last run's exact logit range, or ``2 ||.||_inf`` behind an
    output activation. ``cache`` keeps link norms between calls on the same view and sizes.
    """
    like = view.layers[0].weight.detach()
    links = _links(view, ell)
    K = like.new_ones(len(sets))
    for i, link in enumerate(links):
        final = i == len(links) - 1
        op = view.ops[link.ops[0]]
        if not link.linear:
            if isinstance(op, ops.Activation):
                K = K * activation_lipschitz(op.activation, op.slope)
            elif norm == "l2":  # max pool: sqrt of the most windows sharing one input
                m = opnorms.pool_multiplicity(_op_fn(op), shapes[link.ops[0]][-2:], like)
                K = K * math.sqrt(m)
            continue
        key = (link.ops, tuple(map(tuple, sets)) if link.restricted else None, norm, final, centred)
        if key not in cache:
            S = sets if link.restricted else None
            if norm == "l2":
                cache[key] = _link_l2(view, link, S, centred and final, shapes, like)
            elif final:
                cache[key] = _link_range(view, link, S, shapes, like)
            else:
                cache[key] = _link_inf(view, link, S, shapes, like)
        K = K * cache[key]
    if norm == "l2":
        return CE_LIPSCHITZ * K
    return K if links[-1].linear else 2 * K  # |Delta l| <= 2 ||Delta f||_inf


def _op_fn(op: ops.Op):
    return lambda v: op.apply(v, training=False)


def _linear_part(op: ops.Op, v: Tensor) -> Tensor:
    """A linear op on ``v``; an Affine without its bias, BatchNorm folded: ``s * (W v)``."""
    if not isinstance(op, ops.Affine):
        return op.apply(v, training=False)  # average pool, Flatten, Dropout/Identity
    z = op.response(v)
    st = op.scale_shift()
    return z if st is None else z * st[0].view(-1, *[1] * (z.dim() - 2))


def _link_fn(view: ops.View, link: _Link, centre: bool):
    """The run's linear map ``[B, *in] -> [B, *out]`` (then ``P = I - 1 1^T / C`` if centred)."""

    def fn(v: Tensor) -> Tensor:
        for k in link.ops:
            v = _linear_part(view.ops[k], v)
        return v - v.mean(1, keepdim=True) if centre else v

    return fn


def _link_l2(view, link, sets, centre, shapes, like) -> Tensor:
    """Spectral norm of the run (restricted to each set): scalar or ``[len(sets)]``."""
    fn = _link_fn(view, link, centre)
    return opnorms.spectral_norms(fn, shapes[link.ops[0]], like, sets=sets)


def _link_range(view, link, sets, shapes, like) -> Tensor:
    """Exact logit range ``max_{c,c'} ||A_c - A_c'||_1`` of the last run (restricted)."""
    in_shape = shapes[link.ops[0]]
    A = opnorms.dense_matrix(_link_fn(view, link, False), in_shape, like)  # [C, D_in]
    if sets is None:
        return _logit_range(A)
    A = A.view(A.shape[0], in_shape[0], -1)
    return torch.stack([_logit_range(A[:, S].reshape(A.shape[0], -1)) for S in sets])


def _link_inf(view, link, sets, shapes, like) -> Tensor:
    """Infinity norm (largest absolute row sum) of the run (restricted): exact from its dense
    matrix when that is small, else the product of its ops' norms (an upper bound)."""
    in_shape = shapes[link.ops[0]]
    fn = _link_fn(view, link, False)
    D_in, D_out = math.prod(in_shape), fn(like.new_zeros(1, *in_shape)).numel()
    if D_in * D_out <= opnorms.MAX_DENSE:
        A = opnorms.dense_matrix(fn, in_shape, like).abs()  # [D_out, D_in]
        if sets is None:
            return A.sum(1).amax()
        A = A.view(D_out, in_shape[0], -1)
        return torch.stack([A[:, S].sum((1, 2)).amax() for S in sets])
    scalar = sets is None
    K = like.new_ones(1 if scalar else len(sets))
    for k in link.ops:
        op = view.ops[k]
        if isinstance(op, ops.Affine):
            W = op.folded()[0].detach().abs()
            if sets is not None:  # the channels S as the reader sees them (blocks behind Flatten)
                W = W.reshape(W.shape[0], in_shape[0], -1)
                K = K * torch.stack([W[:, S].sum((1, 2)).amax() for S in sets])
                sets = None
            else:
                K = K * W.flatten(1).sum(1).amax()
        elif isinstance(op, ops.Pool):  # average pool: non-negative rows
            ones = like.new_ones(1, 1, *shapes[k][-2:])
            K = K * op.apply(ones, training=False).amax()
    return K[0] if scalar else K


# --- the bounds --------------------------------------------------------------------------


def sample_bound(
    model: nn.Module,
    x: Tensor,
    layer: int,
    nodes: Iterable[int] | None = None,
    *,
    replace: str = "mean",
    norm: str = "l2",
    centred: bool = False,
    reference: Tensor | None = None,
) -> Tensor:
    """Per-sample certificate ``|Delta l(x_n)| <= L_S ||delta_S(x_n)||`` for replacing S.

    ``delta_S(x) = c_S - a_S(x)`` with ``c_S`` the mean of ``a_S`` over ``reference``
    (default ``x``) for ``replace="mean"``, or 0 for ``"zero"``; ``L_S`` from
    :func:`loss_lipschitz`. For a single node and ``norm="l2"`` this is ``sqrt(2) K_j
    |a_j(x) - abar_j|``.

    Parameters
    ----------
    model : nn.Sequential
        A model the op view takes (MLP or convnet), with at least one hidden layer.
    x : Tensor[N, *in]
        Samples to bound (``[N, D]`` for an MLP, ``[N, C, H, W]`` for a convnet); same dtype
        and device as the parameters.
    layer : int
        Hidden-layer index (0-based among hidden layers).
    nodes : iterable of int, optional
        Distinct node indices S; default all nodes of the layer.
    replace : {"mean", "zero"}
    norm : {"l2", "range"}
        ``||delta||_2`` with spectral norms, or ``||delta||_inf`` with the logit-range form.
    centred : bool
        See :func:`loss_lipschitz`.
    reference : Tensor[N', *in], optional
        Data the replacement mean is taken on (default ``x``); for a channel the mean is over
        samples and positions.

    Returns
    -------
    Tensor[N]
        Upper bounds on ``|l(x_n; pruned) - l(x_n; model)|`` for any labels.
    """
    method = "sample_bound"
    net, ell = _net_layer(model, layer, method)
    S = _check_nodes(net, ell, nodes, method)
    replace = _check_replace(replace, method)
    norm, centred = _check_options(norm, centred, method)
    x = net.check_x(x, method)
    ref = x if reference is None else net.check_x(reference, method, name="reference")
    delta = _deviation(net, x, ref, ell, S, replace)  # [N, |S| P]
    L_S = _set_constant(net, ell, S, norm, centred, x)
    p = 2 if norm == "l2" else math.inf
    return L_S * torch.linalg.vector_norm(delta, ord=p, dim=1)


def expected_bound(
    model: nn.Module,
    x: Tensor,
    layer: int,
    nodes: Iterable[int] | None = None,
    *,
    replace: str = "mean",
    norm: str = "l2",
    centred: bool = False,
) -> Tensor:
    """Certificate on the mean absolute loss change over ``x`` from replacing S.

        (1/N) sum_n |Delta l(x_n)| <= L_S sqrt((1/N) sum_n ||delta_S(x_n)||_2^2)
                                     = L_S sqrt(sum_{j in S} sigma_j^2)       (mean replacement)

    with ``sigma_j^2`` the population variance of node j over ``x``, or ``E a_j^2`` for
    ``replace="zero"`` (for channels ``P_l sum sigma_j^2``, module docstring) (Jensen; for ``norm="range"`` the root mean square of
    ``||delta_S(x_n)||_inf``, at most ``sqrt(sum sigma_j^2)``). With the
    default options this is ``sqrt(2) ||W^{l+1}[:, S]||_2 prod ||W^k||_2 sqrt(sum sigma^2)``
    (METHODS.md D). The mean of :func:`sample_bound` is tighter (no Jensen step) and also
    certified. Parameters as :func:`sample_bound` (the mean is taken over ``x``).

    Returns
    -------
    Tensor
        A scalar.
    """
    method = "expected_bound"
    net, ell = _net_layer(model, layer, method)
    S = _check_nodes(net, ell, nodes, method)
    replace = _check_replace(replace, method)
    norm, centred = _check_options(norm, centred, method)
    x = net.check_x(x, method)
    delta = _deviation(net, x, x, ell, S, replace)  # [N, |S| P]
    L_S = _set_constant(net, ell, S, norm, centred, x)
    p = 2 if norm == "l2" else math.inf
    return L_S * torch.linalg.vector_norm(delta, ord=p, dim=1).square().mean().sqrt()


def node_bounds(
    model: nn.Module,
    x: Tensor,
    *,
    replace: str = "mean",
    norm: str = "l2",
    centred: bool = False,
) -> list[Tensor]:
    """:func:`expected_bound` of every single node, for every hidden layer.

        B^l_j = L_j sigma_j,   L_j = sqrt(2) ||W^{l+1}[:, j]||_2 prod_{k=l+2}^{L} Lip ||W^k||_2

    (``sqrt(E a_j^2)`` in place of ``sigma_j`` for ``replace="zero"``). For a channel,
    ``B^l_j = sqrt(2) K_j sqrt(P_l) sigma_j`` with ``sigma_j`` over samples and positions
    (``sqrt(P_l) sigma_j`` is the root mean square of ``||abar_j - a_{n,j}||_2`` over the
    map) and ``K_j`` the product of the links' norms (module docstring). Parameters as
    :func:`sample_bound`.

    Returns
    -------
    list of Tensor[H_l]
    """
    method = "node_bounds"
    net = _net(model, method)
    replace = _check_replace(replace, method)
    norm, centred = _check_options(norm, centred, method)
    x = net.check_x(x, method)
    acts = _units(net, x)
    cache: dict = {}
    shapes = _shapes(net, x) if isinstance(net, ops.View) else None
    out = []
    for ell, a in enumerate(acts):
        c = stats.unit_mean(a) if replace == "mean" else torch.zeros_like(stats.unit_mean(a))
        # [H_l] sigma_j or sqrt(E a_j^2) (times sqrt(P_l) for a channel)
        spread = stats.position_sum((a - stats.per_unit(c, a)).square()).mean(0).sqrt()
        if shapes is None:
            K = _node_constants(net, ell, norm, centred)
        else:
            K = _constants(net, ell, _singletons(net, ell), norm, centred, shapes, cache)
        out.append(K * spread)
    return out


def source_bound(
    model: nn.Module,
    x: Tensor,
    layer: int,
    nodes: Iterable[int] | None = None,
    *,
    literal: bool = False,
) -> Tensor:
    """The source's form: the product of *all* layers' operator norms times the spread.

        B_src = sqrt(2) * prod_{k=1}^{L} ||W^k||_2 * prod_{k=l+2}^{L} Lip(phi_{k-1})
                * sqrt(sum_{j in S} sigma_j^2)

    Hobson states "pruning a node with standard deviation X should increase the loss by at
    most K X, K the product of the operator norm of the weight matrices". Two differences from
    :func:`expected_bound`: (1) upstream layers ``W^1..W^l`` do not act on the perturbation,
    and the whole ``||W^{l+1}||_2`` replaces ``||W^{l+1}[:, S]||_2``. The result is therefore
    looser when ``prod_{k <= l} ||W^k||_2 >= ||W^{l+1}[:, S]||_2 / ||W^{l+1}||_2`` (always if
    the upstream product is at least 1, as in trained nets), but *not a certificate* when the
    upstream layers are contracting. (2) The statement omits CE's Lipschitz constant sqrt(2),
    which is needed: ``literal=True`` returns ``K X`` exactly as stated, which a one-node
    2-class network exceeds by a factor approaching sqrt(2) (``tests/test_bounds.py``).
    Parameters as :func:`expected_bound` (mean replacement, spectral norms).

    References
    ----------
    D. Hobson (2022), "Train first vs prune first in neural networks", comment thread.
    """
    method = "source_bound"
    net, ell = _net_layer(model, layer, method, generic=False)
    S = _check_nodes(net, ell, nodes, method)
    x = net.check_x(x, method)
    delta = _deviation(net, x, x, ell, S, "mean")
    K = torch.ones((), dtype=x.dtype, device=x.device)
    for k, dense in enumerate(net.layers):
        K = K * torch.linalg.matrix_norm(dense.weight.detach(), ord=2)
        if k > ell and k < len(net.layers) - 1:
            K = K * activation_lipschitz(dense.activation, dense.slope)
    constant = 1.0 if literal else CE_LIPSCHITZ
    return constant * K * delta.square().sum(1).mean().sqrt()


def loss_change(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    layer: int,
    nodes: Iterable[int] | None = None,
    *,
    replace: str = "mean",
    reference: Tensor | None = None,
) -> Tensor:
    """The observed per-sample change ``l(x_n; a_S := c_S) - l(x_n)`` the bounds certify.

    ``c_S`` is the mean of ``a_S`` over ``reference`` (default ``x``) or 0; equal to the loss
    change of :func:`prunelab.surgery.remove_nodes` with ``compensate="mean"`` (``"none"``).

    Parameters
    ----------
    model, x, layer, nodes, replace, reference
        As :func:`sample_bound`.
    y : Tensor[N]
        Integer class labels in ``[0, C)``.

    Returns
    -------
    Tensor[N]
        Signed cross-entropy changes.
    """
    method = "loss_change"
    net, ell = _net_layer(model, layer, method)
    S = _check_nodes(net, ell, nodes, method)
    replace = _check_replace(replace, method)
    x = net.check_x(x, method)
    ref = x if reference is None else net.check_x(reference, method, name="reference")
    y = net.check_labels(y, x.shape[0], method)
    with torch.no_grad():
        c = stats.unit_mean(_units(net, ref)[ell][:, S]) if replace == "mean" else 0.0
        before = F.cross_entropy(_logits(net, x), y, reduction="none")
        after = F.cross_entropy(_logits(net, x, (ell, S, c)), y, reduction="none")
    return after - before


# --- forward passes and validation ---------------------------------------------------------


def _logits(net: models.Net | ops.View, x: Tensor, replace: tuple | None = None) -> Tensor:
    """Logits [N, C]; ``replace = (l, S, c)`` sets ``a^l[:, S] = c`` on the way (a channel's
    whole map)."""
    view = net if isinstance(net, ops.View) else net.view
    if replace is None:
        return ops.forward(view, x, training=False)
    ell, S, c = replace

    def hold(a: Tensor) -> Tensor:
        a = a.clone()
        a[:, S] = stats.per_unit(c, a) if isinstance(c, Tensor) else c
        return a

    return ops.forward(view, x, edit={ell: hold}, training=False)


def _deviation(
    net: models.Net | ops.View, x: Tensor, ref: Tensor, ell: int, S: Tensor, replace: str
) -> Tensor:
    """``delta_S(x) = c_S - a_S(x)``, a channel's map flattened: [N, |S| P]."""
    a = _units(net, x)[ell][:, S]
    if replace == "zero":
        return -a.flatten(1)
    c = stats.unit_mean(a) if ref is x else stats.unit_mean(_units(net, ref)[ell][:, S])
    return (stats.per_unit(c, a) - a).flatten(1)


def _units(net: models.Net | ops.View, x: Tensor) -> list[Tensor]:
    """The units of every hidden layer, ``[N, H_l]`` or ``[N, H_l, *spatial]`` (no graph)."""
    if not isinstance(net, ops.View):
        return net.activations(x)
    with torch.no_grad():
        return ops.forward(net, x, taps=True, training=False)[1]


def _net(model: nn.Module, method: str, *, generic: bool = True) -> models.Net | ops.View:
    """The dense MLP view (its parse and errors, numbers unchanged) or, for a convnet or an
    MLP with an activation after its output layer, the op view (``generic=False``: the dense
    view only)."""
    view = ops.parse(model, method=method)
    if not generic or view.dense:
        net = models.parse(model, method=method)
        if not net.hidden:
            raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes")
        if not generic or not _output_activation(view):
            return net
    if not view.hidden:
        raise ValueError(f"{method}: the model has no hidden layer, so there are no nodes")
    view.check_eval(method)  # a BatchNorm in training mode cannot be folded
    return view


def _net_layer(
    model: nn.Module, layer: int, method: str, *, generic: bool = True
) -> tuple[models.Net | ops.View, int]:
    net = _net(model, method, generic=generic)
    n = len(net.hidden)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(
            f"{method}: layer must be a hidden-layer index in 0..{n - 1} (hidden sizes "
            f"{net.hidden_sizes}); got {layer!r}"
        )
    return net, layer


def _check_nodes(
    net: models.Net | ops.View, ell: int, nodes: Iterable[int] | None, method: str
) -> Tensor:
    """Distinct node indices of hidden layer l as a LongTensor (default all)."""
    H = net.hidden_sizes[ell]
    device = net.layers[0].weight.device
    if nodes is None:
        return torch.arange(H, device=device)
    if isinstance(nodes, Tensor):
        nodes = nodes.reshape(-1).tolist()
    index = list(nodes)
    if not index:
        raise ValueError(f"{method}: nodes is empty; give at least one node of layer {ell}")
    for i in index:
        try:
            ok = not isinstance(i, bool) and 0 <= operator.index(i) < H
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{method}: nodes must be integers in 0..{H - 1} (hidden layer {ell}, "
                f"{net.hidden[ell].name}); got {i!r}"
            )
    index = [operator.index(i) for i in index]
    if len(set(index)) < len(index):
        raise ValueError(f"{method}: nodes holds duplicates: {index}")
    return torch.tensor(index, dtype=torch.long, device=device)


def _check_replace(replace: str, method: str) -> str:
    if replace not in REPLACEMENTS:
        raise ValueError(f"{method}: replace={replace!r}; choose from {list(REPLACEMENTS)}")
    return replace


def _check_options(norm: str, centred: bool, method: str) -> tuple[str, bool]:
    if norm not in NORMS:
        raise ValueError(f"{method}: norm={norm!r}; choose from {list(NORMS)}")
    if centred and norm != "l2":
        raise ValueError(f"{method}: centred=True applies to norm='l2' only; got norm={norm!r}")
    return norm, bool(centred)
