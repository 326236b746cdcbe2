"""Backward relevance: explain one output of a network by running rules backwards over its layers.

The network is read through the parsed dense-layer view (:func:`prunelab.models.parse`); a layer
is ``z = a_in W.T + b`` followed by ``a = phi(z)``. A method runs the forward pass once, storing
``a_in, z, a`` for every layer, and then walks the layers backwards applying one *matrix rule*
(the ``Linear``) and one *nonlinearity rule* (the activation) per layer. Rules are data: small
functions in the registries ``LINEAR_RULES``, ``NONLINEARITY_RULES`` and ``MAXIMUM_RULES``, and a
named method is a row of ``METHODS``. Nothing is keyed by module identity, so a module that
occurs twice in the ``Sequential`` is simply two layers with the same weights.

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

Every bias ``b_j`` is treated as a weight on a constant input 1 that feeds unit ``j`` only, so
each method also returns the relevance (or signal) reaching each bias.

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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import ops
from ..base.models import Dense, Net, derivatives, parse

_WHERE = "relevance.explain"
RESCALE_TOLERANCE = 1e-10  # |z - z_ref| below which rescale falls back to f'(z), as Captum does


@dataclass(frozen=True)
class Relevance:
    """What :func:`explain` returns.

    Attributes
    ----------
    input : Tensor[N, D]
        Relevance (or signal, for the signal methods) of every input feature.
    bias : list of Tensor[N, H_l]
        One per parsed ``Linear`` (output layer included): the relevance of the constant input
        1 that carries bias ``b_j``; for the signal methods the signal reaching it,
        ``b_j * d f / d b_j`` for ``gradient``. ``blame_bias`` adds the relevance of an
        activation's offset ``f(0)`` (non-zero for sigmoid only) to its unit's entry.
    output : Tensor[N]
        The explained value: ``f_t(x)``, or ``f_t(x) - f_t(x0)`` for ``deeplift``.
    target : Tensor[N]
        The explained output unit ``t`` of every sample.
    """

    input: Tensor
    bias: list[Tensor]
    output: Tensor
    target: Tensor

    @property
    def total(self) -> Tensor:
        """Input plus bias relevance per sample, Tensor[N] (equals ``output`` if conserved)."""
        return self.input.sum(1) + sum(b.sum(1) for b in self.bias)


# --- forward values of one layer, against a reference ------------------------------------------


def _delta(v: Tensor, v_ref: Tensor | None) -> Tensor:
    """v - v_ref, where None stands for a zero reference (no copy)."""
    return v if v_ref is None else v - v_ref


def _div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den == 0 (no relevance flows through an exactly-zero quantity)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, 1), 0)


@dataclass
class Node:
    """One layer's activation step, seen by a nonlinearity rule. Shapes [N, H] (refs broadcast).

    ``dz = z - z_ref``; ``da = a - a_ref - c``, the part of ``a`` the activation explains, where
    ``c = f(0)`` when activation offsets count as biases (``blame_bias``) and 0 otherwise.
    """

    layer: Dense
    z: Tensor
    dz: Tensor
    da: Tensor

    @cached_property
    def dphi(self) -> Tensor:
        return derivatives(self.layer.activation, self.z, self.layer.slope)[0]

    @cached_property
    def rescale(self) -> Tensor:
        """(f(z) - f(z_ref)) / (z - z_ref), falling back to f'(z) when |dz| < 1e-10."""
        close = self.dz.abs() < RESCALE_TOLERANCE
        return torch.where(close, self.dphi, self.da / torch.where(close, 1, self.dz))


@dataclass(frozen=True)
class Step:
    """One ``Linear`` seen by a matrix rule: W [H, H_in], b [H], delta_in = a_in - a_in_ref
    [N, H_in], dz [N, H], eps, and d1 = Delta of the constant bias input (1; 0 for DeepLIFT)."""

    W: Tensor
    b: Tensor
    delta_in: Tensor
    dz: Tensor
    eps: float
    d1: float


