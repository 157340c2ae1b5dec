"""adamupdate.io: save/load round trips (.npz, .safetensors, .mat), MATLAB files, hostile files."""

from __future__ import annotations

import collections
import inspect
import math
import os
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adamupdate import adamupdate
from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

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


# ------------------------------------------------------------------------------------------
# Round trips of every container kind × dtype × format
# ------------------------------------------------------------------------------------------

DTYPES = ["<f2", "<f4", "<f8", "<c8", "<c16", ">f4", ">c16", "|b1", "<i8", "|u1", "bfloat16"]


def _dtype(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@st.composite
def arrays(draw):
    """Arrays from raw bits: every NaN payload, signalling NaNs, signed zeros, infinities."""
    dtype = _dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    size = math.prod(shape) * dtype.itemsize
    raw = draw(st.binary(min_size=size, max_size=size))
    array = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape).copy()
    if dtype.kind == "b":
        array = np.frombuffer(raw, dtype=np.uint8).astype(bool).reshape(shape)
    return array


def scalars():
    floats = st.binary(min_size=8, max_size=8).map(lambda b: struct.unpack("<d", b)[0])
    return st.one_of(
        floats,
        st.tuples(floats, floats).map(lambda p: complex(*p)),
        st.integers(-(2**70), 2**70),
        st.booleans(),
        st.none(),
        st.text(max_size=5),
        arrays().filter(lambda a: a.size == 1).map(lambda a: a.reshape(())[()]),
    )


keys = st.one_of(
    st.text(max_size=6),
    st.integers(-5, 5),
    st.tuples(st.integers(0, 3), st.text(max_size=2)),
)


def trees():
    return st.recursive(
        st.one_of(arrays(), scalars()),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(keys, children, max_size=3),
            st.tuples(children, children).map(lambda p: Point(*p)),
            st.dictionaries(st.text(max_size=3), children, max_size=2).map(collections.OrderedDict),
        ),
        max_leaves=8,
    )


