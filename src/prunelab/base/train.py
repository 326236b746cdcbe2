"""Training and evaluation of one model: ``fit``, ``evaluate``, ``predict``.

``fit`` minimises the mean cross-entropy with Adam or SGD over seeded mini-batches, trains the
model in place (like scikit-learn's ``fit``) and is bitwise reproducible on CPU for a given
seed. Many seeds of one MLP at once: :func:`prunelab.ensemble.fit_many`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checks, ops
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
    fn: str = field(default="train.fit", compare=False)  # the public function, for errors

    def __post_init__(self) -> None:
        fn = self.fn
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"{fn}: optimizer {self.optimizer!r}: choose from {sorted(OPTIMIZERS)}"
            )
        checks.integer(self.epochs, fn, "epochs", minimum=1)
        checks.real(self.lr, fn, "lr", low=0.0, open_low=True)
        if self.batch_size is not None:
            checks.integer(self.batch_size, fn, "batch_size (an int >= 1 or None)", minimum=1)
        checks.real(self.weight_decay, fn, "weight_decay", low=0.0)
        checks.real(self.momentum, fn, "momentum", low=0.0)

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


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block; every module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _check_data(model: nn.Module, view: ops.View, data: Dataset, what: str, fn: str) -> None:
    """Raise unless ``data`` fits the model: a non-empty Dataset with the model's input features
    or channels and at most its classes."""
    checks.instance(
        data, Dataset, fn, what, "a prunelab Dataset (wrap tensors as data.Dataset(x, y))"
    )
    if len(data) == 0:
        raise ValueError(f"{fn}: {what} {data.name!r} holds no samples; give at least one")
    first = view.layers[0]
    shape = tuple(data.x.shape[1:])
    if first.conv and view.ops[0] is first:
        if len(shape) != 3 or shape[0] != first.in_units:
            raise ValueError(
                f"{fn}: {what} {data.name!r} has samples of shape {list(shape)} but the model's first "
                f"Conv2d takes images [{first.in_units}, H, W]"
            )
    elif view.ops[0] is first and math.prod(shape) != first.in_units:
        raise ValueError(
            f"{fn}: {what} {data.name!r} has {math.prod(shape)} input features but the model expects "
            f"{first.in_units}"
        )
    if data.classes > view.out_features:
        raise ValueError(
            f"{fn}: {what} {data.name!r} has {data.classes} classes but the model has "
            f"{view.out_features} outputs"
        )
    try:  # one sample through the model: spatial sizes that do not fit fail here, not deep in
        with torch.no_grad(), _eval_mode(model):  # no dropout draw, no BatchNorm update
            ops.forward(view, data.x[:1].to(device=view.device, dtype=view.dtype))
    except RuntimeError as e:
        raise ValueError(
            f"{fn}: {what} {data.name!r} (samples of shape {list(shape)}) does not fit the model: {e}"
        ) from None


def _scales(view: ops.View, node_masks: Tensor | None) -> dict[int, Tensor]:
    """Split a unit mask ``[H]`` into per-hidden-layer blocks ``{l: [H_l]}``."""
    if node_masks is None:
        return {}
    sizes = view.hidden_sizes
    if node_masks.shape != (sum(sizes),):
        raise ValueError(
            f"node_masks must have shape [{sum(sizes)}] (hidden sizes {sizes}); "
            f"got {list(node_masks.shape)}"
        )
    blocks = node_masks.to(device=view.device, dtype=view.dtype).split(sizes)
    return dict(enumerate(blocks))


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
    """Class probabilities ``softmax(model(x))``: ``[N, *in] -> [N, C]`` (eval mode, no
    gradients), on the model's device. The model's train/eval mode is restored."""
    view = ops.parse(model, method="train.predict")
    x = view.check_x(x, "train.predict", convert=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = _batched(view, x, {})
            return torch.softmax(logits, dim=-1)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, data: Dataset, *, node_masks: Tensor | None = None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (eval mode, no gradients).

    Returns ``{"loss": float, "accuracy": float}``. Runs on the model's device; the model's
    train/eval mode is restored.
    """
    view = ops.parse(model, method="train.evaluate")
    _check_data(model, view, data, "data", "train.evaluate")
    scales = _scales(view, node_masks)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = data.x.to(device=view.device, dtype=view.dtype)
            y = data.y.to(view.device)
            logits = _batched(view, x, scales)
            loss = F.cross_entropy(logits, y).item()
            accuracy = (logits.argmax(1) == y).double().mean().item()
    finally:
        model.train(was_training)
    return {"loss": loss, "accuracy": accuracy}


EVAL_BATCH = 2048  # samples per forward in evaluate/predict: bounds a convnet's activations


def _batched(view: ops.View, x: Tensor, scales: dict[int, Tensor]) -> Tensor:
    """``ops.forward`` over ``x`` in batches of ``EVAL_BATCH`` (one batch if it fits)."""
    if len(x) <= EVAL_BATCH:
        return ops.forward(view, x, scales=scales)
    return torch.cat([ops.forward(view, xb, scales=scales) for xb in x.split(EVAL_BATCH)])


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
        A model the op view takes (:func:`prunelab.ops.parse`): an MLP or a convnet; trained
        in place.
    train : Dataset
        Training data; reshuffled each epoch by a generator seeded with ``seed``.
    epochs, lr, batch_size, optimizer, weight_decay, momentum
        The usual; ``batch_size=None`` trains full-batch. ``optimizer`` in ``OPTIMIZERS``.
    seed : int
        Seeds the shuffling and dropout. The global RNG is saved and restored, so the same
        seed gives bitwise the same weights on CPU and the caller's RNG stream is untouched.
    weight_masks : dict of str to Tensor, optional
        Fixed 0/1 masks by parameter name (``surgery.prune_weights``; a conv weight's mask is
        shaped ``[C_out, C_in, k_h, k_w]`` like it): masked weights are zeroed before training
        and stay exactly zero (their gradients are zeroed and the mask is re-applied after
        every step).
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
    seed = checks.seed(seed, "train.fit")
    view = ops.parse(model, method="train.fit")
    _check_data(model, view, train, "train", "train.fit")
    if test is not None:
        _check_data(model, view, test, "test", "train.fit")
    scales = _scales(view, node_masks)
    wmasks = _check_weight_masks(model, weight_masks or {})
    params = dict(model.named_parameters())
    x, y = train.x.to(device=view.device, dtype=view.dtype), train.y.to(view.device)
    norms = any(layer.norm is not None for layer in view.layers)
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
                if batches and len(batches) > 1 and len(batches[-1]) == 1 and norms:
                    # BatchNorm cannot normalise one sample: it joins the batch before
                    batches[-2:] = [torch.cat(batches[-2:])]
                total_loss, total_correct, total_penalty = 0.0, 0, 0.0
                for idx in batches or [None]:
                    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                    logits = ops.forward(view, xb, scales=scales)
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
