"""Parsing a model into its op view.

:func:`parse` is the single place in prunelab that knows module types. It flattens nested
``nn.Sequential`` s (torchvision's VGG shape: features, avgpool, classifier), folds each
BatchNorm into the Linear or Conv2d before it (and an :class:`.modules.Offset`, the exact
border compensation of channel removal, into the Conv2d it follows), and records where each
hidden layer's units are: after the layer's activation. The passes over a view are in
:mod:`.passes`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor, nn

from .. import checks
from .kinds import Activation, Affine, Flatten, Op, Pass, Pool
from .modules import Offset

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
    "Offset (prunelab.ops.Offset, after a Conv2d)",
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
    def dense(self) -> bool:
        """Whether this is an MLP: Linear layers only, no pooling or BatchNorm (what the dense
        MLP view of :mod:`prunelab.models` and the engines' dense fast paths take)."""
        return not any(
            isinstance(op, Pool) or (isinstance(op, Affine) and (op.conv or op.norm is not None))
            for op in self.ops
        )

    def check_eval(self, method: str) -> None:
        """Raise unless every BatchNorm can be folded (evaluation mode); names ``method``."""
        for layer in self.layers:
            try:
                layer.scale_shift()
            except ValueError as e:
                raise ValueError(f"{method}: {e}") from None

    @property
    def out_features(self) -> int:
        return self.layers[-1].units

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    def in_shape(self) -> str:
        """What one sample looks like to the model, for messages: ``"[C, H, W]"`` or ``"[D]"``."""
        first = self.layers[0]
        if first.conv:
            return f"[{first.in_units}, H, W]"
        return f"[{first.in_units}]"

    def check_x(self, x: Tensor, method: str, *, name: str = "x", convert: bool = False) -> Tensor:
        """``x`` validated for this model: ``[N, *in]`` that the model takes (an MLP reads it
        flattened), ``N >= 1``, finite, detached, in the parameters' dtype and device.

        Returned as the first op reads it (:meth:`inputs`). A dtype or device other than the
        parameters' is an error, or with ``convert=True`` (floating-point ``x`` only) converted.
        Spatial sizes that do not fit the layers fail here, on one sample, with a clear error.
        """
        first = self.layers[0]
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{method}: {name} must be a torch.Tensor [N, {self.in_shape()[1:-1]}]; got "
                f"{type(x).__name__}"
            )
        xs = self.inputs(x)
        if first.conv and self.ops[0] is first:
            if xs.dim() != 4 or xs.shape[1] != first.in_units:
                raise ValueError(
                    f"{method}: {name} must have shape [N, {first.in_units}, H, W] (the first "
                    f"Conv2d takes {first.in_units} channel(s)); got shape {tuple(x.shape)}"
                )
        elif not first.conv and (xs.dim() < 2 or math.prod(xs.shape[1:]) != first.in_units):
            raise ValueError(
                f"{method}: {name} must have shape [N, {first.in_units}] (after the model's "
                f"Flatten); got shape {tuple(x.shape)}"
            )
        if convert:
            if not xs.is_floating_point():
                raise TypeError(f"{method}: {name} must be a floating-point tensor; got {xs.dtype}")
            xs = xs.to(device=self.device, dtype=self.dtype)
        if xs.dtype != self.dtype or xs.device != self.device:
            raise TypeError(
                f"{method}: {name} is {xs.dtype} on {xs.device} but the model's parameters are "
                f"{self.dtype} on {self.device}; convert one of them"
            )
        checks.tensor(xs, method, name)  # at least one sample, finite
        if self.conv or xs.dim() > 2:
            try:  # one sample through: spatial sizes that do not fit fail here, not deep inside
                with torch.no_grad():
                    a = xs[:1]
                    for op in self.ops:
                        a = op.apply(a, training=False)
            except (RuntimeError, ValueError) as e:  # ValueError: an Offset's size
                raise ValueError(
                    f"{method}: {name} has samples of shape {list(x.shape[1:])}, which the model "
                    f"cannot take: {e}"
                ) from None
        return xs.detach()

    def check_labels(self, y: Tensor, n: int, method: str) -> Tensor:
        """Class labels ``y: [n]`` of an integer dtype in ``[0, C)``, returned as int64 on the
        parameters' device; errors name ``method``."""
        C = self.out_features
        if not isinstance(y, Tensor):
            raise TypeError(f"{method}: y must be a torch.Tensor [{n}]; got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"{method}: y must hold integer class labels; got {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"{method}: y must have shape [{n}] like x; got {tuple(y.shape)}")
        if int(y.min()) < 0 or int(y.max()) >= C:
            raise ValueError(
                f"{method}: y must be class labels in [0, {C}) for a model with {C} outputs; "
                f"got range [{int(y.min())}, {int(y.max())}]"
            )
        return y.to(device=self.device, dtype=torch.long)

    def inputs(self, x: Tensor) -> Tensor:
        """``x`` as the first op takes it: an MLP (a Linear first, after any Dropout or
        Identity) reads images flattened."""
        first = next(op for op in self.ops if not isinstance(op, Pass))
        if isinstance(first, Affine) and not first.conv and x.dim() > 2:
            return x.flatten(1)
        return x


def parse(model: nn.Module, *, method: str = "prunelab", finite: bool = True) -> View:
    """Parse a supported ``nn.Sequential`` into its op view.

    Parameters
    ----------
    model : nn.Sequential
        Of the modules in ``SUPPORTED_MODULES``; nested Sequentials are flattened.
    method : str
        Name of the calling method, used in error messages.
    finite : bool
        Check that every parameter and buffer is finite (off only for a model being built,
        whose memory is not initialised yet).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Sequential`` or holds an unsupported module (the message
        names the module, its position and the supported set).
    ValueError
        If a parameter or buffer holds NaN or inf, or the structure cannot be read as layers: no Linear or Conv2d, a BatchNorm that does
        not directly follow one, an Offset that does not directly follow a Conv2d (before its
        BatchNorm) or does not match its channels, two activations after one layer, a Flatten
        that is not ``Flatten(1, -1)``, a max pool returning indices, a grouped convolution.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"{method}: model must be an nn.Sequential of {', '.join(SUPPORTED_MODULES)}; "
            f"got {type(model).__name__}"
        )
    if finite:
        checks.finite_model(model, method)
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
        if isinstance(module, Offset):
            _shift(ops, module, i, names[id(module)], where, method)
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
    """The op of one module; None for a BatchNorm or Offset (folded by the caller)."""
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
    if isinstance(module, (*_NORMS, Offset)):
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
    ops[-1] = dataclasses.replace(prev, norm=bn, norm_position=i, norm_name=name)


def _shift(ops: list[Op], offset: Offset, i: int, name: str, where: str, method: str) -> None:
    """Fold the Offset ``offset`` into the Conv2d op that ``ops`` ends with."""
    prev = ops[-1] if ops else None
    if not isinstance(prev, Affine) or not prev.conv or prev.norm is not None:
        raise ValueError(
            f"{method}: {where} must directly follow a Conv2d (before its BatchNorm, if any): "
            "it shifts that convolution's output"
        )
    if prev.offset is not None:
        raise ValueError(f"{method}: {where} follows another Offset of the same Conv2d; one each")
    if len(offset.shape) != 3 or offset.shape[0] != prev.units:
        raise ValueError(
            f"{method}: {where} has shape {list(offset.shape)} but the Conv2d before it makes "
            f"{prev.units} channels: it needs shape [{prev.units}, H, W]"
        )
    ops[-1] = dataclasses.replace(prev, offset=offset, offset_position=i, offset_name=name)
