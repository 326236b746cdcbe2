"""``explain``: validate, run the forward pass once over the op view, then walk the ops backwards
applying one rule per op (:mod:`.rules`, :mod:`.pools`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...base import ops
from .pools import _max_pool, _max_step
from .rules import (
    _CHOICES,
    LAYER_KEYS,
    LINEAR_RULES,
    METHODS,
    NONLINEARITY_RULES,
    Linear,
    Node,
    _delta,
    _div,
)

_WHERE = "relevance.explain"


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
    if view.conv:  # sizes (one sample through), samples, finiteness, on a converted copy
        view.check_x(x, _WHERE, convert=True)
    else:  # an MLP reads x flattened; two reductions instead of a finiteness mask
        flat = x.flatten(1) if x.dim() > 2 else x
        if flat.dim() != 2 or flat.shape[1] != first.in_units:
            raise ValueError(
                f"{_WHERE}: x has shape {tuple(x.shape)}; the model expects [N, {first.in_units}]"
            )
        if flat.shape[0] == 0:
            raise ValueError(f"{_WHERE}: x holds no samples")
        if not all(math.isfinite(v) for v in torch.aminmax(flat.detach())):
            raise ValueError(f"{_WHERE}: x holds NaN or inf values")
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

    One forward pass; then, from the last op to the first, each op's rule maps the quantity at
    its output to its input: the nonlinearity rule at an activation, the matrix rule at a
    Linear, Conv2d or average pool (and to the layer's bias), the maximum rule at a max pool.
    LRP-0 splits ``R(z_j)`` among ``a_i w_ij / z_j`` and the bias share ``b_j / z_j``, so

        sum(input) + sum(bias) = f_t(x)                  (conservation, every activation)

    ``blame_bias`` also counts an activation offset ``f(0)`` as a bias; ``deeplift`` splits
    ``f_t(x) - f_t(x0)`` among ``x - x0`` (biases get zero). An eval-mode BatchNorm is folded
    into the layer before it. ``docs/relevance-rules.md`` relates the rules to gradient x input
    and explains the curved activations and the max pool's reference routing.

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
        gradient rule and "ignore" becomes "slope". Same result up to rounding, except
        ``deeplift`` with the "radial" maximum (docs page).
    epsilon : float, optional
        The stabiliser of the "normalized" rule for layers whose ``rules`` give none
        (default: the method's, 1e-6 for ``lrp_epsilon`` and 0 otherwise; see the docs page
        for how far a small eps moves the relevance).

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