@pytest.mark.parametrize("suffix", FORMATS)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees())
def test_any_tree_round_trips_exactly(tmp_path, suffix, tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback may happen for importable types
        loaded = roundtrip(tmp_path, suffix, tree=tree, other=[tree])
    assert list(loaded) == ["tree", "other"]
    assert_same(loaded["tree"], tree)
    assert_same(loaded["other"], [tree])


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 1, 3, 1), (1, 1)])
def test_every_dtype_and_shape(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(len(shape))
    dt = _dtype(dtype)
    raw = rng.integers(0, 256, size=math.prod(shape) * dt.itemsize, dtype=np.uint8)
    array = raw.view(dt).reshape(shape) if dt.kind != "b" else (raw > 127).reshape(shape)
    scalar = array.reshape(-1)[:1].reshape(())[()] if array.size else dt.type(0)
    loaded = roundtrip(tmp_path, suffix, a=array, s=scalar)
    assert_same(loaded["a"], array)
    assert_same(loaded["s"], scalar)


def test_special_values_keep_their_bits(tmp_path):
    half = np.array([0x7C01, 0xFE00, 0x8000, 0x7C00, 0x0001], np.uint16).view(np.float16)
    single = np.array([0x7F800001, 0xFFC00000, 0x80000000], np.uint32).view(np.float32)
    tree = {"half": half, "single": single, "pyfloat": -0.0, "nan": float("nan")}
    tree["complex"] = np.array([complex(np.inf, np.nan), complex(-0.0, np.inf)], np.complex128)
    for suffix in FORMATS:
        assert_same(roundtrip(tmp_path, suffix, tree=tree)["tree"], tree)


@pytest.mark.parametrize("suffix", FORMATS)
def test_containers_python_scalars_and_key_types(tmp_path, suffix):
    tree = {
        "list": [1, 2.5, 3 + 4j, True, None, "text", 10**40],
        "tuple": (np.float32(1.5), np.int64(-3), np.complex64(1j), np.bool_(True)),
        "point": Point(np.zeros(2), [None]),
        7: {"nested": {"deeper": [np.ones((2, 2), np.float16)]}},
        (1, "a"): collections.OrderedDict(b=[], a=()),
        None: {},
        2.5: "float key",
        False: "bool key",
        "z": np.empty((0, 3)),
    }
    loaded = roundtrip(tmp_path, suffix, tree=tree, none=None, number=3, one=1.0, path="p")
    assert_same(loaded["tree"], tree)
    assert loaded["none"] is None
    assert type(loaded["number"]) is int and loaded["number"] == 3
    assert type(loaded["one"]) is float and loaded["one"] == 1.0
    assert type(loaded["tree"]["point"]) is Point
    assert loaded["path"] == "p"  # save's own argument is positional-only


def test_container_subclasses_come_back_with_like(tmp_path):
    class Bag(list):
        pass

    tree = {"bag": Bag([1]), "counts": collections.defaultdict(int, a=1)}
    for suffix in FORMATS:
        path = tmp_path / f"sub{suffix}"
        aio.save(path, tree=tree)
        with pytest.warns(UserWarning, match="returned as a"):
            plain = aio.load(path)["tree"]
        assert type(plain["bag"]) is list and type(plain["counts"]) is dict
        typed = aio.load(path, like={"tree": tree})["tree"]
        assert type(typed["bag"]) is Bag and typed["bag"] == [1]
        assert type(typed["counts"]) is collections.defaultdict and typed["counts"]["b"] == 0


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


# pandas 2.3 added strings whose missing value is NaN (the default from pandas 3)
NAN_STRINGS = "na_value" in inspect.signature(pd.StringDtype).parameters


def learnables_table(rng):
    frame = pd.DataFrame(
        {
            "Layer": ["conv_1", "conv_1", "fc", "fc"],
            "Parameter": ["Weights", "Bias", "Weights", "Bias"],
        }
    )
    values = [
        rng.standard_normal((5, 5, 1, 20)).astype(np.float32),
        np.zeros((1, 1, 20), np.float32),
        rng.standard_normal((10, 20)).astype(np.float32),
        None,
    ]
    frame["Value"] = pd.Series(values, dtype=object)
    frame["Count"] = np.array([1, 2, 3, 4], np.int64)
    frame["Factor"] = np.array([1.0, np.nan, -0.0, 2.0])
    frame["Frozen"] = np.array([True, False, False, True])
    frame["Note"] = pd.Series(["a", None, 3, 4.5], dtype=object)
    frame["Tag"] = pd.Series(["x", None, "z", "w"], dtype=pd.StringDtype("python"))
    if NAN_STRINGS:
        frame["Text"] = pd.Series(["x", None, "z", "w"], dtype=pd.StringDtype("python", np.nan))
    return frame


@pytest.mark.parametrize("suffix", FORMATS)
def test_learnables_table_round_trips(tmp_path, suffix):
    frame = learnables_table(np.random.default_rng(0))
    other = frame.iloc[[3, 1]].copy()  # a non-range index
    other.index.name = "row"
    loaded = roundtrip(tmp_path, suffix, table=frame, other=other, nested={"t": [frame]})
    assert_same(loaded["table"], frame)
    assert_same(loaded["other"], other)
    assert_same(loaded["nested"], {"t": [frame]})


def test_table_of_the_nn_module_with_torch_like(tmp_path):
    from adamupdate import network as aun

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    table = aun.learnables(net)
    for suffix in FORMATS:
        loaded = roundtrip(tmp_path, suffix, like={"table": net}, table=table)["table"]
        assert list(loaded["Layer"]) == list(table["Layer"])
        for got, want in zip(loaded["Value"], table["Value"]):
            assert type(got) is torch.Tensor and got.dtype == want.dtype
            assert torch.equal(got, want.detach())


# ------------------------------------------------------------------------------------------
# torch and JAX leaves, like=
# ------------------------------------------------------------------------------------------

TORCH_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]