# --- matrix rules: (step, S_z [N, H]) -> (S_in [N, H_in], bias relevance [N, H]) ----------------


def _blip(z: Tensor, eps: float) -> Tensor:
    """blip(z) = z + eps * sign(z), sign(0) = +1 (the stabiliser of Bach et al. 2015)."""
    return torch.where(z >= 0, z + eps, z - eps) if eps else z


def linear_gradient(s: Step, S: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient rule R(a_i) = sum_j w_ij R(z_j); the constant input gets b_j R(z_j)."""
    return S @ s.W, s.b * S


def linear_normalized(s: Step, R: Tensor) -> tuple[Tensor, Tensor]:
    """LRP-eps rule R(a_i) = sum_j da_i w_ij R(z_j) / blip(dz_j) (Bach et al. 2015).

    With the bias as weight on a constant input 1 (Montavon et al. 2019, index 0), that input
    gets d1 * b_j R(z_j) / blip(dz_j); for eps = 0 the split is exact: sum_i + bias = R(z_j).
    """
    v = R / _blip(s.dz, s.eps) if s.eps else _div(R, s.dz)  # [N, H]; blip(z) != 0 if eps > 0
    return s.delta_in * (v @ s.W), s.d1 * s.b * v


def linear_normalized_q(s: Step, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Q twin of the normalized rule: Q(a_i) = sum_j w_ij Q(z_j) dz_j / blip(dz_j); the
    gradient rule when eps = 0 (the source's rewriting). Returns Q_in and the bias relevance."""
    v = Q * (s.dz / _blip(s.dz, s.eps)) if s.eps else Q  # [N, H]
    return v @ s.W, s.d1 * s.b * v


# --- nonlinearity rules: (node, S_a [N, H]) -> S_z [N, H] ---------------------------------------


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


def _max_gradient(a: Tensor, R: Tensor) -> Tensor:
    """Winner takes all: R(a_i) = R(b) if a_i = max a, ties split equally. a [N, K], R [N]."""
    win = (a == a.amax(1, keepdim=True)).to(a.dtype)  # [N, K]
    return R[:, None] * win / win.sum(1, keepdim=True)


def _max_radial(a: Tensor, R: Tensor) -> Tensor:
    """Radial: R(a_i) = s_i R(b), s_i = relu(a_i) / sum relu(a) if max a > 0, else
    s_i = (1/a_i) / sum 1/a (all negative; the source's rule) and ties at 0 split equally."""
    b = a.amax(1, keepdim=True)  # [N, 1]
    pos = F.relu(a)
    inv = 1 / torch.where(a < 0, a, -1)  # only read where every a_i < 0
    zero = (a == 0).to(a.dtype)
    s = torch.where(
        b > 0,
        pos / pos.sum(1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny),
        torch.where(b < 0, inv / inv.sum(1, keepdim=True), zero / zero.sum(1, keepdim=True)),
    )
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


# --- the maximum built from smaller pieces (the source's closing remark) ------------------------


def _softmax_max(a: Tensor, a0: Tensor, softness: float) -> Tensor:
    """m = s logsumexp(a / s) from blocks u = a/s, v = exp(u), t = log(sum v), m = s t; the
    rescale chain gives C_i = (v_i - v0_i) / sum(v - v0) * (m - m0)."""
    M = torch.maximum(a.amax(1, keepdim=True), a0.amax(1, keepdim=True))  # shift, [N, 1]
    dv = torch.exp((a - M) / softness) - torch.exp((a0 - M) / softness)  # [N, K], scaled
    dm = softness * (torch.logsumexp(a / softness, 1) - torch.logsumexp(a0 / softness, 1))
    return _div(dv, dv.sum(1, keepdim=True)) * dm[:, None]


def _relu_max(a: Tensor, a0: Tensor, softness: float) -> Tensor:
    """m_1 = a_1, m_k = m_{k-1} + relu(a_k - m_{k-1}); rescale multipliers rho_k of each relu."""
    m, m0, rho = a[:, 0], a0[:, 0], []
    for k in range(1, a.shape[1]):
        d, d0 = a[:, k] - m, a0[:, k] - m0
        r, r0 = F.relu(d), F.relu(d0)
        close = (d - d0).abs() < RESCALE_TOLERANCE
        ratio = (r - r0) / torch.where(close, 1, d - d0)
        rho.append(torch.where(close, (d > 0).to(a.dtype), ratio))
        m, m0 = m + r, m0 + r0
    mult, mu = torch.empty_like(a), torch.ones_like(m)  # mu: multiplier of m_k
    for k in range(a.shape[1] - 1, 0, -1):
        mult[:, k] = mu * rho[k - 1]
        mu = mu * (1 - rho[k - 1])  # m_{k-1} reaches m_k directly and through -d_k
    mult[:, 0] = mu
    return (a - a0) * mult


MAX_COMPOSITIONS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "softmax": _softmax_max,
    "relu": _relu_max,
}


