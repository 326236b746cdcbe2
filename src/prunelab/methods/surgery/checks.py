"""Validation shared by weight pruning, the sparsity sweep and OBS."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ...base import ops

WEIGHT_SCOPES = ("global", "layer")


def prunable(view: ops.View, biases: bool) -> dict[str, Tensor]:
    """The prunable parameters in order: every Linear and Conv2d weight, and its bias if
    ``biases`` (never BatchNorm's)."""
    out = {}
    for layer in view.layers:
        out[f"{layer.name}.weight"] = layer.weight.detach()
        if biases and layer.bias is not None:
            out[f"{layer.name}.bias"] = layer.bias.detach()
    return out


def check_unshared(view: ops.View, method: str) -> None:
    """Raise if a Linear or Conv2d module appears twice (shared weights); names ``method``."""
    if len({id(layer.module) for layer in view.layers}) < len(view.layers):
        raise ValueError(
            f"{method}: a Linear or Conv2d module appears twice in the model (shared weights); "
            "use distinct layers"
        )


def check_scores(
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


def check_masks(
    params: Mapping[str, Tensor], masks: Mapping[str, Tensor], method: str = "masks"
) -> dict[str, Tensor]:
    """0/1 masks by parameter name, each shaped like its entry of ``params``, in its dtype;
    errors name ``method``."""
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"{method}: masks must be a dict {{param_name: Tensor}}; got {type(masks).__name__}"
        )
    out = {}
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(
                f"{method}: masks names {name!r}, which is not a prunable parameter; choose "
                f"from {list(params)}"
            )
        if not isinstance(mask, Tensor) or mask.shape != params[name].shape:
            raise ValueError(
                f"{method}: masks[{name!r}] must be shaped like the parameter "
                f"{list(params[name].shape)}; got "
                f"{list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        out[name] = (mask != 0).to(device=params[name].device, dtype=params[name].dtype)
    return out


def check_level(s: object, what: str) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
        raise ValueError(f"{what} must be a number in [0, 1]; got {s!r}")
    return float(s)
