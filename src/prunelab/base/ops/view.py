"""Parsing a model into its op view, and the one forward pass over it.

:func:`parse` is the single place in prunelab that knows module types. It flattens nested
``nn.Sequential`` s (torchvision's VGG shape: features, avgpool, classifier), folds each
BatchNorm into the Linear or Conv2d before it, and records where each hidden layer's units
are: after the layer's activation. :func:`forward` runs the view with parameter overrides,
unit multipliers and taps of the unit activations; every method that needs more than
``model(x)`` runs through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kinds import Activation, Affine, Flatten, Op, Params, Pass, Pool

_ACTIVATION_NAMES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.GELU: "gelu",
}
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
SUPPORTED_MODULES = (
    "Linear",
    "Conv2d",
    *(t.__name__ for t in _ACTIVATION_NAMES),
    *(t.__name__ for t in _POOLS),
    *(t.__name__ for t in _NORMS),
    "Flatten",
    "Dropout",
    "Identity",
    "Sequential (nested)",
)


@dataclass(frozen=True, eq=False)
class View:
    """A parsed model: its ops in order, BatchNorm folded into the op before it.

    ``layers`` are the Affine ops (Linear, Conv2d); all but the last are hidden layers and
    hold units, numbered layer by layer. ``unit_ops[l]`` is the index in ``ops`` of the op
    after which hidden layer ``l``'s units are read and masked (its activation, or the layer
    itself when no activation follows it).
    """

    ops: tuple[Op, ...]
    unit_ops: tuple[int, ...] = field(default=())

    @cached_property
    def layers(self) -> tuple[Affine, ...]:
        return tuple(op for op in self.ops if isinstance(op, Affine))

    @property
    def hidden(self) -> tuple[Affine, ...]:
        return self.layers[:-1]

    @property
    def hidden_sizes(self) -> list[int]:
        """Units per hidden layer (the blocks of a unit mask ``[M, H]``)."""
        return [layer.units for layer in self.hidden]

    @property
    def conv(self) -> bool:
        """Whether any layer is a Conv2d."""
        return any(layer.conv for layer in self.layers)

    @property
    def out_features(self) -> int:
        return self.layers[-1].units

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    def inputs(self, x: Tensor) -> Tensor:
        """``x`` as the first op takes it: an MLP (a Linear first, after any Dropout or
        Identity) reads images flattened."""
        first = next(op for op in self.ops if not isinstance(op, Pass))
        if isinstance(first, Affine) and not first.conv and x.dim() > 2:
            return x.flatten(1)
        return x


def parse(model: nn.Module, *, method: str = "prunelab") -> View:
    """Parse a supported ``nn.Sequential`` into its op view.

    Parameters
    ----------
    model : nn.Sequential
        Of the modules in ``SUPPORTED_MODULES``; nested Sequentials are flattened.
    method : str
        Name of the calling method, used in error messages.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Sequential`` or holds an unsupported module (the message
        names the module, its position and the supported set).
    ValueError
        If the structure cannot be read as layers: no Linear or Conv2d, a BatchNorm that does
        not directly follow one, two activations after one layer, a Flatten that is not
        ``Flatten(1, -1)``, a max pool returning indices, a grouped convolution.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"{method}: model must be an nn.Sequential of {', '.join(SUPPORTED_MODULES)}; "
            f"got {type(model).__name__}"
        )
    names = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    ops: list[Op] = []
    unit_ops: list[int] = []
    for i, module in enumerate(_flatten(model)):
        where = f"module {i} ({type(module).__name__})"
        if names[id(module)] != str(i):  # in a nested Sequential: also its qualified name
            where = f"module {i} ({type(module).__name__}, {names[id(module)]!r})"
        op = _op(module, i, names[id(module)], where, method)
        if isinstance(module, _NORMS):
            _fold(ops, module, i, names[id(module)], where, method)
            continue
        if isinstance(op, Activation):
            last = _last_layer(ops)
            if last is None:
                raise ValueError(f"{method}: {where} comes before any Linear or Conv2d")
            if unit_ops and unit_ops[-1] > last:
                raise ValueError(
                    f"{method}: {where} follows another activation of the same layer; one "
                    "activation per layer"
                )
            unit_ops.append(len(ops))
        elif isinstance(op, Affine) and ops:
            last = _last_layer(ops)
            if last is not None and not (unit_ops and unit_ops[-1] > last):
                unit_ops.append(last)  # a layer without activation: units read at the layer
        ops.append(op)
    layers = [op for op in ops if isinstance(op, Affine)]
    if not layers:
        raise ValueError(f"{method}: the model has no Linear or Conv2d layer")
    last = _last_layer(ops)
    unit_ops = [u for u in unit_ops if u < last]  # the output layer has no units
    return View(tuple(ops), tuple(unit_ops))


