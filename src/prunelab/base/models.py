"""Building MLPs and parsing any supported ``nn.Sequential`` into a list of dense layers.

The parsed view (:class:`Net`, a tuple of :class:`Dense`) is the single place in prunelab that
knows layer types: every method reads weights, biases and activations through it. A layer is

    z^l = a^{l-1} W^l.T + b^l,        a^l = phi_l(z^l)        (W^l: [H_l, H_{l-1}])

with dropout (a training-time operation) recorded where it sits. Supported modules: ``Linear``,
``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``, ``GELU``, ``Identity``, ``Dropout`` and ``Flatten``
(before the first ``Linear``). Anything else raises a ``TypeError`` naming the module, its
position and the supported set.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "relu": lambda slope: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "tanh": lambda slope: nn.Tanh(),
    "sigmoid": lambda slope: nn.Sigmoid(),
    "gelu": lambda slope: nn.GELU(),
    "gelu_tanh": lambda slope: nn.GELU(approximate="tanh"),
    "identity": lambda slope: nn.Identity(),
}
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu", "identity"})  # phi'' = 0 almost everywhere
_GELU_C = math.sqrt(2.0 / math.pi)  # tanh-approximate GELU: z (1 + tanh u) / 2, u = c (z + a z^3)
_GELU_A = 0.044715

_ACTIVATION_NAMES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.GELU: "gelu",
}
SUPPORTED_MODULES = ("Linear", *(t.__name__ for t in _ACTIVATION_NAMES), "Dropout", "Flatten")


def phi(name: str, z: Tensor, slope: float = 0.01) -> Tensor:
    """Apply the activation ``name`` elementwise (the functional twin of ``ACTIVATIONS``)."""
    if name == "relu":
        return F.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, slope)
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "gelu":
        return F.gelu(z)
    if name == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    return z


def derivatives(name: str, z: Tensor, slope: float = 0.01) -> tuple[Tensor, Tensor | None]:
    """``phi'(z)`` and ``phi''(z)`` elementwise; ``phi''`` is None for piecewise-linear ``phi``.

    At a ReLU kink the derivative is taken as 0, as autograd does.
    """
    if name == "relu":
        return (z > 0).to(z.dtype), None
    if name == "leaky_relu":
        return torch.where(z > 0, 1.0, torch.full_like(z, slope)), None  # slope in z's dtype
    if name == "identity":
        return torch.ones_like(z), None
    if name == "tanh":
        t = torch.tanh(z)
        d1 = 1 - t * t
        return d1, -2 * t * d1
    if name == "sigmoid":
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        return d1, d1 * (1 - 2 * s)
    if name == "gelu":  # z Phi(z): phi' = Phi + z pdf, phi'' = pdf (2 - z^2)
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
        return cdf + z * pdf, pdf * (2 - z * z)
    if name == "gelu_tanh":
        t = torch.tanh(_GELU_C * (z + _GELU_A * z**3))
        sech2 = 1 - t * t
        du = _GELU_C * (1 + 3 * _GELU_A * z * z)
        ddu = _GELU_C * 6 * _GELU_A * z
        d1 = 0.5 * (1 + t) + 0.5 * z * sech2 * du
        d2 = sech2 * du + 0.5 * z * sech2 * (ddu - 2 * t * du * du)
        return d1, d2
    raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")


@dataclass(frozen=True)
class Dense:
    """One dense layer of the parsed view: ``a = dropout(phi(dropout_pre(a_prev W.T + b)))``.

    ``position`` is the index of the ``Linear`` in the ``Sequential``; ``name`` is its qualified
    parameter prefix (``f"{name}.weight"``), the first occurrence if the module is shared.
    """

    position: int
    name: str
    linear: nn.Linear
    activation: str = "identity"
    slope: float = 0.0  # LeakyReLU negative slope
    dropout_pre: float = 0.0  # dropout between the Linear and its activation
    dropout: float = 0.0  # dropout after the activation
    end: int = -1  # position of the last module of this layer's group (Linear, act, Dropout)

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias

    @property
    def width(self) -> int:
        return self.linear.out_features

    def phi(self, z: Tensor) -> Tensor:
        return phi(self.activation, z, self.slope)


@dataclass(frozen=True)
class Net:
    """A parsed MLP: its dense layers in order; hidden layers are all but the last."""

    layers: tuple[Dense, ...]
    flatten: bool = False  # a Flatten precedes the first Linear
    input_dropout: float = 0.0

    @property
    def hidden(self) -> tuple[Dense, ...]:
        return self.layers[:-1]

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.width for layer in self.hidden]

    @property
    def in_features(self) -> int:
        return self.layers[0].linear.in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].width

    def inputs(self, x: Tensor) -> Tensor:
        """Flatten ``x`` to ``[N, D]`` the way the model's ``Flatten`` would."""
        return x.flatten(1) if self.flatten and x.dim() > 2 else x

    def check_x(self, x: Tensor, method: str, *, name: str = "x", convert: bool = False) -> Tensor:
        """``x`` validated for this net: ``[N, D]`` after the model's ``Flatten``, ``N >= 1``,
        finite, detached, in the parameters' dtype and device.

        Errors name ``method`` and the argument ``name``. A dtype or device other than the
        parameters' is an error, or with ``convert=True`` (floating-point ``x`` only) converted.
        """
        W = self.layers[0].weight
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{method}: {name} must be a torch.Tensor [N, {self.in_features}]; got "
                f"{type(x).__name__}"
            )
        xs = self.inputs(x)
        if xs.dim() != 2 or xs.shape[1] != self.in_features:
            raise ValueError(
                f"{method}: {name} must have shape [N, {self.in_features}] (after the model's "
                f"Flatten); got shape {tuple(x.shape)}"
            )
        if convert:
            if not xs.is_floating_point():
                raise TypeError(f"{method}: {name} must be a floating-point tensor; got {xs.dtype}")
            xs = xs.to(device=W.device, dtype=W.dtype)
        if xs.dtype != W.dtype or xs.device != W.device:
            raise TypeError(
                f"{method}: {name} is {xs.dtype} on {xs.device} but the model's parameters are "
                f"{W.dtype} on {W.device}; convert one of them"
            )
        if xs.shape[0] == 0:
            raise ValueError(f"{method}: {name} holds no samples")
        if not bool(torch.isfinite(xs).all()):
            raise ValueError(f"{method}: {name} holds NaN or inf values")
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
        return y.to(device=self.layers[0].weight.device, dtype=torch.long)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Hidden activations ``a^l: [N, H_l]`` for every hidden layer (dropout as identity).

        Values only (no autograd graph). ``torch.cat(net.activations(x), 1)`` is ``[N, H]``
        with the nodes numbered as in a node mask.
        """
        acts = []
        with torch.no_grad():
            a = self.inputs(x)
            for layer in self.hidden:
                a = layer.phi(F.linear(a, layer.weight, layer.bias))
                acts.append(a)
        return acts


def parse(
    model: nn.Module, *, method: str = "prunelab", activations: Sequence[str] | None = None
) -> Net:
    """Parse a supported ``nn.Sequential`` into its dense-layer view.

    Parameters
    ----------
    model : nn.Sequential
        Linear layers, elementwise activations, Dropout, and Flatten before the first Linear.
    method : str
        Name of the calling method, used in error messages.
    activations : sequence of str, optional
        Activation names the method supports (default: all of ``ACTIVATIONS``).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Sequential`` or holds an unsupported module; the message
        names the module, its position and the supported set.
    ValueError
        If the structure is not an MLP (no Linear, two activations in a row, widths that do not
        chain, an activation the method does not support).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"{method}: model must be an nn.Sequential of {', '.join(SUPPORTED_MODULES)}; "
            f"got {type(model).__name__}"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    layers: list[dict] = []
    flatten, input_dropout = False, 0.0
    for i, module in enumerate(model):
        where = f"module {i} ({type(module).__name__})"
        if isinstance(module, nn.Linear):
            if layers and layers[-1]["linear"].out_features != module.in_features:
                raise ValueError(
                    f"{method}: {where} expects {module.in_features} inputs but the previous "
                    f"Linear gives {layers[-1]['linear'].out_features}"
                )
            name = names[id(module.weight)].rsplit(".", 1)[0]
            layers.append(dict(position=i, name=name, linear=module, end=i))
        elif isinstance(module, nn.Dropout):
            p = float(module.p)
            if not layers:
                input_dropout = 1 - (1 - input_dropout) * (1 - p)
            else:
                key = "dropout" if "activation" in layers[-1] else "dropout_pre"
                layers[-1][key] = 1 - (1 - layers[-1].get(key, 0.0)) * (1 - p)
                layers[-1]["end"] = i
        elif isinstance(module, nn.Flatten):
            if layers:
                raise ValueError(f"{method}: {where} must come before the first Linear")
            flatten = True
        elif isinstance(module, nn.Identity):
            continue
        elif type(module) in _ACTIVATION_NAMES:
            act = _ACTIVATION_NAMES[type(module)]
            if act == "gelu" and module.approximate == "tanh":
                act = "gelu_tanh"
            if not layers:
                raise ValueError(f"{method}: {where} comes before any Linear")
            if "activation" in layers[-1]:
                raise ValueError(
                    f"{method}: {where} follows another activation; one activation per Linear"
                )
            if activations is not None and act not in activations:
                raise ValueError(
                    f"{method}: {where} has activation {act!r}; this method supports "
                    f"{sorted(activations)}"
                )
            layers[-1]["activation"] = act
            layers[-1]["slope"] = float(getattr(module, "negative_slope", 0.0))
            layers[-1]["end"] = i
        else:
            raise TypeError(
                f"{method}: unsupported {where}; supported modules are "
                f"{', '.join(SUPPORTED_MODULES)}"
            )
    if not layers:
        raise ValueError(f"{method}: the model has no Linear layer")
    return Net(tuple(Dense(**layer) for layer in layers), flatten, input_dropout)


