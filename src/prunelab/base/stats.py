"""Statistics used by the studies: densities, normal fits, path covariances, intervals.

Everything takes and returns tensors (float64 inside); distribution functions come from SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import scipy.stats
import torch
from torch import Tensor


def kde(values: Tensor, points: Tensor, width: float) -> Tensor:
    """Gaussian kernel density estimate at ``points``.

    density(t) = 1 / (M w sqrt(2 pi)) * sum_m exp(-(t - v_m)^2 / (2 w^2)).
    ``values: [M]``, ``points: [G]`` -> ``[G]``. The node-removal source smooths with w = 0.03.
    """
    if not width > 0:
        raise ValueError(f"kde: width must be > 0; got {width}")
    v = values.detach().double().reshape(-1)
    t = points.detach().double().reshape(-1)
    u = (t[:, None] - v[None, :]) / width  # (G, M)
    return torch.exp(-0.5 * u**2).sum(1) / (len(v) * width * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class NormalFit:
    """Maximum-likelihood normal fit with two goodness-of-fit statistics.

    ``ks``: Kolmogorov-Smirnov distance sup |F_n - Phi| to the fitted normal, with its p-value
    (Lilliefors' caveat: the parameters were estimated, so the p-value is conservative).
    ``shapiro``/``shapiro_p``: the Shapiro-Wilk W statistic and p-value.
    """

    mean: float
    std: float
    ks: float
    ks_p: float
    shapiro: float
    shapiro_p: float


def normal_fit(values: Tensor) -> NormalFit:
    """Fit N(mean, std^2) by maximum likelihood (std with 1/M, as numpy's default) and test it."""
    v = values.detach().double().reshape(-1)
    if len(v) < 3:
        raise ValueError(f"normal_fit needs at least 3 values; got {len(v)}")
    mean, std = v.mean().item(), v.std(correction=0).item()
    arr = v.cpu().numpy()
    ks = scipy.stats.kstest(arr, "norm", args=(mean, std if std > 0 else 1.0))
    sw = scipy.stats.shapiro(arr) if std > 0 else (1.0, 1.0)
    return NormalFit(mean, std, float(ks.statistic), float(ks.pvalue), float(sw[0]), float(sw[1]))


def skewness(values: Tensor) -> float:
    """Sample skewness g1 = m3 / m2^(3/2) (moments about the mean, 1/M): > 0 means a right tail."""
    v = values.detach().double().reshape(-1)
    d = v - v.mean()
    return ((d**3).mean() / (d**2).mean() ** 1.5).item()


def excess_kurtosis(values: Tensor) -> float:
    """Sample excess kurtosis g2 = m4 / m2^2 - 3 (moments about the mean, 1/M): > 0 means a
    sharper peak and heavier tails than a normal distribution."""
    v = values.detach().double().reshape(-1)
    d = v - v.mean()
    return ((d**4).mean() / (d**2).mean() ** 2 - 3).item()


def normal_pdf(points: Tensor, mean: float, std: float) -> Tensor:
    """Density of N(mean, std^2) at ``points``."""
    t = points.double()
    return torch.exp(-0.5 * ((t - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two equally long vectors."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


def correlation_p_value(r: Tensor | float, n: int) -> Tensor:
    """Two-sided p-value of Pearson's r under H0: rho = 0, from t = r sqrt((n-2)/(1-r^2))."""
    r = torch.as_tensor(r, dtype=torch.float64).clamp(-1 + 1e-15, 1 - 1e-15)
    t = r * math.sqrt(n - 2) / torch.sqrt(1 - r**2)
    return torch.as_tensor(2 * scipy.stats.t.sf(t.abs().cpu().numpy(), n - 2))


@dataclass(frozen=True)
class PathCovariance:
    """Covariance structure of values along paths ``[P, T]`` (e.g. log-loss after k flips).

    ``cov``: ``[T, T]`` covariance matrix over paths. ``from_start[k] = cov[0, k]`` and
    ``from_end[k] = cov[T-1, T-1-k]``: covariance with the start (end) at distance k; they agree
    in expectation when the path distribution is symmetric under reversal. ``corr_start`` and
    ``p_start`` are the matching correlations and p-values, and ``decorrelated_after`` is the
    first distance k whose correlation with the start is no longer significant at ``alpha``.
    """

    cov: Tensor
    from_start: Tensor
    from_end: Tensor
    corr_start: Tensor
    corr_end: Tensor
    p_start: Tensor
    p_end: Tensor
    decorrelated_after: int
    alpha: float


def path_covariance(values: Tensor, *, alpha: float = 0.05) -> PathCovariance:
    """Covariances and correlations along paths; ``values: [P, T]`` (P paths, T steps)."""
    v = values.detach().double()
    P, T = v.shape
    if P < 3:
        raise ValueError(f"path_covariance needs at least 3 paths; got {P}")
    centred = v - v.mean(0)
    cov = centred.T @ centred / (P - 1)  # (T, T)
    sd = cov.diagonal().sqrt()
    corr = cov / (sd[:, None] * sd[None, :])
    k = torch.arange(T)
    from_start, from_end = cov[0, k], cov[T - 1, T - 1 - k]
    corr_start, corr_end = corr[0, k], corr[T - 1, T - 1 - k]
    p_start, p_end = correlation_p_value(corr_start, P), correlation_p_value(corr_end, P)
    insignificant = (p_start > alpha).nonzero()
    after = int(insignificant[0]) if len(insignificant) else T
    return PathCovariance(
        cov, from_start, from_end, corr_start, corr_end, p_start, p_end, after, alpha
    )


def mean_interval(values: Tensor, *, dim: int = 0, level: float = 0.95) -> tuple[Tensor, Tensor]:
    """Mean and the half-width of its Student-t confidence interval along ``dim``.

    half = t_{(1+level)/2, n-1} * s / sqrt(n), with the sample std s (1/(n-1)); zero for n = 1.
    """
    v = values.double()
    n = v.shape[dim]
    mean = v.mean(dim)
    if n < 2:
        return mean, torch.zeros_like(mean)
    t = scipy.stats.t.ppf((1 + level) / 2, n - 1)
    return mean, t * v.std(dim, correction=1) / math.sqrt(n)


# --- statistics of units: a Linear's features [N, H] or a conv's channels [N, H, *spatial] ---


def unit_mean(a: Tensor) -> Tensor:
    """Each unit's mean over samples and positions: ``[N, H, *spatial] -> [H]``.

    A channel's mean is taken as ``a_ref + mean(a - a_ref)`` with ``a_ref`` its first value,
    which is exact for a constant map (a plain mean of a constant leaves rounding behind).
    """
    if a.dim() == 2:
        return a.mean(0)
    ref = a[:1].flatten(2)[..., 0].view(1, -1, *[1] * (a.dim() - 2))  # a channel's first value
    return ref.view(-1) + (a - ref).mean(dim=[d for d in range(a.dim()) if d != 1])


def position_sum(a: Tensor) -> Tensor:
    """Sum over a channel's positions: ``[N, H, *spatial] -> [N, H]`` (``[N, H]`` unchanged)."""
    return a if a.dim() == 2 else a.flatten(2).sum(2)


def per_unit(v: Tensor, a: Tensor) -> Tensor:
    """A per-unit value ``[H]`` shaped to broadcast against ``a: [N, H, *spatial]``."""
    return v.view(-1, *[1] * (a.dim() - 2))


def unit_statistics(acts: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per unit: mean, standard deviation (1/n) and largest magnitude of its activation.

    ``acts``: per hidden layer ``[N, H_l]`` (a Linear's features) or ``[N, H_l, h, w]`` (a
    Conv2d's channels, as :func:`prunelab.masks.hidden_activations` returns them). A channel's
    statistics run over the samples *and* the positions of its feature map, the values its
    mask multiplies. Returns three ``[H]`` tensors, units numbered as in a mask.
    """
    flat = [a.movedim(1, -1).reshape(-1, a.shape[1]) for a in acts]  # (N * positions, H_l)
    mean = torch.cat([a.mean(0) for a in flat])
    std = torch.cat([a.std(0, correction=0) for a in flat])
    peak = torch.cat([a.abs().amax(0) for a in flat])
    return mean, std, peak


def clipped_interval(
    values: Tensor,
    *,
    dim: int = 0,
    level: float = 0.95,
    low: float = -math.inf,
    high: float = math.inf,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean along ``dim`` and its Student-t interval ``[mean - half, mean + half]`` clipped to
    ``[low, high]`` (e.g. an accuracy's [0, 1]): ``(mean, lower, upper)``, float64."""
    if not low <= high:
        raise ValueError(f"clipped_interval: low must be <= high; got {low}, {high}")
    mean, half = mean_interval(values, dim=dim, level=level)
    return mean, (mean - half).clamp(low, high), (mean + half).clamp(low, high)


def critical_correlation(n: int, *, alpha: float = 0.05) -> float:
    """The smallest ``|r|`` of ``n`` pairs that is significant at ``alpha`` (two-sided), the
    inverse of :func:`correlation_p_value`: ``r = t / sqrt(n - 2 + t^2)``, ``t`` the Student
    quantile ``t_{1 - alpha/2, n-2}``. Needs ``n >= 3``."""
    if n < 3:
        raise ValueError(f"critical_correlation needs n >= 3 pairs; got {n}")
    t = scipy.stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


def outside_disc(r2: float, *, half: float = 1.0) -> float:
    """Share of the square ``[-half, half]^2`` with ``x0^2 + x1^2 > r2`` (uniform points).

    With ``r = sqrt(r2)`` and ``a = half``: ``1 - pi r^2 / (4 a^2)`` for ``r <= a``; for
    ``a < r < a sqrt(2)`` the disc's part of a quadrant is ``a sqrt(r^2 - a^2) + r^2 (pi/4 -
    arccos(a / r))``; 0 beyond. The circle task's rule ``r2 = 2/pi`` gives 1/2; the source's
    code compared with ``sqrt(2/pi)``, which gives 0.373.
    """
    if r2 < 0 or half <= 0:
        raise ValueError(f"outside_disc: r2 must be >= 0 and half > 0; got {r2}, {half}")
    r, a = math.sqrt(r2), half
    if r <= a:
        inside = math.pi * r2 / 4
    elif r < a * math.sqrt(2):
        inside = a * math.sqrt(r2 - a * a) + r2 * (math.pi / 4 - math.acos(a / r))
    else:
        inside = a * a
    return 1 - inside / (a * a)


def share_within(values: Tensor, tol: float) -> float:
    """Share of ``values`` [N] whose magnitude is at most ``tol`` (NaN counts as outside);
    e.g. the images whose relative conservation error is within a tolerance."""
    v = values.detach().flatten().double()
    if v.numel() == 0:
        raise ValueError("share_within: values is empty")
    return (v.abs() <= tol).double().mean().item()


def nanmedian(values: Tensor) -> float:
    """The median of the values [N] that are not NaN (the lower of the two middle ones for an
    even count, as torch.median); NaN if all are."""
    v = values.detach().flatten()
    v = v[~v.isnan()]
    return v.median().item() if v.numel() else float("nan")


def nanmin(values: Tensor) -> float:
    """The smallest value of ``values`` [N] that is not NaN; NaN if all are."""
    v = values.detach().flatten()
    v = v[~v.isnan()]
    return v.min().item() if v.numel() else float("nan")
