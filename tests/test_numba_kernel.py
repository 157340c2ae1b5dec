"""The numba kernel against NumPy: bitwise for real dtypes, on every code path.

The kernel promises NumPy's exact arithmetic (same operations, order and precision), so the
comparisons here are on bit patterns, not tolerances; one test also checks it against an
independent float64 computation to catch a wrong-but-consistent formula.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adamupdate._algorithm import coefficients, reference_step, update_moment
from adamupdate._kernels import numba_kernel as nk

pytestmark = [
    pytest.mark.skipif(not nk.available(), reason="numba is not installed"),
    pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning"),  # inf/nan inputs
]

REAL = (np.float32, np.float64)
COMPLEX = (np.complex64, np.complex128)
# 0, 1, odd, around the block size (the serial/parallel switch), several blocks.
SIZES = (0, 1, 2, 7, 31, 1000, 32767, 32768, 32769, 100003, 262147)
COEF = coefficients(0.003, 0.9, 0.999, 1e-8, 7)


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


def _componentwise(p, g, m, v, c):  # type: ignore[no-untyped-def]
    """The NumPy expression the kernel reproduces bit for bit (complex: part by part)."""
    if p.dtype.kind != "c":
        return reference_step(np, p, g, m, v, c)
    b1, omb1 = c.grad_decay, c.one_minus_grad_decay
    mr = update_moment(np, None if m is None else m.real, g.real, b1, omb1)
    mi = update_moment(np, None if m is None else m.imag, g.imag, b1, omb1)
    sq = g.real * g.real + g.imag * g.imag
    vn = update_moment(np, v, sq, c.sq_grad_decay, c.one_minus_sq_grad_decay)
    d = np.sqrt(vn) + c.epsilon
    pn, mn = np.empty_like(p), np.empty_like(p)
    pn.real, pn.imag = p.real - (c.step_size * mr) / d, p.imag - (c.step_size * mi) / d
    mn.real, mn.imag = mr, mi
    return pn, mn, vn


def _assert_bitwise(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
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
    expected = _componentwise(p, g, m, v, COEF)
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
    expected = reference_step(np, p, g, m, v, COEF)
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
def test_complex_close_to_reference_step(dtype: type) -> None:
    """Only p differs from reference_step: NumPy divides a complex by a real through a rounded
    reciprocal; the kernel divides each part (as MATLAB does). One rounding of the step apart."""
    rng = np.random.default_rng(3)
    p, g, m, v = _data(rng, 4097, dtype)
    expected = reference_step(np, p, g, m, v, COEF)
    out = (np.empty_like(p), np.empty_like(m), np.empty_like(v))
    nk.fused_step(p, g, m, v, *out, COEF)
    _assert_bitwise(out[1], expected[1])
    _assert_bitwise(out[2], expected[2])
    step = np.abs(p - expected[0])
    eps = np.finfo(_real(dtype)).eps
    assert np.all(np.abs(out[0] - expected[0]) <= 2 * eps * (np.abs(p) + step))


def _many(rng: np.random.Generator, sizes: list[int], dtype: type) -> list[tuple]:
    return [_data(rng, n, dtype) for n in sizes]


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("fresh", [False, True], ids=["continue", "fresh"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("objects", [True, False], ids=["ids", "addresses"])
def test_many_bitwise(
    dtype: type, fresh: bool, inplace: bool, objects: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not objects:  # as on a runtime where array headers cannot be read
        monkeypatch.setitem(nk._state, "layout", None)
    rng = np.random.default_rng(4)
    sizes = [0, 1, 5, 0, 40000, 3, 70001, 1000, 1, 0, 32768, 17]
    sizes += list(rng.integers(0, 3000, 100))
    arrays = _many(rng, sizes, dtype)
    p, g, m, v = (list(col) for col in zip(*arrays, strict=True))
    if fresh:
        m = v = None
    expected = [_componentwise(*a[:2], *((None, None) if fresh else a[2:]), COEF) for a in arrays]
    if inplace:
        outs = (p, [np.empty_like(x) for x in p], [np.empty_like(e[2]) for e in expected])
        if not fresh:
            outs = (p, m, v)
    else:
        outs = tuple([np.empty_like(e[i]) for e in expected] for i in range(3))
    nk.fused_step_many(p, g, m, v, *outs, COEF)
    for i, e in enumerate(expected):
        _assert_step((outs[0][i], outs[1][i], outs[2][i]), e)


def test_many_views_and_addresses() -> None:
    """Views with an offset into one buffer, by object and by raw address."""
    rng = np.random.default_rng(5)
    flat = [rng.standard_normal(100000).astype(np.float32) for _ in range(4)]
    flat[3] = np.abs(flat[3])
    cuts = [(0, 10), (10, 60011), (60011, 60011), (60011, 100000)]
    views = [[f[a:b] for a, b in cuts] for f in flat]
    expected = reference_step(np, *(f.copy() for f in flat), COEF)
    nk.fused_step_many(views[0], views[1], views[2], views[3], views[0], views[2], views[3], COEF)
    _assert_step((flat[0], flat[2], flat[3]), expected)

    again = reference_step(np, *(f.copy() for f in flat), COEF)
    rows = [views[r] for r in (0, 1, 2, 3, 0, 2, 3)]
    handles = np.array([[a.ctypes.data for a in row] for row in rows], np.intp)
    sizes = np.array([a.size for a in views[0]], np.intp)
    nk.fused_step_batch(nk.Batch(handles, sizes, np.dtype(np.float32), False, False), COEF)
    _assert_step((flat[0], flat[2], flat[3]), again)


def test_batch_reused_across_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Batch built once steps the same arrays again; also with addresses instead of ids."""
    rng = np.random.default_rng(6)
    arrays = _many(rng, [3, 50000, 0, 999], np.float64)
    lists = [list(col) for col in zip(*arrays, strict=True)]
    expected = [tuple(a.copy() for a in arr) for arr in arrays]
    for objects in (True, False):
        if not objects:
            monkeypatch.setitem(nk._state, "layout", None)  # as on a non-CPython runtime
        b = nk.batch(*lists, lists[0], lists[2], lists[3])
        assert b.objects is objects
        for t in (1, 2):
            c = coefficients(0.01, 0.9, 0.999, 1e-8, t)
            expected = [reference_step(np, e[0], e[1], e[2], e[3], c) for e in expected]
            expected = [(e[0], a[1], e[1], e[2]) for e, a in zip(expected, arrays, strict=True)]
            nk.fused_step_batch(b, c)
            for i, e in enumerate(expected):
                _assert_step((lists[0][i], lists[2][i], lists[3][i]), (e[0], e[2], e[3]))