@pytest.mark.parametrize("suffix", FORMATS)
def test_torch_leaves_come_back_as_numpy_or_like_the_template(tmp_path, suffix):
    gen = torch.Generator().manual_seed(0)
    params = {
        str(dtype).removeprefix("torch."): torch.randn(3, 2, generator=gen, dtype=dtype)
        for dtype in TORCH_DTYPES
    }
    params["scalar"] = torch.tensor(2.5)
    params["param"] = torch.nn.Parameter(torch.ones(2))
    like = {name: torch.empty(0, dtype=t.dtype) for name, t in params.items()}
    path = tmp_path / f"t{suffix}"
    aio.save(path, params=params)

    plain = aio.load(path)["params"]
    for name, tensor in params.items():
        got = plain[name]
        assert type(got) is np.ndarray and got.shape == tuple(tensor.shape)
        if tensor.dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
            assert bits(got) == bits(tensor.view(torch.int16).numpy())
        else:
            assert bits(got) == bits(tensor.detach().numpy())

    typed = aio.load(path, like={"params": like})["params"]
    for name, tensor in params.items():
        got = typed[name]
        assert type(got) is torch.Tensor and not got.requires_grad
        assert got.dtype == tensor.dtype and got.device == tensor.device
        assert got.shape == tensor.shape
        want = tensor.detach().reshape(-1).view(torch.uint8)
        assert torch.equal(got.reshape(-1).view(torch.uint8), want)


def test_like_casts_to_the_template_dtype_and_keeps_zero_d_states(tmp_path):
    path = tmp_path / "s.npz"
    aio.save(path, avg=[np.float64(0.0), np.ones(3)], n=2.0)
    template = [torch.ones(3, dtype=torch.float32), torch.ones(3, dtype=torch.float32)]
    out = aio.load(path, like={"avg": template, "n": np.float32(1)})
    assert out["avg"][0].shape == () and out["avg"][0].dtype == torch.float32
    assert out["avg"][1].dtype == torch.float32 and torch.equal(out["avg"][1], torch.ones(3))
    assert type(out["n"]) is np.float32 and out["n"] == 2


