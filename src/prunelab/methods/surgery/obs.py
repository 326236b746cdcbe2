"""Optimal Brain Surgeon: zero the masked weights and move the rest to compensate."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...base import ops
from .checks import check_masks, prunable
from .weights import strip


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
        A model the op view takes; not modified. The Hessian blocks come from
        :mod:`prunelab.hessian_blocks`, which takes MLPs so far: on a convnet the call raises
        a ValueError naming that missing piece.
    x : Tensor[N, *in]
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
    from ...engines import hessian_blocks
    from .. import criteria  # methods-level peers; imported late (no cycle)
    from ..criteria.weights import needs_curvature

    damping = criteria.OBS_DAMPING if damping is None else damping
    max_block = criteria.OBS_MAX_BLOCK if max_block is None else max_block
    view = ops.parse(model, method="obs_prune")
    masks = check_masks(prunable(view, biases=True), masks, "obs_prune")
    new = strip(model, masks)
    out = {layer.name: layer for layer in ops.parse(new).layers}
    for k, layer in enumerate(view.layers):
        W4 = layer.weight.detach()
        b = None if layer.bias is None else layer.bias.detach()
        H_out, H_in = W4.shape[0], W4[0].numel()
        W = W4.reshape(H_out, H_in)  # a conv unit's row is its [C_in k_h k_w] kernel
        off = masks.get(f"{layer.name}.weight", torch.ones_like(W4)).reshape(H_out, H_in) == 0
        theta = W
        if b is not None:  # rows (W_i, b_i) [H, D + 1]
            off = torch.cat(
                [off, (masks.get(f"{layer.name}.bias", torch.ones_like(b)) == 0)[:, None]], 1
            )
            theta = torch.cat([W, b[:, None]], 1)
        if not bool(off.any()):
            continue
        if theta.numel() <= max_block:  # one block, parameters ordered [W.flatten(), b]
            block = needs_curvature(view, "obs_prune", hessian_blocks.layer_hessian, model, x, y, k)
            h_inv = criteria.damped_inverse(block, damping)
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
                blocks = needs_curvature(
                    view, "obs_prune", hessian_blocks.row_hessians, model, x, y, k, rows=r
                )
                h_inv = criteria.damped_inverse(blocks, damping)  # [R, D', D']
                for i, row in enumerate(r.tolist()):
                    Q = off[row].nonzero().squeeze(1)
                    theta[row] = criteria.obs_update(theta[row].double(), h_inv[i], Q)[0]
        with torch.no_grad():
            out[layer.name].weight.copy_(theta[:, :H_in].reshape(W4.shape))
            if b is not None:
                out[layer.name].bias.copy_(theta[:, H_in])
    return new
