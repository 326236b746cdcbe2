"""Training and evaluation: ``fit`` for one model, ``fit_many`` for K seeds at once.

Both minimise the mean cross-entropy with Adam or SGD over seeded mini-batches. ``fit`` trains
the model in place (like scikit-learn's ``fit``) and is bitwise reproducible on CPU for a given
seed; ``fit_many`` trains K models of one architecture together with stacked weights ``[K, ...]``
and batched matrix products, and matches K separate ``fit`` calls to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import models, stacked
from .data import Dataset
from .progress import track

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class History:
    """Per-epoch training curves. ``loss``/``accuracy`` are running means over the epoch's
    mini-batches (as Keras reports them); ``test_*`` are measured at the end of each epoch when a
    test set is given."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)  # epoch means of fit's penalty term


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters shared by :func:`fit` and :func:`fit_many`."""

    epochs: int = 20
    lr: float = 0.01
    batch_size: int | None = 32  # None: full batch
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD only

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose from {sorted(OPTIMIZERS)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0; got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer or None; got {self.batch_size}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        kwargs: dict = dict(lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            kwargs["momentum"] = self.momentum
        return OPTIMIZERS[self.optimizer](params, **kwargs)

    def batches(self, n: int, generator: torch.Generator) -> list[Tensor] | None:
        """One epoch of shuffled index batches, or None for a full (unshuffled) batch."""
        if self.batch_size is None or self.batch_size >= n:
            return None
        return list(torch.randperm(n, generator=generator).split(self.batch_size))


def _check_data(model: nn.Module, net: models.Net, data: Dataset, what: str) -> None:
    d = data.x.flatten(1).shape[1] if net.flatten else data.x.shape[-1]
    if d != net.in_features:
        raise ValueError(
            f"{what} {data.name!r} has {d} input features but the model expects {net.in_features}"
        )
    if data.classes > net.out_features:
        raise ValueError(
            f"{what} {data.name!r} has {data.classes} classes but the model has "
            f"{net.out_features} outputs"
        )


def _node_mask_blocks(net: models.Net, node_masks: Tensor | None) -> dict[int, Tensor]:
    """Split a node mask ``[H]`` into per-layer blocks keyed by the layer group's last position."""
    if node_masks is None:
        return {}
    sizes = net.hidden_sizes
    if node_masks.shape != (sum(sizes),):
        raise ValueError(
            f"node_masks must have shape [{sum(sizes)}] (hidden sizes {sizes}); "
            f"got {list(node_masks.shape)}"
        )
    blocks = node_masks.split(sizes)
    return {layer.end: block for layer, block in zip(net.hidden, blocks, strict=True)}


def _check_weight_masks(model: nn.Module, weight_masks: Mapping[str, Tensor]) -> dict:
    params = dict(model.named_parameters())
    out = {}
    for name, mask in weight_masks.items():
        if name not in params:
            raise KeyError(f"weight_masks: no parameter {name!r}; parameters are {list(params)}")
        if mask.shape != params[name].shape:
            raise ValueError(
                f"weight_masks[{name!r}] has shape {list(mask.shape)}; the parameter has "
                f"{list(params[name].shape)}"
            )
        out[name] = (mask != 0).to(params[name].dtype)
    return out


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities ``softmax(model(x))``: ``[N, D] -> [N, C]`` (eval mode, no gradients).

    The model's train/eval mode is restored.
    """
    net = models.parse(model, method="train.predict")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.softmax(model(x.to(net.layers[0].weight.dtype)), dim=-1)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, data: Dataset, *, node_masks: Tensor | None = None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (eval mode, no gradients).

    Returns ``{"loss": float, "accuracy": float}``. The model's train/eval mode is restored.
    """
    net = models.parse(model, method="train.evaluate")
    _check_data(model, net, data, "data")
    masks = _node_mask_blocks(net, node_masks)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = models.scaled_forward(model, data.x.to(net.layers[0].weight.dtype), masks)
            loss = F.cross_entropy(logits, data.y).item()
            accuracy = (logits.argmax(1) == data.y).double().mean().item()
    finally:
        model.train(was_training)
    return {"loss": loss, "accuracy": accuracy}


