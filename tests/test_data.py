"""Tests for prunelab.data: closed-form labels, determinism, shapes, and file round trips."""

from __future__ import annotations

import gzip
import math
import random
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.data import Dataset, Split

from prunelab import data


def same(a: Dataset, b: Dataset) -> bool:
    return torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


# --- circle ----------------------------------------------------------------------------------


def test_circle_is_balanced():
    n = 100_000
    frac = data.circle(n, seed=0).y.double().mean().item()
    se = math.sqrt(0.25 / n)  # Bernoulli(1/2) standard error
    assert abs(frac - 0.5) < 4 * se


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2000), seed=st.integers(0, 2**63 - 1))
def test_circle_labels_follow_the_closed_form(n, seed):
    d = data.circle(n, seed=seed)
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.x.shape == (n, 2) and d.classes == 2
    x = d.x.numpy().astype(np.float64)
    assert (x >= -1).all() and (x <= 1).all()
    expected = (x[:, 0] ** 2 + x[:, 1] ** 2 > 2 / np.pi).astype(np.int64)
    np.testing.assert_array_equal(d.y.numpy(), expected)


def test_circle_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (data.circle(500, seed=s) for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)
    assert same(a, b) and not torch.equal(a.x, c.x)
    assert same(a, data.circle(500, seed=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_circle_rejects_bad_n(n):
    with pytest.raises(ValueError, match="circle: n must be a positive int"):
        data.circle(n, seed=0)


@pytest.mark.parametrize(("seed", "error"), [(1.5, TypeError), (-1, ValueError), (None, TypeError)])
def test_bad_seed(seed, error):
    with pytest.raises(error, match="seed must be"):
        data.circle(5, seed=seed)


# --- spirals ---------------------------------------------------------------------------------


def test_spirals_balanced_and_deterministic():
    a, b, c = (data.spirals(1000, seed=s) for s in (0, 0, 1))
    assert torch.bincount(a.y).tolist() == [500, 500]
    assert same(a, b) and not torch.equal(a.x, c.x)
    assert torch.bincount(data.spirals(7, seed=0).y).tolist() == [4, 3]
    assert a.x.dtype == torch.float32 and a.x.abs().max() < 1.5


@pytest.mark.parametrize("turns", [0.5, 1.5, 3.0])
def test_noiseless_spirals_lie_on_the_arms(turns):
    d = data.spirals(2000, seed=5, noise=0.0, turns=turns)
    x = d.x.double()
    r = x.norm(dim=1)
    theta = torch.atan2(x[:, 1], x[:, 0])
    expected = (
        2 * math.pi * turns * r + math.pi * d.y.double()
    )  # r = t, theta = 2 pi turns t + k pi
    gap = torch.remainder(theta - expected + math.pi, 2 * math.pi) - math.pi  # wrapped to [-pi, pi)
    assert r.max() <= 1 + 1e-6
    assert gap.abs().max() < 1e-4


def test_spirals_noise_is_gaussian_with_the_given_std():
    clean = data.spirals(20_000, seed=2, noise=0.0)
    noisy = data.spirals(20_000, seed=2, noise=0.1)
    eps = noisy.x.double() - clean.x.double()  # same stream: only the noise differs
    assert torch.equal(clean.y, noisy.y)
    assert abs(eps.mean().item()) < 0.005 and abs(eps.std().item() - 0.1) < 0.005


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"noise": -0.1}, "noise"), ({"turns": 0}, "turns"), ({"n": 0}, "n must")]
)
def test_spirals_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.spirals(**{"n": 10, "seed": 0, **kwargs})


# --- Dataset and Split -----------------------------------------------------------------------


