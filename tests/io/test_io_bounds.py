"""State I/O is bounded by the file: small crafted files cannot make a load allocate gigabytes.

Every size a file declares (a ``.npy`` header's shape, a zip member's size, a compressed MAT
variable's tag, a table's row count) is checked against the manifest and the bytes the file
really holds before anything is inflated or allocated; every failure is a ``ValueError`` naming
the file. The peak memory of a load is measured with :mod:`tracemalloc` (NumPy reports its array
buffers to it), in this process.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from adamupdate import io as state_io

BOMB = 256 << 20  # bytes a bomb inflates to
BOUND = 64 << 20  # peak a load of any file here may reach
_ZEROS = bytes(1 << 20)


def peak_of(call):
    """(result or exception, peak bytes allocated during ``call()``)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        try:
            result = call()
        except Exception as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def deflated_zeros(prefix: bytes, wbits: int) -> tuple[bytes, int]:
    """``prefix`` then BOMB zero bytes, deflated (raw for zip, zlib for .mat); and the CRC."""
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits)
    parts = [packer.compress(prefix)]
    crc = zlib.crc32(prefix)
    for _ in range(BOMB // len(_ZEROS)):
        parts.append(packer.compress(_ZEROS))
        crc = zlib.crc32(_ZEROS, crc)
    parts.append(packer.flush())
    return b"".join(parts), crc


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip of (name, data, method, crc, declared size) members, written by hand so that a
    member may declare what it likes."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = out.tell()
        encoded = name.encode()
        # version 2.0, no flags, time 0, date 1980-01-01; no extra field, comment or attributes
        common = (method, 0, 33, crc, len(data), size, len(encoded), 0)
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, *common) + encoded + data)
        central.write(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, *common, 0, 0, 0, 0, offset)
        )
        central.write(encoded)
    start = out.tell()
    out.write(central.getvalue())
    n = len(members)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, central.tell(), start, 0))
    return out.getvalue()


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)


