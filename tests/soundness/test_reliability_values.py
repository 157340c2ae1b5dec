"""Reliability contract (issue #11), 3 and 4: float16/bfloat16 parameters keep float32 averages by
default and follow the float64 reference (``tests/reference.py``); the same input gives the same
result (bitwise) regardless of size, container or backend, including overflow, inf and NaN, with
MATLAB's order of operations and complex-times-real semantics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from adamupdate import adamupdate
from reference import assert_matches, run, step, tolerance, unit_roundoff

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

from reliability_helpers import assert_unchanged, lift, needs_torch, snapshot, to_numpy

# --- 3. half precision -----------------------------------------------------------------------

HALF = [
    ("numpy", "float16"),
    pytest.param("torch", "float16", marks=needs_torch),
    pytest.param("torch", "bfloat16", marks=needs_torch),
]


def _half(arr, backend, dtype):
    if backend == "numpy":
        return np.asarray(arr, dtype=np.float64).astype(dtype)
    return torch.from_numpy(np.asarray(arr, dtype=np.float32)).to(getattr(torch, dtype))


def _dtype_name(x):
    return str(x.dtype).removeprefix("torch.")


def _half_problem(kind, rng):
    """(p0, gradients, learn_rate) in float64, before rounding to half precision."""
    if kind == "issue":
        return np.ones(4), [np.full(4, 5e-3)] + [np.zeros(4)] * 4, 0.001
    n, steps = 64, 10
    sign = lambda: rng.choice([-1.0, 1.0], n)  # noqa: E731
    if kind == "tiny":
        grads = [sign() * 10.0 ** rng.uniform(-4, -2, n) for _ in range(steps)]
    else:  # huge, within float16's range (max 65504)
        grads = [sign() * rng.uniform(1e4, 6e4, n) for _ in range(steps)]
    return rng.uniform(-1, 1, n), grads, 0.01


def _half_tolerance(p0, grads, lr, dtype, trajectory):
    """Per element: one half-precision rounding of p (and of the step) per step, plus the
    reference's float32 bound for the float32 averages and step."""
    u = 2.0**-8 if dtype == "bfloat16" else unit_roundoff(np.float16)
    total = np.zeros_like(p0)
    p = p0
    m = v = None
    for t, g in enumerate(grads, 1):
        new_p, m, v = step(p, g, m, v, t, lr)
        total += np.abs(new_p) + np.abs(new_p - p)
        p = new_p
    return 1.1 * u * total + tolerance(trajectory.p_bound, np.float32)