@pytest.mark.gpu
def test_cuda_tensors_save_and_come_back_on_the_device(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for PyTorch")
    params = {
        "w": torch.randn(64, 3, device="cuda"),
        "h": torch.randn(5, device="cuda", dtype=torch.bfloat16),
    }
    for suffix in FORMATS:
        path = tmp_path / f"cuda{suffix}"
        aio.save(path, params=params)
        out = aio.load(path, like={"params": params})["params"]
        for name, tensor in params.items():
            assert out[name].device == tensor.device and out[name].dtype == tensor.dtype
            assert torch.equal(out[name], tensor)


def test_jax_leaves_with_like(tmp_path):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    params = {"w": jnp.arange(4, dtype=jnp.float32), "h": jnp.ones(2, dtype=jnp.bfloat16)}
    for suffix in FORMATS:
        path = tmp_path / f"j{suffix}"
        aio.save(path, params=params)
        plain = aio.load(path)["params"]
        assert type(plain["w"]) is np.ndarray and plain["h"].dtype == ml_dtypes.bfloat16
        out = aio.load(path, like={"params": params})["params"]
        for name in params:
            assert isinstance(out[name], jax.Array)
            assert out[name].dtype == params[name].dtype
            assert out[name].devices() == params[name].devices()
            assert bits(np.asarray(out[name])) == bits(np.asarray(params[name]))


def test_module_as_variable_and_as_template(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    names = [name for name, _ in net.named_parameters()]
    states = {
        name: torch.full_like(p, 0.5, dtype=torch.float64)
        for name, p in reversed(list(net.named_parameters()))
    }
    for suffix in FORMATS:
        path = tmp_path / f"net{suffix}"
        aio.save(path, net=net, avg_grad=states)
        plain = aio.load(path)
        assert list(plain["net"]) == names and type(plain["net"]["0.weight"]) is np.ndarray
        out = aio.load(path, like={"net": net, "avg_grad": net})
        assert list(out["avg_grad"]) == names  # named_parameters order
        for name, p in net.named_parameters():
            assert out["net"][name].dtype == p.dtype and torch.equal(out["net"][name], p.detach())
            assert out["avg_grad"][name].dtype == p.dtype  # the parameter's dtype
    aio.save(path, s={"nope": np.ones(1)})
    with pytest.raises(ValueError, match=r"s\['nope'\]: the network has no parameter 'nope'"):
        aio.load(path, like={"s": net})


def test_like_mismatches_are_reported_by_path(tmp_path):
    path = tmp_path / "m.npz"
    aio.save(path, params={"a": [np.ones(2)]})
    with pytest.raises(ValueError, match=r"m\.npz: params\['a'\]: has 1 elements, like has 2"):
        aio.load(path, like={"params": {"a": [np.ones(2), np.ones(2)]}})
    with pytest.raises(ValueError, match=r"params\['b'\]: in like but not in the file"):
        aio.load(path, like={"params": {"a": [None], "b": None}})
    with pytest.raises(ValueError, match="no variable 'typo'"):
        aio.load(path, like={"typo": None})
    with pytest.raises(TypeError, match="like must be a mapping"):
        aio.load(path, like=[1])


def test_namedtuple_whose_module_is_not_imported_falls_back_to_a_dict(tmp_path):
    Hidden = collections.namedtuple("Hidden", "a b")
    Hidden.__module__ = "module_that_is_not_imported"
    for suffix in FORMATS:
        path = tmp_path / f"h{suffix}"
        aio.save(path, value=Hidden(1, np.ones(1)))
        with pytest.warns(UserWarning, match="returned as a dict"):
            plain = aio.load(path)["value"]
        assert_same(plain, {"a": 1, "b": np.ones(1)})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_same(
                aio.load(path, like={"value": Hidden(0, None)})["value"], Hidden(1, np.ones(1))
            )


# ------------------------------------------------------------------------------------------
# Files written by MATLAB (simulated with scipy.io.savemat as MATLAB lays them out)
# ------------------------------------------------------------------------------------------


def test_matlab_written_file_loads_into_python_containers(tmp_path):
    cell = np.empty((1, 3), dtype=object)
    cell[0, 0] = np.arange(6, dtype=np.float32).reshape(2, 3)
    cell[0, 1] = "name"
    cell[0, 2] = np.array([[1 + 2j]], np.complex64)
    grid = np.empty((2, 2), dtype=object)
    grid[:] = [[np.ones((1, 1)), "b"], ["c", np.zeros((0, 0))]]
    people = np.array(
        [[(np.array([[1.0]]), "ada"), (np.array([[2.0]]), "bob")]],
        dtype=[("id", object), ("name", object)],
    )
    matlab = {
        "s": {"w": np.ones((3, 1)), "flag": np.array([[True, False]]), "cell": cell},
        "people": people,
        "grid": grid,
        "empty": np.zeros((0, 0)),
        "empty_cell": np.empty((0, 0), dtype=object),
        "z": np.array([[np.complex128(complex(np.inf, -0.0))]]),
        "i": np.array([[7]], np.int32),
        "chars": np.array(["ab", "cd"]),
        "bigarray": np.arange(24.0).reshape(2, 3, 4),
    }
    path = tmp_path / "matlab.mat"
    scipy_io.savemat(path, matlab)
    out = aio.load(path)
    assert list(out) == list(matlab)
    s = out["s"]
    assert list(s) == ["w", "flag", "cell"]
    assert_same(s["w"], np.ones((3, 1)))
    assert_same(s["flag"], np.array([[True, False]]))  # logical → bool
    assert type(s["cell"]) is list and len(s["cell"]) == 3
    assert_same(s["cell"][0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert s["cell"][1] == "name"
    assert_same(s["cell"][2], np.array([[1 + 2j]], np.complex64))  # single complex stays so
    assert_same(
        out["people"],
        [{"id": np.array([[1.0]]), "name": "ada"}, {"id": np.array([[2.0]]), "name": "bob"}],
    )
    assert out["grid"][0][1] == "b" and out["grid"][1][0] == "c" and out["grid"][1][1] is None
    assert out["empty"] is None and out["empty_cell"] == []
    assert_same(out["z"], matlab["z"])
    assert_same(out["i"], np.array([[7]], np.int32))
    assert out["chars"] == ["ab", "cd"]
    assert_same(out["bigarray"], np.arange(24.0).reshape(2, 3, 4))


def test_matlab_objects_are_refused_by_name(tmp_path, monkeypatch):
    from scipy.io import matlab as mio

    path = tmp_path / "obj.mat"
    scipy_io.savemat(path, {"net": np.ones((1, 1))})
    real = mio.loadmat

    def with_object(*args, **kwargs):
        contents = real(*args, **kwargs)
        contents["net"] = mio.MatlabOpaque(np.empty((1, 1), dtype=[("s0", "O")]))
        return contents

    monkeypatch.setattr(scipy_io, "loadmat", with_object)
    with pytest.raises(ValueError, match=r"obj\.mat: net is a MATLAB object"):
        aio.load(path)


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


# ------------------------------------------------------------------------------------------
# Atomic writes, lazy imports, missing packages
# ------------------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    aio.save(path, a=np.ones(2))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        aio.save(path, a=np.zeros(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_saved_file_gets_the_usual_permissions(tmp_path):
    path = tmp_path / "state.npz"
    aio.save(path, a=1)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_importing_io_imports_no_optional_package():
    watched = ["torch", "jax", "pandas", "scipy", "safetensors"]
    code = (
        "import sys, numpy as np, tempfile, os\n"
        "import adamupdate.io as aio\n"
        "p = os.path.join(tempfile.mkdtemp(), 's.npz')\n"
        "aio.save(p, a={'w': [np.ones(2)]}, n=1)\n"
        "assert aio.load(p)['n'] == 1\n"
        f"print([m for m in {watched!r} if m in sys.modules])\n"
    )
    src = str(Path(aio.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("suffix", "module"), [(".safetensors", "safetensors"), (".mat", "scipy.io")]
)
def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, suffix, module):
    aio.save(tmp_path / f"x{suffix}", a=1)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'adamupdate\[io\]'"):
        aio.save(tmp_path / f"x{suffix}", a=1)
    with pytest.raises(ImportError, match=r"pip install 'adamupdate\[io\]'"):
        aio.load(tmp_path / f"x{suffix}")


# ------------------------------------------------------------------------------------------
# Resuming training: 3 steps + save + load + 3 steps == 6 steps, bit for bit
# ------------------------------------------------------------------------------------------


def _numpy_grads(params, iteration):
    rng = np.random.default_rng(iteration)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_numpy_training_bitwise(tmp_path, suffix):
    rng = np.random.default_rng(1)
    start = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3)]

    def run(params, avg, avg_sq, first, last):
        for t in range(first, last + 1):
            params, avg, avg_sq = adamupdate(params, _numpy_grads(params, t), avg, avg_sq, t)
        return params, avg, avg_sq

    straight = run(start, None, None, 1, 6)
    params, avg, avg_sq = run(start, None, None, 1, 3)
    path = tmp_path / f"ckpt{suffix}"
    aio.save(path, params=params, avg_grad=avg, avg_sq_grad=avg_sq, iteration=3)
    state = aio.load(path)
    assert state["iteration"] == 3
    resumed = run(state["params"], state["avg_grad"], state["avg_sq_grad"], 4, 6)
    assert_same(list(resumed), list(straight))


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_torch_training_bitwise(tmp_path, suffix):
    gen = torch.Generator().manual_seed(2)
    start = {
        "w": torch.randn(5, 4, generator=gen),
        "b": torch.randn(4, generator=gen, dtype=torch.float64),
    }

    def grads(params, t):
        g = torch.Generator().manual_seed(100 + t)
        return {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}

    def run(params, avg, avg_sq, first, last):
        for t in range(first, last + 1):
            params, avg, avg_sq = adamupdate(
                params, grads(params, t), avg, avg_sq, t, inplace=False
            )
        return params, avg, avg_sq

    straight = run(start, None, None, 1, 6)
    params, avg, avg_sq = run(start, None, None, 1, 3)
    path = tmp_path / f"ckpt{suffix}"
    aio.save(path, params=params, avg_grad=avg, avg_sq_grad=avg_sq, iteration=3)
    like = dict.fromkeys(["params", "avg_grad", "avg_sq_grad"], start)
    state = aio.load(path, like=like)
    resumed = run(state["params"], state["avg_grad"], state["avg_sq_grad"], 4, 6)
    for got, want in zip(resumed, straight):
        assert list(got) == list(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert torch.equal(got[name].view(torch.uint8), want[name].view(torch.uint8))


# ------------------------------------------------------------------------------------------
# MATLAB dlnetwork Learnables ↔ torch layers
# ------------------------------------------------------------------------------------------


def digits_net():
    train_digits = pytest.importorskip("adamupdate.examples.train_digits")
    torch.manual_seed(0)
    net = train_digits.DigitsNet(torch.rand(1, 28, 28))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # nonzero biases too
    return net


def test_digits_net_round_trips_through_matlab_layout_and_mat_file(tmp_path):
    net = digits_net()
    learnables = aio.matlab_learnables(net, input_shapes={"fc": (20, 24, 24)})
    shapes = {layer: {k: v.shape for k, v in p.items()} for layer, p in learnables.items()}
    assert shapes == {
        "conv_1": {"Weights": (5, 5, 1, 20), "Bias": (1, 1, 20)},
        "conv_2": {"Weights": (3, 3, 20, 20), "Bias": (1, 1, 20)},
        "conv_3": {"Weights": (3, 3, 20, 20), "Bias": (1, 1, 20)},
        "fc": {"Weights": (10, 11520), "Bias": (10, 1)},
    }
    # [h w cin cout] ← [cout cin h w], element by element
    w = net.conv_2.weight.detach().numpy()
    assert learnables["conv_2"]["Weights"][2, 1, 7, 5] == w[5, 7, 2, 1]
    path = tmp_path / "digits.mat"
    aio.save(path, learnables=learnables)
    # what MATLAB sees: single arrays with MATLAB's shapes
    raw = scipy_io.loadmat(path)["learnables"][0, 0]
    assert raw["conv_1"][0, 0]["Weights"].shape == (5, 5, 1, 20)
    assert raw["conv_1"][0, 0]["Weights"].dtype == np.float32
    assert raw["fc"][0, 0]["Bias"].shape == (10, 1)

    other = digits_net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    loaded = aio.load(path)["learnables"]
    aio.load_matlab_learnables(other, loaded, input_shapes={"fc": (20, 24, 24)})
    for (name, p), q in zip(net.named_parameters(), other.parameters()):
        assert torch.equal(p.view(torch.int32), q.view(torch.int32)), name


def test_matlab_layout_computes_what_matlab_computes():
    """An independent MATLAB-semantics forward pass (HWC images, [h w cin cout] filters,
    column-major flattening into the fully connected layer) gives torch's logits."""
    net = digits_net().double()
    L = aio.matlab_learnables(net, input_shapes={"fc": (20, 24, 24)})
    image = torch.rand(
        1, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    want = net.logits(image)[0].detach().numpy()

    def conv(x, weights, bias, pad):  # x: [H W C]
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        kh, kw = weights.shape[:2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))
        return np.einsum("hwcij,ijco->hwo", windows, weights) + bias.reshape(1, 1, -1)

    x = (image - net.mean)[0].numpy().transpose(1, 2, 0)  # [C H W] → MATLAB's [H W C]
    x = np.maximum(conv(x, L["conv_1"]["Weights"], L["conv_1"]["Bias"], 0), 0)
    x = np.maximum(conv(x, L["conv_2"]["Weights"], L["conv_2"]["Bias"], 1), 0)
    x = np.maximum(conv(x, L["conv_3"]["Weights"], L["conv_3"]["Bias"], 1), 0)
    got = L["fc"]["Weights"] @ x.reshape(-1, order="F") + L["fc"]["Bias"][:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def test_matlab_written_learnables_load_into_a_network(tmp_path):
    """A .mat as MATLAB writes it (no manifest; trailing singleton dims dropped)."""
    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(3, 1, 2))  # one filter: MATLAB stores 2x2x3
    net.add_module("fc", torch.nn.Linear(4, 2))
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((2, 2, 3)).astype(np.float32)  # [h w cin], cout=1 dropped
    bias = np.array([[0.5]], np.float32)  # MATLAB's [1 1 1] is 1x1
    fc = rng.standard_normal((2, 4)).astype(np.float32)
    fc_bias = np.array([[1.0], [2.0]], np.float32)
    structure = {"conv": {"Weights": weights, "Bias": bias}, "fc": {"Weights": fc, "Bias": fc_bias}}
    path = tmp_path / "from_matlab.mat"
    scipy_io.savemat(path, {"S": structure})
    aio.load_matlab_learnables(net, aio.load(path)["S"])
    assert np.array_equal(net.conv.weight.detach().numpy()[0], weights.transpose(2, 0, 1))
    assert net.conv.bias.item() == 0.5
    assert np.array_equal(net.fc.weight.detach().numpy(), fc)
    assert np.array_equal(net.fc.bias.detach().numpy(), [1.0, 2.0])


def test_learnables_errors_name_the_layer():
    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(1, 2, 3))
    net.add_module("norm", torch.nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match=r"layer 'norm' \(BatchNorm2d\)"):
        aio.matlab_learnables(net)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="layer '0': a grouped Conv2d"):
        aio.matlab_learnables(grouped)

    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(1, 2, 3))
    values = aio.matlab_learnables(net)
    before = net.conv.weight.detach().clone()
    bad = {"conv": {"Weights": np.ones((3, 3, 2, 2)), "Bias": values["conv"]["Bias"] + 1}}
    with pytest.raises(ValueError, match=r"layer 'conv': Weights has shape \(3, 3, 2, 2\)"):
        aio.load_matlab_learnables(net, bad)
    assert torch.equal(net.conv.weight, before)  # nothing written
    with pytest.raises(ValueError, match="layer 'fc'"):
        aio.load_matlab_learnables(net, {**values, "fc": values["conv"]})
    with pytest.raises(ValueError, match="layer 'conv': missing 'Bias'"):
        aio.load_matlab_learnables(net, {"conv": {"Weights": values["conv"]["Weights"]}})
    with pytest.raises(ValueError, match="input_shapes"):
        aio.matlab_learnables(net, input_shapes={"conv": (1, 1, 1)})


