"""Readers for the user's own files: :func:`from_file` for ``.npz``, ``.pt``, IDX and CSV.

The IDX parser (:func:`_read_idx`) is shared with the full-size MNIST-format sets in
:mod:`.folders`.
"""

from __future__ import annotations

import gzip
import math
import numbers
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dataset import Dataset

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SUPPORTED = ".npz, .pt/.pth, .csv[.gz], IDX (e.g. train-images-idx3-ubyte[.gz])"


def _read_bytes(path: Path, where: str = "from_file") -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic 1f 8b."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{where}: {path} is a damaged or truncated gzip file: {e}") from e


def _read_idx(path: Path, where: str = "from_file") -> np.ndarray:
    """Parse an IDX file: magic 00 00 <dtype code> <ndim>, ndim big-endian uint32 sizes, data."""
    raw = _read_bytes(path, where)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{where}: {path} is not an IDX file: magic {raw[:4].hex(' ')}; expected "
            f"00 00 <type> <ndim> with type one of {codes}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{where}: {path}: IDX header promises {ndim} sizes but is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{where}: {path}: IDX header gives shape {list(dims)} of {dtype.name} "
            f"({expected} bytes) but the file holds {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _idx_labels_path(path: Path) -> Path:
    """``train-images-idx3-ubyte[.gz]`` -> ``train-labels-idx1-ubyte[.gz]`` (either gzip state)."""
    stem = path.name.replace("images", "labels").replace("idx3", "idx1")
    if stem == path.name:
        raise ValueError(
            f"from_file: cannot guess the labels file for {path} (no 'images'/'idx3' in the "
            "name); pass labels=PATH"
        )
    base = stem.removesuffix(".gz")
    for candidate in (path.with_name(stem), path.with_name(base), path.with_name(base + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"from_file: labels file {path.with_name(stem)} for {path} not found; pass labels=PATH"
    )


def _labels(y: np.ndarray, where: str) -> Tensor:
    """Check that ``y`` holds non-negative integers (any dtype) and return it as int64 [N]."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must have shape [N]; got {list(y.shape)}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{where}: labels must be non-negative integers; got dtype {y.dtype}")
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)) | (y < 0))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{where}: labels must be non-negative integers; found {y[i].item()!r} at row {i} "
            f"({len(bad)} bad rows)"
        )
    return torch.from_numpy(y.astype(np.int64))


def _features(x: np.ndarray | Tensor, where: str) -> Tensor:
    """Numeric array -> float32 tensor [N, D...]."""
    x = x.numpy(force=True) if isinstance(x, Tensor) else np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise ValueError(f"{where}: features must be real numbers; got dtype {x.dtype}")
    return torch.from_numpy(x.astype(np.float32))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise ValueError(
                f"from_file: {path} must hold arrays 'x' and 'y'; found {sorted(arrays.files)}"
            )
        return arrays["x"], arrays["y"]


def _read_pt(path: Path) -> tuple[Tensor, Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise ValueError(
            f"from_file: {path} is not a tensor file torch can load safely: {e}"
        ) from e
    if isinstance(obj, dict) and "x" in obj and "y" in obj:
        x, y = obj["x"], obj["y"]
    elif isinstance(obj, tuple | list) and len(obj) == 2:
        x, y = obj
    else:
        got = f"dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else repr(obj)[:80]
        raise ValueError(
            f"from_file: {path} must hold a dict with 'x' and 'y' or a tuple (x, y); got {got}"
        )
    return torch.as_tensor(x), torch.as_tensor(y)


LABEL_NAMES = ("label", "labels", "target", "class", "y")  # recognised label column headers


def _read_csv(
    path: Path, label_column: int | str | None, delimiter: str
) -> tuple[np.ndarray, np.ndarray]:
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rt") as f:
        first = f.readline().strip()
    names = [c.strip().strip("\"'") for c in first.split(delimiter)]
    try:
        [float(c) for c in names]
        names = None  # no header: the first row is data
    except ValueError:
        pass
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=int(names is not None), ndmin=2)
    except ValueError as e:
        raise ValueError(f"from_file: {path}: not a numeric CSV table: {e}") from e
    N, K = table.shape  # rows, columns
    if N == 0:
        raise ValueError(f"from_file: {path} holds no data rows")
    if K < 2:
        raise ValueError(f"from_file: {path} needs feature columns and a label column; found {K}")
    if label_column is None and names is not None:
        found = [i for i, n in enumerate(names) if n.lower() in LABEL_NAMES]
        if len(found) != 1:
            raise ValueError(
                f"from_file: {path} has a header {names} with "
                f"{'no' if not found else 'more than one'} label column (a column named one of "
                f"{list(LABEL_NAMES)}, any case); pass label_column=NAME or INDEX"
            )
        label_column = found[0]
    elif label_column is None:
        label_column = -1  # no header: the last column, checked to hold class labels
    if isinstance(label_column, str):
        if names is None or label_column not in names:
            raise ValueError(
                f"from_file: label_column {label_column!r} not among the columns of {path}: "
                f"{names if names is not None else 'the file has no header row'}"
            )
        label_column = names.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, numbers.Integral):
        raise ValueError(f"from_file: label_column must be an int or str; got {label_column!r}")
    if not -K <= label_column < K:
        raise ValueError(f"from_file: label_column={label_column} but {path} has {K} columns")
    return np.delete(table, label_column, axis=1), table[:, label_column]


def from_file(
    path: str | Path,
    *,
    name: str | None = None,
    labels: str | Path | None = None,
    label_column: int | str | None = None,
    classes: int | None = None,
    delimiter: str = ",",
) -> Dataset:
    """Read a labelled dataset from a ``.npz``, ``.pt``, IDX or CSV file.

    Formats, chosen by the file name:

    - ``.npz``: arrays ``x`` [N, D...] and ``y`` [N].
    - ``.pt`` / ``.pth``: a dict with ``x`` and ``y`` or a tuple ``(x, y)``, read with
      ``torch.load(weights_only=True)`` (no pickle code runs).
    - IDX (a name containing ``idx<k>``, gzipped or not): the images file; the labels file is
      ``labels`` or the name with ``images`` -> ``labels`` and ``idx3`` -> ``idx1``. Unsigned
      byte images are divided by 255 into [0, 1]; x keeps the file's shape, e.g.
      ``[N, 28, 28]`` (see :meth:`Dataset.flatten`).
    - ``.csv`` / ``.csv.gz``: numeric columns, an optional header row (detected when the first
      row is not all numbers), the label column chosen by ``label_column``.

    Other values are used as stored, cast to float32. Labels must be non-negative integers
    (integer-valued floats are accepted); ``classes`` defaults to the largest label plus one.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Dataset name; default the file name without its extensions.
    labels : str or Path, optional
        IDX only: the labels file.
    label_column : int or str, optional
        CSV only: the label column's index or header name; default the one column whose header
        is in ``LABEL_NAMES`` (any case; a header without one is an error), or the last column
        of a file without a header.
    classes : int, optional
        Number of classes, e.g. to give a test file that lacks a class the training file's C.
    delimiter : str
        CSV only: the field separator.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If ``path`` (or the IDX labels file) does not exist.
    ValueError
        For an unsupported extension (the message lists the supported ones), missing arrays,
        a malformed file, mismatched lengths, NaN/Inf features or labels that are not
        non-negative integers.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"from_file: {path} is a folder; give a data file (.npz, .pt, IDX or CSV)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"from_file: no such file: {path}")
    base = path.name.removesuffix(".gz")
    suffix = Path(base).suffix.lower()
    where = f"from_file: {path}"
    if suffix == ".npz" and base == path.name:
        x, y = _read_npz(path)
    elif suffix in (".pt", ".pth") and base == path.name:
        x, y = _read_pt(path)
    elif suffix == ".csv":
        x, y = _read_csv(path, label_column, delimiter)
    elif re.search(r"idx\d", base.lower()):
        images = _read_idx(path)
        if images.ndim < 2:
            raise ValueError(f"{where} holds a 1-D IDX array (labels?); pass the images file")
        label_path = Path(labels) if labels is not None else _idx_labels_path(path)
        if not label_path.is_file():
            raise FileNotFoundError(f"from_file: no such labels file: {label_path}")
        y = _read_idx(label_path)
        x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images
    else:
        raise ValueError(
            f"from_file: cannot read {path}: unknown file type; supported: {_SUPPORTED}"
        )
    x, y = _features(x, where), _labels(y.numpy(force=True) if isinstance(y, Tensor) else y, where)
    if len(x) != len(y):
        raise ValueError(f"{where}: x has {len(x)} rows but y has {len(y)}")
    return Dataset(x, y, name or (base.removesuffix(suffix) if suffix else base), classes)