def composed_max_relevance(
    a: Tensor, a_ref: Tensor, *, form: str, softness: float = 1e-2
) -> Tensor:
    """DeepLIFT (rescale) relevance of max_i a_i computed through a composition of simple layers.

    The source notes that two ways of building the maximum from basic layers give *different*
    relevances: the soft maximum ``m_s = s log sum_i exp(a_i / s)`` in the limit ``s -> 0``
    ("softmax"), and ``max(a, b) = a + relu(b - a)``, chained over K values ("relu"). Both obey
    summation-to-delta (sum_i C_i = max(a) - max(a_ref); for finite s the change of m_s) but
    split it differently. Example:
    a = (3, 1), a_ref = (0, 2): "softmax" gives (1, 0), "relu" gives (1.5, -0.5). Against a zero
    reference both give winner-takes-all, the "gradient" maximum rule.

    Parameters
    ----------
    a, a_ref : Tensor[N, K]
        Values and reference values (``a_ref`` may be [K]).
    form : {"softmax", "relu"}
    softness : float
        s for ``"softmax"`` (small s approaches the limit); unused for ``"relu"``.

    Returns
    -------
    Tensor[N, K]: contributions C_i (Shrikumar et al. 2017, rescale rule).
    """
    if form not in MAX_COMPOSITIONS:
        raise KeyError(
            f"composed_max_relevance: form {form!r}; choose from {sorted(MAX_COMPOSITIONS)}"
        )
    if not softness > 0:
        raise ValueError(f"composed_max_relevance: softness must be > 0; got {softness}")
    return MAX_COMPOSITIONS[form](a, a_ref.expand_as(a), softness)


# --- validation --------------------------------------------------------------------------------


def _check_layer_rules(entry: object, where: str) -> dict:
    if not isinstance(entry, Mapping):
        raise TypeError(
            f"{_WHERE}: rules{where} must be a dict with keys from {list(LAYER_KEYS)}; "
            f"got {type(entry).__name__}"
        )
    for key, value in entry.items():
        if key not in LAYER_KEYS:
            raise KeyError(f"{_WHERE}: rules{where} key {key!r}; choose from {list(LAYER_KEYS)}")
        if key == "epsilon":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(
                    f"{_WHERE}: rules{where}['epsilon'] must be a finite number >= 0; got {value!r}"
                )
        elif not isinstance(value, str) or value not in _CHOICES[key]:
            raise KeyError(
                f"{_WHERE}: rules{where}[{key!r}] = {value!r}; choose from {sorted(_CHOICES[key])}"
            )
    return dict(entry)


