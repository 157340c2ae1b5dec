"""The numba kernel (adamupdate.kernels.numba_step) against NumPy, bitwise, on every code path.

The kernel promises MATLAB's exact arithmetic in the arrays' precision (the same operations, in
the same order and precision, as :func:`reference.step_in_precision` in ``tests/reference.py``,
written from the formula and nothing from ``adamupdate``), so the comparisons here are on bit
patterns, not tolerances; one test also checks it against an independent float64 computation
to catch a wrong-but-consistent formula.

Its interface is checked as well: ``inspect`` (the header check of an id table) must accept
exactly what ``run`` can walk and name the first failing column otherwise, ``run`` on an
address table must give the bits of the checked ``fused_step``, and the checked calls must name
the culprit of a bad argument before anything is written.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from adamupdate.kernels import numba_step as nk
from adamupdate.rules import adam
from adamupdate.rules.adam import coefficients

pytestmark = [
    pytest.mark.skipif(not nk.available(), reason="numba is not installed"),
    pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning"),  # inf/nan inputs
]

REAL = (np.float32, np.float64)
COMPLEX = (np.complex64, np.complex128)
# 0, 1, odd, around the block size (the serial/parallel switch), several blocks.
SIZES = (0, 1, 2, 7, 31, 1000, 32767, 32768, 32769, 100003, 262147)
HYPER = (0.003, 0.9, 0.999, 1e-8, 7)  # learn_rate, grad_decay, sq_grad_decay, epsilon, iteration
COEF = coefficients(*HYPER)


def _real(dtype: type) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def _data(rng: np.random.Generator, n: int, dtype: type, special: bool = False) -> tuple:
    """Parameters, gradients and states of mixed magnitudes (optionally with 0, -0, inf, nan)."""

    def draw(dt: type) -> np.ndarray:
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 3, n)
        if np.dtype(dt).kind == "c":
            x = x + 1j * rng.standard_normal(n) * 10.0 ** rng.integers(-6, 3, n)
        return x.astype(dt)

    p, g, m = draw(dtype), draw(dtype), draw(dtype)
    v = np.abs(draw(_real(dtype)))
    if special and n:
        idx = rng.integers(0, n, max(1, n // 50))
        g[idx] = rng.choice(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]), idx.size)
    return p, g, m, v


def _expected(p, g, m, v, hyper: tuple = HYPER) -> tuple:  # type: ignore[no-untyped-def]
    """The step the kernel must reproduce bit for bit, for ``coefficients(*hyper)``: the
    reference's step in the arrays' precision (complex: part by part)."""
    learn_rate, grad_decay, sq_grad_decay, epsilon, iteration = hyper
    return ref.step_in_precision(
        p, g, m, v, iteration, learn_rate, grad_decay, sq_grad_decay, epsilon
    )


def _assert_bitwise(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    actual, expected = (np.ascontiguousarray(a).reshape(-1) for a in (actual, expected))
    bits = actual.view(f"u{actual.itemsize // (2 if actual.dtype.kind == 'c' else 1)}")
    want = expected.view(bits.dtype)
    bad = np.flatnonzero(bits != want)
    assert bad.size == 0, f"{bad.size} elements differ, first at {bad[:5]}: " + (
        f"{actual.ravel()[bad[:3] // (2 if actual.dtype.kind == 'c' else 1)]} vs "
        f"{expected.ravel()[bad[:3] // (2 if actual.dtype.kind == 'c' else 1)]}"
    )


def _assert_step(out: tuple, expected: tuple) -> None:
    for a, b in zip(out, expected, strict=True):
        _assert_bitwise(a, b)


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_fused_step_bitwise(dtype: type, n: int, fresh: bool, inplace: bool) -> None:
    rng = np.random.default_rng(n)
    p, g, m, v = _data(rng, n, dtype, special=True)
    if fresh:
        m = v = None
    expected = _expected(p, g, m, v)
    keep = tuple(None if a is None else a.copy() for a in (p, g, m, v))
    if inplace:
        m_out = np.empty_like(p) if fresh else m
        v_out = np.empty_like(expected[2]) if fresh else v
        out = (p, m_out, v_out)
        nk.fused_step(p, g, m, v, p, m_out, v_out, COEF)
    else:
        out = (np.empty_like(p), np.empty_like(p), np.empty_like(expected[2]))
        nk.fused_step(p, g, m, v, *out, COEF)
        for a, b in zip((p, g, m, v), keep, strict=True):  # inputs untouched
            assert a is None or np.array_equal(a, b, equal_nan=True)
    _assert_step(out, expected)


def test_partial_aliasing() -> None:
    """Only p in place, states out of place: the general loop must stay exact."""
    rng = np.random.default_rng(1)
    p, g, m, v = _data(rng, 70001, np.float32)
    expected = _expected(p, g, m, v)
    m_out, v_out = np.empty_like(m), np.empty_like(v)
    nk.fused_step(p, g, m, v, p, m_out, v_out, COEF)
    _assert_step((p, m_out, v_out), expected)


@pytest.mark.parametrize("dtype", REAL)
def test_against_float64(dtype: type) -> None:
    """An independent float64 computation agrees within the float32/float64 rounding."""
    rng = np.random.default_rng(2)
    p, g, m, v = _data(rng, 50001, dtype)
    c = coefficients(0.01, 0.8, 0.99, 1e-6, 3)
    wide = [a.astype(np.float64) for a in (p, g, m, v)]
    m64 = 0.8 * wide[2] + 0.2 * wide[1]
    v64 = 0.99 * wide[3] + 0.01 * wide[1] ** 2
    alpha = 0.01 * np.sqrt(1 - 0.99**3) / (1 - 0.8**3)
    step64 = alpha * m64 / (np.sqrt(v64) + 1e-6)
    nk.fused_step(p, g, m, v, p, m, v, c)
    # Each result is a sum of terms; its rounding error is relative to the terms' magnitudes.
    tol = np.finfo(dtype).eps * 8
    m_terms = 0.8 * np.abs(wide[2]) + 0.2 * np.abs(wide[1])
    step_terms = alpha * m_terms / (np.sqrt(v64) + 1e-6)
    assert np.all(np.abs(m - m64) <= tol * m_terms)
    assert np.all(np.abs(v - v64) <= tol * v64)
    assert np.all(np.abs(p - (wide[0] - step64)) <= tol * (np.abs(wide[0]) + step_terms))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_complex_close_to_numpys_complex_division(dtype: type) -> None:
    """The kernel divides each part of ``a_t*m`` by the real denominator (as MATLAB does, and as
    the reference does); NumPy's complex expression divides a complex by a real through a rounded
    reciprocal. The states are the reference's bits; p is one rounding of the step from NumPy's."""
    rng = np.random.default_rng(3)
    p, g, m, v = _data(rng, 4097, dtype)
    expected = _expected(p, g, m, v)
    real = np.dtype(_real(dtype)).type
    learn_rate, grad_decay, sq_grad_decay, epsilon, iteration = HYPER
    a_t = real(ref.bias_corrected_rate(iteration, learn_rate, grad_decay, sq_grad_decay))
    numpys = p - (a_t * expected[1]) / (np.sqrt(expected[2]) + real(epsilon))
    out = (np.empty_like(p), np.empty_like(m), np.empty_like(v))
    nk.fused_step(p, g, m, v, *out, COEF)
    _assert_bitwise(out[0], expected[0])
    _assert_bitwise(out[1], expected[1])
    _assert_bitwise(out[2], expected[2])
    step = np.abs(p - numpys)
    eps = np.finfo(_real(dtype)).eps
    assert np.all(np.abs(out[0] - numpys) <= 2 * eps * (np.abs(p) + step))


def _many(rng: np.random.Generator, sizes: list[int], dtype: type) -> list[tuple]:
    return [_data(rng, n, dtype) for n in sizes]


def _ids(rows: tuple) -> np.ndarray:
    """The ``(7, n)`` id table of :func:`nk.inspect` (rows in :data:`nk.ROLES` order)."""
    n = len(rows[0])
    return np.array([[id(a) for a in row] for row in rows], np.intp).reshape(7, n)


def _inspected_step(rows: tuple, dtype: type, fresh: bool, c) -> None:  # type: ignore[no-untyped-def]
    """The unchecked route: inspect the id table, then run its addresses."""
    found = nk.inspect(_ids(rows), np.dtype(dtype), fresh)
    assert not isinstance(found, int), f"inspect refused column {found}"
    nk.run(*found, np.dtype(dtype), fresh, c)


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("route", ["fused_step_many", "inspect_run"])
def test_many_bitwise(dtype: type, fresh: bool, inplace: bool, route: str) -> None:
    """Many arrays of assorted sizes (empty ones too) in one call, by both entry points."""
    rng = np.random.default_rng(4)
    sizes = [0, 1, 5, 0, 40000, 3, 70001, 1000, 1, 0, 32768, 17]
    sizes += list(rng.integers(0, 3000, 100))
    arrays = _many(rng, sizes, dtype)
    p, g, m, v = (list(col) for col in zip(*arrays, strict=True))
    if fresh:
        m = v = None
    expected = [_expected(*a[:2], *((None, None) if fresh else a[2:])) for a in arrays]
    if inplace:
        outs = (p, [np.empty_like(x) for x in p], [np.empty_like(e[2]) for e in expected])
        if not fresh:
            outs = (p, m, v)
    else:
        outs = tuple([np.empty_like(e[i]) for e in expected] for i in range(3))
    if route == "fused_step_many":
        nk.fused_step_many(p, g, m, v, *outs, COEF)
    else:
        # fresh: rows 2 and 3 are not read; an int8 array there proves it
        junk = [np.zeros(1, np.int8)] * len(p)
        states = (junk, junk) if fresh else (m, v)
        _inspected_step((p, g, *states, *outs), dtype, fresh, COEF)
    for i, e in enumerate(expected):
        _assert_step((outs[0][i], outs[1][i], outs[2][i]), e)


# --- inspect: the header check of an id table ------------------------------------------------


def _table(dtype: type, shapes: list[tuple]) -> list[list[np.ndarray]]:
    """Seven rows of fresh arrays (outputs distinct from inputs) for parameters of ``shapes``."""
    real = _real(dtype)
    want = (dtype, dtype, dtype, real, dtype, dtype, real)
    return [[np.zeros(shape, dt) for shape in shapes] for dt in want]


SHAPES = [(3, 4), (), (0,), (2, 3, 4), (5,)]


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
def test_inspect_accepts_good_tables(dtype: type, fresh: bool) -> None:
    rows = _table(dtype, SHAPES)
    for a in rows[0] + rows[1] + rows[2] + rows[3]:  # inputs may be read-only
        a.flags.writeable = False
    found = nk.inspect(_ids(rows), np.dtype(dtype), fresh)
    assert not isinstance(found, int), f"refused column {found}"
    addresses, sizes = found
    assert addresses.shape == (7, len(SHAPES)) and addresses.dtype == np.intp
    assert sizes.tolist() == [int(np.prod(s)) for s in SHAPES]
    for r, row in enumerate(rows):
        want = [0] * len(row) if fresh and r in (2, 3) else [a.ctypes.data for a in row]
        assert addresses[r].tolist() == want, nk.ROLES[r]
    empty = nk.inspect(np.empty((7, 0), np.intp), np.dtype(dtype), fresh)
    assert not isinstance(empty, int) and empty[1].shape == (0,)


def _spoil(rows: list[list[np.ndarray]], r: int, j: int, defect: str) -> None:
    """Replace array ``j`` of row ``r`` with one that has ``defect``."""
    a = rows[r][j]
    if defect == "dtype":
        other = np.float64 if a.dtype == np.float32 else np.float32
        rows[r][j] = np.zeros(a.shape, other)
    elif defect == "non_contiguous":
        rows[r][j] = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)[:, ::2]
    elif defect == "transposed":
        rows[r][j] = np.zeros(a.shape[::-1], a.dtype).T
    elif defect == "shape":  # same size, other shape: (3, 4) against (4, 3)
        rows[r][j] = np.zeros(a.shape[::-1], a.dtype)
    elif defect == "ndim":  # same size, flat
        rows[r][j] = np.zeros(a.size, a.dtype)
    elif defect == "subclass":  # the header check wants exactly ndarray
        rows[r][j] = a.view(type("Sub", (np.ndarray,), {}))
    elif defect == "equal_dtype":  # equal to the dtype, but not NumPy's builtin object
        rows[r][j] = a.astype(a.dtype.newbyteorder("="))
        assert rows[r][j].dtype == a.dtype and rows[r][j].dtype is not a.dtype
    else:
        raise AssertionError(defect)


DEFECTS = ["dtype", "non_contiguous", "transposed", "shape", "ndim", "subclass", "equal_dtype"]


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("role", nk.ROLES)
def test_inspect_returns_the_failing_column(role: str, defect: str) -> None:
    """One bad array in column 2 of four: inspect names that column; on the first iteration
    (``fresh``) the two state rows are not read, so a bad state there passes."""
    r = nk.ROLES.index(role)
    for fresh in (False, True):
        rows = _table(np.float32, [(2, 2), (5, 6), (3, 4), (3, 4)])
        _spoil(rows, r, 2, defect)
        found = nk.inspect(_ids(rows), np.dtype(np.float32), fresh)
        if fresh and role in ("avg_grad", "avg_sq_grad"):
            assert not isinstance(found, int), found
        else:
            assert isinstance(found, int) and found == 2, (fresh, found)


@pytest.mark.parametrize("role", nk.ROLES[4:])
def test_inspect_refuses_a_read_only_output(role: str) -> None:
    rows = _table(np.float64, [(7,), (3, 4), (4, 3)])
    rows[nk.ROLES.index(role)][1].flags.writeable = False
    for fresh in (False, True):
        assert nk.inspect(_ids(rows), np.dtype(np.float64), fresh) == 1


def test_inspect_checks_shapes_not_sizes() -> None:
    """(4, 3) is not (3, 4), though both hold 12 elements: every row is held to its parameter."""
    for r in range(1, 7):
        rows = _table(np.float32, [(3, 4)])
        rows[r][0] = np.zeros((4, 3), np.float32)
        found = nk.inspect(_ids(rows), np.dtype(np.float32), False)
        assert found == 0, nk.ROLES[r]
    rows = _table(np.float32, [(3, 4)])
    rows[0][0] = np.zeros((4, 3), np.float32)  # the parameter against all the others
    assert nk.inspect(_ids(rows), np.dtype(np.float32), True) == 0


def test_inspect_without_readable_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Python whose array headers cannot be read, inspect says -1 (check in Python)."""
    rows = _table(np.float32, [(3,)])
    monkeypatch.setitem(nk._state, "layout", None)
    assert nk.inspect(_ids(rows), np.dtype(np.float32), False) == -1


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
def test_run_on_inspected_addresses_matches_fused_step(dtype: type, fresh: bool) -> None:
    rng = np.random.default_rng(10)
    arrays = _many(rng, [12, 0, 40001, 1, 300], dtype)
    shapes = [(3, 4), (0, 2), (40001,), (), (10, 5, 6)]
    arrays = [tuple(a.reshape(s) for a in arr) for arr, s in zip(arrays, shapes, strict=True)]
    a = [list(col) for col in zip(*arrays, strict=True)]
    b = [[x.copy() for x in col] for col in a]
    if fresh:
        a[2] = a[3] = b[2] = b[3] = None
    for i in range(len(shapes)):
        states = (None, None) if fresh else (a[2][i], a[3][i])
        outs = (a[0][i], np.empty_like(a[0][i]), np.empty_like(a[1][i].real))
        if not fresh:
            outs = (a[0][i], a[2][i], a[3][i])
        want = _expected(a[0][i].copy(), a[1][i], *states)
        nk.fused_step(a[0][i], a[1][i], *states, *outs, COEF)
        _assert_step(outs, want)
    outs = (b[0], [np.empty_like(x) for x in b[0]], [np.empty_like(x.real) for x in b[1]])
    if not fresh:
        outs = (b[0], b[2], b[3])
    states = (b[0], b[1]) if fresh else (b[2], b[3])
    _inspected_step((b[0], b[1], *states, *outs), dtype, fresh, COEF)
    for i in range(len(shapes)):
        _assert_bitwise(b[0][i], a[0][i])
        if not fresh:
            _assert_bitwise(b[2][i], a[2][i])
            _assert_bitwise(b[3][i], a[3][i])


