"""The backward rules as data: matrix, nonlinearity and maximum rules, and the methods as rows
of them (``METHODS``). Formulas and sources in each docstring; shapes: a rule maps the quantity
at an op's output to its input, tensors shaped like the op's output and input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from ...base import ops

RESCALE_TOLERANCE = 1e-10  # |z - z_ref| below which rescale falls back to f'(z), as Captum does


# --- forward values of one op, against a reference ---------------------------------------------


def _delta(v: Tensor, v_ref: Tensor | None) -> Tensor:
    """v - v_ref, where None stands for a zero reference (no copy)."""
    return v if v_ref is None else v - v_ref


def _div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den == 0 (no relevance flows through an exactly-zero quantity)."""
    nonzero = den != 0
    if torch.is_grad_enabled() and (num.requires_grad or den.requires_grad):
        den = torch.where(nonzero, den, 1)  # no inf / nan for autograd to multiply by 0
    return torch.where(nonzero, num / den, 0)


@dataclass
class Node:
    """One activation op seen by a nonlinearity rule; tensors shaped like its output.

    ``dz = z - z_ref``; ``da = a - a_ref - c``, the part of ``a`` the activation explains, where
    ``c = f(0)`` when activation offsets count as biases (``blame_bias``) and 0 otherwise.
    """

    op: ops.Activation
    z: Tensor
    dz: Tensor
    da: Tensor

    @cached_property
    def dphi(self) -> Tensor:
        return self.op.derivatives(self.z)[0]

    @cached_property
    def rescale(self) -> Tensor:
        """(f(z) - f(z_ref)) / (z - z_ref), falling back to f'(z) when |dz| < 1e-10."""
        close = self.dz.abs() < RESCALE_TOLERANCE
        return torch.where(close, self.dphi, self.da / torch.where(close, 1, self.dz))


@dataclass(frozen=True)
class Linear:
    """One linear op ``z = A a_in + b`` seen by a matrix rule, whatever its kind.

    ``vjp(g) = A^T g`` (Linear: ``g W``; Conv2d: the transposed convolution; average pool: its
    own backward); ``b``: the bias map broadcastable to ``z`` (a Conv2d's ``b_c`` per channel,
    plus an Offset's per-position shift), None for a pool; ``delta_in = a_in - a_in_ref``,
    ``dz = z - z_ref``; ``eps``; ``d1``: Delta of the constant bias input (1; 0 for DeepLIFT).
    """

    vjp: Callable[[Tensor], Tensor]
    b: Tensor | None
    delta_in: Tensor
    dz: Tensor
    eps: float
    d1: float

    def bias_share(self, v: Tensor) -> Tensor | None:
        """The constant input's share d1 * b * v, shaped like ``v`` (None without a bias)."""
        if self.b is None:
            return None
        return (self.d1 * self.b) * v if self.d1 else torch.zeros_like(v)


# --- matrix rules: (op, S_z) -> (S_in, bias relevance shaped like z) ----------------------------


def _blip(z: Tensor, eps: float) -> Tensor:
    """blip(z) = z + eps * sign(z), sign(0) = +1 (the stabiliser of Bach et al. 2015)."""
    return torch.where(z >= 0, z + eps, z - eps) if eps else z


def linear_gradient(s: Linear, S: Tensor) -> tuple[Tensor, Tensor | None]:
    """Gradient rule R(a_i) = sum_j A_ji R(z_j); the constant input gets b_j R(z_j)."""
    return s.vjp(S), None if s.b is None else s.b * S


def linear_normalized(s: Linear, R: Tensor) -> tuple[Tensor, Tensor | None]:
    """LRP-eps rule R(a_i) = sum_j da_i A_ji R(z_j) / blip(dz_j) (Bach et al. 2015, eq. 6).

    With the bias as weight on a constant input 1 (Montavon et al. 2019, index 0), that input
    gets d1 * b_j R(z_j) / blip(dz_j); for eps = 0 the split is exact: sum_i + bias = R(z_j).
    A convolution is the same sum over its (sparse, repeated) matrix: R_in = da_in *
    conv_transpose(R / blip(dz)).
    """
    v = R / _blip(s.dz, s.eps) if s.eps else _div(R, s.dz)  # blip(z) != 0 if eps > 0
    return s.delta_in * s.vjp(v), s.bias_share(v)


def linear_normalized_q(s: Linear, Q: Tensor) -> tuple[Tensor, Tensor | None]:
    """Q twin of the normalized rule: Q(a_i) = sum_j A_ji Q(z_j) dz_j / blip(dz_j); the
    gradient rule when eps = 0 (the source's rewriting). Returns Q_in and the bias relevance."""
    v = Q * (s.dz / _blip(s.dz, s.eps)) if s.eps else Q
    return s.vjp(v), s.bias_share(v)


# --- nonlinearity rules: (node, S_a) -> S_z -----------------------------------------------------


def _q_twin(rule: Callable[[Node, Tensor], Tensor]) -> Callable[[Node, Tensor], Tensor]:
    """Q twin of an R-space rule: Q(z) = rule(node, da * Q(a)) / dz."""
    return lambda n, Q: _div(rule(n, n.da * Q), n.dz)


def _ignore(n: Node, S: Tensor) -> Tensor:
    """Ignore: R(z) = R(a) (Bach et al. 2015)."""
    return S


def _gradient(n: Node, S: Tensor) -> Tensor:
    """Gradient: R(z) = f'(z) R(a)."""
    return n.dphi * S


def _slope(n: Node, S: Tensor) -> Tensor:
    """Slope: R(z) = (f(z) - f(z_ref)) / (z - z_ref) R(a); with a zero reference f(z)/z (the
    Q form of ignore; DeepLIFT's rescale multiplier, Shrikumar et al. 2017)."""
    return n.rescale * S


