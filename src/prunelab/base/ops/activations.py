"""Elementwise activations: their modules, values and first two derivatives.

``ACTIVATIONS`` builds each supported activation module by name; :func:`phi` is its functional
twin and :func:`derivatives` gives ``phi'`` and ``phi''`` (curvature and relevance need both).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