def test_dataset_validation_messages():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="dataset 'foo': x has 10 rows but y has 9"):
        Dataset(x, torch.zeros(9, dtype=torch.long), "foo")
    bad = x.clone()
    bad[0, 0], bad[3, 1], bad[4, 0] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(ValueError, match="dataset 'foo': x holds 3 NaN/Inf values"):
        Dataset(bad, torch.zeros(10, dtype=torch.long), "foo")
    y = torch.tensor([0, 1, 2, -1, 5, 5, 0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"labels must be 0..C-1 = 0..2; found \[-1, 5\]"):
        Dataset(x, y, "foo", classes=3)
    with pytest.raises(TypeError, match="y must be an integer Tensor"):
        Dataset(x, torch.zeros(10), "foo")
    with pytest.raises(TypeError, match="x must be a floating-point Tensor"):
        Dataset(torch.zeros(10, 2, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \[N, D...\]"):
        Dataset(torch.zeros(10), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="classes must be a positive int"):
        Dataset(x, torch.zeros(10, dtype=torch.long), classes=0)


def test_dataset_helpers():
    d = Dataset(
        torch.arange(24.0).reshape(6, 2, 2), torch.tensor([0, 1, 0, 1, 3, 0], dtype=torch.uint8)
    )
    assert d.y.dtype == torch.int64 and d.classes == 4 and len(d) == 6 and d.features == 4
    assert d[1:3].y.tolist() == [1, 0] and d[1:3].classes == 4
    assert d.subset([5, 0]).x[0, 0, 0] == 20.0
    assert d[d.y == 1].y.tolist() == [1, 1]
    assert d.flatten().x.shape == (6, 4)
    assert d.to(torch.float64).x.dtype == torch.float64
    with pytest.raises(TypeError, match="subset takes a slice"):
        d[0]
    assert "x=[6, 2, 2]" in repr(d)


def test_dataset_holds_images_nchw():
    x = torch.arange(360, dtype=torch.float32).reshape(6, 3, 4, 5) / 1000  # [N, C, H, W]
    y = torch.tensor([2, 0, 1, 2, 0, 1])
    d = Dataset(x, y, "img")
    assert d.shape == (3, 4, 5) and d.features == 60 and d.classes == 3
    assert Dataset(torch.zeros(4, 7), torch.zeros(4).long()).shape == (7,)
    assert torch.equal(d[1:3].x, x[1:3]) and d[1:3].shape == (3, 4, 5)
    assert torch.equal(d.subset([4, 0]).x, x[[4, 0]]) and d.subset([4, 0]).y.tolist() == [0, 2]
    assert torch.equal(d[d.y == 2].x, x[[0, 3]])
    assert torch.equal(d.flatten().x, x.reshape(6, 60)) and d.flatten().x[1, 20] == x[1, 1, 0, 0]
    assert d.to(torch.float64).x.shape == (6, 3, 4, 5)
    s = d.split(2, seed=0)
    assert s.shape == (3, 4, 5) and s.features == 60 and (len(s.train), len(s.test)) == (4, 2)
    rows = torch.cat([s.train.x, s.test.x])[:, 0, 0, 0] * 1000 / 60  # image i starts at 60 i
    order = rows.round().long()
    assert sorted(order.tolist()) == list(range(6))
    assert torch.equal(torch.cat([s.train.y, s.test.y]), y[order])
    assert torch.equal(torch.cat([s.train.x, s.test.x]), x[order])
    with pytest.raises(ValueError, match=r"shape \[3, 4, 5\] but test 'img' has \[60\]"):
        Split(d[:2], d.flatten())


def test_dataset_validates_images():
    x = torch.zeros(4, 1, 2, 2)
    x[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="dataset 'im': x holds 1 NaN/Inf values"):
        Dataset(x, torch.zeros(4).long(), "im")
    with pytest.raises(ValueError, match="dataset 'im': x has 4 rows but y has 3"):
        Dataset(torch.zeros(4, 1, 2, 2), torch.zeros(3).long(), "im")
    with pytest.raises(ValueError, match=r"\[N, D\] .* or \[N, C, H, W\] .*; got \[\]"):
        Dataset(torch.tensor(1.0), torch.zeros(1).long(), "im")
    big = torch.full((4, 1, 2, 2), 6e4, dtype=torch.float16)  # finite, but the sum overflows
    assert torch.equal(Dataset(big, torch.zeros(4).long()).x, big)
    big[1, 0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="x holds 1 NaN/Inf values"):
        Dataset(big, torch.zeros(4).long())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32))
def test_split_partitions_the_rows(n, frac, seed):
    d = Dataset(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.long))
    n_test = min(max(int(frac * n), 1), n - 1)
    s = d.split(n_test, seed=seed)
    rows = torch.cat([s.train.x[:, 0], s.test.x[:, 0]]).long()
    assert len(s.test) == n_test and sorted(rows.tolist()) == list(range(n))
    assert same(s.test, d.split(n_test, seed=seed).test)


