"""L0 regularisation of hidden nodes with hard-concrete gates (Louizos, Welling & Kingma 2018).

Each gated hidden node ``j`` is multiplied, after its activation, by a stochastic gate
``z_j in [0, 1]`` that is exactly 0 or 1 with positive probability:

    u ~ U(0, 1),   s = sigmoid((log u - log(1 - u) + log alpha_j) / beta),
    s_bar = s (zeta - gamma) + gamma,   z = min(1, max(0, s_bar))

(Louizos et al. 2018, eqs. 10-11). The expected number of open gates is differentiable,

    P(z_j != 0) = sigmoid(log alpha_j - beta log(-gamma / zeta))           (eq. 12)

so the weights and ``log alpha`` are trained jointly on ``CE + lambda sum_j P(z_j != 0)``
(:func:`fit_l0`). At test time the gate is deterministic,
``z_hat = min(1, max(0, sigmoid(log alpha)(zeta - gamma) + gamma))``; nodes with ``z_hat = 0``
are removed and the others' gates are folded into the next layer's weights (:func:`prune`),
which gives a plain, smaller ``nn.Sequential`` computing exactly the gated model.

Defaults follow the official code (github AMLab-Amsterdam/L0_regularization ``l0_layers.py``;
METHODS.md C): ``beta = 2/3``, ``gamma = -0.1``, ``zeta = 1.1``, ``log alpha ~ N(log(1 - r) -
log r, 0.01^2)`` with ``r = 0.5``, and ``log alpha`` clamped to ``[log 1e-2, log 1e2]`` after
every step. Unlike the code, which charges ``lambda`` per outgoing weight and divides by the
data size, the penalty here is ``lambda`` per expected open node added to the mean
cross-entropy; gates are sampled per example, as the code's ``L0Dense`` does.

References
----------
Louizos, Welling, Kingma (2018). Learning sparse neural networks through L0 regularization.
ICLR 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import checks, models, ops
from ..base.data import Dataset
from ..base.progress import track
from ..base.train import FitConfig

BETA = 2 / 3  # temperature of the hard concrete
GAMMA = -0.1  # stretch interval (gamma, zeta)
ZETA = 1.1
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # clamp after each step (official code)
_U_EPS = 1e-6  # u ~ U(eps, 1 - eps), as in the official code


# --- the hard-concrete gate ------------------------------------------------------------------


def init_log_alpha(
    H: int, *, generator: torch.Generator, r: float = 0.5, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``log alpha ~ N(log(1 - r) - log r, 0.01^2)``: ``[H]``; ``r`` is the initial drop rate."""
    if not 0 < r < 1:
        raise ValueError(f"init_log_alpha: r (initial drop rate) must be in (0, 1); got {r}")
    noise = torch.randn(H, generator=generator, dtype=torch.float64)
    return (math.log(1 - r) - math.log(r) + 0.01 * noise).to(dtype)


def sample_gates(
    log_alpha: Tensor,
    n: int,
    *,
    generator: torch.Generator,
    beta: float = BETA,
    gamma: float = GAMMA,
    zeta: float = ZETA,
) -> Tensor:
    """``n`` independent hard-concrete gates per node: ``log_alpha: [H] -> z: [n, H]``.

    Reparametrised (differentiable in ``log_alpha``); ``u`` comes from ``generator``.
    """
    u = torch.rand(
        (n, *log_alpha.shape), generator=generator, dtype=torch.float64, device=generator.device
    )
    u = u.to(log_alpha.device)
    u = (_U_EPS + (1 - 2 * _U_EPS) * u).to(log_alpha.dtype)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (zeta - gamma) + gamma).clamp(0, 1)


