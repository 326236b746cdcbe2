"""The containers every loader returns (:class:`Dataset`, :class:`Split`) and the seed helpers.

Every random step takes ``seed``, an ``int`` or a ``torch.Generator``; an ``int`` seeds a private
generator, so global random state is left as it was.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import checks

Seed = int | torch.Generator

_SHAPES = "[N, D] (feature vectors) or [N, C, H, W] (images); any [N, D...] is kept as given"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled set of samples, validated on construction.

    Parameters
    ----------
    x : Tensor[N, D...]
        Samples, a floating-point tensor (float32 from every loader), all values finite:
        feature vectors ``[N, D]`` or images ``[N, C, H, W]`` (any ``[N, D...]`` is accepted,
        e.g. the ``[N, H, W]`` of an IDX file; see :meth:`flatten`).
    y : Tensor[N]
        Class labels in ``0..classes-1``. Any integer or bool dtype is accepted and stored as
        int64.
    name : str
        Shown in error messages and reports.
    classes : int, optional
        Number of classes C; by default the largest label plus one. Not every class need occur.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor or ``y`` not an integer tensor.
    ValueError
        If the shapes do not match, ``x`` holds NaN or Inf, or a label lies outside
        ``0..classes-1``; the message names the dataset and the bad values.
    """

    x: Tensor
    y: Tensor
    name: str = "data"
    classes: int | None = None  # None: the largest label + 1 (always an int after __init__)

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        x, y = self.x, self.y
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{where}: x must be a floating-point Tensor [N, D...]; got {got}")
        if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex():
            got = y.dtype if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(
                f"{where}: y must be an integer Tensor [N] of class labels; got {got} "
                "(integer-valued floats: use y.long())"
            )
        if x.dim() < 2:
            raise ValueError(
                f"{where}: x must have shape [N, D...], e.g. {_SHAPES}; got {list(x.shape)}"
            )
        if y.dim() != 1:
            raise ValueError(f"{where}: y must have shape [N]; got {list(y.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{where}: x has {len(x)} rows but y has {len(y)}")
        # A NaN or Inf makes the sum non-finite; one reduction is ~50x faster than isfinite's
        # mask on an image set, so count (exactly) only when the sum fails (or overflows).
        bad = 0 if torch.isfinite(x.sum()) else int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{where}: x holds {bad} NaN/Inf values")
        y = y.long()
        object.__setattr__(self, "y", y)
        classes = self.classes
        if classes is None:
            if len(y) == 0:
                raise ValueError(f"{where}: pass classes= for an empty dataset")
            classes = int(y.max()) + 1
        if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
            raise ValueError(f"{where}: classes must be a positive int; got {classes!r}")
        object.__setattr__(self, "classes", int(classes))
        outside = y[(y < 0) | (y >= classes)]
        if len(outside):
            found = sorted(set(outside.tolist()))
            shown = found if len(found) <= 10 else [*found[:10], "..."]
            raise ValueError(
                f"{where}: labels must be 0..C-1 = 0..{classes - 1}; found {shown} "
                f"({len(outside)} rows)"
            )

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, x={list(self.x.shape)} {self.x.dtype}, "
            f"y={list(self.y.shape)}, classes={self.classes})"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample, ``x.shape[1:]``: ``(D,)`` or ``(C, H, W)``."""
        return tuple(self.x.shape[1:])

    @property
    def features(self) -> int:
        """Number of input features D per sample (the product of :attr:`shape`)."""
        return math.prod(self.shape)

    def subset(self, index: slice | Tensor | list[int]) -> Dataset:
        """Rows ``index`` (a slice, index list, LongTensor or BoolTensor [N]), same ``classes``."""
        if isinstance(index, numbers.Integral):
            raise TypeError(
                f"dataset {self.name!r}: subset takes a slice, list or tensor of rows; "
                f"got the int {index} (use slice({index}, {index} + 1))"
            )
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return Dataset(self.x[index], self.y[index], self.name, self.classes)

    __getitem__ = subset

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Dataset:
        """A copy with ``x`` cast to ``dtype`` and both tensors moved to ``device``."""
        x = self.x.to(device=device, dtype=dtype)
        return Dataset(x, self.y.to(device), self.name, self.classes)

    def flatten(self) -> Dataset:
        """The same samples with ``x`` reshaped to ``[N, D]`` (row-major, as ``x.flatten(1)``)."""
        return Dataset(self.x.flatten(1), self.y, self.name, self.classes)

    def split(self, test: float | int = 0.2, *, seed: Seed) -> Split:
        """Shuffle with ``seed`` and split off a test set.

        Parameters
        ----------
        test : float or int
            Fraction of the samples (0 < test < 1, rounded down) or their number (1..N-1).
        seed : int or torch.Generator

        Returns
        -------
        Split
            ``test`` the first rows of the permutation, ``train`` the rest (both shuffled).
        """
        N = len(self)
        if isinstance(test, float) and 0 < test < 1:
            n_test = int(test * N)
        elif isinstance(test, numbers.Integral) and not isinstance(test, bool):
            n_test = int(test)
        else:
            raise ValueError(
                f"dataset {self.name!r}: test must be a fraction in (0, 1) or a count; got {test!r}"
            )
        if not 0 < n_test < N:
            raise ValueError(
                f"dataset {self.name!r}: test={test!r} leaves {n_test} of {N} samples for "
                "testing; need at least one sample on each side"
            )
        perm = torch.randperm(N, generator=_generator(seed, "Dataset.split"))
        return Split(train=self.subset(perm[n_test:]), test=self.subset(perm[:n_test]))


@dataclass(frozen=True, eq=False)
class Split:
    """A training and a test set with the same sample shape and number of classes."""

    train: Dataset
    test: Dataset

    def __post_init__(self) -> None:
        a, b = self.train, self.test
        if a.shape != b.shape:
            raise ValueError(
                f"split: train {a.name!r} has samples of shape {list(a.shape)} but test "
                f"{b.name!r} has {list(b.shape)}"
            )
        if a.classes != b.classes:
            raise ValueError(
                f"split: train {a.name!r} has {a.classes} classes but test {b.name!r} has "
                f"{b.classes}; pass the same classes= to both"
            )

    @property
    def classes(self) -> int:
        return self.train.classes

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample, shared by train and test."""
        return self.train.shape

    @property
    def features(self) -> int:
        return self.train.features

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Split:
        """Both parts cast and moved as :meth:`Dataset.to` does."""
        return Split(self.train.to(dtype, device), self.test.to(dtype, device))


