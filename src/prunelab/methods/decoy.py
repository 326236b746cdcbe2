"""The decoy task: a corner patch whose brightness gives the label away in training only.

The dogs-on-grass story of the "blame the bias" source (Hobson, part 2), made small: every
training image gets a square patch in one corner, filled with the brightness that encodes its
label, ``level(k) = (k + 1) / C`` (so no class gets a black patch, which gradient x input would
call irrelevant for free). At test time the patch is random, so a network that learned the patch
instead of the digit fails. Four test versions of the same images tell what a network uses:

* ``test``: patch brightness uniform on [0, 1] (the task's test distribution);
* ``test_true``: patch encoding the true label (the training distribution);
* ``test_swapped``: patch encoding another label, ``(y + k) mod C`` with k uniform on 1..C-1;
* ``test_clean``: the images without any patch.

Two scores measure the dependence on the patch by behaviour alone, whatever an explanation
method says: the *changed* rate, the share of test images whose prediction differs between
``test_true`` and ``test_swapped`` (only the patch differs; 0 for a network that ignores it), and
the *follow rate*, the share of ``test_swapped`` predictions that name the patch's label (1 for a
network that reads only the patch; a network that weighs the patch against the digit may change
its mind without following the patch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..base import checks, ops, train
from ..base.data import Dataset, Split
from . import alignment

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")


def patch_region(side: int, size: int, corner: str = "top_left") -> Tensor:
    """The pixels of a ``size x size`` patch in a corner (or the centre, over a digit's strokes,
    where cutting the patch off costs information) of a row-major ``side x side`` image.

    Returns
    -------
    Tensor[side * side] of bool, True on the patch.
    """
    if corner not in CORNERS:
        raise ValueError(f"patch_region: corner {corner!r}; choose from {list(CORNERS)}")
    if not 1 <= size <= side:
        raise ValueError(f"patch_region: size must be in 1..side = 1..{side}; got {size}")
    region = torch.zeros(side, side, dtype=torch.bool)
    rows = slice(0, size) if corner.startswith("top") else slice(side - size, side)
    cols = slice(0, size) if corner.endswith("left") else slice(side - size, side)
    if corner == "centre":
        rows = cols = slice((side - size) // 2, (side - size) // 2 + size)
    region[rows, cols] = True
    return region.reshape(-1)  # [D]


def level(y: Tensor, classes: int) -> Tensor:
    """Patch brightness that encodes label k: (k + 1) / C, in (0, 1]. y: [N] -> [N] float32."""
    return (y.to(torch.float32) + 1) / classes


def level_class(v: Tensor, classes: int) -> Tensor:
    """The label whose level is nearest to brightness v: clamp(round(v C) - 1, 0, C - 1)."""
    return (torch.round(v * classes) - 1).clamp(0, classes - 1).long()


def with_patch(x: Tensor, region: Tensor, value: Tensor | float) -> Tensor:
    """A copy of ``x`` [N, D] (or images [N, C, H, W], ``region`` over their D = C H W
    row-major features) with the ``region`` pixels of sample n set to ``value[n]``."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(len(x))  # [N]
    flat = x.flatten(1)  # [N, D]
    return torch.where(region.to(x.device), value[:, None], flat).reshape(x.shape)


@dataclass(frozen=True, eq=False)
class DecoyTask:
    """A decoy split (see the module docstring); ``swapped_to`` [N] are the labels the patches
    of ``test_swapped`` encode, and ``train_random`` is the training set with random patches
    (no shortcut: the reference a penalty should approach)."""

    train: Dataset
    train_random: Dataset
    test: Dataset
    test_true: Dataset
    test_swapped: Dataset
    test_clean: Dataset
    swapped_to: Tensor
    region: Tensor
    dev: Dataset | None = None  # held-out training images with random patches (decoy_task dev)

    @property
    def classes(self) -> int:
        return self.train.classes


def decoy_task(split: Split, region: Tensor, *, seed: int, dev: int = 0) -> DecoyTask:
    """Build the decoy task from a split of images ``x`` [N, D] in [0, 1].

    With ``dev > 0``, ``dev`` training images drawn at random (seeded) are held out of
    ``train`` and ``train_random`` as ``DecoyTask.dev``, with random patches like ``test``:
    choices (a penalty weight) are made there, never on the test images.

    Parameters
    ----------
    split : Split
        Train and test images and labels; the images keep their shape ([N, D] or
        [N, C, H, W], so that an MLP or a convnet reads them), ``region`` indexes their D
        row-major features.
    region : Tensor[D] of bool
        The patch (e.g. :func:`patch_region`).
    seed : int
        Seeds the random patches and the swapped labels.
    """
    x, xt = split.train.x, split.test.x
    D = x.flatten(1).shape[1]
    if region.dtype != torch.bool or region.shape != (D,):
        raise ValueError(
            f"decoy_task: region must be a bool Tensor of shape [D] = [{D}]; got "
            f"{region.dtype} {tuple(region.shape)}"
        )
    if not region.any():
        raise ValueError("decoy_task: region is empty")
    if not 0 <= dev < len(split.train):
        raise ValueError(f"decoy_task: dev must be in 0..{len(split.train) - 1}; got {dev}")
    C, g = split.classes, torch.Generator().manual_seed(checks.seed(seed, "decoy_task"))
    held = None
    if dev:  # a generator of its own: dev = 0 keeps the draws below as they were
        order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))
        order = order.to(x.device)
        held, x = (x[order[:dev]], split.train.y[order[:dev]]), x[order[dev:]]
        y = split.train.y[order[dev:]]
    else:
        y = split.train.y
    yt = split.test.y
    shift = torch.randint(1, C, yt.shape, generator=g)  # [N_test] in 1..C-1
    swapped_to = (yt + shift.to(yt.device)) % C
    name = split.train.name

    def data(images: Tensor, labels: Tensor, value: Tensor, what: str) -> Dataset:
        return Dataset(with_patch(images, region, value), labels, f"{name} ({what})", C)

    return DecoyTask(
        train=data(x, y, level(y, C), "patch = label"),
        train_random=data(x, y, torch.rand(len(y), generator=g), "random patch"),
        test=data(xt, yt, torch.rand(len(yt), generator=g), "random patch"),
        test_true=data(xt, yt, level(yt, C), "patch = label"),
        test_swapped=data(xt, yt, level(swapped_to, C), "patch = another label"),
        test_clean=Dataset(xt, yt, f"{name} (no patch)", C),
        swapped_to=swapped_to,
        region=region,
        dev=None
        if held is None
        else data(*held, torch.rand(dev, generator=g), "dev, random patch"),
    )


