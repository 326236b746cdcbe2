"""The parsed op view of a model: the one place in prunelab that knows module types.

``parse(model)`` reads a supported ``nn.Sequential`` into a :class:`View`, a sequence of ops
(:mod:`.kinds`) that each implement the few primitives methods are written against, and
``forward(view, x, ...)`` is the one forward pass over it.
"""

from .activations import ACTIVATIONS, PIECEWISE_LINEAR, derivatives, phi
from .kinds import Activation, Affine, Flatten, Op, Params, Pass, Pool
from .passes import forward, param_loss, records, unit_gradients
from .rewire import check_remove, remove_units
from .spec import from_spec, spec
from .view import SUPPORTED_MODULES, View, parse

__all__ = [
    "ACTIVATIONS",
    "PIECEWISE_LINEAR",
    "SUPPORTED_MODULES",
    "Activation",
    "Affine",
    "Flatten",
    "Op",
    "Params",
    "Pass",
    "Pool",
    "View",
    "check_remove",
    "derivatives",
    "forward",
    "from_spec",
    "param_loss",
    "parse",
    "phi",
    "records",
    "remove_units",
    "spec",
    "unit_gradients",
]
