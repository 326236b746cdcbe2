"""Tests for the full-size folder sets (MNIST, Fashion-MNIST, CIFAR-10/100) and load(root=...).

Small files in the real formats are written by hand into tmp_path: the IDX header (00 00 08
<ndim>, big-endian uint32 sizes) and CIFAR's binary records (label byte(s), then 1024 red, 1024
green, 1024 blue bytes). The decoded tensors are compared pixel for pixel with the arrays written.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from prunelab import data

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: 00 00 08 <ndim>, the sizes as big-endian uint32, the bytes."""
    assert array.dtype == np.uint8
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + (array.tobytes())
    )


def mnist_arrays(seed: int = 0, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Random 28x28 byte images (0 and 255 included) and labels covering 0..9."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 0, 0], x[0, 0, 1] = 0, 255
        arrays[f"{part}-images-idx3-ubyte"] = x
        arrays[f"{part}-labels-idx1-ubyte"] = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return arrays


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz=False) -> None:
    """The four IDX files in ``folder``; ``gz`` a bool or one bool per file."""
    folder.mkdir(parents=True, exist_ok=True)
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    for name, zipped in zip(IDX_NAMES, flags):
        payload = idx(arrays[name])
        if zipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


def check_mnist(split: data.Split, arrays: dict[str, np.ndarray], name: str) -> None:
    for part, d in (("train", split.train), ("t10k", split.test)):
        images = arrays[f"{part}-images-idx3-ubyte"]
        labels = arrays[f"{part}-labels-idx1-ubyte"]
        N = len(images)
        assert d.name == name and d.classes == 10 and d.shape == (1, 28, 28)
        assert d.x.shape == (N, 1, 28, 28) and d.x.dtype == torch.float32
        assert d.y.dtype == torch.int64 and d.y.tolist() == labels.tolist()
        np.testing.assert_array_equal(d.x[:, 0].numpy(), images.astype(np.float32) / 255)
        assert torch.equal((d.x * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(images))
    assert split.train.x.min() == 0 and split.train.x.max() == 1 and split.features == 784


# --- MNIST and Fashion-MNIST -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)])
def test_mnist_format_decodes_pixel_exactly(tmp_path, name, gz):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays, gz)
    split = data.load(name, root=tmp_path)
    check_mnist(split, arrays, name)
    assert (len(split.train), len(split.test)) == (20, 10)


