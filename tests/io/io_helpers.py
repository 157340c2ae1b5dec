"""Shared parts of the test_io_*.py files: the formats, exact comparison of what a load gives back
(types, key order, dtypes with their byte order, shapes and bits), and a file's manifest rewritten.
"""

from __future__ import annotations

import collections
import struct

import numpy as np
import pytest

from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")


FORMATS = [".npz", ".safetensors", ".mat"]
Point = collections.namedtuple("Point", "x y")


# ------------------------------------------------------------------------------------------
# Exact comparison: types, key order, dtypes (byte order included), shapes and bits
# ------------------------------------------------------------------------------------------


def bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).tobytes()


def assert_same(got, want, path="value"):
    assert type(got) is type(want), f"{path}: {type(got)} is not {type(want)}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.dtype.str == want.dtype.str, path
        assert got.shape == want.shape, path
        assert bits(got) == bits(want), f"{path}: bits differ"
    elif isinstance(want, np.generic):
        assert got.dtype.str == want.dtype.str, path
        assert bits(np.asarray(got)) == bits(np.asarray(want)), path
    elif type(want) is float:
        assert struct.pack("<d", got) == struct.pack("<d", want), path
    elif type(want) is complex:
        assert struct.pack("<dd", got.real, got.imag) == struct.pack("<dd", want.real, want.imag), (
            path
        )
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for (kg, vg), (kw, vw) in zip(got.items(), want.items()):
            assert type(kg) is type(kw), path
            assert_same(vg, vw, f"{path}[{kw!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, pd.DataFrame):
        assert list(got.columns) == list(want.columns), path
        pd.testing.assert_index_equal(got.columns, want.columns, exact=True)
        pd.testing.assert_index_equal(got.index, want.index, exact=True)
        for position in range(want.shape[1]):
            g, w = got.iloc[:, position], want.iloc[:, position]
            assert g.dtype == w.dtype, f"{path} column {position}: {g.dtype} != {w.dtype}"
            if w.dtype == object:
                for row, (a, b) in enumerate(zip(g, w)):
                    assert_same(a, b, f"{path}.iloc[{row}, {position}]")
            elif isinstance(w.dtype, np.dtype):
                assert bits(g.to_numpy()) == bits(w.to_numpy()), path
            else:
                pd.testing.assert_series_equal(g, w)
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def roundtrip(tmp_path, suffix, like=None, **variables):
    path = tmp_path / f"state{suffix}"
    aio.save(path, **variables)
    return aio.load(path, like=like)


def _rewrite_manifest(path, edit):
    """Write ``path`` again with its manifest changed by ``edit`` (entries kept)."""
    import json

    from safetensors.numpy import load_file, save_file

    if path.suffix == ".npz":
        with np.load(path) as archive:
            entries = {k: archive[k] for k in archive.files}
        manifest = json.loads(entries.pop("__adamupdate__").tobytes())
        edit(manifest, entries)
        blob = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
        np.savez(path, __adamupdate__=blob, **entries)
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "numpy") as f:
            manifest = json.loads(f.metadata()["adamupdate"])
        entries = load_file(str(path))
        edit(manifest, entries)
        save_file(entries, str(path), metadata={"adamupdate": json.dumps(manifest)})
    else:
        contents = scipy_io.loadmat(path)
        manifest = json.loads(str(contents.pop("adamupdate_manifest")[0]))
        entries = {k: v for k, v in contents.items() if not k.startswith("__")}
        edit(manifest, entries)
        scipy_io.savemat(path, {"adamupdate_manifest": json.dumps(manifest), **entries})
