"""Building models (MLPs, LeNet-5, VGG), and the dense view of an MLP.

Module types are known only to the op view (:mod:`prunelab.ops`). The dense view
(:class:`Net`, a tuple of :class:`Dense`) is read from it for the methods that take MLPs so
far: every such method reads weights, biases and activations through it. A layer is

    z^l = a^{l-1} W^l.T + b^l,        a^l = phi_l(z^l)        (W^l: [H_l, H_{l-1}])

with dropout (a training-time operation) recorded where it sits. The dense view takes
``Linear``, ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``, ``GELU``, ``Identity``, ``Dropout`` and
``Flatten`` (before the first ``Linear``); a Conv2d, pooling or BatchNorm gets a ``ValueError``
saying the method takes MLPs so far, and a module the op view does not know a ``TypeError``,
each naming the module, its position and the supported set. :func:`spec` and
:func:`from_spec` (the checkpoints' architecture records) live in :mod:`prunelab.ops`.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import checks, ops
from .ops import ACTIVATIONS, PIECEWISE_LINEAR, derivatives, from_spec, phi, spec

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "PIECEWISE_LINEAR",
    "SUPPORTED_MODULES",
    "Dense",
    "Net",
    "build",
    "derivatives",
    "from_spec",
    "hidden_sizes",
    "lenet5",
    "linear",
    "mlp",
    "parse",
    "phi",
    "spec",
    "vgg",
]

# what the dense view takes: the modules of an MLP
SUPPORTED_MODULES = (
    "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "Dropout", "Flatten", "Identity",
)  # fmt: skip


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
    view: ops.View | None = field(default=None, compare=False, repr=False)  # the op view

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
        """``x`` as ``[N, D]``: an MLP reads images ``[N, C, H, W]`` flattened."""
        return x.flatten(1) if x.dim() > 2 else x

    def check_x(self, x: Tensor, method: str, *, name: str = "x", convert: bool = False) -> Tensor:
        """``x`` validated for this net as ``[N, D]`` (:meth:`prunelab.ops.View.check_x`)."""
        return self.view.check_x(x, method, name=name, convert=convert).flatten(1)

    def check_labels(self, y: Tensor, n: int, method: str) -> Tensor:
        """Labels ``y: [n]`` in ``[0, C)`` as int64 (:meth:`prunelab.ops.View.check_labels`)."""
        return self.view.check_labels(y, n, method)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Hidden activations ``a^l: [N, H_l]`` for every hidden layer (dropout as identity).

        Values only (no autograd graph). ``torch.cat(net.activations(x), 1)`` is ``[N, H]``
        with the nodes numbered as in a node mask.
        """
        with torch.no_grad():
            return ops.forward(self.view, x, taps=True, training=False)[1]


def parse(
    model: nn.Module, *, method: str = "prunelab", activations: Sequence[str] | None = None
) -> Net:
    """The dense-layer view of an MLP, read from its op view (:func:`prunelab.ops.parse`).

    For the methods that take MLPs so far: each Linear with the activation and Dropout after
    it is one :class:`Dense` layer.

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
        If the model is not an MLP (a convolution, pooling or BatchNorm, which this method
        does not take yet; widths that do not chain; an activation the method does not
        support).
    """
    view = ops.parse(model, method=method)
    layers: list[dict] = []
    flatten, input_dropout = False, 0.0
    for op in view.ops:
        where = f"module {op.position} ({type(op.module).__name__})"
        if isinstance(op, ops.Affine):
            if op.conv:
                raise ValueError(_mlp_only(method, where))
            if op.norm is not None:
                norm = f"module {op.norm_position} ({type(op.norm).__name__})"
                raise ValueError(_mlp_only(method, norm))
            module = op.module
            if layers and layers[-1]["linear"].out_features != module.in_features:
                raise ValueError(
                    f"{method}: {where} expects {module.in_features} inputs but the previous "
                    f"Linear gives {layers[-1]['linear'].out_features}"
                )
            layers.append(dict(position=op.position, name=op.name, linear=module, end=op.position))
        elif isinstance(op, ops.Pool):
            raise ValueError(_mlp_only(method, where))
        elif isinstance(op, ops.Pass) and op.dropout is not None:
            p = op.dropout
            if not layers:
                input_dropout = 1 - (1 - input_dropout) * (1 - p)
            else:
                key = "dropout" if "activation" in layers[-1] else "dropout_pre"
                layers[-1][key] = 1 - (1 - layers[-1].get(key, 0.0)) * (1 - p)
                layers[-1]["end"] = op.position
        elif isinstance(op, ops.Flatten):
            if layers:
                raise ValueError(f"{method}: {where} must come before the first Linear")
            flatten = True
        elif isinstance(op, ops.Activation):
            if activations is not None and op.activation not in activations:
                raise ValueError(
                    f"{method}: {where} has activation {op.activation!r}; this method supports "
                    f"{sorted(activations)}"
                )
            layers[-1]["activation"] = op.activation
            layers[-1]["slope"] = op.slope
            layers[-1]["end"] = op.position
    return Net(tuple(Dense(**layer) for layer in layers), flatten, input_dropout, view)