@pytest.mark.parametrize("backend,dtype", HALF)
@pytest.mark.parametrize("kind", ["issue", "tiny", "huge"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_half_precision_params_keep_float32_averages(backend, dtype, kind, inplace):
    """3: float16/bfloat16 params: float32 averages by default, params keep their dtype, and the
    trajectory follows the float64 reference within a half rounding per step."""
    rng = np.random.default_rng(5)
    p0, grads, lr = _half_problem(kind, rng)
    p = _half(p0, backend, dtype)
    gs = [_half(g, backend, dtype) for g in grads]
    p0_exact = to_numpy(p).astype(np.float64)  # what the library starts from, exactly
    gs_exact = [to_numpy(g).astype(np.float64) for g in gs]
    m = v = None
    for t, g in enumerate(gs, 1):
        p, m, v = adamupdate(p, g, m, v, t, lr, inplace=inplace)
        assert _dtype_name(p) == dtype, f"params became {p.dtype}"
        assert _dtype_name(m) == "float32", f"avg_grad is {m.dtype}, not float32"
        assert _dtype_name(v) == "float32", f"avg_sq_grad is {v.dtype}, not float32"
    want = run(p0_exact, gs_exact, lr)
    if kind == "issue":
        assert abs(want.p[0] - 0.99703) < 1e-4  # the float64 value
    got = to_numpy(p).astype(np.float64)
    tol = _half_tolerance(p0_exact, gs_exact, lr, dtype, want)
    worst = np.argmax(np.abs(got - want.p) - tol)
    assert np.all(np.abs(got - want.p) <= tol), (
        f"params[{worst}] = {got[worst]!r}, reference {want.p[worst]!r}, tol {tol[worst]:.3g}"
    )
    assert_matches(to_numpy(m), want.m, want.m_bound, np.float32, "avg_grad")
    assert_matches(to_numpy(v), want.v, want.v_bound, np.float32, "avg_sq_grad")


@pytest.mark.parametrize(
    "backend,state_dtype",
    [("numpy", "float16"), ("numpy", np.float16)]
    + [pytest.param("torch", s, marks=needs_torch) for s in ("float16", "torch.float16")],
)
def test_explicit_float16_averages_still_work(backend, state_dtype):
    """3: state_dtype="float16" asks for half averages explicitly; they follow the reference
    within its float16 bound."""
    if state_dtype == "torch.float16":
        state_dtype = torch.float16
    rng = np.random.default_rng(6)
    p0 = rng.uniform(-1, 1, 16)
    grads = [rng.choice([-1.0, 1.0], 16) * rng.uniform(0.5, 2.0, 16) for _ in range(5)]
    p = _half(p0, backend, "float16")
    gs = [_half(g, backend, "float16") for g in grads]
    m = v = None
    for t, g in enumerate(gs, 1):
        p, m, v = adamupdate(p, g, m, v, t, 0.01, state_dtype=state_dtype)
        assert _dtype_name(p) == _dtype_name(m) == _dtype_name(v) == "float16"
    exact = [to_numpy(g).astype(np.float64) for g in gs]
    want = run(to_numpy(_half(p0, backend, "float16")).astype(np.float64), exact, 0.01)
    assert_matches(to_numpy(p), want.p, want.p_bound, np.float16, "params")
    assert_matches(to_numpy(m), want.m, want.m_bound, np.float16, "avg_grad")
    assert_matches(to_numpy(v), want.v, want.v_bound, np.float16, "avg_sq_grad")


def _bad_state_dtypes():
    cases = [
        ("numpy", s) for s in ("int32", np.int32, "bool", np.bool_, "complex64", np.complex128)
    ]
    if torch is not None:
        cases += [
            ("torch", s) for s in ("int32", torch.int32, torch.bool, torch.complex64, "complex64")
        ]
    return cases


@pytest.mark.parametrize("backend,state_dtype", _bad_state_dtypes(), ids=repr)
def test_non_float_state_dtype_is_refused(backend, state_dtype):
    """3: integer, bool and (for real params) complex state_dtype: TypeError naming state_dtype;
    nothing changed, also in place."""
    rng = np.random.default_rng(7)
    params = [lift(rng.standard_normal(5).astype(np.float32), backend) for _ in range(2)]
    grads = [lift(rng.standard_normal(5).astype(np.float32), backend) for _ in range(2)]
    before = snapshot((params, grads))
    with pytest.raises(TypeError) as info:
        adamupdate(params, grads, None, None, 1, inplace=True, state_dtype=state_dtype)
    assert "state_dtype" in str(info.value), str(info.value)
    assert_unchanged((params, grads), before)


# --- 4. same input, same result --------------------------------------------------------------

INF, NAN = math.inf, math.nan
POOL = [1e20, -1e20, INF, -INF, NAN, 0.0, 0.5, -1.5]
V_POOL = [1e20, INF, NAN, 0.0, 0.25, 1e-30]
PATTERN = 7
LARGE = 50_000
N_LIST = 40


def _complex(re_parts, im_parts):
    out = np.empty(len(re_parts), np.complex64)
    out.real, out.imag = re_parts, im_parts
    return out


def _special_problem(case):
    """(p, [g1, g2], m, v, first iteration) of PATTERN elements."""
    if case == "complex64":
        p = _complex([1, -1, 2, 0.5, 1, -2, 3], [2, 0.5, -1, 0.5, -1, 1, 0])
        g = _complex([INF, 0, NAN, 1e20, -INF, 0, 0.5], [0, INF, 0, 0, 0, -INF, -0.25])
        return p, [g, g[::-1].copy()], None, None, 1
    dtype = np.dtype(case.split("-")[0])
    if case.endswith("overflow"):
        big = 1e20 if dtype == np.float32 else 1e200  # squares to inf in this dtype
        last = 0.5 if dtype == np.float32 else 1e20
        p = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 0.25], dtype)
        g = np.array([big, -big, INF, -INF, NAN, 0.0, last], dtype)
        return p, [g, g[::-1].copy()], None, None, 1
    rng = np.random.default_rng(int(case.rsplit("-", 1)[1]))

    def pick(pool):
        return np.array(rng.choice(pool, PATTERN), dtype)

    with np.errstate(over="ignore"):
        return pick(POOL), [pick(POOL), pick(POOL)], pick(POOL), pick(V_POOL), 3


SPECIAL_CASES = [
    "float32-overflow",
    "float64-overflow",
    "float32-seed-1",
    "float32-seed-2",
    "float64-seed-3",
    "complex64",
]


def _special_path(path):
    """(lift: pattern -> inputs, lower: outputs -> flat numpy, expand: pattern result -> flat)."""
    if path.startswith("numpy-list"):
        return (
            lambda a: [a.copy() for _ in range(N_LIST)],
            lambda out: np.concatenate([to_numpy(x) for x in out]),
            lambda a: np.tile(a, N_LIST),
        )
    backend, size = path.split("-")[:2]
    size = int(size)

    def lift_(a):
        return lift(np.resize(a, size), backend)

    return lift_, to_numpy, lambda a: np.resize(a, size)