def follow_rate(model: nn.Module, x: Tensor, patch_labels: Tensor) -> float:
    """Share of the predictions on ``x`` [N, D] that equal ``patch_labels`` [N]."""
    prediction = train.predict(model, x).argmax(1)
    return (prediction == patch_labels).double().mean().item()


def changed_rate(model: nn.Module, x: Tensor, x_other: Tensor) -> float:
    """Share of samples whose predicted class differs between ``x`` and ``x_other`` [N, D]."""
    a, b = train.predict(model, x).argmax(1), train.predict(model, x_other).argmax(1)
    return (a != b).double().mean().item()


def scores(model: nn.Module, task: DecoyTask) -> dict[str, float]:
    """Accuracies on every test version, the changed rate and the follow rate (module doc)."""
    return {
        "changed": changed_rate(model, task.test_true.x, task.test_swapped.x),
        "accuracy": train.evaluate(model, task.test)["accuracy"],
        "accuracy_true": train.evaluate(model, task.test_true)["accuracy"],
        "accuracy_swapped": train.evaluate(model, task.test_swapped)["accuracy"],
        "accuracy_clean": train.evaluate(model, task.test_clean)["accuracy"],
        "follow_rate": follow_rate(model, task.test_swapped.x, task.swapped_to),
    }


def select(dev_accuracy: Tensor) -> int:
    """The arm with the highest mean dev accuracy over seeds (the first on a tie).
    dev_accuracy: [A arms, S seeds] -> index into A."""
    if dev_accuracy.dim() != 2 or 0 in dev_accuracy.shape:
        raise ValueError(
            f"decoy.select: dev_accuracy must be [A, S]; got {tuple(dev_accuracy.shape)}"
        )
    return int(dev_accuracy.double().mean(1).argmax())


def patch_weight_ratio(model: nn.Module, region: Tensor) -> float:
    """Mean norm of the first Linear's weight columns that read ``region`` over that of the
    other columns: ||W[:, i]|| averaged over i in the region, divided by the same over i not in
    it. Near 0 when the network has cut the patch off at its input.

    Raises
    ------
    ValueError
        If the first layer is a Conv2d: it applies one kernel at every position, so no weight
        reads the patch alone and the network cannot cut the patch off at its input (the
        columns of the unrolled convolution differ only at the image's border). The ratio is
        not defined there.
    """
    first = ops.parse(model, method="decoy.patch_weight_ratio").layers[0]
    if first.conv:
        raise ValueError(
            f"decoy.patch_weight_ratio: the first layer ({first.name}) is a Conv2d, which "
            "shares its weights over positions; the ratio is defined for a first Linear layer"
        )
    W = first.module.weight.detach()  # [H, D]
    norms = W.norm(dim=0)  # [D]
    return (norms[region].mean() / norms[~region].mean()).item()


@dataclass
class Sweep:
    """Behaviour and relevance as the patch brightness ``values`` [V] sweeps over [0, 1].

    ``accuracy[v]``: accuracy on the true labels; ``follow[v]``: share of predictions naming
    ``level_class(v)``; ``share[v]``: mean share of |relevance| on the patch
    (:func:`prunelab.alignment.relevance_share`, predicted class).
    """

    values: Tensor
    accuracy: Tensor
    follow: Tensor
    share: Tensor


def sweep(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    region: Tensor,
    *,
    values: Tensor,
    method: str,
    classes: int,
) -> Sweep:
    """Set the patch of every image in ``x`` [N, D] (labels ``y`` [N]) to each brightness of
    ``values`` [V] in turn.

    A network that ignores the patch has flat curves. A gaming one has an accuracy that moves
    with the brightness while its relevance share on the patch stays low: its output depends on
    the patch while the explanation says it does not.
    """
    accuracy, follow, share = [], [], []
    for v in values.tolist():
        xv = with_patch(x, region, v)
        prediction = train.predict(model, xv).argmax(1)
        accuracy.append((prediction == y).double().mean().item())
        patch_labels = level_class(torch.full((len(x),), v, device=x.device), classes)
        follow.append(follow_rate(model, xv, patch_labels))
        with torch.no_grad():
            share.append(alignment.relevance_share(model, xv, region, method=method).mean().item())
    return Sweep(values, torch.tensor(accuracy), torch.tensor(follow), torch.tensor(share))


def levels(classes: int) -> Tensor:
    """The C training brightness levels [C]."""
    return level(torch.arange(classes), classes)


def sweep_values(classes: int, per_level: int = 4) -> Tensor:
    """A grid over [0, 1] with ``per_level`` steps between neighbouring levels (levels on it).

    An odd ``per_level`` keeps the midpoints between levels, where the nearest level is a tie,
    off the grid.
    """
    return torch.linspace(0, 1, classes * per_level + 1)
