"""adamupdate.io refuses hostile and broken files (pickles, truncated or foreign archives, manifests
that do not match their entries, bad names) with a ``ValueError`` naming the file, running no
code from it.
"""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest

from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from io_helpers import FORMATS, _rewrite_manifest, assert_same  # noqa: E402

# ------------------------------------------------------------------------------------------
# Hostile and broken files
# ------------------------------------------------------------------------------------------


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling creates the marker file


def test_pickled_npz_is_refused_without_executing(tmp_path):
    marker = tmp_path / "marker"
    evil = np.empty(1, dtype=object)
    evil[0] = _Marker(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, x=evil)  # allow_pickle=True is NumPy's default for saving
    with pytest.raises(ValueError, match=r"evil\.npz.*'x'"):
        aio.load(path)
    assert not marker.exists()
    # the same object array behind a valid-looking manifest
    aio.save(path, x=np.ones(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "a") as archive, archive.open("x.npy", "w") as member:
            np.lib.format.write_array(member, evil, allow_pickle=True)
        with pytest.raises(ValueError, match=r"evil\.npz"):
            aio.load(path)
    assert not marker.exists()


def test_a_pickle_named_npz_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "pickle.npz"
    path.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ValueError, match=r"pickle\.npz"):
        aio.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"full{suffix}"
    aio.save(path, params={"w": np.arange(40.0), "b": [np.ones(3, np.float32)]}, n=3)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    for size in sorted({0, 1, 7, 8, 64, 127, 128, *range(129, len(data), 37), len(data) - 1}):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=rf"cut\{suffix}"):
            aio.load(cut)


def test_not_an_archive_and_missing_files(tmp_path):
    with open(tmp_path / "single.npz", "wb") as stream:
        np.save(stream, np.ones(3))
    with pytest.raises(ValueError, match=r"single\.npz: not an \.npz archive"):
        aio.load(tmp_path / "single.npz")
    with pytest.raises(FileNotFoundError):
        aio.load(tmp_path / "absent.mat")
    with pytest.raises(FileNotFoundError, match="no_folder"):
        aio.save(tmp_path / "no_folder" / "x.npz", a=1)


@pytest.mark.parametrize("suffix", FORMATS)
def test_garbage_is_refused(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=rf"garbage\{suffix}"):
        aio.load(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_manifest_that_does_not_match_the_entries(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"

    def fresh():
        aio.save(path, params={"w": np.ones((2, 3), np.float32)})

    def wrong_dtype(manifest, entries):
        manifest["variables"][0][1]["items"][0]["dtype"] = "<f8"

    def wrong_shape(manifest, entries):
        manifest["variables"][0][1]["items"][0]["shape"] = [3, 2, 2]

    def missing_entry(manifest, entries):
        manifest["variables"][0][1]["items"][0]["entry"] = "nowhere"

    def hostile_dtype(manifest, entries):
        manifest["variables"][0][1]["items"][0]["dtype"] = "|O"

    def bad_version(manifest, entries):
        manifest["version"] = 99

    cases = [
        (wrong_dtype, "params"),
        (wrong_shape, "params"),
        (hostile_dtype, "dtype"),
        (bad_version, "version 99"),
    ]
    if suffix != ".mat":  # in .mat files entries are found by position, not by name
        cases.append((missing_entry, "'nowhere'"))

    def extra_entry(manifest, entries):
        entries["stowaway"] = np.ones(1)

    cases.append((extra_entry, "stowaway"))
    for edit, fragment in cases:
        fresh()
        _rewrite_manifest(path, edit)
        with pytest.raises(ValueError, match=rf"m\{suffix}: .*{fragment}"):
            aio.load(path)


def test_unknown_suffix_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match=r"x\.pt: unknown file type"):
        aio.save(tmp_path / "x.pt", a=1)
    with pytest.raises(ValueError, match=r"x\.json: unknown file type"):
        aio.load(tmp_path / "x.json")
    with pytest.raises(ValueError, match="MATLAB identifiers"):
        aio.save(tmp_path / "x.mat", **{"_hidden": 1})
    with pytest.raises(TypeError, match=r"params\['a'\]\[1\]: cannot save a builtins.object"):
        aio.save(tmp_path / "x.npz", params={"a": [1, object()]})
    with pytest.raises(TypeError, match=r"params\['a'\]: cannot save an array of dtype object"):
        aio.save(tmp_path / "x.npz", params={"a": np.array([None])})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        aio.save(tmp_path / "x.npz", loop=loop)
    assert list(tmp_path.iterdir()) == []


def test_foreign_npz_and_safetensors_load_as_flat_dicts(tmp_path):
    from safetensors.numpy import save_file

    np.savez(tmp_path / "plain.npz", a=np.ones(2), b=np.arange(3))
    save_file({"w": np.zeros((2, 2), np.float32)}, str(tmp_path / "plain.safetensors"))
    assert_same(aio.load(tmp_path / "plain.npz"), {"a": np.ones(2), "b": np.arange(3)})
    out = aio.load(tmp_path / "plain.safetensors", like={"w": torch.zeros(1)})
    assert type(out["w"]) is torch.Tensor and out["w"].shape == (2, 2)
