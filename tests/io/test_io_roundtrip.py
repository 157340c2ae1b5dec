"""adamupdate.io round trips (.npz, .safetensors, .mat): any container of any dtype and shape,
special values, Python scalars and key types, container subclasses, Learnables tables; every bit
kept.
"""

from __future__ import annotations

import collections
import inspect
import math
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from io_helpers import FORMATS, Point, assert_same, roundtrip  # noqa: E402

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