def scaled_forward(model: nn.Sequential, x: Tensor, scales: Mapping[int, Tensor]) -> Tensor:
    """``model(x)`` with ``scales[i]`` multiplied into the output of module ``i``.

    Keyed by module position, e.g. a hidden layer's ``Dense.end`` (its last module): node
    masks ``[H_l]`` there remove nodes, per-example gates ``[N, H_l]`` gate them. Autograd
    flows through ``scales``.
    """
    for i, module in enumerate(model):
        x = module(x)
        if i in scales:
            x = x * scales[i]
    return x


def hidden_sizes(model: nn.Module) -> list[int]:
    """Widths of the hidden layers, in order (the blocks of a node mask ``[M, H]``)."""
    return parse(model).hidden_sizes


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def mlp(
    widths: Sequence[int],
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    seed: int = 0,
    slope: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A multilayer perceptron ``Linear, act, [Dropout], ..., Linear`` with seeded init.

    Weights and biases are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for
    ``nn.Linear``, but from a private generator seeded with ``seed``: the global RNG is untouched.

    Parameters
    ----------
    widths : sequence of int
        Layer widths from input to output, e.g. ``(2, 20, 2)``; at least two entries.
    activation : str
        One of ``ACTIVATIONS`` after every hidden Linear.
    dropout : float
        Dropout probability after every hidden activation (0 for none), in [0, 1).
    seed : int
        Seed of the initialisation.

    Examples
    --------
    >>> model = mlp((2, 20, 2), seed=0)
    >>> hidden_sizes(model)
    [20]
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"widths must be at least two positive integers; got {widths}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r}: choose from {sorted(ACTIVATIONS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")
    g = torch.Generator().manual_seed(seed)
    modules: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        linear = nn.utils.skip_init(nn.Linear, d_in, d_out, dtype=dtype)
        bound = 1.0 / math.sqrt(d_in)
        with torch.no_grad():
            linear.weight.copy_(_uniform((d_out, d_in), bound, g))
            linear.bias.copy_(_uniform((d_out,), bound, g))
        modules.append(linear)
        if i < len(widths) - 2:
            modules.append(ACTIVATIONS[activation](slope))
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
    return nn.Sequential(*modules)