# ------------------------------------------------------------------------------------------
# Fuzzing: a damaged file either loads or raises ValueError, nothing else
# ------------------------------------------------------------------------------------------

FUZZ_STATE = {
    "params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(1.0), 2.5]},
    "point": Point(np.ones(2, np.complex64), None),
    "iteration": 3,
}


def _json_values():
    return st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4)),
        lambda children: st.one_of(
            st.lists(children, max_size=2), st.dictionaries(st.text(max_size=3), children)
        ),
        max_leaves=4,
    )


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@pytest.mark.filterwarnings("ignore:.*saved as:UserWarning")  # damaged type names
@pytest.mark.parametrize("suffix", FORMATS)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_manifest_raises_only_value_error(tmp_path, suffix, data):
    path = tmp_path / f"fuzz{suffix}"
    aio.save(path, **FUZZ_STATE)

    def edit(manifest, entries):
        paths = [p for p in _paths(manifest) if p]
        where = data.draw(st.sampled_from(paths))
        parent = manifest
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = data.draw(_json_values())

    _rewrite_manifest(path, edit)
    try:
        aio.load(path, like={"params": {"w": torch.zeros(1), "b": [None, None]}})
    except ValueError as error:
        assert str(path) in str(error)


@pytest.mark.filterwarnings("ignore:.*saved as:UserWarning")  # damaged type names
@pytest.mark.parametrize("suffix", FORMATS)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_bytes_raise_only_value_error(tmp_path, suffix, data):
    path = tmp_path / f"bytes{suffix}"
    aio.save(path, **FUZZ_STATE)
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(blob))
    try:
        aio.load(path)
    except ValueError as error:
        assert str(path) in str(error)