def prob_nonzero(
    log_alpha: Tensor, *, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA
) -> Tensor:
    """``P(z != 0) = sigmoid(log alpha - beta log(-gamma / zeta))`` (Louizos et al. 2018, eq. 12)."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def test_gates(log_alpha: Tensor, *, gamma: float = GAMMA, zeta: float = ZETA) -> Tensor:
    """Test-time gates ``z_hat = min(1, max(0, sigmoid(log alpha)(zeta - gamma) + gamma))``."""
    return (torch.sigmoid(log_alpha) * (zeta - gamma) + gamma).clamp(0, 1)


test_gates.__test__ = False  # not a pytest test despite the name


@dataclass(frozen=True, eq=False)
class Gates:
    """Learned gates of some hidden layers: ``log_alpha[l]: [H_l]`` for hidden-layer index ``l``."""

    log_alpha: dict[int, Tensor]
    beta: float = BETA
    gamma: float = GAMMA
    zeta: float = ZETA

    def test(self) -> dict[int, Tensor]:
        """Deterministic test-time gates per layer (:func:`test_gates`)."""
        return {
            layer: test_gates(la.detach(), gamma=self.gamma, zeta=self.zeta)
            for layer, la in self.log_alpha.items()
        }

    def prob_nonzero(self) -> dict[int, Tensor]:
        """``P(z != 0)`` per layer (:func:`prob_nonzero`)."""
        return {
            layer: prob_nonzero(la.detach(), beta=self.beta, gamma=self.gamma, zeta=self.zeta)
            for layer, la in self.log_alpha.items()
        }

    def expected_l0(self) -> float:
        """``sum_j P(z_j != 0)`` over every gated node."""
        return float(sum(p.sum() for p in self.prob_nonzero().values()))

    def open(self) -> int:
        """Number of nodes whose test-time gate is non-zero (the nodes :func:`prune` keeps)."""
        return int(sum((z > 0).sum() for z in self.test().values()))


@dataclass
class L0History:
    """Per-epoch curves of :func:`fit_l0`: mean cross-entropy and accuracy (with sampled gates)
    over the epoch's mini-batches, then the expected L0 and the open test-time gates at its end."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    expected_l0: list[float] = field(default_factory=list)
    open: list[int] = field(default_factory=list)


# --- models with gates -----------------------------------------------------------------------


def _check_gates(net: models.Net, gates: Gates, fn: str) -> None:
    for layer, la in gates.log_alpha.items():
        if not 0 <= layer < len(net.hidden):
            raise ValueError(
                f"{fn}: gates on hidden layer {layer}; the model has hidden layers "
                f"0..{len(net.hidden) - 1}"
            )
        if la.shape != (net.hidden[layer].width,):
            raise ValueError(
                f"{fn}: gates of hidden layer {layer} ({net.hidden[layer].name}) have shape "
                f"{list(la.shape)}; the layer has {net.hidden[layer].width} nodes"
            )


def gated_logits(model: nn.Sequential, gates: Gates, x: Tensor) -> Tensor:
    """Logits ``[N, C]`` of the model with its test-time gates (eval mode, no gradients)."""
    net = models.parse(model, method="l0.gated_logits")
    _check_gates(net, gates, "l0.gated_logits")
    x = net.check_x(x, "l0.gated_logits", convert=True)
    with torch.no_grad():
        return ops.forward(net.view, x, scales=gates.test(), training=False)


