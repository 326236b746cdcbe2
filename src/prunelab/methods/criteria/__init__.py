"""Importance criteria: which hidden nodes (:mod:`.nodes`) and which weights (:mod:`.weights`)
matter, as plain registries of functions.

Both kinds are called as ``fn(model, x, y=None, *, generator=None)``; **higher means more
important**, so pruning removes the lowest scores. Node criteria return one score tensor
``[H_l]`` per hidden layer (:func:`node_scores`, then :func:`select` for a removal plan), on
MLPs and convnets alike (a node of a convnet is a Conv2d channel, its statistics taken over
samples and positions); weight
criteria return one tensor per parameter, keyed like ``model.named_parameters()``
(:func:`weight_scores`). ``LABELLED`` and ``WEIGHT_LABELLED`` name the criteria that read the
loss and so need labels ``y``.

    >>> from prunelab import criteria, models
    >>> import torch
    >>> model = models.mlp((2, 8, 2), seed=0)
    >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    >>> scores = criteria.node_scores("taylor", model, x, y)   # [tensor of shape [8]]
    >>> plan = criteria.select(scores, fraction=0.25)          # {0: [four node indices]}
    >>> w = criteria.weight_scores("obd", model, x, y)         # {"0.weight": [8, 2], ...}
"""

from .nodes import (
    LABELLED,
    NODE_CRITERIA,
    SCOPES,
    NodeCriterion,
    activation_mean_abs,
    activation_std,
    apoz,
    lipschitz,
    mean_replacement,
    mean_replacement_delta,
    node_scores,
    obd_mask,
    obd_mask_delta,
    random,
    select,
    std_out_norm,
    taylor,
    weight_in_norm,
    weight_out_norm,
)
from .weights import (
    GRASP_TEMPERATURE,
    HUTCHINSON_PROBES,
    OBS_DAMPING,
    OBS_MAX_BLOCK,
    WEIGHT_CRITERIA,
    WEIGHT_LABELLED,
    WeightCriterion,
    damped_inverse,
    grasp,
    hessian_gradient_product,
    magnitude,
    obd,
    obd_becker_lecun,
    obd_fisher,
    obd_ggn,
    obd_hutchinson,
    obd_saliency,
    obs,
    obs_saliency,
    obs_update,
    random_weights,
    row_groups,
    snip,
    synflow,
    weight_scores,
)

__all__ = [
    "GRASP_TEMPERATURE",
    "HUTCHINSON_PROBES",
    "LABELLED",
    "NODE_CRITERIA",
    "OBS_DAMPING",
    "OBS_MAX_BLOCK",
    "SCOPES",
    "WEIGHT_CRITERIA",
    "WEIGHT_LABELLED",
    "NodeCriterion",
    "WeightCriterion",
    "activation_mean_abs",
    "activation_std",
    "apoz",
    "damped_inverse",
    "grasp",
    "hessian_gradient_product",
    "lipschitz",
    "magnitude",
    "mean_replacement",
    "mean_replacement_delta",
    "node_scores",
    "obd",
    "obd_becker_lecun",
    "obd_fisher",
    "obd_ggn",
    "obd_hutchinson",
    "obd_mask",
    "obd_mask_delta",
    "obd_saliency",
    "obs",
    "obs_saliency",
    "obs_update",
    "random",
    "random_weights",
    "row_groups",
    "select",
    "snip",
    "std_out_norm",
    "synflow",
    "taylor",
    "weight_in_norm",
    "weight_out_norm",
    "weight_scores",
]