def _layer_rules(method: str, rules: object, epsilon: float | None, L: int) -> list[dict]:
    """Merge the method's row, the epsilon argument and ``rules`` into one dict per layer."""
    base = {k: METHODS[method][k] for k in LAYER_KEYS}
    if epsilon is not None:
        base.update(_check_layer_rules({"epsilon": epsilon}, ""))
    if rules is None:
        return [dict(base) for _ in range(L)]
    if isinstance(rules, Mapping):
        return [dict(base, **_check_layer_rules(rules, "")) for _ in range(L)]
    if isinstance(rules, Sequence) and not isinstance(rules, str):
        if len(rules) != L:
            raise ValueError(
                f"{_WHERE}: rules is a list of {len(rules)} entries; the model has "
                f"{L} Linear layers (one dict each)"
            )
        return [dict(base, **_check_layer_rules(r, f"[{i}]")) for i, r in enumerate(rules)]
    raise TypeError(
        f"{_WHERE}: rules must be None, a dict with keys from {list(LAYER_KEYS)}, "
        f"or a list of such dicts (one per Linear); got {type(rules).__name__}"
    )


def _targets(target: object, logits: Tensor) -> Tensor:
    N, C = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{_WHERE}: target must be integer class indices; got dtype {t.dtype}")
    t = t.long().expand(N).clone() if t.dim() == 0 else t.long()
    if t.shape != (N,):
        raise ValueError(
            f"{_WHERE}: target must be an int or have shape [N] = [{N}]; got {tuple(t.shape)}"
        )
    if ((t < 0) | (t >= C)).any():
        bad = t[(t < 0) | (t >= C)][0].item()
        raise ValueError(
            f"{_WHERE}: target index {bad} is out of range; the model has C = {C} "
            f"outputs (0 to {C - 1})"
        )
    return t


def _baseline(baseline: object, x_raw: Tensor, x: Tensor) -> Tensor:
    """The DeepLIFT reference input, [1, D] or [N, D]."""
    N, D = x.shape
    if baseline is None or (isinstance(baseline, str) and baseline == "zero"):
        return x.new_zeros(1, D)
    if isinstance(baseline, str):
        if baseline == "mean":
            return x.mean(0, keepdim=True)
        raise ValueError(
            f"{_WHERE}: baseline {baseline!r}; choose 'zero', 'mean', or a tensor "
            f"of shape [D] = [{D}] or [N, D] = [{N}, {D}]"
        )
    x0 = torch.as_tensor(baseline).to(x)
    if x0.shape == x_raw.shape[1:] or x0.shape == (D,):
        return x0.reshape(1, -1)
    if x0.shape in (x_raw.shape, (N, D)):
        return x0.reshape(N, -1)
    raise ValueError(
        f"{_WHERE}: baseline has shape {tuple(x0.shape)}; expected [D] = [{D}] or "
        f"[N, D] = [{N}, {D}] (or the unflattened {tuple(x_raw.shape)})"
    )


# --- the backward pass -------------------------------------------------------------------------


def _check_call(
    model: nn.Module, x: object, method: str, baseline: object, rules: object, epsilon: object
) -> tuple[Net, Tensor, list[dict]]:
    """Validate explain's arguments: the parsed net, x, and the merged rules of every layer."""
    if method not in METHODS:
        raise KeyError(f"{_WHERE}: method {method!r}; choose from {sorted(METHODS)}")
    net = parse(model, method=_WHERE)
    layer_rules = _layer_rules(method, rules, epsilon, len(net.layers))
    if METHODS[method]["reference"] != "baseline" and baseline is not None:
        raise ValueError(
            f"{_WHERE}: baseline is used by method 'deeplift' only; got method {method!r}"
        )
    if epsilon is not None and all(r["linear"] != "normalized" for r in layer_rules):
        raise ValueError(
            f"{_WHERE}: epsilon is used by the 'normalized' linear rule only; "
            f"method {method!r} uses {sorted({r['linear'] for r in layer_rules})}"
        )
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{_WHERE}: x must be a floating-point Tensor [N, D]; got "
            f"{getattr(x, 'dtype', type(x).__name__)}"
        )
    flat = net.inputs(x)
    if flat.dim() != 2 or flat.shape[1] != net.in_features:
        raise ValueError(
            f"{_WHERE}: x has shape {tuple(x.shape)}; the model expects [N, {net.in_features}]"
        )
    return net, x, layer_rules


