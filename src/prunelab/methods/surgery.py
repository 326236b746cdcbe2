"""Physically removing hidden nodes from an MLP, with the next bias absorbing their mean.

Removing node i of hidden layer l deletes row i of ``W^l`` and ``b^l`` and column i of
``W^{l+1}``. With mean compensation the next layer's bias absorbs what the node carried on
average (Hobson 2022, "Train first vs prune first in neural networks"; Evci et al. 2018, mean
replacement):

    b^{l+1}_k  <-  b^{l+1}_k + sum_{i removed} W^{l+1}_{ki} abar^l_i,    abar^l_i = mean_n a^l_{n,i}

so the pruned network equals the original with the removed nodes held at their means. A node
that is constant on the data is removed without changing any output.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.nn.utils.prune
from torch import Tensor, nn

from ..base import models, ops
from ..engines import stacked

COMPENSATIONS = ("mean", "none")


def remove_nodes(
    model: nn.Module,
    remove: Mapping[int, Iterable[int]],
    *,
    compensate: str = "mean",
    x: Tensor | None = None,
) -> nn.Sequential:
    """A new, physically smaller copy of ``model`` without the listed hidden nodes.

    With ``compensate="mean"`` the means are taken layer by layer from the input, in the
    network *as pruned so far*: the mean of a node of hidden layer l is computed on ``x``
    passed through the model whose earlier hidden layers are already pruned and compensated.
    Each compensation therefore sees exactly the inputs it will receive, and the result equals
    the original model with the removed nodes replaced by their means in that order (layer 0
    first). With ``compensate="none"`` the nodes are simply deleted, which equals zeroing them.

        b^{l+1} <- b^{l+1} + W^{l+1}[:, R_l] abar^l_{R_l}       (R_l: removed nodes of layer l)

    Activations, ``Dropout``, ``Flatten`` and ``Identity`` modules are kept in place (copied);
    means are computed with dropout off (evaluation mode), which leaves them unchanged in
    expectation. A ``Linear`` that appears twice in ``model`` (shared weights) becomes two
    independent ``Linear`` modules in the copy. The copy keeps ``model``'s module names,
    dtype, device, ``requires_grad`` flags and training mode; ``model`` is not modified.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts.
    remove : mapping of int to iterable of int
        Hidden-layer index (0-based among hidden layers) to the indices of the nodes to
        remove from it (a list, tuple or integer tensor); empty lists are allowed.
    compensate : {"mean", "none"}
        Fold the removed nodes' mean activation over ``x`` into the next bias, or not. If the
        next ``Linear`` has no bias and compensation is needed, one is created.
    x : Tensor[N, D], optional
        Data for the means; required for ``"mean"``. Converted to the weights' dtype and
        device.

    Returns
    -------
    nn.Sequential
        The pruned copy: hidden layer l has ``H_l - len(remove[l])`` nodes.

    Raises
    ------
    TypeError
        If ``model`` is unsupported, ``remove`` is not a mapping, an index is not an integer,
        or ``x`` is not a floating-point tensor.
    ValueError
        For an unknown ``compensate``, a hidden layer or node index out of range, a duplicate
        index, removing every node of a layer, ``"mean"`` without ``x``, or ``x`` of the
        wrong shape, empty or non-finite.

    References
    ----------
    D. Hobson (2022), "Train first vs prune first in neural networks" (mean-bias replacement);
    U. Evci, N. Le Roux, P. Castro & L. Bottou (2018), "Mean replacement pruning", ICLR 2019
    submission, https://openreview.net/forum?id=BJxRVnC5Fm.

    Examples
    --------
    >>> model = models.mlp((2, 5, 3), seed=0)
    >>> small = remove_nodes(model, {0: [1, 3]}, x=torch.randn(10, 2))
    >>> small[0].out_features, small[2].in_features
    (3, 3)
    """
    net = models.parse(model, method="remove_nodes")
    if compensate not in COMPENSATIONS:
        raise ValueError(
            f"remove_nodes: compensate={compensate!r}; choose from {list(COMPENSATIONS)}"
        )
    removed = _check_remove(net, remove)
    if compensate == "mean" and x is None:
        raise ValueError(
            "remove_nodes: compensate='mean' needs data x to take the removed nodes' means; "
            "pass x=Tensor[N, D] or use compensate='none'"
        )
    a = net.check_x(x, "remove_nodes", convert=True) if compensate == "mean" else None
    return ops.remove_units(model, net.view, removed, x=a, method="remove_nodes")[0]


def _complement(R: Tensor, H: int) -> Tensor:
    """Indices in ``range(H)`` not in ``R``, ascending."""
    keep = torch.ones(H, dtype=torch.bool, device=R.device)
    keep[R] = False
    return keep.nonzero().squeeze(1)


def _check_remove(net: models.Net, remove: Mapping[int, Iterable[int]]) -> dict[int, Tensor]:
    """Validate ``remove``; return {hidden layer: sorted node indices} for non-empty entries."""
    if not isinstance(remove, Mapping):
        raise TypeError(
            "remove_nodes: remove must be a mapping {hidden_layer: [node, ...]}; "
            f"got {type(remove).__name__}"
        )
    sizes = net.hidden_sizes
    device = net.layers[0].weight.device
    out: dict[int, Tensor] = {}
    for key, nodes in remove.items():
        ell = _index(key, f"remove_nodes: hidden-layer key {key!r}")
        if not 0 <= ell < len(sizes):
            raise ValueError(
                f"remove_nodes: hidden layer {ell} out of range; the model has {len(sizes)} "
                f"hidden layer(s) with sizes {sizes} (keys 0..{len(sizes) - 1})"
            )
        H = sizes[ell]
        if isinstance(nodes, Tensor):
            if nodes.is_floating_point() or nodes.is_complex() or nodes.dtype == torch.bool:
                raise TypeError(
                    f"remove_nodes: remove[{ell}] must hold integer node indices; got {nodes.dtype}"
                )
            nodes = nodes.reshape(-1).tolist()
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
            raise TypeError(
                f"remove_nodes: remove[{ell}] must be a list of node indices; "
                f"got {type(nodes).__name__}"
            )
        index = [_index(i, f"remove_nodes: remove[{ell}] entry {i!r}") for i in nodes]
        bad = [i for i in index if not 0 <= i < H]
        if bad:
            raise ValueError(
                f"remove_nodes: remove[{ell}] holds node index {bad[0]} out of range; hidden "
                f"layer {ell} ({net.hidden[ell].name}) has {H} nodes (0..{H - 1})"
            )
        if len(set(index)) < len(index):
            dup = next(i for i in index if index.count(i) > 1)
            raise ValueError(f"remove_nodes: remove[{ell}] lists node {dup} more than once")
        if len(index) == H:
            raise ValueError(
                f"remove_nodes: remove[{ell}] removes all {H} nodes of hidden layer {ell} "
                f"({net.hidden[ell].name}); keep at least one"
            )
        if index:
            out[ell] = torch.tensor(sorted(index), dtype=torch.long, device=device)
    return out


def _index(value: object, what: str) -> int:
    """``value`` as a Python int; bools and non-integers raise a TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer; got {type(value).__name__}") from None