@pytest.mark.parametrize(("name", "sub"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_layout(tmp_path, name, sub):
    arrays = mnist_arrays(1)
    write_mnist(tmp_path / sub / "raw", arrays, gz=True)
    check_mnist(data.load(name, root=str(tmp_path)), arrays, name)
    # the other set's subfolder is not searched
    other = "fashion_mnist" if name == "mnist" else "mnist"
    with pytest.raises(FileNotFoundError, match=f"{other}: expected the files"):
        data.load(other, root=tmp_path)


def test_plain_file_is_preferred_to_its_gz_twin(tmp_path):
    plain, zipped = mnist_arrays(2), mnist_arrays(3)
    write_mnist(tmp_path, plain, gz=False)
    write_mnist(tmp_path, zipped, gz=True)  # torchvision's raw/ holds both
    check_mnist(data.mnist(tmp_path), plain, "mnist")


def test_mnist_missing_files_are_all_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", root=tmp_path)
    message = str(info.value)
    for name in IDX_NAMES:
        assert f"{name}[.gz]" in message
    assert str(tmp_path) in message and str(tmp_path / "MNIST" / "raw") in message
    assert "never downloads" in message
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds 3 of them but lacks \['t10k-labels-idx1"):
        data.load("mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("fashion_mnist", root=tmp_path / "nope")


def test_mnist_truncated_and_damaged_files(tmp_path):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"mnist: .*train-images-idx3-ubyte: IDX header gives "):
        data.mnist(tmp_path)
    path.write_bytes(gzip.compress(idx(arrays[path.name]))[:-20])  # a cut-off .gz stream
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is a damaged or truncated gzip"):
        data.mnist(tmp_path)
    path.write_bytes(idx(arrays[path.name])[:10])  # header cut inside the sizes
    with pytest.raises(ValueError, match=r"promises 3 sizes but is truncated"):
        data.mnist(tmp_path)


def test_mnist_wrong_magic_and_shape(tmp_path):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x08\x01\x00\x00" + labels.read_bytes()[4:])  # magic bytes swapped
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is not an IDX file: magic 08 01"):
        data.mnist(tmp_path)
    labels.write_bytes(idx(arrays["t10k-images-idx3-ubyte"]))  # images where labels belong
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: expected unsigned-byte labels"):
        data.mnist(tmp_path)
    labels.write_bytes(idx(arrays["t10k-labels-idx1-ubyte"]))
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(idx(np.zeros((10, 28, 27), np.uint8)))
    with pytest.raises(ValueError, match=r"images \[N, 28, 28\].*got uint8 \[10, 28, 27\]"):
        data.mnist(tmp_path)


def test_mnist_counts_and_label_range(tmp_path):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx(arrays[labels.name][:19]))
    with pytest.raises(ValueError, match=r"holds 20 images but .*train-labels.* holds 19 labels"):
        data.mnist(tmp_path)
    y = arrays[labels.name].copy()
    y[7] = 10
    labels.write_bytes(idx(y))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: record 7 has class label 10"):
        data.mnist(tmp_path)


# --- CIFAR -----------------------------------------------------------------------------------


def cifar_records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """Records of the label bytes [N, k] then the 3072 image bytes [N, 3, 32, 32], back to back."""
    return np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes()


def random_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(folder: Path, sizes=(3, 2, 4, 1, 2), n_test=5, seed=0):
    """data_batch_1..5.bin of ``sizes`` records and test_batch.bin; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in enumerate((*sizes, n_test)):
        x, y = random_images(rng, n), rng.integers(0, 10, size=n, dtype=np.uint8)
        name = f"data_batch_{i + 1}.bin" if i < len(sizes) else "test_batch.bin"
        (folder / name).write_bytes(cifar_records(y[:, None], x))
        parts.append((x, y))
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return train_x, train_y, *parts[-1]


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar10_decodes_pixel_exactly(tmp_path, sub):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path / sub)
    s = data.load("cifar10", root=tmp_path)
    assert s.train.x.shape == (12, 3, 32, 32) and s.test.x.shape == (5, 3, 32, 32)
    assert s.shape == (3, 32, 32) and s.features == 3072 and s.classes == 10
    assert s.train.x.dtype == torch.float32 and s.train.y.dtype == torch.int64
    assert s.train.y.tolist() == train_y.tolist() and s.test.y.tolist() == test_y.tolist()
    np.testing.assert_array_equal(s.train.x.numpy(), train_x.astype(np.float32) / 255)
    np.testing.assert_array_equal(s.test.x.numpy(), test_x.astype(np.float32) / 255)
    assert s.train.x.min() >= 0 and s.train.x.max() <= 1


def test_cifar_channel_major_layout(tmp_path):
    """Byte 1 + c*1024 + r*32 + w of a record is channel c, row r, column w of the image."""
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 7  # the label
    record[1 : 1 + 1024] = 10  # red plane
    record[1 + 1024 : 1 + 2048] = 20  # green plane
    record[1 + 2048 :] = 30  # blue plane
    record[1 + 2048 + 5 * 32 + 3] = 255  # blue, row 5, column 3
    for name in (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"):
        (tmp_path / name).write_bytes(record.tobytes())
    x, y = data.cifar10(tmp_path).test.x[0], data.cifar10(tmp_path).test.y
    assert y.tolist() == [7]
    assert (x[0] == 10 / 255).all() and (x[1] == 20 / 255).all()
    assert x[2, 5, 3] == 1 and (x[2] == 30 / 255).sum() == 1023


@pytest.mark.parametrize("sub", ["", "cifar-100-binary"])
def test_cifar100_uses_the_fine_label(tmp_path, sub):
    rng = np.random.default_rng(4)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    written = {}
    for name, n in (("train.bin", 8), ("test.bin", 6)):
        x = random_images(rng, n)
        coarse = rng.integers(0, 20, size=n, dtype=np.uint8)
        fine = rng.integers(0, 100, size=n, dtype=np.uint8)
        fine[0] = 99
        (folder / name).write_bytes(cifar_records(np.stack([coarse, fine], 1), x))
        written[name] = (x, fine)
    s = data.load("cifar100", root=tmp_path)
    assert s.classes == 100 and s.train.name == "cifar100"
    for d, name in ((s.train, "train.bin"), (s.test, "test.bin")):
        x, fine = written[name]
        assert d.x.shape == (len(x), 3, 32, 32) and d.y.tolist() == fine.tolist()
        np.testing.assert_array_equal(d.x.numpy(), x.astype(np.float32) / 255)


def test_cifar_missing_files_are_all_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.cifar10(tmp_path)
    message = str(info.value)
    for name in (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"):
        assert name in message
    assert str(tmp_path / "cifar-10-batches-bin") in message
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['data_batch_4\.bin'\]"):
        data.cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'train\.bin', 'test\.bin'.*cifar-100-binary"):
        data.cifar100(tmp_path)


def test_cifar_truncated_and_malformed_files(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_2.bin"  # 2 records = 6146 bytes
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"data_batch_2\.bin holds 6145 bytes, not a positive mul"):
        data.cifar10(tmp_path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"data_batch_2\.bin holds 0 bytes"):
        data.cifar10(tmp_path)
    # a CIFAR-100 file (3074-byte records) where CIFAR-10 is expected
    path.write_bytes(bytes(2 * 3074))
    with pytest.raises(ValueError, match=r"the 3073-byte record \(1 label byte"):
        data.cifar10(tmp_path)
    bad = np.zeros((2, 3073), dtype=np.uint8)
    bad[1, 0] = 10
    path.write_bytes(bad.tobytes())
    with pytest.raises(
        ValueError, match=r"data_batch_2\.bin: record 1 has class label 10; .*0\.\.9"
    ):
        data.cifar10(tmp_path)


def test_cifar100_label_ranges(tmp_path):
    for name in ("train.bin", "test.bin"):
        (tmp_path / name).write_bytes(bytes(3 * 3074))
    assert data.cifar100(tmp_path).train.y.tolist() == [0, 0, 0]
    bad = np.zeros((3, 3074), dtype=np.uint8)
    bad[2, 0] = 20  # coarse
    (tmp_path / "test.bin").write_bytes(bad.tobytes())
    with pytest.raises(ValueError, match=r"test\.bin: record 2 has coarse label 20; .* 0\.\.19"):
        data.cifar100(tmp_path)
    bad[2, 0], bad[1, 1] = 19, 100  # fine
    (tmp_path / "test.bin").write_bytes(bad.tobytes())
    with pytest.raises(ValueError, match=r"test\.bin: record 1 has fine label 100; .* 0\.\.99"):
        data.cifar100(tmp_path)


# --- subsets and load ------------------------------------------------------------------------


def test_seeded_subsets_keep_file_order(tmp_path):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    full = data.mnist(tmp_path)
    a = data.load("mnist", root=tmp_path, seed=5, n_train=7, n_test=4)
    assert (len(a.train), len(a.test)) == (7, 4) and a.train.shape == (1, 28, 28)
    for sub, whole in ((a.train, full.train), (a.test, full.test)):
        rows = [int(torch.nonzero((whole.x == img).flatten(1).all(1))[0]) for img in sub.x]
        assert rows == sorted(set(rows))  # distinct rows, in file order
        assert torch.equal(sub.y, whole.y[rows]) and torch.equal(sub.x, whole.x[rows])
    b = data.load("mnist", root=tmp_path, seed=5, n_train=7, n_test=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    c = data.load("mnist", root=tmp_path, seed=6, n_train=7)
    assert not torch.equal(a.train.x, c.train.x)
    assert torch.equal(c.test.x, full.test.x)  # n_test unset: the whole test part
    d = data.load("mnist", root=tmp_path, seed=5, n_train=3, n_test=4)
    assert torch.equal(a.test.x, d.test.x)  # the test subset does not depend on n_train
    e = data.load("mnist", root=tmp_path, seed=5, n_train=20, n_test=10)
    assert torch.equal(e.train.x, full.train.x) and torch.equal(e.test.y, full.test.y)


def test_cifar_subsets(tmp_path):
    train_x, train_y, _, _ = write_cifar10(tmp_path)
    s = data.cifar10(tmp_path, seed=torch.Generator().manual_seed(1), n_train=5, n_test=2)
    assert s.train.x.shape == (5, 3, 32, 32) and len(s.test) == 2
    pixels = (s.train.x * 255).round().to(torch.uint8).numpy()  # [5, 3, 32, 32]
    rows = [int(np.flatnonzero((train_x == img).all((1, 2, 3)))[0]) for img in pixels]
    assert rows == sorted(rows) and s.train.y.tolist() == train_y[rows].tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 21}, "dataset 'mnist': n_train=21 exceeds the 20 samples available"),
        ({"n_test": 0}, "dataset 'mnist': n_test must be a positive int; got 0"),
        ({"n_train": 2.5}, "n_train must be a positive int; got 2.5"),
    ],
)
def test_subset_size_errors(tmp_path, kwargs, match):
    write_mnist(tmp_path, mnist_arrays())
    with pytest.raises(ValueError, match=match):
        data.load("mnist", root=tmp_path, **kwargs)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_folder_set_without_root_says_it_never_downloads(name):
    with pytest.raises(KeyError) as info:
        data.load(name)
    message = str(info.value)
    assert "pass root=DIR" in message and "never downloads" in message
    files = {"mnist": "t10k-images-idx3-ubyte[.gz]", "fashion_mnist": "DIR/FashionMNIST/raw"}
    files |= {"cifar10": "test_batch.bin", "cifar100": "DIR/cifar-100-binary"}
    assert files[name] in message
    assert sorted(data.FOLDER_SETS) == ["cifar10", "cifar100", "fashion_mnist", "mnist"]
    assert not set(data.FOLDER_SETS) & set(data.LOADERS)


def test_load_root_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'circle' is built in and takes no root"):
        data.load("circle", root=tmp_path)
    with pytest.raises(KeyError, match=r"'imagenet': choose from .*'spirals'\] or, with root=DIR"):
        data.load("imagenet", root=tmp_path)
    with pytest.raises(TypeError, match="mnist: root must be a str or PathLike folder; got 3"):
        data.load("mnist", root=3)