def _forward(net: Net, Ws: list[Tensor], bs: list[Tensor], x: Tensor) -> list:
    """[(a_in, z, a)] per layer; dropout is off (an explanation is of the eval-mode network)."""
    params = {f"{layer.name}.weight": W for layer, W in zip(net.layers, Ws, strict=True)}
    params |= {f"{layer.name}.bias": b for layer, b in zip(net.layers, bs, strict=True)}
    return ops.records(net.view, x, params=params)


def explain(
    model: nn.Module,
    x: Tensor,
    *,
    method: str,
    target: int | Sequence[int] | Tensor | None = None,
    baseline: str | Tensor | None = None,
    rules: Mapping | Sequence[Mapping] | None = None,
    q_form: bool = False,
    epsilon: float | None = None,
) -> Relevance:
    """Explain output ``f_t(x)`` of ``model`` by backward relevance propagation.

    The forward pass runs once; then, from the last layer to the first, the nonlinearity rule
    maps the quantity at ``a`` to ``z`` and the matrix rule maps it to ``a_in`` and to the bias.

    LRP-0 (``normalized`` with eps = 0, ``ignore``) splits ``R(z_j)`` exactly among
    ``a_i w_ij / z_j`` and the bias share ``b_j / z_j``, so ``input.sum + sum(bias.sum) =
    f_t(x)`` for every activation. For ReLU and leaky ReLU nets it equals gradient x input,
    biases included, and the bias relevance is ``b_j df/db_j`` (Ancona et al. 2018): the net is
    positively homogeneous in (x, biases). For tanh, sigmoid or GELU conservation still holds,
    because "ignore" passes ``R(a)`` to ``z`` whole, as if the activation were the line through
    the origin of slope ``f(z)/z``; the input relevance is then ``x`` times the gradient taken
    with ``f(z)/z`` in place of ``f'(z)``, and the bias relevance ``b_j`` times that modified
    ``df/db_j``, not ``b_j df/db_j``.
    ``blame_bias`` is LRP-0 that also counts an activation offset ``f(0)`` (sigmoid: 1/2) as a
    bias, so that the Q form stays finite as z -> 0. DeepLIFT splits ``f_t(x) - f_t(x0)`` among
    ``x - x0`` (summation to delta); the biases cancel in differences and get zero.

    Parameters
    ----------
    model : nn.Sequential
        A model that :func:`prunelab.models.parse` accepts; dropout is treated as off.
    x : Tensor[N, D]
        Inputs (unflattened shapes are flattened as the model's ``Flatten`` would). Computation
        follows ``x``'s dtype and device.
    method : str
        A key of ``METHODS``: ``gradient``, ``gradient_x_input``, ``deconvnet``,
        ``guided_backprop``, ``lrp_0``, ``lrp_epsilon``, ``blame_bias``, ``deeplift``.
    target : int, sequence of int or Tensor[N], optional
        The output unit to explain (default: the argmax of the outputs, the predicted class).
    baseline : {"zero", "mean"} or Tensor[D] or Tensor[N, D], optional
        DeepLIFT's reference input x0 (default ``"zero"``; ``"mean"`` is the mean of ``x``).
    rules : dict or list of dict, optional
        Overrides of the method's layer rules, keys from ``LAYER_KEYS``: ``"linear"`` (a key of
        ``LINEAR_RULES``), ``"nonlinearity"`` (of ``NONLINEARITY_RULES``), ``"maximum"`` (of
        ``MAXIMUM_RULES``, for pooling layers) and ``"epsilon"`` (>= 0). A dict applies to every
        layer; a list holds one dict per parsed ``Linear``, in order.
    q_form : bool
        Run the relevance methods through ``Q = R / (a - a_ref)``: the matrix rule becomes the
        gradient rule and "ignore" becomes "slope". Same result up to rounding. The signal
        methods already propagate a Q-type quantity, so this changes nothing for them.
    epsilon : float, optional
        The stabiliser of the "normalized" rule for layers whose ``rules`` give none
        (default: the method's, 1e-6 for ``lrp_epsilon`` and 0 otherwise). It is not negligible
        beside small pre-activations: on a 784-300-100-10 net with 1,000 random inputs some
        ``|z|`` are 4e-7, and eps = 1e-9 already moves the relevance by 3e-4 (relative).

    Returns
    -------
    Relevance
        ``input`` [N, D], ``bias`` (one [N, H_l] per layer), ``output`` [N], ``target`` [N].

    Raises
    ------
    KeyError
        Unknown method or rule name (the message lists the choices).
    TypeError, ValueError
        Unsupported module (named by ``parse``), bad shapes, targets, baselines or rules.

    Examples
    --------
    >>> from prunelab.models import mlp
    >>> model = mlp((2, 8, 2), seed=0, dtype=torch.float64)
    >>> r = explain(model, torch.randn(5, 2, dtype=torch.float64), method="blame_bias")
    >>> bool(torch.allclose(r.total, r.output))
    True
    """
    net, x, layer_rules = _check_call(model, x, method, baseline, rules, epsilon)
    spec = METHODS[method]
    relevance = spec["propagates"] == "relevance"
    q_form = bool(q_form) and relevance
    if q_form and any(r["linear"] != "normalized" for r in layer_rules):
        raise ValueError(
            f"{_WHERE}: q_form needs the 'normalized' linear rule in every layer "
            f"for relevance methods (Q = R / a would divide by activations); got "
            f"{[r['linear'] for r in layer_rules]}"
        )
    x_raw, x = x, net.inputs(x)
    Ws = [layer.weight.to(x) for layer in net.layers]
    bs = [
        x.new_zeros(layer.width) if layer.bias is None else layer.bias.to(x) for layer in net.layers
    ]
    acts = _forward(net, Ws, bs, x)
    t = _targets(target, acts[-1][2])
    onehot = F.one_hot(t, net.out_features).to(x.dtype)  # [N, C]
    if spec["reference"] == "baseline":
        refs = _forward(net, Ws, bs, _baseline(baseline, x_raw, x))  # rows 1 or N
        d1 = 0.0  # the constant input is 1 in both passes
    else:
        refs = [(None, None, None)] * len(acts)  # every node's reference is 0
        d1 = 1.0
    delta_out = _delta(acts[-1][2], refs[-1][2]) * onehot  # [N, C]
    S = delta_out if relevance and not q_form else onehot
    form = "q" if q_form else "r"

    bias: list[Tensor] = [x.new_zeros(0)] * len(acts)
    for k in reversed(range(len(acts))):
        layer, (a_in, z, a), (a_in0, z0, a_ref) = net.layers[k], acts[k], refs[k]
        c = float(layer.phi(torch.zeros(()))) if spec["offsets"] else 0.0  # f(0) as a bias
        offset = None
        if c:  # relevance of the constant offset: c Q(a) = R(a) c / a
            offset = c * S if q_form else _div(c * S, _delta(a, a_ref))
            S = S if q_form else S - offset
        node = Node(layer, z, _delta(z, z0), _delta(a, a_ref) - c if c else _delta(a, a_ref))
        S = NONLINEARITY_RULES[layer_rules[k]["nonlinearity"]][form](node, S)
        step = Step(Ws[k], bs[k], _delta(a_in, a_in0), node.dz, layer_rules[k]["epsilon"], d1)
        S, bias[k] = LINEAR_RULES[layer_rules[k]["linear"]][form](step, S)
        if offset is not None:
            bias[k] = bias[k] + offset
    if q_form or spec["times_input"]:
        S = _delta(x, refs[0][0]) * S  # [N, D]: R(x) = (x - x0) Q(x)
    return Relevance(input=S, bias=bias, output=delta_out.sum(1), target=t)