# --- run on hand-made address tables ---------------------------------------------------------


def test_run_views_and_raw_addresses() -> None:
    """Views with an offset into one buffer, by the checked call and by raw addresses."""
    rng = np.random.default_rng(5)
    flat = [rng.standard_normal(100000).astype(np.float32) for _ in range(4)]
    flat[3] = np.abs(flat[3])
    cuts = [(0, 10), (10, 60011), (60011, 60011), (60011, 100000)]
    views = [[f[a:b] for a, b in cuts] for f in flat]
    expected = _expected(*(f.copy() for f in flat))
    nk.fused_step_many(views[0], views[1], views[2], views[3], views[0], views[2], views[3], COEF)
    _assert_step((flat[0], flat[2], flat[3]), expected)

    again = _expected(*(f.copy() for f in flat))
    rows = [views[r] for r in (0, 1, 2, 3, 0, 2, 3)]
    addresses = np.array([[a.ctypes.data for a in row] for row in rows], np.intp)
    sizes = np.array([a.size for a in views[0]], np.intp)
    nk.run(addresses, sizes, np.dtype(np.float32), False, COEF)
    _assert_step((flat[0], flat[2], flat[3]), again)


def test_run_reuses_an_address_table_across_steps() -> None:
    """A table inspected once steps the same (in place) arrays again and again."""
    rng = np.random.default_rng(6)
    arrays = _many(rng, [3, 50000, 0, 999], np.float64)
    lists = [list(col) for col in zip(*arrays, strict=True)]
    found = nk.inspect(_ids((*lists, lists[0], lists[2], lists[3])), np.dtype(np.float64), False)
    assert not isinstance(found, int)
    expected = [tuple(a.copy() for a in arr) for arr in arrays]
    for t in (1, 2, 3):
        hyper = (0.01, 0.9, 0.999, 1e-8, t)
        c = coefficients(*hyper)
        stepped = [_expected(e[0], e[1], e[2], e[3], hyper) for e in expected]
        expected = [(s[0], e[1], s[1], s[2]) for s, e in zip(stepped, expected, strict=True)]
        nk.run(*found, np.dtype(np.float64), False, c)
        for i, e in enumerate(expected):
            _assert_step((lists[0][i], lists[2][i], lists[3][i]), (e[0], e[2], e[3]))


