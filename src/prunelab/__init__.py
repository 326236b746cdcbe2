"""prunelab: a laboratory for taking parts out of neural networks and understanding what happens.

Dimension letters used in every docstring and shape comment:

    N  samples            D  input features       C  classes (logits)
    H  units in a layer   M  masks                P  parameters
    L  layers             K  models trained together (seeds, ensembles)

A *unit* (the sources' "node") is an output feature of a Linear or an output channel of a
Conv2d, after its activation. Units are numbered layer by layer; a unit mask over the whole
network is a tensor ``[M, H]`` with ``H`` the total number of hidden units, multiplied in
after the activation (a channel's mask scales its whole feature map).

The package is laid out by layer, imports pointing only downward:

    base/     data, the parsed op view (ops), models, training, checkpoints, files, stats
    engines/  fast batched computation: many masks, exact curvature, many models, sweeps
    methods/  the science as pure functions: ablation, criteria, surgery, bounds, coreset, ...
    studies/  one investigation each
    faces/    command line, HTML reports, the interactive explorer

Every public module is importable by its short name as well (``from prunelab import
ablation, criteria, surgery``): :data:`MODULES` maps each to its layer, and ``prunelab.X``
is the very same module object as ``prunelab.<layer>.X``.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

MODULES = {
    **dict.fromkeys(
        (
            "checkpoint", "checks", "data", "executor", "files", "models", "ops", "progress",
            "stats", "train",
        ),
        "base",
    ),
    **dict.fromkeys(("curvature", "ensemble", "hessian_blocks", "masks", "stacked", "sweep"), "engines"),
    **dict.fromkeys(
        (
            "ablation", "alignment", "bound_checks", "bounds", "compare", "coreset", "coreset_eval",
            "costs", "criteria", "curves", "decoy", "findings", "guarantees", "l0", "relevance",
            "surgery",
        ),
        "methods",
    ),
    **dict.fromkeys(("cli", "report", "web"), "faces"),
}  # fmt: skip


class _ShortNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``prunelab.X[.Y]`` to ``prunelab.<layer>.X[.Y]`` (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != __name__ or parts[1] not in MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        _, short, *rest = spec.name.split(".")
        module = importlib.import_module(".".join([__name__, MODULES[short], short, *rest]))
        self._spec = module.__spec__  # the import system overwrites it with the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # already executed under its layered name


if not any(isinstance(f, _ShortNames) for f in sys.meta_path):
    sys.meta_path.insert(0, _ShortNames())


def __getattr__(name):
    """``prunelab.X`` for a public module ``X`` not imported yet (PEP 562)."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