def test_split_rejects_mismatches():
    a = Dataset(torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]), "a")
    with pytest.raises(ValueError, match="3 classes but test 'b' has 2"):
        Split(a, Dataset(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]), "b"))
    with pytest.raises(ValueError, match=r"shape \[2\] but test 'c' has \[3\]"):
        Split(a, Dataset(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), "c"))
    with pytest.raises(ValueError, match="at least one sample on each side"):
        a.split(0.1, seed=0)


# --- load ------------------------------------------------------------------------------------


def test_load_synthetic_defaults_and_streams():
    c = data.load("circle", seed=0)
    assert (len(c.train), len(c.test)) == (1000, 10_000)
    assert not torch.equal(c.train.x, c.test.x[:1000])
    assert same(c.test, data.load("circle", seed=0, n_train=50).test)  # test set independent
    assert same(c.train, data.load("circle", seed=0).train)
    assert not torch.equal(c.train.x, data.load("circle", seed=1).train.x)
    s = data.load("spirals", seed=0)
    assert (len(s.train), len(s.test)) == (1000, 1000)
    assert torch.bincount(s.test.y).tolist() == [500, 500]


def test_load_unknown_name():
    with pytest.raises(KeyError, match=r"dataset 'mnist': choose from \['circle', 'digits'"):
        data.load("mnist")


def test_digits():
    s = data.load("digits", seed=0)
    assert s.train.x.shape == (1438, 1, 8, 8) and s.test.x.shape == (359, 1, 8, 8)
    assert s.classes == 10 and s.train.x.dtype == torch.float32
    assert s.train.x.min() == 0 and s.train.x.max() == 1
    assert set(s.test.y.tolist()) == set(range(10))
    assert same(s.test, data.digits(seed=0).test)
    small = data.load("digits", seed=0, n_train=100, n_test=10)
    assert same(small.train, s.train[:100]) and same(small.test, s.test[:10])
    with pytest.raises(ValueError, match="n_test=2000 exceeds the 359 samples available"):
        data.load("digits", n_test=2000)
    with pytest.raises(ValueError, match="n_train must be a positive int; got 0"):
        data.load("digits", n_train=0)


@pytest.mark.slow
def test_digits_match_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    d = data.load("digits", seed=0)
    x = torch.cat([d.train.x, d.test.x]).flatten(1).double() * 16
    y = torch.cat([d.train.y, d.test.y])
    order = np.lexsort(np.column_stack([x.numpy(), y.numpy()]).T)  # compare as sorted rows
    ref = np.column_stack([bunch.data, bunch.target])
    ref = ref[np.lexsort(ref.T)]
    np.testing.assert_array_equal(np.column_stack([x.numpy(), y.numpy()])[order], ref)


def test_mnist5k():
    s = data.load("mnist5k", seed=0)
    assert s.train.x.shape == (4000, 1, 28, 28) and s.test.x.shape == (1000, 1, 28, 28)
    assert s.train.x.min() == 0 and s.train.x.max() == 1
    assert set(s.train.y.tolist()) == set(range(10)) == set(s.test.y.tolist())  # shuffled
    assert torch.bincount(torch.cat([s.train.y, s.test.y])).tolist() == [500] * 10
    assert same(s.train, data.mnist5k(seed=0).train)
    assert not torch.equal(s.test.y, data.mnist5k(seed=1).test.y)