# Leaves of one kernel-sized group: (shape, how) with how "plain", "transposed" (parameter and
# gradient F-ordered) or "strided" (every array a strided view).
GROUP_LEAVES = {
    "views": [
        ((3, 4, 5), "plain"),
        ((40000,), "plain"),
        ((7, 9), "transposed"),
        ((6, 10), "strided"),
    ],
    "zero_d": [((40000,), "plain"), ((), "plain"), ((2, 3), "plain")],
    "zero_d_and_views": [((40000,), "plain"), ((), "plain"), ((7, 9), "transposed")],
}


@pytest.mark.parametrize("leaves", list(GROUP_LEAVES))
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_numpy_backend_group_stages_what_the_kernel_cannot_walk(
    leaves: str, fresh: bool, inplace: bool
) -> None:
    """numpy_backend's kernel group (the caller of inspect and run): views the kernel cannot
    walk are staged as contiguous copies (outputs written back), and the result is bitwise the
    NumPy expression's, with the caller's own buffers updated in place."""
    from adamupdate.backends import numpy_backend

    rng = np.random.default_rng(7)
    f32 = np.dtype(np.float32)
    columns, expected = [], []
    for shape, how in GROUP_LEAVES[leaves]:
        p, g, m, v = (a.reshape(shape) for a in _data(rng, int(np.prod(shape)), np.float32))
        v = np.asarray(np.abs(v))  # np.abs of a 0-d array is a scalar
        if how == "transposed":
            p, g = p.T.copy().T, g.T.copy().T
        elif how == "strided":
            p, g, m, v = (np.repeat(a, 2, axis=1)[:, ::2] for a in (p, g, m, v))
        if fresh:
            m = v = None
        expected.append(_expected(p.copy(), g, m, v))
        columns.append((p, g, m, v))
    params, grads, ms, vs = (list(col) for col in zip(*columns, strict=True))
    group = numpy_backend.group(
        adam.RULE, f32, (f32, f32), fresh=fresh, inplace=inplace, params=params
    )
    assert group.kernel is nk
    group.bind(params, grads, [ms, vs])
    group.run(COEF)
    group.commit()
    new_params, (new_m, new_v) = group.outputs()
    outs = (new_params, new_m, new_v)
    if inplace:
        assert all(a is b for a, b in zip(outs[0], params, strict=True))
        if not fresh:
            assert all(a is b for a, b in zip(outs[1], ms, strict=True))
    for i, want in enumerate(expected):
        _assert_step(tuple(col[i] for col in outs), tuple(np.asarray(w) for w in want))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 3000),
    lr=st.floats(0, 10),
    b1=st.floats(0, 0.9999),
    b2=st.floats(0, 0.99999),
    eps=st.floats(1e-12, 1.0),
    t=st.integers(1, 10**6),
    seed=st.integers(0, 2**32 - 1),
)
def test_hyperparameters(
    n: int, lr: float, b1: float, b2: float, eps: float, t: int, seed: int
) -> None:
    c = coefficients(lr, b1, b2, eps, t)
    p, g, m, v = _data(np.random.default_rng(seed), n, np.float32)
    expected = _expected(p, g, m, v, (lr, b1, b2, eps, t))
    nk.fused_step(p, g, m, v, p, m, v, c)
    _assert_step((p, m, v), expected)