# --- weight pruning: masks, stripping, sweeps ------------------------------------------------
#
# A *weight mask* is a dict {param_name: Tensor} of 0/1 tensors shaped like the parameters
# (``model.named_parameters()`` names), 0 where the entry is pruned: what ``train.fit(...,
# weight_masks=masks)`` keeps in force during fine-tuning. Scores come from
# ``criteria.weight_scores`` (higher = more important); the lowest are pruned.

WEIGHT_SCOPES = ("global", "layer")


def prune_weights(
    model: nn.Module,
    scores: Mapping[str, Tensor],
    sparsity: float,
    *,
    scope: str = "global",
    biases: bool = False,
    masks: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Masks that prune exactly the requested number of lowest-scoring weights.

    With ``n`` prunable entries, ``k = round(sparsity * n)`` of them are pruned (Python's
    round, half to even, as ``torch.nn.utils.prune``): over all layers together
    (``scope="global"``, one ranking of the raw scores) or per parameter tensor
    (``scope="layer"``, ``n`` = that tensor's size). Ties go to the lower flat index first.
    Entries already pruned in ``masks`` are pruned first, so iterative rounds nest: the new
    mask is contained in the old one, and ``sparsity`` counts the total, old entries included.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts. Not modified.
    scores : mapping of str to Tensor
        Scores for at least every prunable parameter (``criteria.weight_scores`` gives all),
        shaped like it; higher = more important.
    sparsity : float
        Fraction of the prunable entries to prune, in [0, 1].
    scope : {"global", "layer"}
    biases : bool
        Also prune the biases (ranked with the weights; their own tensors under ``"layer"``).
    masks : mapping of str to Tensor, optional
        Masks of an earlier round (0 = pruned); the result keeps those entries pruned.

    Returns
    -------
    dict of str to Tensor
        A 0/1 mask in the parameter's dtype and device for every prunable parameter (every
        Linear weight, and bias with ``biases=True``), in parameter order.

    Raises
    ------
    KeyError
        A prunable parameter without scores, or a mask for an unknown parameter.
    ValueError
        A bad ``sparsity`` or ``scope``, wrongly shaped or non-finite scores, or a
        ``sparsity`` below what ``masks`` already prunes (the message gives the counts).

    References
    ----------
    ``torch.nn.utils.prune.global_unstructured`` / ``l1_unstructured`` (the same counts);
    J. Frankle & M. Carbin (2019), "The lottery ticket hypothesis", ICLR (iterative rounds).

    Examples
    --------
    >>> model = models.mlp((4, 8, 3), seed=0)
    >>> scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    >>> masks = prune_weights(model, scores, 0.5)
    >>> int(sum((m == 0).sum() for m in masks.values()))
    28
    """
    net = models.parse(model, method="prune_weights")
    params = _prunable(net, biases)
    flat = _check_scores(params, scores, "prune_weights")
    sparsity = _check_level(sparsity, "prune_weights: sparsity")
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"prune_weights: scope={scope!r}; choose from {list(WEIGHT_SCOPES)}")
    old = _check_masks(params, masks or {})
    for name, mask in old.items():  # earlier rounds' entries go first
        flat[name] = torch.where(mask.reshape(-1) == 0, -math.inf, flat[name])
    groups = [list(params)] if scope == "global" else [[name] for name in params]
    out: dict[str, Tensor] = {}
    for names in groups:
        s = torch.cat([flat[n] for n in names])
        k = round(sparsity * s.numel())
        done = int(torch.isinf(s).sum())
        if k < done:
            where = "in total" if scope == "global" else f"of {names[0]!r}"
            raise ValueError(
                f"prune_weights: sparsity {sparsity} prunes {k} entries {where}, but the "
                f"given masks already prune {done}; iterative rounds must not shrink"
            )
        keep = torch.ones_like(s, dtype=torch.bool)
        keep[torch.sort(s, stable=True).indices[:k]] = False
        for n, part in zip(names, keep.split([params[n].numel() for n in names]), strict=True):
            out[n] = part.reshape(params[n].shape).to(params[n].dtype)
    return {n: out[n] for n in params}


def strip(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> nn.Sequential:
    """A plain copy of ``model`` with the masks multiplied into its parameters.

    Every module is rebuilt fresh (:func:`prunelab.models.from_spec`), so the copy has no
    hooks, buffers or extra parameters: only ``Linear`` weights and biases, with the pruned
    entries exactly zero. A ``torch.nn.utils.prune`` re-parametrisation (``weight_orig`` and
    ``weight_mask`` with a forward pre-hook) is folded into a plain ``weight``. Module names,
    shared Linear modules, dtype, device, ``requires_grad`` flags and training mode are kept;
    ``model`` is not modified.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, possibly pruned with
        ``torch.nn.utils.prune``.
    masks : mapping of str to Tensor, optional
        0/1 masks by parameter name (as :func:`prune_weights` returns; any nonzero keeps).

    Returns
    -------
    nn.Sequential
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"strip: model must be an nn.Sequential; got {type(model).__name__}")
    # stage 1: the same modules, but each Linear replaced by one holding its effective weights
    linears: dict[int, nn.Linear] = {}
    stage = OrderedDict()
    for name, module in model._modules.items():
        if isinstance(module, nn.Linear) and id(module) not in linears:
            W = module.weight.detach()  # weight_orig * weight_mask under torch's pruning
            b = None if module.bias is None else module.bias.detach()
            new = models.linear(W, b)
            new.weight.requires_grad_(getattr(module, "weight_orig", module.weight).requires_grad)
            if b is not None:
                new.bias.requires_grad_(getattr(module, "bias_orig", module.bias).requires_grad)
            linears[id(module)] = new
        stage[name] = linears.get(id(module), module)
    stage = nn.Sequential(stage)
    models.parse(stage, method="strip")
    params = dict(stage.named_parameters())
    masks = _check_masks(params, masks or {})
    # stage 2: everything rebuilt from the architecture record, names kept
    fresh = models.from_spec(models.spec(stage))
    out = nn.Sequential(OrderedDict(zip(stage._modules, fresh, strict=True)))
    first = next(iter(params.values()))
    out = out.to(device=first.device, dtype=first.dtype)
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(params[name] * masks[name] if name in masks else params[name])
            p.requires_grad_(params[name].requires_grad)
    return out.train(model.training)