def _flatten(model: nn.Sequential) -> list[nn.Module]:
    """The modules of ``model`` in order, nested Sequentials expanded depth-first."""
    out: list[nn.Module] = []
    for m in model:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _last_layer(ops: Sequence[Op]) -> int | None:
    """Index of the last Affine op in ``ops``, None if there is none."""
    for k in range(len(ops) - 1, -1, -1):
        if isinstance(ops[k], Affine):
            return k
    return None


def _op(module: nn.Module, i: int, name: str, where: str, method: str) -> Op | None:
    """The op of one module; None for a BatchNorm (folded by the caller)."""
    if isinstance(module, nn.Linear):
        return Affine(i, name, module)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError(f"{method}: {where} has groups={module.groups}; supported: groups=1")
        if module.padding_mode != "zeros":
            raise ValueError(
                f"{method}: {where} has padding_mode={module.padding_mode!r}; supported: 'zeros'"
            )
        if isinstance(module.padding, str):
            raise ValueError(
                f"{method}: {where} has padding={module.padding!r}; give the padding as integers"
            )
        return Affine(i, name, module)
    if type(module) in _ACTIVATION_NAMES:
        act = _ACTIVATION_NAMES[type(module)]
        if act == "gelu" and module.approximate == "tanh":
            act = "gelu_tanh"
        return Activation(i, name, module, act, float(getattr(module, "negative_slope", 0.0)))
    if isinstance(module, _POOLS):
        if getattr(module, "return_indices", False):
            raise ValueError(f"{method}: {where} returns indices; use return_indices=False")
        return Pool(i, name, module)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ValueError(
                f"{method}: {where} is Flatten({module.start_dim}, {module.end_dim}); "
                "supported: Flatten(1, -1), which keeps the batch axis"
            )
        return Flatten(i, name, module)
    if isinstance(module, nn.Dropout | nn.Identity):
        return Pass(i, name, module)
    if isinstance(module, _NORMS):
        return None
    raise TypeError(
        f"{method}: unsupported {where}; supported modules are {', '.join(SUPPORTED_MODULES)}"
    )


def _fold(ops: list[Op], bn: nn.Module, i: int, name: str, where: str, method: str) -> None:
    """Fold the BatchNorm ``bn`` into the Affine op that ``ops`` ends with."""
    prev = ops[-1] if ops else None
    if not isinstance(prev, Affine) or prev.norm is not None:
        raise ValueError(
            f"{method}: {where} must directly follow a Linear or Conv2d (it is folded into "
            "that layer)"
        )
    want = nn.BatchNorm2d if prev.conv else nn.BatchNorm1d
    if type(bn) is not want:
        raise ValueError(
            f"{method}: {where} follows a {type(prev.module).__name__}, which takes a "
            f"{want.__name__}"
        )
    if bn.running_mean is None:
        raise ValueError(
            f"{method}: {where} keeps no running statistics (track_running_stats=False), so "
            "it normalises with each batch's statistics and cannot be folded into a layer"
        )
    if bn.num_features != prev.units:
        raise ValueError(
            f"{method}: {where} has {bn.num_features} features but the layer before it has "
            f"{prev.units} units"
        )
    ops[-1] = Affine(prev.position, prev.name, prev.module, bn, i, name)


