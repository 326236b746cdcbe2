"""Surgery on trained networks: removing nodes, masking weights, sweeping sparsity, OBS.

* :mod:`.nodes`: :func:`remove_nodes` physically removes hidden nodes (MLP features, conv
  channels), the reader absorbing their mean (Hobson 2022; Evci et al. 2018, mean
  replacement), exactly at a zero-padded conv's border too; :func:`compensation_error`, the
  border error of the cheaper interior-only form;
* :mod:`.weights`: :func:`prune_weights` makes weight masks that prune exactly the requested
  number of lowest-scoring entries of the Linear and Conv2d weights; :func:`strip` folds
  masks into a plain copy (MLPs and convnets alike);
* :mod:`.sweep`: :func:`sparsity_sweep`, loss and accuracy at many sparsity levels from one
  ranking, without copying the model per level (:class:`Sweep`; convnets through
  :mod:`prunelab.engines.sparsity`);
* :mod:`.obs`: :func:`obs_prune`, masked entries zeroed and the rest moved by Optimal Brain
  Surgeon (Hassibi & Stork 1993);
* :mod:`.checks`: validation shared by the last three.
"""

from .checks import WEIGHT_SCOPES
from .nodes import COMPENSATIONS, compensation_error, remove_nodes
from .obs import obs_prune
from .sweep import Sweep, sparsity_sweep
from .weights import prune_weights, strip

__all__ = [
    "COMPENSATIONS",
    "WEIGHT_SCOPES",
    "Sweep",
    "compensation_error",
    "obs_prune",
    "prune_weights",
    "remove_nodes",
    "sparsity_sweep",
    "strip",
]
