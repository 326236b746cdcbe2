"""Layer-by-layer composition of errors (CoreNet, Baykal et al. 2019a, Alg. 1) [recall].

Sign cancellation, CoreNet's slack, per-layer error targets and the compounded output error
(METHODS.md A2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def cancellation(W: Tensor, a: Tensor) -> Tensor:
    """Sign-cancellation factor ``Delta_i(x) = sum_k |w_ik a_k(x)| / |sum_k w_ik a_k(x)|``.

    ``W: [H_out, H_in]``, ``a: [N, H_in]`` -> ``[N, H_out]`` (>= 1; ``inf`` where ``z = 0`` but
    some term is not, 1 where every term is 0). It turns the per-part relative error into one
    on ``z``: ``|z_hat - z| <= eps (z+ + z-) = eps Delta |z|`` (METHODS.md A1).
    """
    num = a.abs() @ W.abs().T
    den = (a @ W.T).abs()
    return torch.where(num == 0, 1.0, num / den)


def kappa(delta: float, eta: int, eta_star: int) -> float:
    """CoreNet's slack ``kappa = sqrt(2 l) (1 + sqrt(2 l) log(8 eta eta* / delta))``, ``l = log(eta eta*)/2``.

    ``eta``: total number of neurons; ``eta_star``: largest layer width (METHODS.md A2 [recall]).
    """
    lam = math.log(eta * eta_star) / 2
    return math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * eta * eta_star / delta))


def delta_hat(Delta: Tensor, kappa: float = 0.0) -> float:
    """``Delta_hat^l = max_i mean_{x in S} Delta_i^l(x) + kappa`` from ``Delta: [N, H_out]``."""
    return float(Delta.mean(0).amax()) + kappa


def layer_epsilons(eps: float, delta_hats: Sequence[float]) -> list[float]:
    """Per-layer targets ``eps_l = eps' / prod_{k >= l} Delta_hat^k`` with ``eps' = eps / (2 (L-1))``.

    ``delta_hats`` holds ``Delta_hat^l`` for each of the ``L - 1`` weight layers, input side
    first. Sparsifying layer ``l`` to ``eps_l`` (fed by the already compressed lower layers)
    gives ``f_hat(x) in (1 +- eps) f(x)`` w.h.p. (CoreNet Alg. 1; METHODS.md A2 [recall]); with
    only the last layer pruned use ``delta_hats = [Delta_hat^L]`` (Gordon's setting).
    """
    n = len(delta_hats)
    if n == 0 or not eps > 0:
        raise ValueError(f"layer_epsilons: need eps > 0 and >= 1 layer; got {eps}, {delta_hats}")
    base = eps / (2 * n)
    return [base / math.prod(delta_hats[layer:]) for layer in range(n)]


def compounded_error(epsilons: Sequence[float]) -> float:
    """Relative output error ``prod_l (1 + eps_l) - 1`` when each positive layer errs by ``eps_l``.

    ``(1 + eps')^(L-1) - 1 <= 2 (L-1) eps'`` when ``(L-1) eps' <= 1`` (METHODS.md A2).
    """
    return math.prod(1 + e for e in epsilons) - 1
