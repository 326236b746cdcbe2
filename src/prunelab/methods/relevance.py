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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..base import ops

_WHERE = "relevance.explain"
RESCALE_TOLERANCE = 1e-10  # |z - z_ref| below which rescale falls back to f'(z), as Captum does


@dataclass(frozen=True)
class Relevance:
    """What :func:`explain` returns.

    Attributes
    ----------
    input : Tensor[N, D] or Tensor[N, C, H, W]
        Relevance (or signal, for the signal methods) of every input feature, shaped as the
        model's first op reads ``x`` (an MLP reads images flattened).
    bias : list of Tensor[N, H_l] or Tensor[N, C_l, H_l, W_l]
        One per Linear or Conv2d (output layer included): the relevance of the constant input
        1 that carries its (BatchNorm-folded) bias, per unit, or per channel and output
        position for a Conv2d; for the signal methods the signal reaching it,
        ``b_j * d f / d z_j`` for ``gradient`` (summed over positions: ``b_c df/db_c``).
        ``blame_bias`` adds the relevance of an activation's offset ``f(0)`` (non-zero for
        sigmoid only) to its unit's entry.
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
        return self.input.flatten(1).sum(1) + sum(b.flatten(1).sum(1) for b in self.bias)


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
        return None if self.b is None else (self.d1 * self.b) * v


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


# --- max pools: winners, windows and the maximum rules applied per window -----------------------


def _max_pool(op: ops.Pool, a: Tensor) -> tuple[Tensor, Tensor]:
    """The max pool's output and each output's winner, a flat index into its input map's
    ``H * W`` (torch's choice on ties, as autograd routes): both ``[N, C, H_out, W_out]``."""
    m = op.module
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return F.adaptive_max_pool2d(a, m.output_size, return_indices=True)
    return F.max_pool2d(
        a, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
    )


def _route(R: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """Every output's ``R`` to its winner (the max pool's own backward, without tie splitting).
    R: [N, C, H_out, W_out], index: R's shape or one row of it -> like's shape [N, C, H, W]."""
    N, C = R.shape[:2]
    HW = like[0, 0].numel()
    if index.shape[0] == 1 < N:  # one reference for every sample: one flat index, no copies
        flat = (index[0] + HW * torch.arange(C, device=R.device)[:, None, None]).flatten()
        out = R.new_zeros(N, C * HW).index_add(1, flat, R.reshape(N, -1))  # [N, C H W]
    else:
        out = R.new_zeros(N, C, HW).scatter_add(2, index.flatten(2), R.flatten(2))
    return out.view(N, C, *like.shape[2:])


def _route_ref(R: Tensor, b: Tensor, b_ref: Tensor, win: Tensor, win_ref: Tensor, a: Tensor):
    """Winner takes all against a reference (Shrikumar et al. 2017; Captum's max-pool rule).

    ``b - b_ref = (max(b, b_ref) - b_ref) + (b - max(b, b_ref))``: ``R(b)`` is split in these
    proportions between the input's winner and the reference's (all to the input's winner
    when ``b = b_ref``). Each share lands where ``a - a_ref`` is non-zero, so the Q form
    ``R / (a - a_ref)`` stays finite and summation-to-delta holds. Shapes as :func:`_route`.
    """
    db = b - b_ref
    w = torch.where(db == 0, 1, _div(torch.maximum(b, b_ref) - b_ref, db))  # input's share
    return _route(R * w, win, a) + _route(R * (1 - w), win_ref, a)


def _axis(n_in: int, n_out: int, k: int, s: int, p: int, d: int, adaptive: bool) -> Tensor:
    """Input indices of each pooling window along one axis, ``[n_out, K]``, -1 outside the
    input (in the padding). Adaptive: ``[floor(o n_in / n_out), ceil((o+1) n_in / n_out))``;
    otherwise ``o s - p + i d`` for ``i < k``."""
    o = torch.arange(n_out)
    if adaptive:
        start, end = (o * n_in) // n_out, ((o + 1) * n_in + n_out - 1) // n_out
        i = start[:, None] + torch.arange(int((end - start).max()))
        return torch.where(i < end[:, None], i, -1)
    i = o[:, None] * s - p + torch.arange(k) * d
    return torch.where((i >= 0) & (i < n_in), i, -1)


def _windows(op: ops.Pool, size: Sequence[int], out_size: Sequence[int]) -> Tensor:
    """Flat input index (into ``H * W``) of every member of every window of a max pool,
    ``[H_out W_out, K]``; ``H * W`` marks a place outside the input (padding, ceil_mode)."""
    m, (H, W), (H_o, W_o) = op.module, size, out_size
    adaptive = isinstance(m, nn.AdaptiveMaxPool2d)
    if adaptive:
        geometry = [(0, 0, 0, 0)] * 2
    else:
        k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        geometry = list(zip(k, s, p, d, strict=True))
    rows = _axis(H, H_o, *geometry[0], adaptive)[:, None, :, None]  # [H_o, 1, K_h, 1]
    cols = _axis(W, W_o, *geometry[1], adaptive)[None, :, None, :]  # [1, W_o, 1, K_w]
    flat = torch.where((rows >= 0) & (cols >= 0), rows * W + cols, H * W)  # [H_o, W_o, K_h, K_w]
    return flat.reshape(H_o * W_o, -1)


def _per_window(rule: str, op: ops.Pool, a: Tensor, R: Tensor) -> Tensor:
    """``MAXIMUM_RULES[rule]`` on every pooling window: a [N, C, H, W], R [N, C, H_o, W_o] ->
    [N, C, H, W] (members of several windows sum their shares). Outside the input a window
    holds -inf, which no rule gives a share."""
    N, C, H, W = a.shape
    idx = _windows(op, (H, W), R.shape[2:]).to(a.device)  # [L, K]
    L, K = idx.shape
    vals = F.pad(a.flatten(2), (0, 1), value=-math.inf)[:, :, idx]  # [N, C, L, K]
    split = MAXIMUM_RULES[rule](vals.reshape(-1, K), R.reshape(-1)).view(N, C, L * K)
    out = a.new_zeros(N, C, H * W + 1).scatter_add(2, idx.flatten().expand(N, C, -1), split)
    return out[:, :, : H * W].reshape(N, C, H, W)


def _max_step(
    rule: str, mode: str, op: ops.Pool, fwd: tuple, ref: tuple, delta: tuple, S: Tensor
) -> Tensor:
    """A max pool ``b = max over each window of a`` backwards, by ``MAXIMUM_RULES[rule]``.

    The rules split ``R(b)`` (R space). ``mode``: "signal" (the gradient rule is the pool's own
    backward), "r" (S is R) or "q" (S is Q: R(b) = (b - b_ref) Q(b) and Q(a) = R(a) /
    (a - a_ref)). ``fwd = (a, b, winners)``, ``ref = (b_ref, winners_ref)`` (Nones for a zero
    reference), ``delta = (a - a_ref, b - b_ref)``.
    """
    (a, b, win), (b_ref, win_ref), (da, db) = fwd, ref, delta
    if rule == "gradient" and mode == "signal":
        return _route(S, win, a)
    R = S if mode == "r" else db * S
    if rule == "radial":
        R = _per_window(rule, op, a, R)
    elif b_ref is None:
        R = _route(R, win, a)
    else:
        R = _route_ref(R, b, b_ref, win, win_ref, a)
    return R if mode == "r" else _div(R, da)


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


def _layer_rules(method: str, rules: object, epsilon: float | None, view: ops.View) -> list[dict]:
    """Merge the method's row, the epsilon argument and ``rules`` into one dict per layer."""
    L = len(view.layers)
    base = {k: METHODS[method][k] for k in LAYER_KEYS}
    if epsilon is not None:
        base.update(_check_layer_rules({"epsilon": epsilon}, ""))
    if rules is None:
        return [dict(base) for _ in range(L)]
    if isinstance(rules, Mapping):
        return [dict(base, **_check_layer_rules(rules, "")) for _ in range(L)]
    if isinstance(rules, Sequence) and not isinstance(rules, str):
        if len(rules) != L:
            kinds = "Linear and Conv2d" if view.conv else "Linear"
            raise ValueError(
                f"{_WHERE}: rules is a list of {len(rules)} entries; the model has "
                f"{L} {kinds} layers (one dict each; a pool or activation follows the dict "
                "of the layer before it)"
            )
        return [dict(base, **_check_layer_rules(r, f"[{i}]")) for i, r in enumerate(rules)]
    raise TypeError(
        f"{_WHERE}: rules must be None, a dict with keys from {list(LAYER_KEYS)}, "
        f"or a list of such dicts (one per Linear or Conv2d); got {type(rules).__name__}"
    )


def _governing(view: ops.View) -> list[int]:
    """For every op, the index of the layer whose rules it follows: the last Linear or Conv2d
    at or before it (the first layer for ops before any)."""
    out, layer = [], 0
    for op in view.ops:
        layer += isinstance(op, ops.Affine)
        out.append(max(layer - 1, 0))
    return out


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
    """The DeepLIFT reference input, ``[1, *D]`` or ``[N, *D]`` with ``D = x.shape[1:]``.

    Accepted: "zero", "mean", or a tensor of one sample's shape ``[*D]``, ``[1, *D]`` or
    ``[N, *D]`` (``D`` as the model reads it, or as ``x`` was given, e.g. unflattened).
    """
    N, D = x.shape[0], tuple(x.shape[1:])
    if baseline is None or (isinstance(baseline, str) and baseline == "zero"):
        return x.new_zeros(1, *D)
    dims = ", ".join(map(str, D))
    shapes = f"[D] = [{dims}], [1, D] or [N, D] = [{N}, {dims}]"
    if isinstance(baseline, str):
        if baseline == "mean":
            return x.mean(0, keepdim=True)
        raise ValueError(
            f"{_WHERE}: baseline {baseline!r}; choose 'zero', 'mean', or a tensor {shapes}"
        )
    try:
        x0 = torch.as_tensor(baseline).to(x)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{_WHERE}: baseline must be 'zero', 'mean' or a tensor {shapes}; got "
            f"{type(baseline).__name__}"
        ) from None
    samples = {D, tuple(x_raw.shape[1:])}
    if tuple(x0.shape) in samples:
        x0 = x0.reshape(1, *D)
    elif x0.dim() > 1 and tuple(x0.shape[1:]) in samples and x0.shape[0] in (1, N):
        x0 = x0.reshape(x0.shape[0], *D)
    else:
        raise ValueError(
            f"{_WHERE}: baseline has shape {tuple(x0.shape)}; expected {shapes} "
            f"(or unflattened like x, {tuple(x_raw.shape)})"
        )
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(f"{_WHERE}: baseline holds NaN or inf values")
    return x0


def _check_offsets(view: ops.View) -> None:
    """blame_bias counts an activation's offset f(0) as a bias of the layer before it: that
    needs the activation to follow its layer directly (only Dropout or Identity between)."""
    for k, op in enumerate(view.ops):
        if not isinstance(op, ops.Activation) or not _offset(op):
            continue
        j = k - 1
        while j >= 0 and isinstance(view.ops[j], ops.Pass):
            j -= 1
        if not isinstance(view.ops[j], ops.Affine):
            raise ValueError(
                f"{_WHERE}: method 'blame_bias' counts the offset f(0) = {_offset(op):g} of "
                f"module {op.position} ({type(op.module).__name__}) as a bias of the layer "
                f"before it, but it follows module {view.ops[j].position} "
                f"({type(view.ops[j].module).__name__}); put the activation directly after "
                "its Linear or Conv2d, or use method 'lrp_0'"
            )


def _offset(op: ops.Activation) -> float:
    """c = f(0), the activation's offset (sigmoid: 1/2; 0 for the others)."""
    return float(ops.phi(op.activation, torch.zeros((), dtype=torch.float64), op.slope))


def _check_call(
    model: nn.Module, x: object, method: str, baseline: object, rules: object, epsilon: object
) -> tuple[ops.View, list[dict]]:
    """Validate explain's arguments: the parsed model, x, and the merged rules of every layer."""
    if method not in METHODS:
        raise KeyError(f"{_WHERE}: method {method!r}; choose from {sorted(METHODS)}")
    view = ops.parse(model, method=_WHERE)
    view.check_eval(_WHERE)
    layer_rules = _layer_rules(method, rules, epsilon, view)
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
    first = view.layers[0]
    if not view.conv:  # an MLP reads x flattened
        flat = x.flatten(1) if x.dim() > 2 else x
        if flat.dim() != 2 or flat.shape[1] != first.in_units:
            raise ValueError(
                f"{_WHERE}: x has shape {tuple(x.shape)}; the model expects [N, {first.in_units}]"
            )
    view.check_x(x, _WHERE, convert=True)  # sizes, samples, finiteness (on a converted copy)
    if METHODS[method]["offsets"]:
        _check_offsets(view)
    return view, layer_rules


# --- the forward and backward passes -----------------------------------------------------------


def _params(model: nn.Module, x: Tensor) -> dict[str, Tensor] | None:
    """The model's parameters and buffers in ``x``'s dtype and device; None if they already
    are (the ops then read the parameters themselves, and autograd reaches them either way)."""
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    floats = {k: t for k, t in named.items() if t.is_floating_point()}
    if all(t.dtype == x.dtype and t.device == x.device for t in floats.values()):
        return None
    return {k: t.to(device=x.device, dtype=x.dtype) for k, t in floats.items()}


def _run(view: ops.View, x: Tensor, params: ops.Params) -> tuple[list[Tensor], dict[int, Tensor]]:
    """Every op's input in evaluation mode, ``xs[k]`` for op ``k`` and ``xs[-1]`` the logits,
    and the winners of every max pool by op index (:func:`_max_pool`)."""
    xs, winners = [x], {}
    for k, op in enumerate(view.ops):
        if isinstance(op, ops.Pool) and op.routing:
            a, winners[k] = _max_pool(op, xs[-1])
        else:
            a = op.apply(xs[-1], params, training=False)
        xs.append(a)
    return xs, winners


def _affine(op: ops.Affine, params: ops.Params, in_shape: Sequence[int]):
    """The transpose ``g -> W'^T g`` of a Linear or Conv2d (BatchNorm folded) and its bias map
    ``b'`` (a Conv2d's ``[C, 1, 1]`` plus its Offset's per-position ``[C, H, W]``)."""
    W, b = op.folded(params)
    if not op.conv:
        return (lambda g: g @ W), b
    m, o = op.module, op.folded_offset(params)
    b = b[:, None, None] if o is None else b[:, None, None] + o.to(b)

    def vjp(g: Tensor) -> Tensor:  # the transposed convolution
        shape = (g.shape[0], *in_shape[1:])
        return torch.nn.grad.conv2d_input(shape, W, g, m.stride, m.padding, m.dilation)

    return vjp, b


def _pool_vjp(op: ops.Pool, a_in: Tensor) -> Callable[[Tensor], Tensor]:
    """``g -> A^T g`` of an average pool (a linear op), by its own backward; differentiable in
    ``g`` (double backpropagation through a relevance penalty)."""

    def vjp(g: Tensor) -> Tensor:
        with torch.enable_grad():
            u = a_in.new_zeros(g.shape[0], *a_in.shape[1:]).requires_grad_(True)
            (out,) = torch.autograd.grad(op.apply(u), u, g, create_graph=g.requires_grad)
        return out

    return vjp


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

    The forward pass runs once; then, from the last op to the first, each op's rule maps the
    quantity at its output to its input: the nonlinearity rule at an activation, the matrix
    rule at a Linear, Conv2d or average pool (and to the layer's bias), the maximum rule at a
    max pool.

    LRP-0 (``normalized`` with eps = 0, ``ignore``) splits ``R(z_j)`` exactly among
    ``a_i w_ij / z_j`` and the bias share ``b_j / z_j``, so ``input.sum + sum(bias.sum) =
    f_t(x)`` for every activation; a max pool passes ``R`` whole to one input of each window
    and an average pool is a linear op without bias. For ReLU and leaky ReLU nets it equals
    gradient x input, biases included, and the bias relevance is ``b_j df/db_j`` (Ancona et
    al. 2018): the net is positively homogeneous in (x, biases). For tanh, sigmoid or GELU
    conservation still holds, because "ignore" passes ``R(a)`` to ``z`` whole, as if the
    activation were the line through the origin of slope ``f(z)/z``; the input relevance is
    then ``x`` times the gradient taken with ``f(z)/z`` in place of ``f'(z)``, and the bias
    relevance ``b_j`` times that modified ``df/db_j``, not ``b_j df/db_j``.
    ``blame_bias`` is LRP-0 that also counts an activation offset ``f(0)`` (sigmoid: 1/2) as a
    bias, so that the Q form stays finite as z -> 0. DeepLIFT splits ``f_t(x) - f_t(x0)`` among
    ``x - x0`` (summation to delta); the biases cancel in differences and get zero. Its
    winner-takes-all max pool splits ``b - b_ref`` between the input's and the reference's
    winners (:func:`_route_ref`). An eval-mode BatchNorm is folded into the layer before it,
    so its shift is part of that layer's bias.

    Parameters
    ----------
    model : nn.Sequential
        A model that :func:`prunelab.base.ops.parse` accepts (Linear, Conv2d, pools, eval-mode
        BatchNorm, activations, Flatten, Dropout, Identity); dropout is treated as off.
    x : Tensor[N, D] or Tensor[N, C, H, W]
        Inputs (an MLP reads images flattened, as its ``Flatten`` would). Computation follows
        ``x``'s dtype and device.
    method : str
        A key of ``METHODS``: ``gradient``, ``gradient_x_input``, ``deconvnet``,
        ``guided_backprop``, ``lrp_0``, ``lrp_epsilon``, ``blame_bias``, ``deeplift``.
    target : int, sequence of int or Tensor[N], optional
        The output unit to explain (default: the argmax of the outputs, the predicted class).
    baseline : {"zero", "mean"} or Tensor[D...], Tensor[1, D...] or Tensor[N, D...], optional
        DeepLIFT's reference input x0 (default ``"zero"``; ``"mean"`` is the mean of ``x``);
        ``D...`` is one sample's shape.
    rules : dict or list of dict, optional
        Overrides of the method's rules, keys from ``LAYER_KEYS``: ``"linear"`` (a key of
        ``LINEAR_RULES``), ``"nonlinearity"`` (of ``NONLINEARITY_RULES``), ``"maximum"`` (of
        ``MAXIMUM_RULES``, for max pools) and ``"epsilon"`` (>= 0). A dict applies to every
        layer; a list holds one dict per Linear or Conv2d, in order, and an activation or pool
        follows the dict of the layer before it.
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
        ``input`` (shaped as the model reads ``x``), ``bias`` (one map per Linear or Conv2d),
        ``output`` [N], ``target`` [N].

    Raises
    ------
    KeyError
        Unknown method or rule name (the message lists the choices).
    TypeError, ValueError
        Unsupported module (named by ``parse``), a BatchNorm in training mode, bad shapes,
        targets, baselines or rules.

    Examples
    --------
    >>> from prunelab.models import mlp
    >>> model = mlp((2, 8, 2), seed=0, dtype=torch.float64)
    >>> r = explain(model, torch.randn(5, 2, dtype=torch.float64), method="blame_bias")
    >>> bool(torch.allclose(r.total, r.output))
    True
    """
    view, layer_rules = _check_call(model, x, method, baseline, rules, epsilon)
    spec = METHODS[method]
    relevance = spec["propagates"] == "relevance"
    q_form = bool(q_form) and relevance
    if q_form and any(r["linear"] != "normalized" for r in layer_rules):
        raise ValueError(
            f"{_WHERE}: q_form needs the 'normalized' linear rule in every layer "
            f"for relevance methods (Q = R / a would divide by activations); got "
            f"{[r['linear'] for r in layer_rules]}"
        )
    x_raw, x = x, view.inputs(x)
    params = _params(model, x)
    xs, winners = _run(view, x, params)
    t = _targets(target, xs[-1])
    onehot = F.one_hot(t, view.out_features).to(x.dtype)  # [N, C]
    if spec["reference"] == "baseline":
        refs, winners_ref = _run(view, _baseline(baseline, x_raw, x), params)  # rows 1 or N
        d1 = 0.0  # the constant input is 1 in both passes
    else:
        refs, winners_ref = [None] * len(xs), {}  # every reference is 0
        d1 = 1.0
    delta_out = _delta(xs[-1], refs[-1]) * onehot  # [N, C]
    S = delta_out if relevance and not q_form else onehot
    form = "q" if q_form else "r"
    mode = form if relevance else "signal"
    governs = _governing(view)
    ds = [_delta(a, r) for a, r in zip(xs, refs, strict=True)]  # every op's input minus its ref

    bias: list[Tensor] = []  # from the last layer to the first
    offset = None  # blame_bias: relevance of an activation's f(0), for the layer before it
    for k in reversed(range(len(view.ops))):
        op, rule = view.ops[k], layer_rules[governs[k]]
        a_in, a, a_ref = xs[k], xs[k + 1], refs[k + 1]
        if isinstance(op, ops.Affine):
            vjp, b = _affine(op, params, a_in.shape)
            lin = Linear(vjp, b, ds[k], ds[k + 1], rule["epsilon"], d1)
            S, R_b = LINEAR_RULES[rule["linear"]][form](lin, S)
            bias.append(R_b if offset is None else R_b + offset)
            offset = None
        elif isinstance(op, ops.Activation):
            c = _offset(op) if spec["offsets"] else 0.0
            da = ds[k + 1]
            if c:  # relevance of the constant offset: c Q(a) = R(a) c / a
                offset = c * S if q_form else _div(c * S, da)
                S, da = (S if q_form else S - offset), da - c
            node = Node(op, a_in, ds[k], da)
            S = NONLINEARITY_RULES[rule["nonlinearity"]][form](node, S)
        elif isinstance(op, ops.Pool) and op.routing:
            fwd, ref = (a_in, a, winners[k]), (a_ref, winners_ref.get(k))
            S = _max_step(rule["maximum"], mode, op, fwd, ref, (ds[k], ds[k + 1]), S)
        elif isinstance(op, ops.Pool):  # average pool: a linear op without bias
            lin = Linear(_pool_vjp(op, a_in), None, ds[k], ds[k + 1], rule["epsilon"], d1)
            S = LINEAR_RULES[rule["linear"]][form](lin, S)[0]
        else:  # Flatten, Dropout, Identity
            S = S.reshape(S.shape[0], *a_in.shape[1:])
    if q_form or spec["times_input"]:
        S = _delta(x, refs[0]) * S  # R(x) = (x - x0) Q(x)
    if not view.conv:
        S = S.flatten(1)  # an MLP's input relevance is [N, D], as it reads x
    return Relevance(input=S, bias=bias[::-1], output=delta_out.sum(1), target=t)
