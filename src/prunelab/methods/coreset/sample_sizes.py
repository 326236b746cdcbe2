"""Sample sizes: a registry of bounds that all read ``m(eps) = (a + b eps) / eps^2``.

:data:`BOUNDS` holds each bound's ``(a, b)`` from (delta, S, constants); :func:`sample_size`
gives ``m`` for a target error and :func:`implied_epsilon` is its exact inverse, ``eps(m) = (b +
sqrt(b^2 + 4 a m)) / (2 m)``, one closed form for them all (METHODS.md A1, A4, A5).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

_CEIL_SLACK = 1e-12  # m = ceil(x (1 - slack)): float noise in x never adds a whole sample

Number = float | int | Tensor


_SATURATED = float(2**62)  # sample counts beyond this stay here (int64 holds up to 2**63 - 1)


def _bernstein(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] m = S (6 + 2 eps) ln(2/delta) / (3 eps^2): A = S ln(2/delta) / 3, (6A, 2A)."""
    A = S * torch.log(2 / delta) / 3
    return 6 * A, 2 * A


def _hoeffding(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] draws in [0, F]: m = ln(2/delta) / (2 eps^2) for error eps F."""
    return torch.log(2 / delta) / 2 * torch.ones_like(S), torch.zeros_like(S)


def _hoeffding_signed(delta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """[derived] draws in [-F, F]: m = 2 ln(2/delta) / eps^2 for error eps F."""
    return 2 * torch.log(2 / delta) * torch.ones_like(S), torch.zeros_like(S)


def _corenet(delta: Tensor, S: Tensor, *, K: float, eta: float) -> tuple[Tensor, Tensor]:
    """[recall] CoreNet: m = 8 S K log(8 eta / delta) / eps^2 (eta = number of neurons)."""
    return 8 * S * K * torch.log(8 * eta / delta), torch.zeros_like(S)


def _sipp(delta: Tensor, S: Tensor, *, K: float, eta: float, c: float) -> tuple[Tensor, Tensor]:
    """[recall] SiPP/PFP: m = (6 + 2 eps) S K log(c eta / delta) / eps^2."""
    X = S * K * torch.log(c * eta / delta)
    return 6 * X, 2 * X


def _torchprune(
    delta: Tensor, S: Tensor, *, C: float = 3.0, patches: int = 1, kernel: int = 1
) -> tuple[Tensor, Tensor]:
    """[code] torchprune: m = 3 (6 + 2 eps) alpha S / eps^2, alpha = 2 C ln(8 (p + 1) kappa / delta)."""
    alpha = 2 * C * torch.log(8 * (patches + 1) * kernel / delta)
    return 18 * alpha * S, 6 * alpha * S


#: Sample-size bounds by name: ``(delta, S, **constants) -> (a, b)`` with ``m = (a + b eps)/eps^2``.
BOUNDS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "bernstein": _bernstein,
    "hoeffding": _hoeffding,
    "hoeffding_signed": _hoeffding_signed,
    "corenet": _corenet,
    "sipp": _sipp,
    "torchprune": _torchprune,
}
_NEEDS_SENSITIVITY = frozenset({"bernstein", "corenet", "sipp", "torchprune"})


def _coefficients(
    fn: str, delta: Number, sensitivity: Number | None, bound: str, union: int, constants: Mapping
) -> tuple[Tensor, Tensor]:
    if bound not in BOUNDS:
        raise KeyError(f"{fn}: bound {bound!r}; choose from {sorted(BOUNDS)}")
    d = torch.as_tensor(delta, dtype=torch.float64)
    if not bool(((d > 0) & (d < 1)).all()):
        raise ValueError(f"{fn}: delta must be in (0, 1); got {delta}")
    if not (isinstance(union, int) and union >= 1):
        raise ValueError(
            f"{fn}: union (events in the union bound) must be an int >= 1; got {union}"
        )
    if sensitivity is None:
        if bound in _NEEDS_SENSITIVITY:
            raise ValueError(f"{fn}: bound {bound!r} needs the total sensitivity S")
        sensitivity = 1.0
    S = torch.as_tensor(sensitivity, dtype=torch.float64)
    if not bool((S >= 0).all()) or not bool(torch.isfinite(S).all()):
        raise ValueError(f"{fn}: sensitivity must be finite and >= 0; got {sensitivity}")
    rule = BOUNDS[bound]
    params = inspect.signature(rule).parameters
    known = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    required = [p for p in known if params[p].default is inspect.Parameter.empty]
    unknown = sorted(set(constants) - set(known))
    missing = [p for p in required if p not in constants]
    if unknown or missing:
        raise ValueError(
            f"{fn}: bound {bound!r} takes constants {known} (required: {required}); "
            f"got {sorted(constants)}"
        )
    return rule(d / union, S, **constants)


def _like(value: Tensor, *inputs: object) -> Number:
    """Return a Python number when every input was one, else the tensor."""
    if any(isinstance(x, Tensor) for x in inputs):
        return value
    return value.item()


def sample_size(
    eps: Number,
    delta: Number,
    sensitivity: Number | None = None,
    *,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Number:
    """Number of i.i.d. draws ``m`` that meets a relative (or additive) error ``eps`` w.p. 1 - delta.

    Every bound in :data:`BOUNDS` has the form ``m = ceil((a + b eps) / eps^2)``:

    ``"bernstein"`` [derived, METHODS.md A1]
        ``m_B = ceil(S (6 + 2 eps) ln(2/delta) / (3 eps^2))``. For fixed x with ``g_j(x) <=
        s_j``, each draw ``T = w_J a_J / (q_J z)`` lies in ``[0, S]`` with mean 1 and variance
        ``<= S``, so Bernstein's inequality gives ``P(|z_hat/z - 1| >= eps) <= 2 exp(-3 m eps^2
        / (S (6 + 2 eps)))``.
    ``"hoeffding"`` [derived, A4]
        ``m = ceil(ln(2/delta) / (2 eps^2))``: draws in ``[0, F]``, additive error ``eps F``
        (Mussay's coreset with non-negative outgoing weights). ``sensitivity`` is ignored.
    ``"hoeffding_signed"`` [derived, A4]
        ``m = ceil(2 ln(2/delta) / eps^2)``: draws in ``[-F, F]``.
    ``"corenet"`` [recall, Baykal et al. 2019a]
        ``m = ceil(8 S K log(8 eta / delta) / eps^2)``; constants ``K`` and ``eta`` (number of
        neurons).
    ``"sipp"`` [recall, Baykal et al. 2019b; Liebenwein et al. 2020]
        ``m = ceil((6 + 2 eps) S K log(c eta / delta) / eps^2)``; constants ``K``, ``eta``, ``c``
        (confirm against the paper before relying on them).
    ``"torchprune"`` [code, lucaslie/torchprune ``sipp_allocator``]
        ``m = ceil(3 (6 + 2 eps) alpha S / eps^2)``, ``alpha = 2 C ln(8 (p + 1) kappa /
        delta)``; constants ``C=3``, ``patches=1`` (p), ``kernel=1`` (kappa) for Linear layers.

    Parameters
    ----------
    eps : float or Tensor
        Target error (> 0); relative for the sensitivity bounds, a fraction of ``F`` for Hoeffding.
    delta : float or Tensor
        Failure probability in (0, 1).
    sensitivity : float or Tensor, optional
        Total sensitivity ``S = sum_j s_j`` (>= 0; ``S = 0`` needs no samples). Tensors give
        one sample size per entry, e.g. ``S: [2, H_out]`` from ``sensitivities(...).sum(-1)``.
    bound : str
        A key of :data:`BOUNDS`.
    union : int
        Number of events covered at once by a union bound: ``delta`` is replaced by
        ``delta / union`` (e.g. ``union = H_next`` for every next-layer neuron of Mussay's bound).
    **constants
        The bound's constants, see above.

    Returns
    -------
    int, or int64 Tensor when any argument is a tensor; counts beyond ``2**62`` (astronomically
    small ``eps``) saturate there instead of overflowing.

    Raises
    ------
    KeyError
        If ``bound`` is unknown.
    ValueError
        For ``eps <= 0``, ``delta`` outside (0, 1), a negative ``sensitivity``, or missing or
        unknown constants.
    """
    e = torch.as_tensor(eps, dtype=torch.float64)
    if not bool((e > 0).all()) or not bool(torch.isfinite(e).all()):
        raise ValueError(f"sample_size: eps must be finite and > 0; got {eps}")
    a, b = _coefficients("sample_size", delta, sensitivity, bound, union, constants)
    m = torch.ceil((a + b * e) / e**2 * (1 - _CEIL_SLACK)).clamp(max=_SATURATED)
    m = m.to(torch.int64)
    return _like(m, eps, delta, sensitivity)


def implied_epsilon(
    m: Number,
    delta: Number,
    sensitivity: Number | None = None,
    *,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Number:
    """The error ``eps`` that ``m`` draws guarantee: the exact inverse of :func:`sample_size`.

    Solving ``m eps^2 = a + b eps`` for ``eps > 0`` gives

        eps(m) = (b + sqrt(b^2 + 4 a m)) / (2 m),

    which for Bernstein (``a = 6A``, ``b = 2A``, ``A = S ln(2/delta) / 3``) is ``(A + sqrt(A^2
    + 6 A m)) / m`` (METHODS.md A1, A5) and for Hoeffding ``sqrt(a / m)``. Used by
    sparsity-first pruning: choose ``m``, report the ``eps`` it guarantees. Zero sensitivity
    gives ``eps = 0``; ``m = 0`` gives ``inf``.

    Parameters are those of :func:`sample_size`, with ``m >= 0`` in place of ``eps``.

    Returns
    -------
    float, or float64 Tensor when any argument is a tensor.
    """
    mt = torch.as_tensor(m, dtype=torch.float64)
    if not bool((mt >= 0).all()):
        raise ValueError(f"implied_epsilon: m must be >= 0; got {m}")
    a, b = _coefficients("implied_epsilon", delta, sensitivity, bound, union, constants)
    eps = (b + torch.sqrt(b**2 + 4 * a * mt)) / (2 * mt)
    eps = torch.where(a + b == 0, 0.0, eps)
    return _like(eps, m, delta, sensitivity)