def test_validation_names_the_culprit() -> None:
    a = [np.zeros(4, np.float32)]
    with pytest.raises(TypeError, match=r"grad\[0\]"):
        nk.fused_step_many(a, [np.zeros(4)], None, None, a, a, a, COEF)
    with pytest.raises(TypeError, match=r"grad\[0\]"):
        nk.fused_step_many(a, [[0.0] * 4], None, None, a, a, a, COEF)
    with pytest.raises(ValueError, match=r"grad\[0\]"):
        nk.fused_step_many(a, [np.zeros(8, np.float32)[::2]], None, None, a, a, a, COEF)
    with pytest.raises(ValueError, match="avg_grad_out"):
        nk.fused_step_many(a, a, None, None, a, [np.zeros(3, np.float32)], a, COEF)
    with pytest.raises(ValueError, match=r"avg_sq_grad\[1\]"):
        b = [np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32)]
        nk.fused_step_many(b, b, b, [b[0], np.zeros(5, np.float32)], b, b, b, COEF)
    q = [np.zeros((3, 4), np.float32)]
    with pytest.raises(ValueError, match=r"avg_grad\[0\]"):  # same size, other shape
        nk.fused_step_many(q, q, [np.zeros((4, 3), np.float32)], q, q, q, q, COEF)
    with pytest.raises(ValueError, match=r"param_out\[0\]"):
        nk.fused_step_many(q, q, q, q, [np.zeros((4, 3), np.float32)], q, q, COEF)
    with pytest.raises(ValueError, match="avg_grad: 2 arrays for 1"):
        nk.fused_step_many(a, a, a * 2, a, a, a, a, COEF)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"param_out\[0\]: read-only"):
        nk.fused_step_many(a, a, None, None, [frozen], a, a, COEF)
    with pytest.raises(ValueError, match=r"avg_grad_out\[0\]: overlaps"):
        g = [np.zeros(4, np.float32)]
        nk.fused_step_many(a, g, None, None, a, g, [np.zeros(4, np.float32)], COEF)
    with pytest.raises(ValueError, match="both"):
        nk.fused_step_many(a, a, a, None, a, a, a, COEF)
    with pytest.raises(TypeError, match="float16"):
        h = [np.zeros(4, np.float16)]
        nk.fused_step_many(h, h, None, None, h, h, h, COEF)
    with pytest.raises(TypeError, match="avg_sq_grad"):  # complex: v must be real
        z = [np.zeros(4, np.complex64)]
        nk.fused_step_many(z, z, z, z, z, z, z, COEF)
    assert not np.any(a[0]) and not np.any(q[0])  # nothing was written


