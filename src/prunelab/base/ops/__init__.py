"""The parsed op view of a model: the one place in prunelab that knows module types.

``parse(model)`` reads a supported ``nn.Sequential`` into a :class:`View`, a sequence of ops
(:mod:`.kinds`) that each implement the few primitives methods are written against, and
``forward(view, x, ...)`` is the one forward pass over it. ``remove_units`` is the one
remove-and-rewire routine; :class:`Offset`, the one module type prunelab adds, holds its exact
compensation at a zero-padded convolution's border.
"""

from .activations import ACTIVATIONS, PIECEWISE_LINEAR, derivatives, phi
from .kinds import Activation, Affine, Flatten, Op, Params, Pass, Pool
from .modules import Offset
from .passes import forward, param_loss, records, unit_gradients
from .rewire import BORDERS, check_remove, compensation_error, remove_units
from .spec import from_spec, spec
from .view import SUPPORTED_MODULES, View, parse

__all__ = [
    "ACTIVATIONS",
    "BORDERS",
    "PIECEWISE_LINEAR",
    "SUPPORTED_MODULES",
    "Activation",
    "Affine",
    "Flatten",
    "Offset",
    "Op",
    "Params",
    "Pass",
    "Pool",
    "View",
    "check_remove",
    "compensation_error",
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
