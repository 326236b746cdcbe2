"""The studies: one investigation each, as ``run(config) -> Results`` plus its report sections.

``STUDIES`` maps each study's command-line name to its module, in the order ``run all`` runs
them (later studies reuse the checkpoints of earlier ones).
"""

from . import toy_nets

STUDIES = {
    toy_nets.NAME: toy_nets,
}
