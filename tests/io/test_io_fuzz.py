"""adamupdate.io fuzzed: a damaged file either loads or raises ``ValueError``, nothing else;
``.mat`` files that crash SciPy's reader are refused before it reads them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

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

from io_helpers import FORMATS, Point, _rewrite_manifest  # noqa: E402

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