def fit_l0(
    model: nn.Sequential,
    train: Dataset,
    *,
    penalty: float,
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int | None = 32,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    r: float = 0.5,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    gate_lr: float | None = None,
    progress: bool = True,
) -> tuple[Gates, L0History]:
    """Train ``model`` (in place) and hard-concrete node gates on ``CE + penalty * E[L0]``.

    Every mini-batch samples one gate per example and node (:func:`sample_gates`), multiplies
    it in after the node's activation, and minimises the mean cross-entropy plus ``penalty *
    sum_j P(z_j != 0)``; ``log alpha`` is clamped to ``LOG_ALPHA_RANGE`` after every step.

    Parameters
    ----------
    model : nn.Sequential
        A supported MLP; its weights are trained in place.
    train : Dataset
        Training data.
    penalty : float
        ``lambda >= 0``, the price of one expected open node in units of mean cross-entropy.
    epochs, lr, batch_size, optimizer, weight_decay
        As in :func:`prunelab.train.fit`; weight decay does not apply to ``log alpha``.
    gate_lr : float, optional
        Learning rate of ``log alpha`` (default: ``lr``). Gates often want a larger rate than
        the weights, so that they can close within a short run.
    seed : int
        Seeds one generator for the gate initialisation, the shuffling and the gate noise
        ``u``, and (through a saved-and-restored global RNG) dropout.
    layers : sequence of int, optional
        Hidden-layer indices to gate (default: all hidden layers).
    r : float
        Initial drop rate: ``log alpha ~ N(log(1 - r) - log r, 0.01^2)``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    (Gates, L0History)
    """
    fn = "l0.fit_l0"
    config = FitConfig(epochs, lr, batch_size, optimizer, weight_decay, fn=fn)
    seed = checks.seed(seed, fn)
    checks.instance(train, Dataset, fn, "train", "a prunelab Dataset")
    net = models.parse(model, method=fn)
    if not penalty >= 0:
        raise ValueError(f"{fn}: penalty must be >= 0; got {penalty}")
    if gate_lr is not None and not gate_lr > 0:
        raise ValueError(f"{fn}: gate_lr must be > 0 (or None for lr); got {gate_lr}")
    layers = list(range(len(net.hidden))) if layers is None else [int(i) for i in layers]
    if (
        not layers
        or any(not 0 <= i < len(net.hidden) for i in layers)
        or len(set(layers)) < len(layers)
    ):
        raise ValueError(
            f"{fn}: layers must be distinct hidden-layer indices in [0, {len(net.hidden)}); "
            f"got {layers}"
        )
    W0 = net.layers[0].weight
    dtype = W0.dtype
    x, y = net.inputs(train.x).to(device=W0.device, dtype=dtype), train.y.to(W0.device)
    if x.shape[1] != net.in_features or train.classes > net.out_features:
        raise ValueError(
            f"{fn}: train {train.name!r} ({x.shape[1]} features, {train.classes} classes) does "
            f"not fit the model ({net.in_features} inputs, {net.out_features} outputs)"
        )
    g = torch.Generator().manual_seed(seed)
    log_alpha = {
        i: init_log_alpha(net.hidden[i].width, generator=g, r=r, dtype=dtype)
        .to(x.device)
        .requires_grad_()
        for i in layers
    }
    gates = Gates(log_alpha)
    groups = [{"params": list(model.parameters())}]
    groups.append(
        {"params": list(log_alpha.values()), "weight_decay": 0.0, "lr": gate_lr or config.lr}
    )
    opt = config.make_optimizer(groups)
    history = L0History()
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout; the caller's RNG state is restored on exit
        model.train()
        with track(config.epochs, "L0 training", enabled=progress) as advance:
            for _ in range(config.epochs):
                total_loss, total_correct = 0.0, 0
                for idx in config.batches(len(y), g) or [None]:
                    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                    z = {i: sample_gates(log_alpha[i], len(yb), generator=g) for i in layers}
                    logits = ops.forward(net.view, xb, scales=z)
                    ce = F.cross_entropy(logits, yb)
                    l0 = sum(prob_nonzero(la).sum() for la in log_alpha.values())
                    opt.zero_grad(set_to_none=True)
                    (ce + penalty * l0).backward()
                    opt.step()
                    with torch.no_grad():
                        for la in log_alpha.values():
                            la.clamp_(*LOG_ALPHA_RANGE)
                    total_loss += ce.item() * len(yb)
                    total_correct += int((logits.argmax(1) == yb).sum())
                history.loss.append(total_loss / len(y))
                history.accuracy.append(total_correct / len(y))
                history.expected_l0.append(gates.expected_l0())
                history.open.append(gates.open())
                advance(status=f"loss {history.loss[-1]:.4f} open {history.open[-1]}")
    model.train(was_training)
    detached = {i: la.detach().clone() for i, la in log_alpha.items()}
    return Gates(detached), history


def prune(model: nn.Sequential, gates: Gates) -> nn.Sequential:
    """Remove the nodes whose test-time gate is 0 and fold the others into the next layer.

    For gated hidden layer ``l`` with ``z_hat: [H_l]`` and ``keep = z_hat > 0``: the rows
    ``keep`` of ``W^l, b^l`` stay, and the next layer reads ``W^{l+1}[:, keep] * z_hat[keep]``,
    so the result computes the test-time gated model exactly (up to float rounding) as a plain
    ``nn.Sequential`` with smaller ``Linear`` layers. A layer whose gates are all 0 keeps zero
    nodes (the next layer then outputs its bias). The input model is untouched.
    """
    fn = "l0.prune"
    net = models.parse(model, method=fn)
    if len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError(f"{fn}: a Linear module appears twice in the model (shared weights)")
    _check_gates(net, gates, fn)
    z_hat = gates.test()
    remove = {layer: (z <= 0).nonzero().squeeze(1) for layer, z in z_hat.items()}
    return ops.remove_units(model, net.view, remove, scale=z_hat, method=fn)[0]