def test_subclasses_and_equal_dtypes_are_accepted() -> None:
    """The header check is strict (exact type, the builtin dtype object: see
    test_inspect_returns_the_failing_column); the checked call decides in Python."""

    class Sub(np.ndarray):
        pass

    rng = np.random.default_rng(8)
    p, g, m, v = _data(rng, 1000, np.float64)
    expected = _expected(p, g, m, v)
    p = p.view(Sub)
    swapped = np.dtype(np.float64).newbyteorder("=")  # equal to float64, not the same object
    g = g.astype(swapped)
    assert g.dtype is not np.dtype(np.float64)
    nk.fused_step(p, g, m, v, p, m, v, COEF)
    _assert_step((np.asarray(p), m, v), expected)


def test_supports() -> None:
    assert nk.supports(np.float32) and nk.supports("complex128")
    assert not nk.supports(np.float16) and not nk.supports(np.int32)
    assert not nk.supports("not a dtype")
    with pytest.raises(TypeError):
        nk.compile([np.float16])


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
def test_compile(dtype: type) -> None:
    """compile() builds (or loads) every entry point for a dtype: the default compiles all."""
    assert nk.compile([dtype]) >= 0.0


_FORK_SCRIPT = """
import os, numpy as np
import reference as ref
from adamupdate.rules.adam import coefficients
from adamupdate.kernels import numba_step as nk
c = coefficients(0.01, 0.9, 0.999, 1e-8, 3)
rng = np.random.default_rng(9)
p, g, m = (rng.standard_normal(300001).astype(np.float32) for _ in range(3))
v = rng.random(300001).astype(np.float32)
nk.fused_step(p.copy(), g, m.copy(), v.copy(), p.copy(), m.copy(), v.copy(), c)  # threads
expected = ref.step_in_precision(p, g, m, v, 3, 0.01, 0.9, 0.999, 1e-8)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        nk.fused_step(p, g, m, v, p, m, v, c)
        code = 0 if all(np.array_equal(a, b) for a, b in zip((p, m, v), expected)) else 3
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_steps_on_one_thread(child_env: dict[str, str]) -> None:
    """OpenMP cannot run in a forked child (numba would terminate it); the kernel goes serial.

    Forked from a fresh interpreter: forking this test process, which has JAX's and PyTorch's
    threads running, could deadlock for reasons that have nothing to do with the kernel.
    """
    subprocess.run([sys.executable, "-c", _FORK_SCRIPT], check=True, env=child_env, timeout=300)


_NO_NUMBA_SCRIPT = """
import sys
sys.modules['numba'] = None  # as if not installed: `import numba` raises ImportError
import numpy as np
from adamupdate.kernels import numba_step as k
assert k.available() is False and k.supports('float32')
assert k.inspect(np.empty((7, 0), np.intp), np.dtype('float32'), False) == -1
for call in (k.compile, lambda: k.fused_step_many([], [], None, None, [], [], [], None)):
    try:
        call()
    except RuntimeError as error:
        assert 'numba' in str(error)
    else:
        raise AssertionError('should fail without numba')
from adamupdate import adamupdate
from adamupdate.kernels import numba_kernel
assert numba_kernel() is None
params = [np.ones(1000, np.float32) for _ in range(40)]  # a kernel-sized group: NumPy ufuncs
out, m, v = adamupdate(params, params, None, None, 1)
assert all(np.allclose(x, 1 - 0.001) for x in out)
"""


def test_import_without_numba(child_env: dict[str, str]) -> None:
    """Importing the module never needs numba; available() says False, the checked calls
    raise RuntimeError, and adamupdate falls back to NumPy's ufuncs."""
    subprocess.run([sys.executable, "-c", _NO_NUMBA_SCRIPT], check=True, env=child_env, timeout=300)
