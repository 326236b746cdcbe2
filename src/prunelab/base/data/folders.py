"""Full-size image sets read from a folder the user already has: MNIST, Fashion-MNIST, CIFAR.

prunelab never downloads them. Each loader takes ``root``, the folder holding the official
files or one level above the usual unpacked subfolder, and returns the official train/test
split in file order, as images ``x: [N, C, H, W]`` float32 in [0, 1] (``pixel / 255``) and
labels ``y: [N]`` int64.

``mnist``, ``fashion_mnist``
    The four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not, in
    ``root`` or ``root/MNIST/raw`` (``root/FashionMNIST/raw``), where torchvision keeps them.
    Images ``[N, 1, 28, 28]``, 60,000 / 10,000, labels 0..9 (LeCun et al. 1998; Xiao, Rasul &
    Vollgraf 2017).
``cifar10``
    The binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` in
    ``root`` or ``root/cifar-10-batches-bin``; each record is 1 label byte (0..9) then 3072
    pixel bytes, the 1024 red, 1024 green and 1024 blue values of a row-major 32x32 image.
    Images ``[N, 3, 32, 32]``, 50,000 / 10,000 (Krizhevsky 2009).
``cifar100``
    The binary version: ``train.bin`` and ``test.bin`` in ``root`` or ``root/cifar-100-binary``;
    each record is 2 label bytes, coarse (0..19) then fine (0..99), then 3072 pixel bytes as in
    CIFAR-10. ``y`` is the fine label (100 classes). 50,000 / 10,000.

``n_train`` / ``n_test`` keep a seeded random subset of each part (still in file order), train
and test drawn from two independent streams spawned from ``seed``.

References
----------
Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11) (1998); the IDX format is described at
http://yann.lecun.com/exdb/mnist/.
H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST", arXiv:1708.07747 (2017).
A. Krizhevsky, "Learning multiple layers of features from tiny images", tech. report (2009);
the binary format is described at https://www.cs.toronto.edu/~kriz/cifar.html.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dataset import Dataset, Seed, Split, _check_size, _generator, _spawn
from .readers import _read_idx

Root = str | os.PathLike

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_PIXELS = 3 * 32 * 32  # bytes per CIFAR image: 1024 red, 1024 green, 1024 blue

# name: (files, subfolders of root also searched, whether each file may be gzipped)
_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "mnist": (_IDX_FILES, ("MNIST/raw",), True),
    "fashion_mnist": (_IDX_FILES, ("FashionMNIST/raw",), True),
    "cifar10": ((*_CIFAR10_TRAIN, "test_batch.bin"), ("cifar-10-batches-bin",), False),
    "cifar100": (("train.bin", "test.bin"), ("cifar-100-binary",), False),
}


def _expected(name: str) -> str:
    """Where set ``name`` is looked for, in words: its files and the folders searched."""
    files, subfolders, gz = _LAYOUTS[name]
    shown = ", ".join(f + "[.gz]" if gz else f for f in files)
    return f"{shown} in DIR or " + " or ".join(f"DIR/{s}" for s in subfolders)


# ---------------------------------------------------------------------------------------------
# finding the files


def _find(name: str, root: Root) -> list[Path]:
    """The paths of set ``name``'s files, all from the first searched folder that holds them all.

    A plain file is preferred to its ``.gz`` twin (torchvision keeps both).

    Raises
    ------
    TypeError
        If ``root`` is not a str or PathLike.
    FileNotFoundError
        Naming every expected file, the folders searched and which files the best folder lacks.
    """
    if isinstance(root, bytes) or not isinstance(root, str | os.PathLike):
        raise TypeError(f"{name}: root must be a str or PathLike folder; got {root!r}")
    files, subfolders, gz = _LAYOUTS[name]
    root = Path(root)
    folders = [root, *(root / s for s in subfolders)]
    best: tuple[Path, dict[str, Path]] | None = None
    for folder in folders:
        found = {}
        for file in files:
            for candidate in (file, file + ".gz") if gz else (file,):
                if (folder / candidate).is_file():
                    found[file] = folder / candidate
                    break
        if len(found) == len(files):
            return [found[f] for f in files]
        if found and (best is None or len(found) > len(best[1])):
            best = (folder, found)
    names = [f + "[.gz]" if gz else f for f in files]
    if not root.is_dir():
        detail = f"the folder {str(root)!r} does not exist"
    elif best is None:
        detail = "none of these folders holds any of them"
    else:
        folder, found = best
        lacks = [n for f, n in zip(files, names, strict=True) if f not in found]
        detail = f"{str(folder)!r} holds {len(found)} of them but lacks {lacks}"
    raise FileNotFoundError(
        f"{name}: expected the files {names} together in one of the folders "
        f"{[str(f) for f in folders]}; {detail}. prunelab reads {name!r} from a folder you "
        "already have and never downloads it"
    )


# ---------------------------------------------------------------------------------------------
# decoding


def _pixels(u8: np.ndarray) -> Tensor:
    """uint8 pixels -> float32 ``pixel / 255`` in [0, 1], same shape."""
    x = torch.from_numpy(u8.astype(np.float32))  # astype copies: a writable array torch can own
    return x.div_(255)


def _check_labels(labels: np.ndarray, limit: int, path: Path, name: str, what: str) -> None:
    """Every label in ``0..limit-1``, or a ValueError naming the file and the first bad record."""
    bad = np.flatnonzero(labels >= limit)
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{name}: {path}: record {i} has {what} label {int(labels[i])}; {what} labels are "
            f"0..{limit - 1} ({len(bad)} bad records)"
        )


def _read_mnist_part(images: Path, labels: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One IDX image file and its labels -> uint8 ``[N, 28, 28]`` and uint8 ``[N]``."""
    x, y = _read_idx(images, name), _read_idx(labels, name)
    if x.dtype != np.uint8 or x.shape[1:] != (28, 28):
        raise ValueError(
            f"{name}: {images}: expected unsigned-byte images [N, 28, 28] (IDX magic "
            f"00 00 08 03); got {x.dtype} {list(x.shape)}"
        )
    if y.dtype != np.uint8 or y.ndim != 1:
        raise ValueError(
            f"{name}: {labels}: expected unsigned-byte labels [N] (IDX magic 00 00 08 01); got "
            f"{y.dtype} {list(y.shape)}"
        )
    if len(x) != len(y):
        raise ValueError(
            f"{name}: {images} holds {len(x)} images but {labels} holds {len(y)} labels"
        )
    _check_labels(y, 10, labels, name, "class")
    return x, y


