"""Learnables-style tables (MATLAB table: Layer, Parameter, Value) as pandas DataFrames."""

from __future__ import annotations

import re

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import reference as ref  # noqa: E402
from adamupdate import adamupdate  # noqa: E402

LAYOUT = [
    ("conv1", "Weights", (3, 3, 1, 4)),
    ("conv1", "Bias", (1, 1, 4)),
    ("fc", "Weights", (10, 36)),
    ("fc", "Bias", (10, 1)),
]


def _values(rng, scale=1.0, dtype=np.float32):
    return [(scale * rng.standard_normal(shape)).astype(dtype) for _, _, shape in LAYOUT]


def _table(values, extra=True, index=None):
    data = {
        "Layer": [layer for layer, _, _ in LAYOUT],
        "Parameter": [name for _, name, _ in LAYOUT],
        "Value": pd.Series(values, dtype=object, index=index),
    }
    if index is not None:
        data["Layer"] = pd.Series(data["Layer"], index=index)
        data["Parameter"] = pd.Series(data["Parameter"], index=index)
    frame = pd.DataFrame(data, index=index)
    if extra:
        frame["Note"] = [f"note-{i}" for i in range(len(LAYOUT))]
    return frame


def _snapshot(frame):
    return (
        list(frame.columns),
        list(frame.index),
        [list(frame[c]) for c in frame.columns if c != "Value"],
        [(id(x), x.dtype.str, x.shape, x.tobytes()) for x in frame["Value"]],
    )


def _word(name):
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


def test_table_updates_value_like_leaves_one_by_one():
    rng = np.random.default_rng(41)
    params = _table(_values(rng))
    hp = (0.01, 0.9, 0.99, 1e-8)
    grads = [_table(_values(rng, 0.1), extra=False) for _ in range(3)]
    p, m, v = params, None, None
    per_leaf = [(x, None, None) for x in params["Value"]]
    for t, grad in enumerate(grads, start=1):
        snaps = [_snapshot(x) for x in (p, grad)]
        p_new, m_new, v_new = adamupdate(p, grad, m, v, t, *hp)
        assert [_snapshot(x) for x in (p, grad)] == snaps  # inputs untouched
        assert isinstance(p_new, pd.DataFrame)
        assert list(p_new.columns) == list(params.columns)
        assert list(p_new.index) == list(params.index)
        for col in ("Layer", "Parameter", "Note"):
            assert list(p_new[col]) == list(params[col])
        assert isinstance(m_new, pd.DataFrame) and isinstance(v_new, pd.DataFrame)
        assert "Value" in m_new.columns and "Value" in v_new.columns
        assert len(m_new) == len(LAYOUT) and len(v_new) == len(LAYOUT)
        per_leaf = [
            adamupdate(pl, g, ml, vl, t, *hp)
            for (pl, ml, vl), g in zip(per_leaf, grad["Value"], strict=True)
        ]
        for i, (pl, ml, vl) in enumerate(per_leaf):
            got_p = p_new["Value"].iloc[i]
            assert isinstance(got_p, np.ndarray) and got_p.dtype == np.float32
            assert got_p.shape == LAYOUT[i][2]
            np.testing.assert_array_equal(got_p, pl, err_msg=f"row {i}")
            np.testing.assert_array_equal(m_new["Value"].iloc[i], ml, err_msg=f"row {i}")
            np.testing.assert_array_equal(v_new["Value"].iloc[i], vl, err_msg=f"row {i}")
        p, m, v = p_new, m_new, v_new
    # the numbers themselves, against the reference
    for i in range(len(LAYOUT)):
        traj = ref.run(params["Value"].iloc[i], [g["Value"].iloc[i] for g in grads], *hp)
        ref.assert_matches(p["Value"].iloc[i], traj.p, traj.p_bound, np.float32, f"row {i}")
        ref.assert_matches(m["Value"].iloc[i], traj.m, traj.m_bound, np.float32, f"m row {i}")
    assert not np.array_equal(p["Value"].iloc[0], params["Value"].iloc[0])


def test_rows_matched_by_position_not_by_index_label():
    rng = np.random.default_rng(42)
    values = _values(rng)
    gvalues = _values(rng, 0.1)
    params = _table(values, index=[10, 11, 12, 13])
    grad = _table(gvalues, extra=False, index=[3, 2, 1, 0])  # labels reversed, rows in order
    p1, _, _ = adamupdate(params, grad, None, None, 1, 0.01)
    assert list(p1.index) == [10, 11, 12, 13]
    for i in range(len(LAYOUT)):
        expected = adamupdate(values[i], gvalues[i], None, None, 1, 0.01)[0]
        np.testing.assert_array_equal(p1["Value"].iloc[i], expected, err_msg=f"row {i}")


@pytest.mark.parametrize("n_rows", [3, 5])
def test_grad_with_another_number_of_rows_raises(n_rows):
    rng = np.random.default_rng(43)
    params = _table(_values(rng))
    gvals = _values(rng, 0.1)
    grad = _table(gvals, extra=False)
    grad = grad.iloc[:n_rows] if n_rows < len(LAYOUT) else pd.concat([grad, grad.iloc[:1]])
    snaps = [_snapshot(x) for x in (params, grad)]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(params, grad, None, None, 1)
    assert [_snapshot(x) for x in (params, grad)] == snaps
    assert re.search(_word("grad"), str(info.value)), str(info.value)


def _with_bad_row(frame, row):
    values = list(frame["Value"])
    values[row] = np.zeros(values[row].shape[::-1], values[row].dtype)  # (10, 36) -> (36, 10)
    bad = frame.copy()
    bad["Value"] = pd.Series(values, index=frame.index, dtype=object)
    return bad


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("target", ["grad", "avg_grad"])
def test_shape_mismatch_in_a_row_raises_naming_the_row(target, inplace):
    rng = np.random.default_rng(44)
    params = _table(_values(rng))
    grad = _table(_values(rng, 0.1), extra=False)
    bad_row = 2
    if target == "grad":
        args = [params, _with_bad_row(grad, bad_row), None, None, 1]
    else:
        p1, m1, v1 = adamupdate(params, grad, None, None, 1)
        args = [p1, grad, _with_bad_row(m1, bad_row), v1, 2]
    snaps = [_snapshot(x) if x is not None else None for x in args[:4]]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(*args, inplace=inplace)
    assert [_snapshot(x) if x is not None else None for x in args[:4]] == snaps
    msg = str(info.value)
    assert re.search(_word(target), msg), msg
    assert re.search(rf"(?<![0-9]){bad_row}(?![0-9])", msg), f"row {bad_row} not named: {msg!r}"


def test_inplace_table_updates_value_buffers():
    rng = np.random.default_rng(45)
    params = _table(_values(rng))
    grad = _table(_values(rng, 0.1), extra=False)
    expected = adamupdate(params, grad, None, None, 1, 0.01)[0]
    buffers = list(params["Value"])
    out = adamupdate(params, grad, None, None, 1, 0.01, inplace=True)[0]
    for i, buf in enumerate(buffers):
        assert out["Value"].iloc[i] is buf
        np.testing.assert_array_equal(buf, expected["Value"].iloc[i], err_msg=f"row {i}")