@dataclass
class Sweep:
    """Loss and accuracy of a model pruned to each sparsity level, from one ranking."""

    levels: Tensor  # [L] requested sparsities
    pruned: Tensor  # [L] entries pruned (int64)
    loss: Tensor  # [L] mean cross-entropy on the evaluation data
    accuracy: Tensor  # [L] fraction of argmax predictions equal to y
    removed_score: Tensor  # [L] sum of the pruned entries' scores (float64)


def sparsity_sweep(
    model: nn.Module,
    scores: Mapping[str, Tensor],
    levels: Sequence[float],
    x: Tensor,
    y: Tensor,
    *,
    scope: str = "global",
    biases: bool = False,
    chunk_bytes: int = 2**28,
) -> Sweep:
    """Loss and accuracy at many sparsity levels without copying the model per level.

    Level ``s`` prunes what ``prune_weights(model, scores, s, scope=scope, biases=biases)``
    prunes. The scores are sorted once; every entry gets its rank ``r`` (over all layers, or
    within its tensor), and the mask at a level that prunes ``k`` entries is ``r >= k``. The
    masks of increasing levels nest, so the first layer's pre-activations change between
    consecutive levels only by the entries pruned in between:

        Z_{t+1}[i] = Z_t[i] - W_ij x[:, j]     for each first-layer entry (i, j) pruned in between

    one sparse product per chunk of levels, costing ``2 N`` per pruned entry instead of a
    dense ``2 N H_1 D`` product per level (each level's ``Z`` carries the rounding of at most
    L subtractions, about that of a fresh dense product in the same dtype). The layers above run for all
    levels of a chunk at once as batched products over stacked masked weights ``[L, H_l,
    H_{l-1}]`` (:func:`prunelab.stacked.forward`). Dropout counts as identity (evaluation
    mode). ``removed_score`` sums the pruned entries' scores: with OBD saliencies it is OBD's
    predicted loss increase.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts, without shared Linear modules.
    scores : mapping of str to Tensor
        As :func:`prune_weights`.
    levels : sequence of float
        Sparsities in [0, 1], any order (duplicates allowed).
    x : Tensor[N, D]
        Evaluation inputs (converted to the parameters' dtype and device).
    y : Tensor[N]
        Integer class labels in ``[0, C)``.
    scope : {"global", "layer"}
    biases : bool
        As :func:`prune_weights`.
    chunk_bytes : int
        Memory budget of one chunk of levels (stacked weights and activations).

    Returns
    -------
    Sweep
        One entry per level, in the order given.

    References
    ----------
    The curves equal a loop of ``torch.nn.utils.prune.global_unstructured(...,
    L1Unstructured)`` (or ``l1_unstructured`` per layer) and evaluation on magnitude scores,
    up to ties (``tests/test_weight_pruning.py``, ``benchmarks/sparsity_sweep.py``).
    """
    net = models.parse(model, method="sparsity_sweep")
    if len({id(d.linear) for d in net.layers}) < len(net.layers):
        raise ValueError("sparsity_sweep: a Linear module appears twice (shared weights)")
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"sparsity_sweep: scope={scope!r}; choose from {list(WEIGHT_SCOPES)}")
    params = _prunable(net, biases)
    flat = _check_scores(params, scores, "sparsity_sweep")
    if isinstance(levels, Tensor):
        levels = levels.tolist()
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise ValueError("sparsity_sweep: levels must be a non-empty sequence of floats in [0, 1]")
    levels = [_check_level(s, "sparsity_sweep: levels entry") for s in levels]
    x, y = _check_eval_data(net, x, y)
    ranks, counts, removed = _ranks(params, flat, levels, scope)  # counts [L, U]
    order = sorted(range(len(levels)), key=lambda i: levels[i])
    loss = torch.empty(len(levels), dtype=torch.float64)
    accuracy = torch.empty(len(levels), dtype=torch.float64)
    for idx, logits in _sweep_logits(net, ranks, counts, order, x, chunk_bytes):
        f = logits.double()  # [Lc, C, N]
        lse = torch.logsumexp(f, 1)  # [Lc, N]
        loss[idx] = (lse - f.gather(1, y.expand(len(idx), -1)[:, None]).squeeze(1)).mean(1).cpu()
        predicted = logits.transpose(1, 2).contiguous().argmax(2)  # [Lc, N], first maximum
        accuracy[idx] = (predicted == y).double().mean(1).cpu()
    return Sweep(
        torch.tensor(levels, dtype=torch.float64),
        counts.sum(1),
        loss,
        accuracy,
        removed,
    )