def forward(
    view: View,
    x: Tensor,
    *,
    params: Params = None,
    scales: Mapping[int, Tensor] | None = None,
    edit: Mapping[int, Callable[[Tensor], Tensor]] | None = None,
    taps: bool = False,
    training: bool | None = None,
    start: int = 0,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """The model's output on ``x``, with parameter overrides, unit multipliers and taps.

    Parameters
    ----------
    view : View
    x : Tensor[N, *in]
        An MLP reads images ``[N, C, H, W]`` flattened.
    params : dict of str to Tensor, optional
        Parameters by qualified name (``model.named_parameters()``) that replace the module's
        own (as ``torch.func.functional_call``); autograd flows through them.
    scales : dict of int to Tensor, optional
        Per hidden layer ``l``: a multiplier ``[H_l]`` or ``[N, H_l]`` of its units, applied
        after the activation (a channel's multiplier scales its whole feature map). A 0/1
        multiplier is a unit mask; autograd flows through it.
    edit : dict of int to callable, optional
        Per hidden layer ``l``: a function of its units ``[N, H_l, ...]`` whose result flows on
        instead (after the multiplier), e.g. holding some units at a constant.
    taps : bool
        Also return the unit activations of every hidden layer (after their multipliers):
        ``[N, H_l]`` or ``[N, H_l, *spatial]``.
    training : bool, optional
        None: each Dropout and BatchNorm in its module's own mode, as ``model(x)`` (training
        uses this). False: evaluation, Dropout off and BatchNorm on its running statistics,
        whatever the modules' modes (how methods read a model).
    start : int
        Run ``view.ops[start:]`` only, ``x`` being the input of op ``start`` (taps then hold
        the hidden layers read after it).

    Returns
    -------
    Tensor[N, C] (and, with ``taps``, a list of the hidden layers' activations)
    """
    a = view.inputs(x) if start == 0 else x
    layer_of = {k: layer for layer, k in enumerate(view.unit_ops)}
    acts: list[Tensor] = []
    for k in range(start, len(view.ops)):
        a = view.ops[k].apply(a, params, training)
        layer = layer_of.get(k)
        if layer is None:
            continue
        if scales is not None and layer in scales:
            s = scales[layer]
            a = a * s.view(*s.shape, *[1] * (a.dim() - 2))  # a channel's whole feature map
        if edit is not None and layer in edit:
            a = edit[layer](a)
        if taps:
            acts.append(a)
    return (a, acts) if taps else a


def param_loss(
    view: View, x: Tensor, y: Tensor, *, temperature: float = 1.0
) -> Callable[[Mapping[str, Tensor]], Tensor]:
    """``p -> CE(f(x; p) / temperature, y)``: the mean cross-entropy as a pure function of a
    parameter dict (``torch.func`` differentiates it); evaluation mode."""

    def loss(params: Mapping[str, Tensor]) -> Tensor:
        return F.cross_entropy(forward(view, x, params=params, training=False) / temperature, y)

    return loss


def unit_gradients(
    view: View, x: Tensor, dl_df: Callable[[Tensor], Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """Hidden unit activations ``a^l`` and per-sample gradients ``g^l = dl_n/da^l_n``.

    One forward pass (evaluation mode) recording each op's input, then one backward pass
    through the ops' input VJPs from ``g = dl_df(f)`` at the logits, ``f: [N, C]``; no
    parameter gradients. Shapes ``[N, H_l]`` or ``[N, H_l, *spatial]``, like the units.
    """
    inputs: list[Tensor] = []
    acts: list[Tensor] = []
    points = set(view.unit_ops)
    with torch.no_grad():
        a = view.inputs(x)
        for k, op in enumerate(view.ops):
            inputs.append(a)
            a = op.apply(a, training=False)
            if k in points:
                acts.append(a)
        g = dl_df(a)
        grads: list[Tensor] = []
        first = view.unit_ops[0] if view.unit_ops else len(view.ops)
        for k in range(len(view.ops) - 1, first - 1, -1):
            if k in points:  # g is dl/d(output of op k), the units' gradient
                grads.append(g)
            if k > first:
                g = view.ops[k].vjp(inputs[k], g)
    return acts, grads[::-1]


def records(view: View, x: Tensor, *, params: Params = None) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per layer, ``(a_in, z, a)``: the layer's input, its output ``z`` (BatchNorm included) and
    ``a = phi(z)`` after its activation (``a = z`` without one), in evaluation mode.

    What the layer-wise recursions of curvature and relevance read; ``a`` of one layer is
    ``a_in`` of the next when only Dropout or Identity lie between them (an MLP).
    """
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    a = view.inputs(x)
    for op in view.ops:
        a_in, a = a, op.apply(a, params, training=False)
        if isinstance(op, Affine):
            out.append((a_in, a, a))
        elif isinstance(op, Activation) and out:
            out[-1] = (out[-1][0], out[-1][1], a)
    return out