def test_mat_files_that_crash_scipys_reader_are_refused_first(tmp_path):
    """One flipped byte made scipy.io.loadmat (1.17) segfault: a cell array's class byte turned
    into double's, or a numeric element type out of SciPy's table. Run in a subprocess so that
    a regression fails this test instead of killing the test run."""
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.ones((1, 1))
    scipy_io.savemat(tmp_path / "cell.mat", {"c": cell})
    data = (tmp_path / "cell.mat").read_bytes()
    flags_of_cell = struct.pack("<III", 6, 8, 1)  # miUINT32, 8 bytes, mxCELL_CLASS
    assert data.count(flags_of_cell) == 1
    (tmp_path / "class.mat").write_bytes(
        data.replace(flags_of_cell, struct.pack("<III", 6, 8, 6))  # now "double"
    )
    scipy_io.savemat(tmp_path / "double.mat", {"x": np.array([[1.0, 2.0]])})
    data = (tmp_path / "double.mat").read_bytes()
    double_data = struct.pack("<II", 9, 16)  # miDOUBLE, 16 bytes
    assert data.count(double_data) == 1
    (tmp_path / "type.mat").write_bytes(data.replace(double_data, struct.pack("<II", 0x5D, 16)))
    code = (
        "import sys, adamupdate.io as aio\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        aio.load(name)\n"
        "    except ValueError as error:\n"
        "        print('refused', error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(aio.__file__).resolve().parents[2])}
    names = [str(tmp_path / "class.mat"), str(tmp_path / "type.mat")]
    proc = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("refused") == 2, proc.stdout
    assert "c: malformed" in proc.stdout and "x: malformed numeric data" in proc.stdout


def test_matlab_objects_in_the_file_are_refused_by_name(tmp_path):
    """An mxOPAQUE_CLASS variable (a MATLAB table, string, dlnetwork ...) as MATLAB writes it:
    flags, then its name, type system and class name."""

    def element(kind, payload):
        padded = payload + b"\0" * (-len(payload) % 8)
        return struct.pack("<II", kind, len(payload)) + padded

    body = (
        element(6, struct.pack("<II", 17, 0))  # array flags: mxOPAQUE_CLASS
        + element(1, b"net")
        + element(1, b"MCOS")
        + element(1, b"dlnetwork")
    )
    header = b"MATLAB 5.0 MAT-file".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path = tmp_path / "object.mat"
    path.write_bytes(header + struct.pack("<II", 14, len(body)) + body)
    with pytest.raises(ValueError, match=r"object\.mat: net is a MATLAB object"):
        aio.load(path)