def manifest_member(path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read("__adamupdate__.npy")


def saved_npz(tmp_path, **variables):
    path = tmp_path / "state.npz"
    state_io.save(path, **variables)
    return path


# --- npz -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deflated_npy_bomb():
    """A .npy member declaring (BOMB/8,) float64 whose bytes really inflate to that."""
    header = npy_header("<f8", (BOMB // 8,))
    data, crc = deflated_zeros(header, -15)
    return data, crc, len(header) + BOMB


def test_npz_entry_inflating_past_its_manifest_shape(tmp_path, deflated_npy_bomb):
    """The manifest says 2 values; the member's header (and its size in the zip) say 32 M and
    it really inflates to 256 MiB. Refused from the header, before anything is allocated."""
    data, crc, size = deflated_npy_bomb
    saved_npz(tmp_path, x=np.zeros(2))
    path = tmp_path / "bomb.npz"
    path.write_bytes(
        raw_zip(
            [
                stored("__adamupdate__.npy", manifest_member(tmp_path / "state.npz")),
                ("x.npy", data, zipfile.ZIP_DEFLATED, crc, size),
            ]
        )
    )
    error, peak = peak_of(lambda: state_io.load(path))
    assert isinstance(error, ValueError), error
    assert str(path) in str(error) and "'x'" in str(error) and "(33554432,)" in str(error)
    assert peak < BOUND, peak


def test_npz_member_that_inflates_past_its_declared_size(tmp_path, deflated_npy_bomb):
    """The zip's directory says 144 bytes (a 2-value header and its data) but the stream
    inflates to 256 MiB: only the declared bytes are inflated, and they are the 2 values."""
    saved_npz(tmp_path, x=np.zeros(2))
    header = npy_header("<f8", (2,))
    data, _ = deflated_zeros(header, -15)
    crc = zlib.crc32(header + bytes(16))  # of what the member declares to hold
    path = tmp_path / "bomb.npz"
    path.write_bytes(
        raw_zip(
            [
                stored("__adamupdate__.npy", manifest_member(tmp_path / "state.npz")),
                ("x.npy", data, zipfile.ZIP_DEFLATED, crc, len(header) + 16),
            ]
        )
    )
    result, peak = peak_of(lambda: state_io.load(path))
    assert isinstance(result, dict), result
    np.testing.assert_array_equal(result["x"], np.zeros(2))
    assert peak < BOUND, peak


def test_npz_without_manifest_declaring_a_huge_shape(tmp_path):
    """Another tool's file: nothing to compare the header with but the member's size (NumPy's
    own reader allocates the header's 8 TiB first)."""
    path = tmp_path / "other.npz"
    path.write_bytes(raw_zip([stored("x.npy", npy_header("<f8", (2**40,)) + bytes(16))]))
    error, peak = peak_of(lambda: state_io.load(path))
    assert isinstance(error, ValueError), error
    assert str(path) in str(error) and "'x'" in str(error)
    assert peak < BOUND, peak


def test_npz_member_declaring_more_than_deflate_can_hold(tmp_path):
    compressed = zlib.compress(b"x" * 100)[2:-4]  # a raw deflate stream
    path = tmp_path / "other.npz"
    path.write_bytes(raw_zip([("x.npy", compressed, zipfile.ZIP_DEFLATED, 0, 2**31)]))
    with pytest.raises(ValueError, match=r"other\.npz: .*'x\.npy' declares 2147483648 bytes"):
        state_io.load(path)


def test_npz_of_another_tool_still_loads(tmp_path):
    """NumPy's own files, compressed and Fortran-ordered, read as np.load reads them."""
    arrays = {
        "f": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "i": np.arange(5, dtype=">i4"),
        "s": np.float32(2.5),
    }
    path = tmp_path / "numpy.npz"
    np.savez_compressed(path, **arrays)
    loaded = state_io.load(path)
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype and loaded[name].shape == np.shape(value)


def test_npz_member_that_is_not_npy(tmp_path):
    path = tmp_path / "other.npz"
    path.write_bytes(raw_zip([stored("notes.txt", b"hello")]))
    with pytest.raises(ValueError, match=r"other\.npz: .*'notes\.txt' is not a NumPy array"):
        state_io.load(path)


# --- safetensors ---------------------------------------------------------------------------------


def test_safetensors_header_checked_before_the_data(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    small = tmp_path / "small.safetensors"
    state_io.save(small, x=np.zeros(2, np.float32))
    with open(small, "rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        metadata = json.loads(stream.read(length))["__metadata__"]
    path = tmp_path / "big.safetensors"
    safetensors_numpy.save_file({"x": np.zeros(1 << 20, np.float32)}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"big\.safetensors: entry 'x' is float32 \(1048576,\)"):
        state_io.load(path)


# --- .mat ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mat_parts(tmp_path_factory):
    """(the 128-byte header, one uncompressed miMATRIX element) of a SciPy-written file."""
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path_factory.mktemp("mat") / "a.mat"
    scipy_io.savemat(path, {"a": np.arange(3.0)}, do_compression=False)
    data = path.read_bytes()
    return data[:128], data[128:]


def compressed_element(stream: bytes) -> bytes:
    return struct.pack("<II", 15, len(stream)) + stream  # miCOMPRESSED


def test_mat_zlib_bomb(tmp_path, mat_parts):
    """A compressed variable whose tag declares 80 bytes, its stream inflating to 256 MiB."""
    header, element = mat_parts
    stream, _ = deflated_zeros(element, 15)
    path = tmp_path / "bomb.mat"
    path.write_bytes(header + compressed_element(stream))
    error, peak = peak_of(lambda: state_io.load(path))
    assert isinstance(error, ValueError), error
    assert str(path) in str(error) and "inflates past its declared size" in str(error)
    assert peak < BOUND, peak


def test_mat_compressed_variable_declaring_more_than_it_can_hold(tmp_path, mat_parts):
    header, element = mat_parts
    lying = element[:4] + struct.pack("<I", 2**31) + element[8:]
    path = tmp_path / "lying.mat"
    path.write_bytes(header + compressed_element(zlib.compress(lying)))
    with pytest.raises(ValueError, match=r"lying\.mat: .*declares 2147483656 bytes, more than"):
        state_io.load(path)


def test_mat_compressed_variables_still_load(tmp_path, mat_parts):
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "c.mat"
    values = {"a": np.arange(6.0).reshape(2, 3), "b": np.ones((1, 4), np.float32)}
    scipy_io.savemat(path, values, do_compression=True)
    loaded = state_io.load(path)
    for name, value in values.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype
    header, element = mat_parts
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(header + compressed_element(zlib.compress(element)[:-8]))
    with pytest.raises(ValueError, match=r"truncated\.mat: .*truncated"):
        state_io.load(truncated)


# --- tables --------------------------------------------------------------------------------------


def learnables():
    pandas = pytest.importorskip("pandas")
    return pandas.DataFrame(
        {
            "Layer": ["fc", "fc"],
            "Parameter": ["Weights", "Bias"],
            "Value": [np.ones((2, 3)), np.zeros(2)],
        }
    )


def with_rows(manifest: dict, rows: int) -> dict:
    manifest["variables"][0][1]["index"]["range"] = [0, rows, 1]
    return manifest


def rewrite_manifest(path, change) -> None:
    """The file at ``path`` with its manifest changed by ``change`` (npz or safetensors)."""
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        manifest = json.loads(np.load(io.BytesIO(members["__adamupdate__.npy"])).tobytes())
        text = json.dumps(change(manifest)).encode()
        stream = io.BytesIO()
        np.lib.format.write_array(stream, np.frombuffer(text, np.uint8))
        members["__adamupdate__.npy"] = stream.getvalue()
        path.write_bytes(raw_zip([stored(name, data) for name, data in members.items()]))
    else:
        from safetensors import safe_open
        from safetensors.numpy import save_file

        with safe_open(str(path), framework="numpy") as archive:
            tensors = {name: archive.get_tensor(name) for name in archive.keys()}  # noqa: SIM118
            metadata = archive.metadata()
        metadata["adamupdate"] = json.dumps(change(json.loads(metadata["adamupdate"])))
        save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("rows", [3 * 10**8, 10**18, 10**30])
def test_table_claiming_huge_row_counts(tmp_path, suffix, rows):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"table{suffix}"
    state_io.save(path, table=learnables())
    rewrite_manifest(path, lambda manifest: with_rows(manifest, rows))
    error, peak = peak_of(lambda: state_io.load(path))
    assert isinstance(error, ValueError), repr(error)
    assert str(path) in str(error) and "table" in str(error)
    assert peak < BOUND, peak


def test_table_with_a_lazy_range_index(tmp_path):
    """A table without columns is its index: a range of 10**18 rows is built lazily; one past
    int64 (what pandas can hold) is refused."""
    pandas = pytest.importorskip("pandas")
    path = tmp_path / "empty.npz"
    state_io.save(path, table=pandas.DataFrame(index=range(3)))
    rewrite_manifest(path, lambda manifest: with_rows(manifest, 10**18))
    table, peak = peak_of(lambda: state_io.load(path)["table"])
    assert table.shape == (10**18, 0) and table.index[-1] == 10**18 - 1
    assert peak < BOUND, peak
    rewrite_manifest(path, lambda manifest: with_rows(manifest, 10**30))
    with pytest.raises(ValueError, match=r"empty\.npz: table: bad range index"):
        state_io.load(path)


def test_table_rows_checked_against_like(tmp_path):
    """A network-shaped template with another row count is refused before decoding."""
    path = tmp_path / "table.npz"
    table = learnables()
    state_io.save(path, table=table)
    with pytest.raises(ValueError, match=r"table\.npz: table: has 2 rows, like has 3"):
        state_io.load(path, like={"table": table.iloc[[0, 1, 1]].reset_index(drop=True)})
