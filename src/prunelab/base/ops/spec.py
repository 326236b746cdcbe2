"""A model's architecture as JSON-able records, and back (what checkpoints store).

Each module is a record ``{"type": name, **constructor arguments}``; a nested Sequential is
``{"type": "Sequential", "modules": [...]}``. Modules are numbered in pre-order (a Sequential
before its children, the root not counted), and a module object that appears a second time is
recorded as ``{"type": "ref", "of": k}``, so weight sharing survives a save and load. A child
whose name in its Sequential is not its index (``OrderedDict`` names; the ``"3_offset"`` that
:func:`.rewire.remove_units` gives an inserted :class:`.modules.Offset`) also records
``"name"``, so parameter names, and with them checkpoints' tensor names, survive too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from .modules import Offset
from .view import parse

# constructor arguments by module type, read back from the module's attributes
_ARGS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv2d: (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "padding_mode",
    ),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.AvgPool2d: (
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
    ),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.AdaptiveMaxPool2d: ("output_size",),
    nn.ReLU: (),
    nn.LeakyReLU: ("negative_slope",),
    nn.Tanh: (),
    nn.Sigmoid: (),
    nn.GELU: ("approximate",),
    nn.Dropout: ("p",),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Identity: (),
    Offset: ("shape",),
}
_TYPES = {t.__name__: t for t in _ARGS}
_SKIP_INIT = (nn.Linear, nn.Conv2d)  # built without initialisation: no global RNG use


def spec(model: nn.Module) -> list[dict]:
    """Describe a supported ``nn.Sequential`` as a list of JSON-able module records."""
    parse(model, method="checkpoint")  # validates
    seen: dict[int, int] = {}
    counter = iter(range(1 << 62))

    def records(seq: nn.Sequential) -> list[dict]:
        out = []
        for i, (name, m) in enumerate(seq._modules.items()):
            k = next(counter)
            named = {} if name == str(i) else {"name": name}
            if id(m) in seen:
                out.append({"type": "ref", "of": seen[id(m)], **named})
                continue
            seen[id(m)] = k
            if isinstance(m, nn.Sequential):
                out.append({"type": "Sequential", **named, "modules": records(m)})
            else:
                out.append({"type": type(m).__name__, **named, **_arguments(m)})
        return out

    return records(model)


def _arguments(m: nn.Module) -> dict:
    args = {}
    for name in _ARGS[type(m)]:
        value = m.bias is not None if name == "bias" else getattr(m, name)
        args[name] = list(value) if isinstance(value, tuple) else value
    return args


def from_spec(records: Sequence[dict]) -> nn.Sequential:
    """Rebuild an (uninitialised) ``nn.Sequential`` from :func:`spec` records."""
    built: list[nn.Module] = []  # in pre-order, for references

    def modules(recs: Sequence[dict], where: str) -> nn.Sequential:
        out: OrderedDict[str, nn.Module] = OrderedDict()
        for i, record in enumerate(recs):
            record = dict(record)
            kind = record.pop("type", None)
            name = record.pop("name", str(i))
            at = f"architecture record {where}{i}"
            if not isinstance(name, str) or not name or "." in name or name in out:
                raise ValueError(f"{at}: bad or repeated module name {name!r}")
            k = len(built)
            built.append(None)  # its place in pre-order
            if kind == "ref":
                of = record.get("of")
                if not isinstance(of, int) or not 0 <= of < k or built[of] is None:
                    raise ValueError(f"{at}: bad reference {of!r}")
                module = built[of]
            elif kind == "Sequential":
                module = modules(record.get("modules", []), f"{where}{i}.")
            elif kind in _TYPES:
                module = _build(_TYPES[kind], record, at)
            else:
                raise ValueError(
                    f"{at}: unknown module type {kind!r}; known: {sorted([*_TYPES, 'Sequential'])}"
                )
            built[k] = module
            out[name] = module
        return nn.Sequential(out)

    return modules(records, "")


def _build(cls: type, record: dict, at: str) -> nn.Module:
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    try:
        if cls in _SKIP_INIT:
            return nn.utils.skip_init(cls, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{at} ({cls.__name__}): {e}") from None