def fit(
    model: nn.Sequential,
    train: Dataset,
    *,
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int | None = 32,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    seed: int = 0,
    weight_masks: Mapping[str, Tensor] | None = None,
    node_masks: Tensor | None = None,
    test: Dataset | None = None,
    penalty: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    penalty_weight: float = 1.0,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on ``train`` by mini-batch cross-entropy minimisation.

    Parameters
    ----------
    model : nn.Sequential
        A supported MLP (see :mod:`prunelab.models`); trained in place.
    train : Dataset
        Training data; reshuffled each epoch by a generator seeded with ``seed``.
    epochs, lr, batch_size, optimizer, weight_decay, momentum
        The usual; ``batch_size=None`` trains full-batch. ``optimizer`` in ``OPTIMIZERS``.
    seed : int
        Seeds the shuffling and dropout. The global RNG is saved and restored, so the same
        seed gives bitwise the same weights on CPU and the caller's RNG stream is untouched.
    weight_masks : dict of str to Tensor, optional
        Fixed 0/1 masks by parameter name: masked weights are zeroed before training and stay
        exactly zero (their gradients are zeroed and the mask is re-applied after every step).
    node_masks : Tensor [H], optional
        Fixed node mask over all hidden nodes, multiplied in after each hidden activation.
    test : Dataset, optional
        Evaluated after every epoch into ``History.test_loss`` / ``test_accuracy``.
    penalty : callable, optional
        ``penalty(model, xb, yb) -> scalar``: a term added to each mini-batch loss as
        ``penalty_weight * term`` (with ``penalty_weight = 0`` it is only measured, without
        gradients, and the weights are bitwise those of a plain fit). Its epoch means go to
        ``History.penalty``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    History
    """
    config = FitConfig(epochs, lr, batch_size, optimizer, weight_decay, momentum)
    net = models.parse(model, method="train.fit")
    _check_data(model, net, train, "train")
    masks = _node_mask_blocks(net, node_masks)
    wmasks = _check_weight_masks(model, weight_masks or {})
    params = dict(model.named_parameters())
    dtype = net.layers[0].weight.dtype
    x, y = train.x.to(dtype), train.y
    history = History()
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout draws; the caller's RNG state is restored on exit
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, mask in wmasks.items():
                params[name].mul_(mask)
        opt = config.make_optimizer(list(model.parameters()))
        model.train()
        with track(config.epochs, "training", enabled=progress) as advance:
            for _ in range(config.epochs):
                batches = config.batches(len(y), g)
                total_loss, total_correct, total_penalty = 0.0, 0, 0.0
                for idx in batches or [None]:
                    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                    logits = models.scaled_forward(model, xb, masks)
                    loss = F.cross_entropy(logits, yb)
                    total = loss
                    if penalty is not None:
                        if penalty_weight > 0:
                            term = penalty(model, xb, yb)
                            total = loss + penalty_weight * term
                        else:
                            with torch.no_grad():
                                term = penalty(model, xb, yb)
                        total_penalty += term.item() * len(yb)
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    with torch.no_grad():
                        for name, mask in wmasks.items():
                            params[name].grad.mul_(mask)
                        opt.step()
                        for name, mask in wmasks.items():
                            params[name].mul_(mask)
                    total_loss += loss.item() * len(yb)
                    total_correct += (logits.argmax(1) == yb).sum().item()
                history.loss.append(total_loss / len(y))
                history.accuracy.append(total_correct / len(y))
                if penalty is not None:
                    history.penalty.append(total_penalty / len(y))
                if test is not None:
                    scores = evaluate(model, test, node_masks=node_masks)
                    model.train()
                    history.test_loss.append(scores["loss"])
                    history.test_accuracy.append(scores["accuracy"])
                advance(status=f"loss {history.loss[-1]:.4f}")
    model.train(was_training)
    return history


# --- many seeds at once ------------------------------------------------------------------------


def fit_many(
    models_: Sequence[nn.Sequential],
    train: Dataset,
    *,
    seeds: Sequence[int],
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int | None = 32,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    weight_masks: Mapping[str, Tensor] | None = None,
    node_masks: Tensor | None = None,
    progress: bool = True,
) -> list[History]:
    """Train K models of one architecture together, in place, with batched weights.

    Equivalent to ``[fit(m, train, seed=s, ...) for m, s in zip(models_, seeds)]``: each model
    gets its own shuffling from ``seeds[k]``, the loss is the sum of the K mean cross-entropies
    (so each model's gradient is its own), and Adam/SGD act elementwise on the stacked weights
    ``[K, ...]``. Results agree with separate fits to float rounding (about 1e-6) for models
    without dropout; with dropout the runs are statistically, not bitwise, equivalent (masks
    come from one generator seeded by ``seeds[0]``).

    The batched GEMMs sum in a different order from the per-model ones, so the two runs differ
    by rounding at every step. That stays at rounding size unless a training point comes
    within rounding distance of a ReLU kink (``|z| ~ 1e-7``): it then lands on different
    sides in the two runs, the gradients differ by a finite amount, and the two (equally
    valid) trajectories separate, by 1e-3 to 1e-2 after a few hundred Adam steps. For 2-20-2
    circle nets and 200 full-batch steps this happened to a few of 64 seeds (none of 0-31).

    Parameters
    ----------
    models_ : sequence of nn.Sequential
        K models with identical architecture (e.g. ``[mlp(w, seed=s) for s in seeds]``).
    seeds : sequence of int
        One shuffling seed per model.
    weight_masks : dict of str to Tensor, optional
        Masks shaped like each parameter (shared) or ``[K, *shape]`` (per model).
    node_masks : Tensor [H] or [K, H], optional
        Node masks over all hidden nodes, shared or per model.

    Returns
    -------
    list of History, one per model.
    """
    config = FitConfig(epochs, lr, batch_size, optimizer, weight_decay, momentum)
    K = len(models_)
    if K == 0 or len(seeds) != K:
        raise ValueError(
            f"fit_many needs one seed per model; got {K} models and {len(seeds)} seeds"
        )
    nets = [models.parse(m, method="train.fit_many") for m in models_]
    specs = [models.spec(m) for m in models_]
    if any(s != specs[0] for s in specs):
        raise ValueError("fit_many: all models must have the same architecture (models.spec)")
    net = nets[0]
    if len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError("fit_many: a Linear module is used twice (shared weights); use fit")
    _check_data(models_[0], net, train, "train")
    dtype = net.layers[0].weight.dtype
    x, y = train.x.to(dtype), train.y
    N = len(y)

    # Stacked parameters [K, ...] in layer order; gradients come from stacked.backward.
    Ws = [
        torch.stack([n.layers[i].weight.detach() for n in nets]).clone()
        for i in range(len(net.layers))
    ]
    bs = [
        None
        if layer.bias is None
        else torch.stack([n.layers[i].bias.detach() for n in nets]).clone()
        for i, layer in enumerate(net.layers)
    ]
    leaves = {f"{layer.name}.weight": W for layer, W in zip(net.layers, Ws, strict=True)}
    leaves |= {
        f"{layer.name}.bias": b for layer, b in zip(net.layers, bs, strict=True) if b is not None
    }
    wmasks = {}
    for name, mask in (weight_masks or {}).items():
        if name not in leaves:
            raise KeyError(f"weight_masks: no parameter {name!r}; parameters are {list(leaves)}")
        wmasks[name] = (mask != 0).to(dtype).expand_as(leaves[name])
    nmasks = None
    if node_masks is not None:
        H = sum(net.hidden_sizes)
        if node_masks.shape not in ((H,), (K, H)):
            raise ValueError(
                f"node_masks must be [{H}] or [{K}, {H}]; got {list(node_masks.shape)}"
            )
        nm = node_masks.to(dtype).reshape(-1, H)
        nmasks = [m.unsqueeze(2) for m in nm.split(net.hidden_sizes, dim=1)]  # (K|1, H_l, 1)

    params = [p for p in Ws + bs if p is not None]
    with torch.no_grad():
        for name, mask in wmasks.items():
            leaves[name].mul_(mask)
    opt = config.make_optimizer(params)  # fit's optimizer code: the same update arithmetic
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    has_dropout = net.input_dropout > 0 or any(
        layer.dropout + layer.dropout_pre > 0 for layer in net.layers
    )
    dropout_gen = torch.Generator().manual_seed(int(seeds[0])) if has_dropout else None
    xT = net.inputs(x).T.contiguous()  # (D, N): points last
    histories = [History() for _ in range(K)]
    workspace = stacked.Workspace()  # the step's [K, H, B] tensors, allocated once
    with track(config.epochs, f"training {K} models", enabled=progress) as advance:
        for _ in range(config.epochs):
            epoch = [config.batches(N, g) for g in gens]
            n_batches = 1 if epoch[0] is None else len(epoch[0])
            total_loss = torch.zeros(K, dtype=torch.float64)
            total_correct = torch.zeros(K, dtype=torch.float64)
            for j in range(n_batches):
                if epoch[0] is None:
                    xb, yb = xT, y
                else:
                    idx = torch.stack([e[j] for e in epoch])  # (K, B)
                    xb = xT[:, idx].permute(1, 0, 2).contiguous()  # (K, D, B)
                    yb = y[idx]
                logits, cache = stacked.forward(net, Ws, bs, xb, nmasks, dropout_gen, workspace)
                loss, correct, delta = stacked.cross_entropy(logits, yb)  # (K,), (K,), (K, C, B)
                dWs, dbs = stacked.backward(net, Ws, bs, cache, delta, workspace)
                for p, g in zip(Ws + bs, dWs + dbs, strict=True):
                    if p is not None:
                        p.grad = g
                for name, mask in wmasks.items():
                    leaves[name].grad.mul_(mask)
                opt.step()
                with torch.no_grad():
                    for name, mask in wmasks.items():
                        leaves[name].mul_(mask)
                B = yb.shape[-1]
                total_loss += loss.double() * B
                total_correct += correct.double()
            for h, loss_k, correct_k in zip(
                histories, (total_loss / N).tolist(), (total_correct / N).tolist(), strict=True
            ):
                h.loss.append(loss_k)
                h.accuracy.append(correct_k)
            advance(status=f"mean loss {total_loss.mean().item() / N:.4f}")
    with torch.no_grad():
        for k, n in enumerate(nets):
            for layer, W, b in zip(n.layers, Ws, bs, strict=True):
                layer.weight.copy_(W[k])
                if b is not None:
                    layer.bias.copy_(b[k])
    return histories
