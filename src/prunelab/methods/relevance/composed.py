"""The maximum built from smaller layers (the source's closing remark): two compositions, two
different DeepLIFT relevances."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .rules import RESCALE_TOLERANCE, _div


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


def max_disagreement(a: Tensor, a_ref: Tensor, *, softness: float = 1e-4) -> Tensor:
    """How far the two compositions' relevances of max_i a_i lie apart, per row:
    ``d = sum_i |C_softmax_i - C_relu_i| / (2 |max(a) - max(a_ref)|)``; 0 when they agree,
    1 when they move the whole change of the maximum to different inputs. NaN where the
    maximum does not change (nothing to split). a, a_ref: [N, K] -> [N]."""
    soft = composed_max_relevance(a, a_ref, form="softmax", softness=softness)
    hard = composed_max_relevance(a, a_ref, form="relu")
    dm = (a.amax(1) - a_ref.expand_as(a).amax(1)).abs()  # [N]
    diff = (soft - hard).abs().sum(1)  # [N]
    return torch.where(dm > 0, diff / (2 * dm), torch.nan)


def pool_windows(a: Tensor, kernel: int, stride: int | None = None) -> Tensor:
    """The windows of a max pool over feature maps, one per row: [N, C, H, W] ->
    [N * C * P, kernel**2], P windows per map (no padding, the windows of ``MaxPool2d``)."""
    N, C = a.shape[:2]
    cols = F.unfold(a.reshape(N * C, 1, *a.shape[2:]), kernel, stride=stride or kernel)
    return cols.transpose(1, 2).reshape(-1, kernel * kernel)  # [N C, K, P] -> [N C P, K]