@pytest.fixture
def small_mnist1d(monkeypatch):
    """Make the mnist1d generator build 500 samples instead of 5000 (10x faster)."""
    import mnist1d.data

    make_args = mnist1d.data.get_dataset_args

    def small_args(as_dict=False):
        args = make_args(as_dict)
        if as_dict:
            args["num_samples"] = 500
        else:
            args.num_samples = 500
        return args

    monkeypatch.setattr(mnist1d.data, "get_dataset_args", small_args)


def test_mnist1d_leaves_global_rng_state_unchanged(small_mnist1d):
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    s = data.load("mnist1d", seed=3)
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0] and np_before[2:] == np_after[2:]
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert py_before == random.getstate()
    assert s.train.x.shape == (400, 40) and s.test.x.shape == (100, 40)
    assert s.train.x.dtype == torch.float32 and s.classes == 10
    assert same(s.train, data.mnist1d(seed=3).train)
    assert not torch.equal(s.train.x, data.mnist1d(seed=4).train.x)


@pytest.mark.slow
def test_mnist1d_full_size():
    s = data.load("mnist1d", seed=3)
    assert s.train.x.shape == (4000, 40) and s.test.x.shape == (1000, 40)
    assert set(s.test.y.tolist()) == set(range(10))


def test_mnist1d_rejects_seed_out_of_numpy_range():
    with pytest.raises(ValueError, match=r"mnist1d: seed must be in 0\.\.2\*\*32-1"):
        data.mnist1d(seed=2**32)


# --- from_file -------------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D, np.dtype(np.int32): 0x0C}


def write_idx(path, array: np.ndarray, *, gz: bool = False) -> None:
    """The IDX format: 00 00 <dtype code> <ndim>, big-endian uint32 sizes, big-endian data."""
    code = _IDX_CODES[array.dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 3)), np.array([0, 2, 1, 0, 2, 1])


def test_npz_round_trip(tmp_path, sample):
    x, y = sample
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    d = data.from_file(tmp_path / "mine.npz")
    assert d.name == "mine" and d.classes == 3 and d.x.dtype == torch.float32
    np.testing.assert_array_equal(d.x.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(d.y.numpy(), y)
    np.savez(tmp_path / "bad.npz", a=x, b=y)
    with pytest.raises(ValueError, match=r"arrays 'x' and 'y'; found \['a', 'b'\]"):
        data.from_file(tmp_path / "bad.npz")


def test_pt_round_trip(tmp_path, sample):
    x, y = torch.tensor(sample[0]), torch.tensor(sample[1])
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    torch.save((x, y), tmp_path / "t.pt")
    for file in ("d.pt", "t.pt"):
        d = data.from_file(tmp_path / file, name="mine", classes=5)
        assert d.name == "mine" and d.classes == 5
        assert torch.equal(d.x, x.float()) and torch.equal(d.y, y)
    torch.save({"inputs": x}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"dict with 'x' and 'y'.*keys \['inputs'\]"):
        data.from_file(tmp_path / "bad.pt")


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, sample, header):
    x, y = sample
    path = tmp_path / "t.csv"
    rows = [
        ",".join(repr(float(v)) for v in (*row, label)) for row, label in zip(x, y, strict=True)
    ]
    path.write_text("\n".join((["a,b,c,target"] if header else []) + rows) + "\n")
    d = data.from_file(path)  # no "label" column: the last one
    np.testing.assert_allclose(d.x.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(d.y.numpy(), y)


def test_csv_label_column(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"f1,Label,f2\n2,1,0.5\n0,0,1.5\n"))
    d = data.from_file(path)
    assert d.name == "t" and d.y.tolist() == [1, 0] and d.x.tolist() == [[2, 0.5], [0, 1.5]]
    assert data.from_file(path, label_column="f1").y.tolist() == [2, 0]
    assert data.from_file(path, label_column=0).x.tolist() == [[1, 0.5], [0, 1.5]]
    with pytest.raises(ValueError, match=r"non-negative integers; found 0\.5 at row 0"):
        data.from_file(path, label_column=-1)
    with pytest.raises(ValueError, match=r"label_column 'y' not among .*\['f1', 'Label', 'f2'\]"):
        data.from_file(path, label_column="y")
    with pytest.raises(ValueError, match=r"label_column=7 but .* has 3 columns"):
        data.from_file(path, label_column=7)


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("1,2,0.5\n3,4,1\n", ValueError, "non-negative integers; found 0.5 at row 0"),
        ("1,2,1\n3,4,-1\n", ValueError, "non-negative integers; found -1.0 at row 1"),
        ("1,nan,1\n3,4,0\n", ValueError, "x holds 1 NaN/Inf values"),
        ("1,2,1\n3,abc,0\n", ValueError, "not a numeric CSV table"),
        ("1,2,1\n3,4\n", ValueError, "not a numeric CSV table"),
    ],
)
def test_csv_errors(tmp_path, text, error, match):
    (tmp_path / "e.csv").write_text(text)
    with pytest.raises(error, match=match):
        data.from_file(tmp_path / "e.csv")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 0, 9, 9, 1], dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", images, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels, gz=gz)
    d = data.from_file(tmp_path / f"train-images-idx3-ubyte{ext}")
    assert d.x.shape == (5, 4, 3) and d.classes == 10 and d.name == "train-images-idx3-ubyte"
    np.testing.assert_allclose(d.x.numpy(), images / 255, rtol=1e-6)
    np.testing.assert_array_equal(d.y.numpy(), labels)
    assert d.x.min() >= 0 and d.x.max() <= 1