def obs_prune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    masks: Mapping[str, Tensor],
    *,
    damping: float | None = None,
    max_block: int | None = None,
) -> nn.Sequential:
    """A plain copy of ``model`` with the masked entries zeroed and the rest moved by OBS.

    In every layer with pruned entries Q, the layer's parameters ``theta`` (weights and bias)
    move by Optimal Brain Surgeon's update (:func:`prunelab.criteria.obs_update`)

        delta theta = -H^-1 E_Q (E_Q^T H^-1 E_Q)^-1 theta_Q

    with ``H`` the layer's exact Hessian block, damped as in :func:`prunelab.criteria.obs`,
    all taken at the original model (layers are compensated independently; the blocks between
    layers are left out). Layers with more than ``max_block`` parameters are compensated one
    output unit at a time (row blocks). Under the quadratic model the loss increase of each
    layer is the smallest possible for those entries, and never larger than OBD's.

    Parameters
    ----------
    model : nn.Sequential
        A model :func:`prunelab.models.parse` accepts; not modified.
    x : Tensor[N, D]
        Data of the Hessian (the training data; same dtype and device as the parameters).
    y : Tensor[N]
        Integer class labels.
    masks : mapping of str to Tensor
        0/1 masks by parameter name (:func:`prune_weights`).
    damping, max_block : optional
        Default ``criteria.OBS_DAMPING`` and ``criteria.OBS_MAX_BLOCK``.

    Returns
    -------
    nn.Sequential
        As :func:`strip` (no hooks), with the masked entries exactly zero.

    References
    ----------
    B. Hassibi & D. Stork (1993), "Second order derivatives for network pruning: Optimal Brain
    Surgeon", NIPS 5; X. Dong, S. Chen & S. Pan (2017), layer-wise OBS, NIPS.
    """
    from ..engines import hessian_blocks
    from . import criteria  # methods-level peers; imported late (no cycle)

    damping = criteria.OBS_DAMPING if damping is None else damping
    max_block = criteria.OBS_MAX_BLOCK if max_block is None else max_block
    net = models.parse(model, method="obs_prune")
    masks = _check_masks(dict(model.named_parameters()), masks)
    new = strip(model, masks)
    out = {d.name: d for d in models.parse(new).layers}
    for k, layer in enumerate(net.layers):
        W = layer.weight.detach()
        b = None if layer.bias is None else layer.bias.detach()
        H_out, H_in = W.shape
        off = masks.get(f"{layer.name}.weight", torch.ones_like(W)) == 0  # [H, D] pruned
        theta = W
        if b is not None:  # rows (W_i, b_i) [H, D + 1]
            off = torch.cat(
                [off, (masks.get(f"{layer.name}.bias", torch.ones_like(b)) == 0)[:, None]], 1
            )
            theta = torch.cat([W, b[:, None]], 1)
        if not bool(off.any()):
            continue
        if theta.numel() <= max_block:  # one block, parameters ordered [W.flatten(), b]
            h_inv = criteria.damped_inverse(hessian_blocks.layer_hessian(model, x, y, k), damping)
            w = torch.cat([theta[:, :H_in].reshape(-1), theta[:, H_in:].T.reshape(-1)])
            Q = torch.cat([off[:, :H_in].reshape(-1), off[:, H_in:].T.reshape(-1)]).nonzero()
            w = criteria.obs_update(w.double(), h_inv, Q.squeeze(1))[0].to(W.dtype)
            theta = torch.cat(
                [w[: W.numel()].reshape(H_out, H_in), w[W.numel() :].reshape(H_out, -1)], 1
            )
        else:  # one block per output unit with pruned entries
            rows = off.any(1).nonzero().squeeze(1)
            theta = theta.clone()
            for group in criteria.row_groups(len(rows), theta.shape[1], max_block):
                r = rows[group]
                h_inv = criteria.damped_inverse(
                    hessian_blocks.row_hessians(model, x, y, k, rows=r), damping
                )  # [R, D', D']
                for i, row in enumerate(r.tolist()):
                    Q = off[row].nonzero().squeeze(1)
                    theta[row] = criteria.obs_update(theta[row].double(), h_inv[i], Q)[0]
        with torch.no_grad():
            out[layer.name].weight.copy_(theta[:, :H_in])
            if b is not None:
                out[layer.name].bias.copy_(theta[:, H_in])
    return new


