"""The studies: one investigation each, as ``run(config) -> Results`` plus its report sections.

``STUDIES`` maps each study's command-line name to its module, in the order ``run all`` runs
them (later studies reuse the checkpoints of earlier ones). It is built on first use, so that
``prunelab --help`` and ``prunelab list`` need not import torch (:mod:`.catalogue` reads what
they show from the sources).
"""

from .catalogue import MODULES


def __getattr__(name: str):
    """``STUDIES`` (PEP 562): imports every study the first time it is asked for."""
    if name == "STUDIES":
        from .catalogue import entries

        studies = {n: e.load() for n, e in entries().items()}
        globals()["STUDIES"] = studies
        return studies
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODULES", "STUDIES"]
