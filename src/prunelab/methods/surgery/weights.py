"""Weight masks: pruning the lowest-scoring weights, and folding masks into a plain model.

A *weight mask* is a dict {param_name: Tensor} of 0/1 tensors shaped like the parameters
(``model.named_parameters()`` names), 0 where the entry is pruned: what ``train.fit(...,
weight_masks=masks)`` keeps in force during fine-tuning. Scores come from
``criteria.weight_scores`` (higher = more important); the lowest are pruned. The prunable
parameters are the weights of the Linear and Conv2d layers (a conv weight ``[C_out, C_in,
k_h, k_w]`` entry by entry) and, if asked, their biases; never BatchNorm's. Models are read
through the op view (:func:`prunelab.ops.parse`): MLPs and convnets alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.utils.prune
from torch import Tensor, nn

from ...base import ops
from .checks import WEIGHT_SCOPES, check_level, check_masks, check_scores, prunable


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
        A model the op view takes (:func:`prunelab.ops.parse`): an MLP or a convnet. Not
        modified.
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
        Linear and Conv2d weight, and bias with ``biases=True``), in parameter order.

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
    view = ops.parse(model, method="prune_weights")
    params = prunable(view, biases)
    flat = check_scores(params, scores, "prune_weights")
    sparsity = check_level(sparsity, "prune_weights: sparsity")
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"prune_weights: scope={scope!r}; choose from {list(WEIGHT_SCOPES)}")
    old = check_masks(params, masks or {}, "prune_weights")
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

    Every module is rebuilt fresh from the architecture record (:func:`prunelab.ops.spec`,
    :func:`prunelab.ops.from_spec`), so the copy has no hooks and no extra parameters or
    buffers: the Linear and Conv2d weights and biases, with the pruned entries exactly zero,
    and the modules' own state (BatchNorm's parameters and running statistics, an Offset's
    shift) copied. A ``torch.nn.utils.prune`` re-parametrisation (``weight_orig`` and
    ``weight_mask`` with a forward pre-hook) is folded into a plain ``weight``. Module names,
    nested Sequentials, shared modules, each tensor's dtype and device, ``requires_grad``
    flags and each module's training mode are kept; ``model`` is not modified.

    Parameters
    ----------
    model : nn.Sequential
        A model the op view takes (:func:`prunelab.ops.parse`), MLP or convnet, possibly
        pruned with ``torch.nn.utils.prune``.
    masks : mapping of str to Tensor, optional
        0/1 masks by parameter name (as :func:`prune_weights` returns; any nonzero keeps), for
        weights and biases of Linear and Conv2d layers.

    Returns
    -------
    nn.Sequential

    Raises
    ------
    TypeError, ValueError
        For a model the op view does not take (the message names the module).
    KeyError, ValueError
        For a mask of a parameter that is not a Linear or Conv2d weight or bias, or shaped
        unlike it.
    """
    view = ops.parse(model, method="strip")
    masks = check_masks(prunable(view, biases=True), masks or {}, "strip")
    out = ops.from_spec(ops.spec(model))
    old = dict(model.named_modules())
    for name, new in out.named_modules():  # shared modules once, under their first name
        module = old[name]
        prefix = f"{name}." if name else ""
        for key, _ in list(new.named_parameters(recurse=False)):
            # the effective tensor: weight_orig * weight_mask under torch's pruning
            t = getattr(module, key).detach()
            if prefix + key in masks:
                t = t * masks[prefix + key]
            own = getattr(module, f"{key}_orig", getattr(module, key))
            new.register_parameter(key, nn.Parameter(t.clone(), requires_grad=own.requires_grad))
        for key, _ in list(new.named_buffers(recurse=False)):  # BatchNorm's, an Offset's
            new.register_buffer(key, getattr(module, key).detach().clone())
        new.training = module.training
    return out
