"""Backward relevance: explain one output of a network by running rules backwards over its ops.

The network is read through the op view (:func:`prunelab.base.ops.parse`): Linear and Conv2d
layers (``Affine``, an eval-mode BatchNorm folded in: ``z = W' a_in + b'``), elementwise
activations ``a = phi(z)``, average pools (linear ops), max pools (routing ops), Flatten,
Dropout and Identity. A method runs the forward pass once, storing every op's input, and then
walks the ops backwards applying one rule per op: a *matrix rule* at every linear op (Linear,
Conv2d, average pool), a *nonlinearity rule* at every activation and a *maximum rule* at every
max pool. Rules are data: small functions in the registries ``LINEAR_RULES``,
``NONLINEARITY_RULES`` and ``MAXIMUM_RULES``, and a named method is a row of ``METHODS``. One
code path serves MLPs and convnets: a rule sees a linear op only through its transpose
``J^T g`` (``g W`` for a Linear, the transposed convolution for a Conv2d, the pool's own
backward), its bias map and its input and output.

Two kinds of quantity travel backwards:

* a *signal* (methods ``gradient``, ``gradient_x_input``, ``deconvnet``, ``guided_backprop``),
  started at the output as the one-hot vector of the target; ``gradient_x_input`` multiplies
  the input's signal by the input at the end;
* a *relevance* ``R`` in output units (``lrp_0``, ``lrp_epsilon``, ``blame_bias``,
  ``deeplift``), started as the explained output value.

Every relevance has a twin ``Q = R / (a - a_ref)`` (the source's rewriting ``Q(a) = R(a)/a``,
with ``a_ref = 0`` for LRP and the baseline's activation for DeepLIFT). In Q form the
"normalized" matrix rule becomes the plain gradient rule and the "ignore" nonlinearity rule
becomes the "slope" rule ``(f(z) - f(z_ref)) / (z - z_ref)``; the input relevance is then
``(x - x_ref) * Q(x)``. ``explain(..., q_form=True)`` runs these twins and gives the same numbers.

Every bias is treated as a weight on a constant input 1 (for a Conv2d: one constant input per
channel and output position), so each method also returns the relevance (or signal) reaching
each bias: a map per channel and position for a Conv2d, per unit for a Linear.

| method | matrix rule | nonlinearity rule | starts with | input |
|---|---|---|---|---|
| gradient | gradient | gradient | one-hot | signal |
| gradient_x_input | gradient | gradient | one-hot | x * signal |
| deconvnet | gradient | repeat | one-hot | signal |
| guided_backprop | gradient | guided | one-hot | signal |
| lrp_0 | normalized, eps = 0 | ignore | f_t(x) | R |
| lrp_epsilon | normalized, eps = 1e-6 | ignore | f_t(x) | R |
| blame_bias | normalized, eps = 0 | ignore, f(0) as a bias | f_t(x) | R |
| deeplift | normalized on differences | ignore (Q form: rescale) | f_t(x) - f_t(x0) | R |

The package: :mod:`.rules` (the rule registries and ``METHODS``), :mod:`.pools` (max pools
per window), :mod:`.composed` (the maximum built from smaller layers), :mod:`.backward`
(``explain``).

Max pools use the "gradient" maximum rule (winner takes all) by default, in every method;
``rules`` selects "radial" per layer.

References
----------
Bach, Binder, Montavon, Klauschen, Mueller & Samek (2015), "On pixel-wise explanations for
non-linear classifier decisions by layer-wise relevance propagation", PLoS ONE 10(7) e0130140.
Montavon, Binder, Lapuschkin, Samek & Mueller (2019), "Layer-wise relevance propagation: an
overview", in Explainable AI, LNCS 11700, 193-209.
Shrikumar, Greenside & Kundaje (2017), "Learning important features through propagating
activation differences", ICML (arXiv:1704.02685).
Ancona, Ceolini, Oeztireli & Gross (2018), "Towards better understanding of gradient-based
attribution methods for deep neural networks", ICLR (arXiv:1711.06104).
Springenberg, Dosovitskiy, Brox & Riedmiller (2015), "Striving for simplicity: the all
convolutional net", ICLR workshop (arXiv:1412.6806).
Zeiler & Fergus (2014), "Visualizing and understanding convolutional networks", ECCV.
D. Hobson, "Visualizing neural networks, how to blame the bias" (``sources/``, part 2).
"""

from __future__ import annotations

from .backward import Relevance, explain
from .composed import MAX_COMPOSITIONS, composed_max_relevance
from .rules import (
    LAYER_KEYS,
    LINEAR_RULES,
    MAXIMUM_RULES,
    METHOD_FIELDS,
    METHODS,
    NONLINEARITY_RULES,
    RESCALE_TOLERANCE,
    Linear,
    Node,
    linear_gradient,
    linear_normalized,
    linear_normalized_q,
    max_relevance,
)

__all__ = [
    "LAYER_KEYS",
    "LINEAR_RULES",
    "MAXIMUM_RULES",
    "MAX_COMPOSITIONS",
    "METHODS",
    "METHOD_FIELDS",
    "NONLINEARITY_RULES",
    "RESCALE_TOLERANCE",
    "Linear",
    "Node",
    "Relevance",
    "composed_max_relevance",
    "explain",
    "linear_gradient",
    "linear_normalized",
    "linear_normalized_q",
    "max_relevance",
]