def _read_cifar(path: Path, name: str, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of ``label_bytes`` label bytes + 3072 pixel bytes -> labels [N, k], pixels [N, 3072]."""
    raw = path.read_bytes()
    record = label_bytes + _PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise ValueError(
            f"{name}: {path} holds {len(raw)} bytes, not a positive multiple of the {record}-byte "
            f"record ({label_bytes} label byte(s) + {_PIXELS} pixel bytes): truncated, or not "
            "the binary version?"
        )
    table = np.frombuffer(raw, np.uint8).reshape(-1, record)  # [N, k + 3072]
    return table[:, :label_bytes], table[:, label_bytes:]


def _part(
    u8: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    n: int | None,
    seed: int,
    which: str,
    name: str,
    classes: int,
) -> Dataset:
    """One part as a Dataset ``[N, *shape]``, or a seeded subset of ``n`` rows in file order."""
    if n is not None:
        _check_size(n, len(y), which, name)
        rows = torch.randperm(len(y), generator=_generator(seed))[:n].sort().values.numpy()
        u8, y = u8[rows], y[rows]
    x = _pixels(u8).reshape(len(y), *shape)  # [N, C, H, W]
    return Dataset(x, torch.from_numpy(y.astype(np.int64)), name, classes)


# ---------------------------------------------------------------------------------------------
# the sets


def _mnist_format(
    name: str, root: Root, seed: Seed, n_train: int | None, n_test: int | None
) -> Split:
    train_x, train_y, test_x, test_y = _find(name, root)
    s_train, s_test = _spawn(seed, 2)
    x, y = _read_mnist_part(train_x, train_y, name)
    train = _part(x, y, (1, 28, 28), n_train, s_train, "n_train", name, 10)
    x, y = _read_mnist_part(test_x, test_y, name)
    return Split(train, _part(x, y, (1, 28, 28), n_test, s_test, "n_test", name, 10))


def mnist(
    root: Root, *, seed: Seed = 0, n_train: int | None = None, n_test: int | None = None
) -> Split:
    """MNIST from the four IDX files in ``root``: images ``[N, 1, 28, 28]`` in [0, 1], 60k / 10k.

    Parameters
    ----------
    root : str or PathLike
        The folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``, or the folder
        above ``MNIST/raw`` holding them (torchvision's layout).
    seed : int or torch.Generator
        Seeds the subsets taken by ``n_train`` / ``n_test``; unused without them.
    n_train, n_test : int, optional
        Keep a seeded random subset of this many rows of each part, in file order.

    Returns
    -------
    Split
        ``x: [N, 1, 28, 28]`` float32 ``pixel / 255``, ``y: [N]`` in 0..9, ``classes=10``,
        name ``"mnist"``.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message names every expected file and the folders searched.
    ValueError
        If a file is malformed (wrong IDX magic, truncated, not 28x28 bytes, label outside
        0..9, image and label counts differ); the message names the file.
    """
    return _mnist_format("mnist", root, seed, n_train, n_test)


def fashion_mnist(
    root: Root, *, seed: Seed = 0, n_train: int | None = None, n_test: int | None = None
) -> Split:
    """Fashion-MNIST, read as :func:`mnist` reads MNIST (subfolder ``FashionMNIST/raw``).

    Same files, format, shapes, options and errors as :func:`mnist`; name ``"fashion_mnist"``.
    Labels 0..9: T-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag,
    ankle boot.
    """
    return _mnist_format("fashion_mnist", root, seed, n_train, n_test)


def cifar10(
    root: Root, *, seed: Seed = 0, n_train: int | None = None, n_test: int | None = None
) -> Split:
    """CIFAR-10's binary version in ``root``: images ``[N, 3, 32, 32]`` in [0, 1], 50k / 10k.

    Parameters
    ----------
    root : str or PathLike
        The folder holding ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``,
        or the folder above ``cifar-10-batches-bin`` holding them.
    seed : int or torch.Generator
        Seeds the subsets taken by ``n_train`` / ``n_test``; unused without them.
    n_train, n_test : int, optional
        Keep a seeded random subset of this many rows of each part, in file order.

    Returns
    -------
    Split
        ``x: [N, 3, 32, 32]`` float32 ``pixel / 255`` (channels red, green, blue), ``y: [N]``
        in 0..9, ``classes=10``, name ``"cifar10"``. Train is the five batches in order.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message names every expected file and the folders searched.
    ValueError
        If a file's size is not a positive multiple of 3073 bytes or a label exceeds 9; the
        message names the file.
    """
    paths = _find("cifar10", root)
    s_train, s_test = _spawn(seed, 2)
    parts = []
    for path in paths:
        labels, pixels = _read_cifar(path, "cifar10", 1)
        _check_labels(labels[:, 0], 10, path, "cifar10", "class")
        parts.append((labels[:, 0], pixels))
    y = np.concatenate([p[0] for p in parts[:-1]])
    u8 = np.concatenate([p[1] for p in parts[:-1]])  # [50000, 3072]
    train = _part(u8, y, (3, 32, 32), n_train, s_train, "n_train", "cifar10", 10)
    y, u8 = parts[-1]
    return Split(train, _part(u8, y, (3, 32, 32), n_test, s_test, "n_test", "cifar10", 10))


def cifar100(
    root: Root, *, seed: Seed = 0, n_train: int | None = None, n_test: int | None = None
) -> Split:
    """CIFAR-100's binary version in ``root``, fine labels: ``[N, 3, 32, 32]`` in [0, 1], 50k / 10k.

    Parameters
    ----------
    root : str or PathLike
        The folder holding ``train.bin`` and ``test.bin``, or the folder above
        ``cifar-100-binary`` holding them.
    seed : int or torch.Generator
        Seeds the subsets taken by ``n_train`` / ``n_test``; unused without them.
    n_train, n_test : int, optional
        Keep a seeded random subset of this many rows of each part, in file order.

    Returns
    -------
    Split
        ``x: [N, 3, 32, 32]`` float32 ``pixel / 255``, ``y: [N]`` the fine label in 0..99,
        ``classes=100``, name ``"cifar100"``. The coarse label (0..19) is checked and dropped.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message names every expected file and the folders searched.
    ValueError
        If a file's size is not a positive multiple of 3074 bytes or a label is out of range;
        the message names the file.
    """
    train_path, test_path = _find("cifar100", root)
    s_train, s_test = _spawn(seed, 2)
    parts = []
    for path, n, s, which in (
        (train_path, n_train, s_train, "n_train"),
        (test_path, n_test, s_test, "n_test"),
    ):
        labels, u8 = _read_cifar(path, "cifar100", 2)  # labels [N, 2]: coarse, fine
        _check_labels(labels[:, 0], 20, path, "cifar100", "coarse")
        _check_labels(labels[:, 1], 100, path, "cifar100", "fine")
        parts.append(_part(u8, labels[:, 1], (3, 32, 32), n, s, which, "cifar100", 100))
    return Split(*parts)