def test_step_arrays_shapes_views_and_mixed_states() -> None:
    """numpy_backend's entry: N-d, non-contiguous, fresh and continuing leaves in one group."""
    rng = np.random.default_rng(7)
    leaves, expected = [], []
    for k, shape in enumerate([(3, 4, 5), (), (40000,), (7, 9), (6, 10)]):
        p, g, m, v = (a.reshape(shape) for a in _data(rng, int(np.prod(shape)), np.float32))
        if k == 3:  # transposed params and grad, stepped in place
            p, g = p.T, g.T
        if k == 4:  # strided everything, out of place
            p, g, m, v = (np.repeat(a, 2, axis=1)[:, ::2] for a in (p, g, m, v))
        fresh = k % 2 == 1
        if fresh:
            m = v = None
        want = reference_step(np, p, g, m, v, COEF)
        if k == 4:
            outs = tuple(np.empty((10, 12), np.float32)[:6, :10] for _ in range(3))
        elif fresh:
            outs = (p, np.empty(p.shape, np.float32), np.empty(p.shape, np.float32))
        else:
            outs = (p, m, v)
        leaves.append((p, g, m, v, *outs))
        expected.append(want)
    nk.step_arrays(leaves, COEF)
    for leaf, want in zip(leaves, expected, strict=True):
        _assert_step(tuple(a.copy() for a in leaf[4:]), tuple(map(np.asarray, want)))


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
    expected = reference_step(np, p, g, m, v, c)
    nk.fused_step(p, g, m, v, p, m, v, c)
    _assert_step((p, m, v), expected)