def linear(W: Tensor, b: Tensor | None, *, like: nn.Linear | None = None) -> nn.Linear:
    """A new ``nn.Linear`` holding copies of ``W: [H_out, H_in]`` and ``b: [H_out]``.

    No initialisation (so no global RNG use); a layer with zero units is allowed. With ``like``,
    the ``requires_grad`` flags are copied from that layer.
    """
    H_out, H_in = W.shape
    with warnings.catch_warnings():  # a layer with no nodes left is legitimate
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        new = nn.utils.skip_init(
            nn.Linear, H_in, H_out, bias=b is not None, device=W.device, dtype=W.dtype
        )
    with torch.no_grad():
        new.weight.copy_(W)
        if b is not None:
            new.bias.copy_(b)
    if like is not None:
        new.weight.requires_grad_(like.weight.requires_grad)
        if b is not None:
            ref = like.bias if like.bias is not None else like.weight
            new.bias.requires_grad_(ref.requires_grad)
    return new


# --- architecture specs: a JSON-able description used by checkpoints -----------------------


def spec(model: nn.Module) -> list[dict]:
    """Describe a supported ``nn.Sequential`` as a list of JSON-able module records.

    A module object that appears twice is recorded once and referenced (``{"type": "ref",
    "of": i}``), so weight sharing survives a save and load.
    """
    parse(model, method="checkpoint")  # validates
    seen: dict[int, int] = {}
    records: list[dict] = []
    for i, m in enumerate(model):
        if id(m) in seen:
            records.append({"type": "ref", "of": seen[id(m)]})
            continue
        seen[id(m)] = i
        if isinstance(m, nn.Linear):
            records.append(
                dict(
                    type="Linear",
                    in_features=m.in_features,
                    out_features=m.out_features,
                    bias=m.bias is not None,
                )
            )
        elif isinstance(m, nn.LeakyReLU):
            records.append(dict(type="LeakyReLU", negative_slope=m.negative_slope))
        elif isinstance(m, nn.GELU):
            records.append(dict(type="GELU", approximate=m.approximate))
        elif isinstance(m, nn.Dropout):
            records.append(dict(type="Dropout", p=m.p))
        else:
            records.append(dict(type=type(m).__name__))
    return records


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "Linear": lambda in_features, out_features, bias=True: nn.utils.skip_init(
        nn.Linear, in_features, out_features, bias=bias
    ),
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "Tanh": nn.Tanh,
    "Sigmoid": nn.Sigmoid,
    "GELU": nn.GELU,
    "Dropout": nn.Dropout,
    "Flatten": nn.Flatten,
    "Identity": nn.Identity,
}


def from_spec(records: Sequence[dict]) -> nn.Sequential:
    """Rebuild an (uninitialised) ``nn.Sequential`` from :func:`spec` records."""
    modules: list[nn.Module] = []
    for i, record in enumerate(records):
        record = dict(record)
        kind = record.pop("type", None)
        if kind == "ref":
            of = record.get("of")
            if not isinstance(of, int) or not 0 <= of < i:
                raise ValueError(f"architecture record {i}: bad reference {of!r}")
            modules.append(modules[of])
        elif kind in _BUILDERS:
            try:
                modules.append(_BUILDERS[kind](**record))
            except TypeError as e:
                raise ValueError(f"architecture record {i} ({kind}): {e}") from None
        else:
            raise ValueError(
                f"architecture record {i}: unknown module type {kind!r}; known: {sorted(_BUILDERS)}"
            )
    return nn.Sequential(*modules)