def test_idx_other_dtypes_and_explicit_labels(tmp_path):
    images = np.arange(12, dtype=np.float32).reshape(4, 3) - 5.5
    write_idx(tmp_path / "a-idx2-float", images)
    write_idx(tmp_path / "b-idx1-int", np.array([1, 0, 1, 2], dtype=np.int32))
    d = data.from_file(tmp_path / "a-idx2-float", labels=tmp_path / "b-idx1-int")
    np.testing.assert_array_equal(d.x.numpy(), images)  # floats are not rescaled
    assert d.y.tolist() == [1, 0, 1, 2]


def test_idx_errors(tmp_path):
    images = np.zeros((4, 2, 2), dtype=np.uint8)
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx(path, images)
    with pytest.raises(FileNotFoundError, match="x-labels-idx1-ubyte"):
        data.from_file(path)
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="x has 4 rows but y has 3"):
        data.from_file(path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shape \[4, 2, 2\] of uint8 \(16 bytes\).* 15 data"):
        data.from_file(path)
    path.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="not an IDX file: magic 01 02 08 01"):
        data.from_file(path)


def test_from_file_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nope\.npz"):
        data.from_file(tmp_path / "nope.npz")
    (tmp_path / "data.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"unknown file type; supported: \.npz, \.pt"):
        data.from_file(tmp_path / "data.txt")


def test_plane_labels_use_the_circle_rule_and_nearest_neighbours_elsewhere():
    # sqrt(2/pi) = 0.797885: the last two points straddle the circle
    pts = torch.tensor([[0.0, 0.0], [0.9, 0.9], [0.0, 0.7978], [0.0, 0.7980]])
    circ = data.circle(10, seed=0)
    assert data.plane_labels(circ, pts).tolist() == [0, 1, 0, 1]
    sp = data.spirals(300, seed=1)
    assert torch.equal(data.plane_labels(sp, sp.x), sp.y)
    with pytest.raises(ValueError, match="2-D"):
        data.plane_labels(data.Dataset(torch.zeros(3, 4), torch.zeros(3).long(), "d"), pts)


def test_grid_is_row_major_with_x1_outer():
    g = data.grid(3, 2.0)
    assert g.shape == (9, 2)
    assert g[:3, 1].eq(-2).all() and g[:3, 0].tolist() == [-2.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="n >= 2"):
        data.grid(1)