@pytest.mark.parametrize("objects", [True, False], ids=["ids", "addresses"])
def test_validation_names_the_culprit(objects: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not objects:
        monkeypatch.setitem(nk._state, "layout", None)
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
    with pytest.raises(ValueError, match="avg_grad: 2 arrays for 1"):
        nk.fused_step_many(a, a, a * 2, a, a, a, a, COEF)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nk.fused_step_many(a, a, None, None, [frozen], a, a, COEF)
    with pytest.raises(ValueError, match="both"):
        nk.fused_step_many(a, a, a, None, a, a, a, COEF)
    with pytest.raises(TypeError, match="float16"):
        h = [np.zeros(4, np.float16)]
        nk.fused_step_many(h, h, None, None, h, h, h, COEF)
    with pytest.raises(TypeError, match="avg_sq_grad"):  # complex: v must be real
        z = [np.zeros(4, np.complex64)]
        nk.fused_step_many(z, z, z, z, z, z, z, COEF)
    assert not np.any(a[0])  # nothing was written


def test_subclasses_and_equal_dtypes_are_accepted() -> None:
    """The header check is strict (exact type, the builtin dtype object); Python then decides."""

    class Sub(np.ndarray):
        pass

    rng = np.random.default_rng(8)
    p, g, m, v = _data(rng, 1000, np.float64)
    expected = reference_step(np, p, g, m, v, COEF)
    p = p.view(Sub)
    swapped = np.dtype(np.float64).newbyteorder("=")  # equal to float64, maybe not the same
    g = g.astype(swapped)
    nk.fused_step(p, g, m, v, p, m, v, COEF)
    _assert_step((np.asarray(p), m, v), expected)


def test_supports_and_compile() -> None:
    assert nk.supports(np.float32) and nk.supports("complex128")
    assert not nk.supports(np.float16) and not nk.supports(np.int32)
    assert nk.compile([np.float32]) >= 0.0
    with pytest.raises(TypeError):
        nk.compile([np.float16])


_FORK_SCRIPT = """
import os, numpy as np
from adamupdate._algorithm import coefficients, reference_step
from adamupdate._kernels import numba_kernel as nk
c = coefficients(0.01, 0.9, 0.999, 1e-8, 3)
rng = np.random.default_rng(9)
p, g, m = (rng.standard_normal(300001).astype(np.float32) for _ in range(3))
v = rng.random(300001).astype(np.float32)
nk.fused_step(p.copy(), g, m.copy(), v.copy(), p.copy(), m.copy(), v.copy(), c)  # threads
expected = reference_step(np, p, g, m, v, c)
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
def test_forked_child_steps_on_one_thread() -> None:
    """OpenMP cannot run in a forked child (numba would terminate it); the kernel goes serial.

    Forked from a fresh interpreter: forking this test process, which has JAX's and PyTorch's
    threads running, could deadlock for reasons that have nothing to do with the kernel.
    """
    subprocess.run([sys.executable, "-c", _FORK_SCRIPT], check=True, env=_env(), timeout=300)


def test_import_without_numba() -> None:
    """Importing the module never needs numba; available() says False and nothing breaks."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from adamupdate._kernels import numba_kernel as k\n"
        "assert k.available() is False and k.supports('float32')\n"
        "import pytest\n"
        "try:\n"
        "    k.compile()\n"
        "except RuntimeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('compile() should fail without numba')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def _env() -> dict[str, str]:
    from pathlib import Path

    import adamupdate

    src = str(Path(next(iter(adamupdate.__path__))).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
