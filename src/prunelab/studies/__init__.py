"""The studies: one investigation each, as ``run(config) -> Results`` plus its report sections.

``STUDIES`` maps each study's command-line name to its module, in the order ``run all`` runs
them (later studies reuse the checkpoints of earlier ones).
"""

from . import (
    approximation_bounds,
    node_criteria,
    node_removal,
    obd_vs_magnitude,
    relevance,
    toy_nets,
    train_vs_prune,
)

STUDIES = {
    toy_nets.NAME: toy_nets,
    node_removal.NAME: node_removal,
    train_vs_prune.NAME: train_vs_prune,
    node_criteria.NAME: node_criteria,
    obd_vs_magnitude.NAME: obd_vs_magnitude,
    approximation_bounds.NAME: approximation_bounds,
    relevance.NAME: relevance,
}