def _mlp_only(method: str, where: str) -> str:
    return (
        f"{method}: {where}: this method takes MLPs so far (supported modules: "
        f"{', '.join(SUPPORTED_MODULES)}); convnets reach it in a later release"
    )


def hidden_sizes(model: nn.Module) -> list[int]:
    """Units of the hidden layers, in order (the blocks of a node mask ``[M, H]``); a conv
    layer's units are its output channels."""
    return ops.parse(model, method="hidden_sizes").hidden_sizes


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
    widths = checks.widths(widths, "models.mlp")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"models.mlp: activation {activation!r}: choose from {sorted(ACTIVATIONS)}"
        )
    checks.real(dropout, "models.mlp", "dropout", low=0.0, high=1.0, open_high=True)
    g = torch.Generator().manual_seed(checks.seed(seed, "models.mlp"))
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


# --- convnets --------------------------------------------------------------------------------


def _init_(module: nn.Linear | nn.Conv2d, g: torch.Generator) -> None:
    """PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from the generator ``g``."""
    fan_in = module.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        module.weight.copy_(_uniform(tuple(module.weight.shape), bound, g))
        if module.bias is not None:
            module.bias.copy_(_uniform(tuple(module.bias.shape), bound, g))


def _check_shape(in_shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(in_shape) if isinstance(in_shape, Sequence) else ()
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape
    ):
        raise ValueError(
            f"{what}: in_shape must be (channels, height, width), each >= 1; got {in_shape}"
        )
    return shape


def _check_common(what: str, classes: int, activation: str, dropout: float, seed: int) -> None:
    checks.seed(seed, f"models.{what}")
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"{what}: classes must be an int >= 2; got {classes!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{what}: activation {activation!r}: choose from {sorted(ACTIVATIONS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{what}: dropout must be in [0, 1); got {dropout}")


def lenet5(
    *,
    in_shape: Sequence[int] = (1, 28, 28),
    classes: int = 10,
    pool: str = "max",
    activation: str = "relu",
    batchnorm: bool = False,
    dropout: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, Fig. 2) as a plain ``nn.Sequential``.

    ``conv 6@5x5 (padding 2), act, pool 2, conv 16@5x5, act, pool 2, Flatten, Linear 120, act,
    Linear 84, act, Linear classes``: on 28x28 inputs the second conv gives 16@5x5 = 400
    features, as in the paper. On inputs smaller than 20x20 (``digits``, 8x8) the second conv
    is padded too, so that a feature map survives both pools. Optional BatchNorm after each
    conv and Linear, Dropout after each hidden Linear's activation. Seeded init (PyTorch's
    default distribution, the global RNG untouched).

    Examples
    --------
    >>> model = lenet5(seed=0)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    C, H, W = _check_shape(in_shape, "lenet5")
    _check_common("lenet5", classes, activation, dropout, seed)
    pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    if pool not in pools:
        raise ValueError(f"lenet5: pool {pool!r}: choose from {sorted(pools)}")
    pad2 = 2 if min(H, W) < 20 else 0
    h, w = H // 2, W // 2  # after conv1 (same size) and the first pool
    h, w = (h + 2 * pad2 - 4) // 2, (w + 2 * pad2 - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"lenet5: in_shape {tuple(in_shape)} is too small; at least 4x4")

    def act() -> nn.Module:
        return ACTIVATIONS[activation](0.01)

    def norm(n: int, two_d: bool) -> list[nn.Module]:
        return [nn.BatchNorm2d(n) if two_d else nn.BatchNorm1d(n)] if batchnorm else []

    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    modules = [
        _skip(nn.Conv2d, C, 6, 5, padding=2), *norm(6, True), act(), pools[pool](2),
        _skip(nn.Conv2d, 6, 16, 5, padding=pad2), *norm(16, True), act(), pools[pool](2),
        nn.Flatten(),
        _skip(nn.Linear, 16 * h * w, 120), *norm(120, False), act(), *drop,
        _skip(nn.Linear, 120, 84), *norm(84, False), act(), *drop,
        _skip(nn.Linear, 84, classes),
    ]  # fmt: skip
    return _seeded(nn.Sequential(*modules), seed, dtype)


VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {  # Simonyan & Zisserman 2015, Table 1 (A, B, D)
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ),
}


def vgg(
    config: str = "vgg11",
    *,
    in_shape: Sequence[int] = (3, 32, 32),
    classes: int = 10,
    batchnorm: bool = True,
    width: float = 1.0,
    dropout: float = 0.5,
    activation: str = "relu",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """VGG (Simonyan & Zisserman 2015) for small images, as torchvision lays it out.

    ``Sequential(features, avgpool, Flatten, classifier)``: 3x3 convs (padding 1) with
    BatchNorm and ReLU, 2x2 max pools (``ceil_mode``, so 28x28 or 8x8 inputs work too);
    ``AdaptiveAvgPool2d(1)``; the CIFAR classifier ``Linear 512, ReLU, Dropout, Linear 512,
    ReLU, Dropout, Linear classes``. ``width`` scales every channel and hidden count (at least
    1 each), so that a CPU can train a thin VGG: ``vgg("vgg11", width=0.25)`` has 16-128
    channels. Seeded init, the global RNG untouched.

    Examples
    --------
    >>> model = vgg("vgg11", width=0.125, seed=0)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if config not in VGG_CONFIGS:
        raise ValueError(f"vgg: config {config!r}: choose from {sorted(VGG_CONFIGS)}")
    C, _, _ = _check_shape(in_shape, "vgg")
    _check_common("vgg", classes, activation, dropout, seed)
    if not (isinstance(width, int | float) and width > 0):
        raise ValueError(f"vgg: width must be a positive number; got {width!r}")

    def scaled(n: int) -> int:
        return max(1, round(n * width))

    features: list[nn.Module] = []
    for v in VGG_CONFIGS[config]:
        if v == "M":
            features.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            continue
        n = scaled(int(v))
        features += [_skip(nn.Conv2d, C, n, 3, padding=1)]
        features += [nn.BatchNorm2d(n)] if batchnorm else []
        features += [ACTIVATIONS[activation](0.01)]
        C = n
    hidden = scaled(512)
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    act = ACTIVATIONS[activation]
    classifier = [
        _skip(nn.Linear, C, hidden), act(0.01), *drop,
        _skip(nn.Linear, hidden, hidden), act(0.01), *drop,
        _skip(nn.Linear, hidden, classes),
    ]  # fmt: skip
    model = nn.Sequential(
        nn.Sequential(*features), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Sequential(*classifier)
    )
    return _seeded(model, seed, dtype)


def _seeded(model: nn.Sequential, seed: int, dtype: torch.dtype) -> nn.Sequential:
    """``model`` in ``dtype`` with every Linear and Conv2d initialised from ``seed``, in order."""
    g = torch.Generator().manual_seed(seed)
    model = model.to(dtype)
    for layer in ops.parse(model, method="models", finite=False).layers:  # not initialised yet
        _init_(layer.module, g)
    return model


def _skip(cls: type, *args, **kwargs) -> nn.Module:
    """A Linear or Conv2d built without initialisation (no global RNG use; see :func:`_seeded`)."""
    return nn.utils.skip_init(cls, *args, **kwargs)


ARCHITECTURES = ("mlp", "lenet5", *VGG_CONFIGS)


def build(
    arch: str,
    *,
    in_shape: Sequence[int],
    classes: int,
    widths: Sequence[int] | None = None,
    activation: str = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
    pool: str = "max",
    width: float = 1.0,
    seed: int = 0,
) -> nn.Sequential:
    """An untrained model of architecture ``arch`` (one of :data:`ARCHITECTURES`), as
    ``prunelab train`` builds it and records it in a checkpoint: :func:`mlp` from ``widths``,
    :func:`lenet5` (``pool``, ``batchnorm``) or :func:`vgg` (``width``, ``batchnorm``) for
    samples of ``in_shape`` and ``classes`` classes."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"build: arch {arch!r}: choose from {', '.join(ARCHITECTURES)}")
    if arch == "mlp":
        if not widths:
            raise ValueError("build: arch 'mlp' needs widths, e.g. (784, 300, 100, 10)")
        return mlp(widths, activation=activation, dropout=dropout, seed=seed)
    common = dict(
        in_shape=in_shape, classes=classes, activation=activation, dropout=dropout, seed=seed
    )
    if arch == "lenet5":
        return lenet5(pool=pool, batchnorm=batchnorm, **common)
    return vgg(arch, width=width, batchnorm=batchnorm, **common)