def _prunable(net: models.Net, biases: bool) -> dict[str, Tensor]:
    """The prunable parameters in order: every Linear weight, and its bias if ``biases``."""
    out = {}
    for d in net.layers:
        out[f"{d.name}.weight"] = d.weight.detach()
        if biases and d.bias is not None:
            out[f"{d.name}.bias"] = d.bias.detach()
    return out


def _check_scores(
    params: dict[str, Tensor], scores: Mapping[str, Tensor], method: str
) -> dict[str, Tensor]:
    """Validate the scores of every prunable parameter; return them flat, float64, on its device."""
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"{method}: scores must be a dict {{param_name: Tensor}}; got {type(scores).__name__}"
        )
    out = {}
    for name, p in params.items():
        if name not in scores:
            raise KeyError(
                f"{method}: no scores for parameter {name!r}; scores has {sorted(scores)}"
            )
        s = scores[name]
        if not isinstance(s, Tensor) or s.shape != p.shape:
            raise ValueError(
                f"{method}: scores[{name!r}] must be a tensor shaped like the parameter "
                f"{list(p.shape)}; got "
                f"{list(s.shape) if isinstance(s, Tensor) else type(s).__name__}"
            )
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{method}: scores[{name!r}] holds NaN or inf values")
        out[name] = s.detach().reshape(-1).to(device=p.device, dtype=torch.float64)
    return out