def _repeat(n: Node, S: Tensor) -> Tensor:
    """Repeat: R(z) = relu(R(a)), the deconvnet's ReLU backward (Zeiler & Fergus 2014)."""
    return F.relu(S)


def _guided(n: Node, S: Tensor) -> Tensor:
    """Guided backprop: R(z) = relu(f'(z) R(a)) (Springenberg et al. 2015)."""
    return F.relu(n.dphi * S)


# --- maximum rules: (a [M, K], R [M]) -> R_in [M, K] --------------------------------------------


def _max_gradient(a: Tensor, R: Tensor) -> Tensor:
    """Winner takes all: R(a_i) = R(b) if a_i = max a, ties split equally. a [N, K], R [N]."""
    win = (a == a.amax(1, keepdim=True)).to(a.dtype)  # [N, K]
    return R[:, None] * win / win.sum(1, keepdim=True)


def _max_radial(a: Tensor, R: Tensor) -> Tensor:
    """Radial: R(a_i) = s_i R(b), s_i = relu(a_i) / sum relu(a) if max a > 0, else
    s_i = (1/a_i) / sum 1/a (all negative; the source's rule) and ties at 0 split equally.
    An entry -inf (outside a padded pooling window) gets s_i = 0."""
    pos = F.relu(a)
    s = pos / pos.sum(1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)  # max a > 0
    low = (a.amax(1) <= 0).nonzero()[:, 0]  # the rows whose maximum is not positive
    if len(low):
        a_low = a[low]
        inv = 1 / torch.where(a_low < 0, a_low, -1)  # only read where every a_i < 0
        zero = (a_low == 0).to(a.dtype)
        neg = a_low.amax(1, keepdim=True) < 0
        s_low = torch.where(neg, inv / inv.sum(1, keepdim=True), zero / zero.sum(1, keepdim=True))
        s = s.index_copy(0, low, s_low)
    return R[:, None] * s


LINEAR_RULES: dict[str, dict[str, Callable | None]] = {
    # "r": the rule on whatever travels backwards; "q": its twin on Q = R / (a - a_ref)
    "gradient": {"r": linear_gradient, "q": None},  # Q twin would divide by activations
    "normalized": {"r": linear_normalized, "q": linear_normalized_q},
}
NONLINEARITY_RULES: dict[str, dict[str, Callable]] = {
    "ignore": {"r": _ignore, "q": _slope},  # exact twins: R(z) = dz Q(z) = da Q(a) = R(a)
    "gradient": {"r": _gradient, "q": _q_twin(_gradient)},
    "slope": {"r": _slope, "q": _q_twin(_slope)},
    "repeat": {"r": _repeat, "q": _q_twin(_repeat)},
    "guided": {"r": _guided, "q": _q_twin(_guided)},
}
MAXIMUM_RULES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradient": _max_gradient,
    "radial": _max_radial,
}

# fmt: off
METHOD_FIELDS = ("linear", "nonlinearity", "epsilon", "propagates", "times_input", "offsets",
                 "reference")
_METHOD_TABLE = {
    #                    linear        nonlinearity eps   propagates   x input offsets reference
    "gradient":         ("gradient",   "gradient",  0.0,  "signal",    False, False, "zero"),
    "gradient_x_input": ("gradient",   "gradient",  0.0,  "signal",    True,  False, "zero"),
    "deconvnet":        ("gradient",   "repeat",    0.0,  "signal",    False, False, "zero"),
    "guided_backprop":  ("gradient",   "guided",    0.0,  "signal",    False, False, "zero"),
    "lrp_0":            ("normalized", "ignore",    0.0,  "relevance", False, False, "zero"),
    "lrp_epsilon":      ("normalized", "ignore",    1e-6, "relevance", False, False, "zero"),
    "blame_bias":       ("normalized", "ignore",    0.0,  "relevance", False, True,  "zero"),
    "deeplift":         ("normalized", "ignore",    0.0,  "relevance", False, False, "baseline"),
}
# fmt: on
METHODS: dict[str, dict] = {
    name: dict(zip(METHOD_FIELDS, row, strict=True), maximum="gradient")
    for name, row in _METHOD_TABLE.items()
}
LAYER_KEYS = ("linear", "nonlinearity", "maximum", "epsilon")  # what `rules=` may override
_CHOICES = {"linear": LINEAR_RULES, "nonlinearity": NONLINEARITY_RULES, "maximum": MAXIMUM_RULES}


def max_relevance(a: Tensor, R: Tensor, rule: str = "gradient") -> Tensor:
    """Relevance of the inputs of a maximum b = max_i a_i, by a rule of ``MAXIMUM_RULES``.

    Parameters
    ----------
    a : Tensor[N, K]
        The values the maximum is taken over.
    R : Tensor[N]
        The relevance of the maximum b.
    rule : {"gradient", "radial"}
        ``"gradient"``: winner takes all (ties split equally); ``"radial"``: split among the
        positive a_i in proportion to a_i (all negative: in proportion to 1/a_i).

    Returns
    -------
    Tensor[N, K], summing to ``R`` over K.
    """
    if rule not in MAXIMUM_RULES:
        raise KeyError(f"max_relevance: rule {rule!r}; choose from {sorted(MAXIMUM_RULES)}")
    if a.dim() != 2 or R.shape != a.shape[:1]:
        raise ValueError(
            f"max_relevance: need a [N, K] and R [N]; got {tuple(a.shape)}, {tuple(R.shape)}"
        )
    return MAXIMUM_RULES[rule](a, R)