def _run_path(path, problem, inplace):
    lift_, lower, _ = _special_path(path)
    p, grads, m, v, t0 = problem
    P = lift_(p)
    M = None if m is None else lift_(m)
    V = None if v is None else lift_(v)
    results = []
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, t0):
            P, M, V = adamupdate(P, lift_(g), M, V, t, inplace=inplace)
            results.append(tuple(lower(x) for x in (P, M, V)))
    return results


def _assert_same(a, b, what):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    # complex: each component on its own (np.isnan(inf+nanj) would hide a wrong real part)
    parts = [(a.real, b.real), (a.imag, b.imag)] if np.iscomplexobj(a) else [(a, b)]
    for x, y in parts:
        if not np.array_equal(x, y, equal_nan=True):
            bad = np.flatnonzero(~((x == y) | (np.isnan(x) & np.isnan(y))))[:5]
            raise AssertionError(f"{what}: elements {bad} differ: {a[bad]} vs {b[bad]}")


SPECIAL_PATHS = [
    "numpy-7",
    f"numpy-{LARGE}",
    "numpy-list-40",
    pytest.param("torch-7", marks=needs_torch),
    pytest.param(f"torch-{LARGE}", marks=needs_torch),
]


def _check_matlab_semantics(case, problem, baseline):
    """What MATLAB's formula gives for the special elements at step 1 (states empty)."""
    p0 = problem[0]
    p, m, v = baseline[0]
    if case.endswith("overflow"):
        assert np.all(np.isinf(v[:2])), f"v of a gradient that squares to inf: {v[:2]}"
        assert p[:2].tobytes() == p0[:2].tobytes(), f"params moved: {p0[:2]} -> {p[:2]}"
        assert m[0] > 0 and np.isfinite(m[0]) and m[1] < 0 and np.isfinite(m[1])
        assert np.isinf(v[2]) and np.isinf(v[3]) and np.isnan(v[4]) and v[5] == 0
        assert p[5] == p0[5] and m[5] == 0, "a zero gradient does not move anything"
    if case == "complex64":
        assert m.dtype == np.complex64 and v.dtype == np.float32
        # (1-b1)*(inf+0j) is inf+0j (real scalar times complex, componentwise)
        assert np.isinf(m[0].real) and m[0].imag == 0, f"m of inf+0j: {m[0]}"
        assert m[1].real == 0 and np.isinf(m[1].imag), f"m of 0+inf j: {m[1]}"
        assert np.isnan(m[2].real) and m[2].imag == 0, f"m of nan+0j: {m[2]}"
        assert np.isinf(v[0]) and np.isinf(v[1]) and np.isnan(v[2])
        # p - a*m/(sqrt(inf)+eps): the zero component of m gives exactly 0
        assert p[0].imag == p0[0].imag, f"params[0] {p0[0]} -> {p[0]}"
        assert p[1].real == p0[1].real, f"params[1] {p0[1]} -> {p[1]}"
        assert np.isnan(p[0].real) and np.isnan(p[1].imag)


@pytest.mark.parametrize("case", ["float32-overflow", "float64-overflow", "complex64"])
@pytest.mark.parametrize("path", SPECIAL_PATHS)
def test_special_values_follow_matlab_order_of_operations(case, path):
    """4: a gradient that squares to inf makes v inf and leaves p unchanged; (1-b1)*(inf+0j) is
    inf+0j (real times complex, componentwise), and p's other component is not touched."""
    problem = _special_problem(case)
    _check_matlab_semantics(case, problem, _run_path(path, problem, inplace=False))


@pytest.mark.parametrize("case", SPECIAL_CASES)
@pytest.mark.parametrize("path", SPECIAL_PATHS)
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_special_values_same_result_on_every_path(case, path, inplace):
    """4: 1e20, -1e20, inf, -inf, nan, 0 (and complex inf/nan): two steps on this path equal a
    small NumPy array out of place, bitwise with NaN positions included. (A failure says the
    paths disagree; the test above says which one is wrong.)"""
    problem = _special_problem(case)
    baseline = _run_path("numpy-7", problem, inplace=False)
    expand = _special_path(path)[2]
    for k, (got, want) in enumerate(zip(_run_path(path, problem, inplace), baseline), 1):
        for name, a, b in zip(("params", "avg_grad", "avg_sq_grad"), got, want):
            _assert_same(a, expand(b), f"{path} step {k} {name}")