def _check_masks(params: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{param_name: Tensor}}; got {type(masks).__name__}")
    out = {}
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"masks: no prunable parameter {name!r}; choose from {list(params)}")
        if not isinstance(mask, Tensor) or mask.shape != params[name].shape:
            raise ValueError(
                f"masks[{name!r}] must be shaped like the parameter {list(params[name].shape)}; "
                f"got {list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        out[name] = (mask != 0).to(device=params[name].device, dtype=params[name].dtype)
    return out


def _check_level(s: object, what: str) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
        raise ValueError(f"{what} must be a number in [0, 1]; got {s!r}")
    return float(s)


def _check_eval_data(net: models.Net, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate evaluation data; return ``x`` [N, D] in the weights' dtype and ``y`` [N]."""
    xs = net.check_x(x, "sparsity_sweep", convert=True)
    return xs, net.check_labels(y, xs.shape[0], "sparsity_sweep")


def _ranks(
    params: dict[str, Tensor], flat: dict[str, Tensor], levels: list[float], scope: str
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Each parameter's entries in pruning order, pruned counts ``[L, U]``, removed scores ``[L]``.

    ``seq[name]`` lists the parameter's flat indices in its group's ranking (one sort of the
    scores, ties to the lower index); at level i the first ``counts[i, u]`` of them are pruned.
    """
    names = list(params)
    groups = [names] if scope == "global" else [[n] for n in names]
    seq: dict[str, Tensor] = {}
    counts = torch.zeros(len(levels), len(names), dtype=torch.long)
    removed = torch.zeros(len(levels), dtype=torch.float64)
    for group in groups:
        s = torch.cat([flat[n] for n in group])
        sorted_s, order = torch.sort(s, stable=True)
        k = torch.tensor([round(lv * len(s)) for lv in levels])  # [L] pruned in this group
        removed += torch.cat([sorted_s.new_zeros(1), sorted_s.cumsum(0)]).cpu()[k]
        sizes = torch.tensor([flat[n].numel() for n in group], device=order.device)
        ends = sizes.cumsum(0)
        unit = torch.searchsorted(ends, order, right=True)  # [n] group member of each rank
        for u, n in enumerate(group):
            member = unit == u
            seq[n] = order[member] - (ends[u] - sizes[u])
            taken = torch.cat([member.new_zeros(1, dtype=torch.long), member.cumsum(0)])
            counts[:, names.index(n)] = taken.cpu()[k]
    return seq, counts, removed


def _sweep_logits(
    net: models.Net,
    seq: dict[str, Tensor],
    counts: Tensor,
    order: list[int],
    x: Tensor,
    chunk_bytes: int,
):
    """Yield (level indices, logits ``[Lc, C, N]``) chunk by chunk, levels in ascending order.

    The first layer's pre-activations ``Z`` (points last, ``[H1, N]``) start from the unpruned
    layer; for a chunk of levels the entries pruned between consecutive levels form one sparse
    matrix ``S [Lc * H1, D + 1]`` (row ``t * H1 + r`` holds the entries of unit r first pruned
    at the chunk's level t; column D is the bias, against a row of ones), and
    ``Z_t = Z_{t-1} - (S @ [x^T; 1])_t``, written over the product in place (one pass). Each
    level's pre-activations thus carry the rounding of at most L subtractions, about that of a
    fresh dense product.
    """
    names = list(seq)
    first, upper = net.layers[0], models.Net(net.layers[1:])
    N = x.shape[0]
    H1, D = first.weight.shape
    per_level = x.element_size() * (
        2 * H1 * N
        + 2 * N * sum(d.width for d in upper.layers)
        + sum(d.weight.numel() for d in upper.layers)
    )
    size = max(1, chunk_bytes // per_level)
    pos = {
        n: torch.empty_like(e).scatter_(0, e, torch.arange(len(e), device=e.device))
        for n, e in seq.items()
    }  # position of each entry in its pruning order
    with torch.no_grad():
        W = first.weight.detach()
        b = None if first.bias is None else first.bias.detach()
        xT = torch.cat([x.T, x.new_ones(1, N)])  # [D + 1, N] points last
        ZT = W @ xT[:D]  # [H1, N] pre-activations with nothing pruned
        if b is not None:
            ZT += b[:, None]
        # each pruned first-layer tensor: its entries in pruning order as (row, column, value)
        units = []
        for name in (f"{first.name}.weight", f"{first.name}.bias"):
            if name in seq:
                e = seq[name]
                if name.endswith("weight"):
                    units.append((names.index(name), e // D, e % D, W.reshape(-1)[e]))
                else:
                    units.append((names.index(name), e, torch.full_like(e, D), b[e]))
        done = [0] * len(units)  # entries of each unit pruned before the chunk
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            Lc = len(idx)
            parts = []  # (S row, column, value) of every entry first pruned within the chunk
            for u, (j, rows, cols, vals) in enumerate(units):
                c = [done[u], *counts[idx, j].tolist()]
                for t in range(Lc):
                    if c[t + 1] > c[t]:
                        sl = slice(c[t], c[t + 1])
                        parts.append((t * H1 + rows[sl], cols[sl], vals[sl]))
                done[u] = c[-1]
            if parts:
                r, col, val = (torch.cat(p) for p in zip(*parts, strict=True))
                r, perm = torch.sort(r, stable=True)
                crow = torch.zeros(Lc * H1 + 1, dtype=torch.long, device=r.device)
                crow[1:] = torch.bincount(r, minlength=Lc * H1).cumsum(0)
                with warnings.catch_warnings():  # "CSR support is in beta", invariant checks
                    warnings.filterwarnings("ignore", "Sparse", UserWarning)
                    S = torch.sparse_csr_tensor(crow, col[perm], val[perm], (Lc * H1, D + 1))
                Z = xT.new_empty(Lc * H1, N)
                # addmm into a fresh buffer skips the zero fill and copies of ``S @ xT``
                torch.addmm(Z, S, xT, beta=0, out=Z)
                Z = Z.reshape(Lc, H1, N)  # what each level removes
            else:
                Z = ZT.new_zeros(Lc, H1, N)
            torch.sub(ZT, Z[0], out=Z[0])
            for t in range(1, Lc):  # Z_t = Z_{t-1} - removed_t, over the product in place
                torch.sub(Z[t - 1], Z[t], out=Z[t])
            ZT = Z[-1].clone()
            A = _phi_(first, Z)  # [Lc, H1, N] points last
            if not upper.layers:
                yield idx, A
                continue
            Ws = [
                _masked(d.weight.detach(), f"{d.name}.weight", pos, counts, idx)
                for d in upper.layers
            ]
            bs = [
                None
                if d.bias is None
                else _masked(d.bias.detach(), f"{d.name}.bias", pos, counts, idx)
                for d in upper.layers
            ]
            yield idx, stacked.forward(upper, Ws, bs, A)[0]


def _phi_(layer: models.Dense, z: Tensor) -> Tensor:
    """``layer.phi(z)``, in place for ReLU and LeakyReLU (``z`` is not needed afterwards)."""
    if layer.activation == "relu":
        return z.clamp_min_(0)
    if layer.activation == "leaky_relu":
        return F.leaky_relu_(z, layer.slope)
    return layer.phi(z)


def _masked(t: Tensor, name: str, pos: dict[str, Tensor], counts: Tensor, idx: list[int]) -> Tensor:
    """``t`` for every level of ``idx``, stacked ``[Lc, *t.shape]``, pruned entries zeroed."""
    if name not in pos:
        return t.expand(len(idx), *t.shape)
    j = list(pos).index(name)
    k = counts[idx, j].to(t.device).reshape(-1, *([1] * t.dim()))  # [Lc, 1, ...]
    return t * (pos[name].reshape(t.shape) >= k).to(t.dtype)