# ---------------------------------------------------------------------------------------------
# randomness and sizes


def _generator(seed: Seed, fn: str = "data") -> torch.Generator:
    """A private CPU generator seeded with ``seed``; a given generator is used as is."""
    return checks.seed_or_generator(seed, fn)


def _spawn(seed: Seed, k: int, fn: str = "data.load") -> list[int]:
    """``k`` independent child seeds drawn from ``seed``'s stream (e.g. for train and test)."""
    return torch.randint(0, 2**62, (k,), generator=_generator(seed, fn)).tolist()


def _check_n(n: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{what}: n must be a positive int; got {n!r}")


def _check_size(n: int, available: int, which: str, name: str) -> None:
    """``n`` (the value of option ``which``) must be an int in 1..available."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"dataset {name!r}: {which} must be a positive int; got {n!r}")
    if n > available:
        raise ValueError(f"dataset {name!r}: {which}={n} exceeds the {available} samples available")


def _take(split: Split, n_train: int | None, n_test: int | None) -> Split:
    """The first ``n_train`` / ``n_test`` rows of an already shuffled split."""
    parts = []
    for which, data, n in (("n_train", split.train, n_train), ("n_test", split.test, n_test)):
        if n is not None:
            _check_size(n, len(data), which, data.name)
            data = data.subset(slice(0, n))
        parts.append(data)
    return Split(*parts)
