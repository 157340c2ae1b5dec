"""``sgdmupdate`` and ``rmspropupdate``: the small path (NumPy's ufuncs, torch's loops) and the
kernel paths (many arrays, one large array) give the same bits, special values included, and
special values follow the formula. Comparisons as described in test_solvers_reference.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solver_reference as ref
from adamupdate import rmspropupdate, sgdmupdate
from solver_helpers import (
    LIBS,
    SMALL_SHAPES,
    SOLVERS,
    WIDE,
    assert_same_bits,
    numpy_lib,
    numpy_make,
    random_values,
    reference,
    update,
)

# --------------------------------------------------------------------------------------------
# 2 and 7. The small path and the kernel path give the same bits, special values included
# --------------------------------------------------------------------------------------------

PATH_STEPS = 4
FILLERS = 40  # >= 40 arrays: the multi-array kernel
BIG = 40_000  # >= 40,000 elements in one array
SPECIAL_P = [0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, math.nan, 1e20, -1e20, 1e-30, 3e-40]
SPECIAL_G = [0.0, -0.0, 1e20, -1e20, math.inf, -math.inf, math.nan, 1e-20, 3e38, 0.5, -2.0, 3e-40]
NUMPY_PATH_DTYPES = ["float16", *WIDE]
# Where NaNs arise, only their being NaN is compared: NumPy's ufuncs and the numba kernel, and
# PyTorch's scalar and vectorised loops, give NaNs of different sign and payload for the same
# operation (e.g. inf + -inf), so "the same bits" holds for every number, not for NaN's spare
# bits, which IEEE 754 leaves unspecified.
NAN = {"nan_payloads": False}
TORCH_PATH_DTYPES = ["float16", "bfloat16", *WIDE]


def path_inputs(dtype: str, kind: str, seed: int) -> tuple[list, list]:
    """Three small parameter arrays and PATH_STEPS gradients for them (float64/complex128)."""
    rng = np.random.default_rng(seed)
    is_complex = dtype.startswith("complex")

    def draw(shape, values, scale):
        if kind == "special":
            x = rng.choice(np.array(values), size=shape)
            if is_complex:  # parts set directly: 1j*inf would be nan+infj
                z = np.empty(shape, np.complex128)
                z.real, z.imag = x, rng.choice(np.array(values), size=shape)
                x = z
            return x
        return random_values(rng, shape, dtype, scale)

    ps = [draw(s, SPECIAL_P, 1.0) for s in SMALL_SHAPES]
    gs = [
        [draw(s, SPECIAL_G, 10 ** rng.uniform(-2, 1)) for s in SMALL_SHAPES]
        for _ in range(PATH_STEPS)
    ]
    return ps, gs


def run_path(solver, path, dtype, ps, gs, make, back) -> list[np.ndarray]:
    """The small arrays' parameters and states after each step, as float64/complex128, when
    they are updated alone ("small"), among 40 more arrays ("count"), or as the first elements
    of one 40,000-element array ("size")."""
    rng = np.random.default_rng(99)
    kind = "complex" if dtype.startswith("complex") else "real"
    sizes = [int(np.prod(s)) for s in SMALL_SHAPES]
    total = sum(sizes)
    if path == "count":
        extra = [[random_values(rng, (2,), kind) for _ in range(FILLERS)] for _ in [0, *gs]]
    elif path == "size":
        extra = [random_values(rng, (BIG - total,), kind) for _ in [0, *gs]]

    def pack(arrays, t):
        """The arrays of a call: ``t`` 0 for the parameters, ``t`` for gradient t-1."""
        if path == "small":
            return [make(a, dtype) for a in arrays]
        if path == "count":
            return [make(a, dtype) for a in [*arrays, *extra[t]]]
        return [make(np.concatenate([a.reshape(-1) for a in arrays] + [extra[t]]), dtype)]

    def unpack(leaves):
        values = [back(x) for x in leaves]
        if path != "size":
            return values[: len(SMALL_SHAPES)]
        head = values[0][:total]
        bounds = np.cumsum([0, *sizes])
        return [head[a:b].reshape(s) for a, b, s in zip(bounds, bounds[1:], SMALL_SHAPES)]

    params, state = pack(ps, 0), None
    out = []
    for t, step in enumerate(gs, start=1):
        params, state = update(solver, params, pack(step, t), state)
        out += unpack(params) + unpack(state)
    return out


def _path_cases(lib_dtypes):
    return [
        (solver, dtype, kind)
        for solver in SOLVERS
        for dtype in lib_dtypes
        for kind in ("random", "special")
    ]


def _case_key(solver, dtype, kind):
    return f"{solver}-{dtype}-{kind}"


def _fresh_main(inputs: str, outputs: str) -> None:
    """Run in a fresh interpreter (see test_numpy_small_path_in_fresh_interpreter): every
    small path first — before anything has loaded numba — then the kernel paths."""
    data = np.load(inputs)
    results = {}
    for solver, dtype, kind in _path_cases(NUMPY_PATH_DTYPES):
        key = _case_key(solver, dtype, kind)
        ps = [data[f"{key}/p{i}"] for i in range(len(SMALL_SHAPES))]
        gs = [
            [data[f"{key}/g{t}_{i}"] for i in range(len(SMALL_SHAPES))] for t in range(PATH_STEPS)
        ]
        for k, x in enumerate(run_path(solver, "small", dtype, ps, gs, numpy_make, np.asarray)):
            results[f"{key}/small/{k}"] = x
    results["numba loaded by the small paths"] = np.array(
        "numba" in sys.modules or "adamupdate.kernels.numba_step" in sys.modules
    )
    for solver, dtype, kind in _path_cases(NUMPY_PATH_DTYPES):
        key = _case_key(solver, dtype, kind)
        ps = [data[f"{key}/p{i}"] for i in range(len(SMALL_SHAPES))]
        gs = [
            [data[f"{key}/g{t}_{i}"] for i in range(len(SMALL_SHAPES))] for t in range(PATH_STEPS)
        ]
        for path in ("count", "size"):
            for k, x in enumerate(run_path(solver, path, dtype, ps, gs, numpy_make, np.asarray)):
                results[f"{key}/{path}/{k}"] = x
    np.savez(outputs, **results)


def _path_inputs_for(solver, dtype, kind, lib=None):
    seed = [SOLVERS.index(solver), len(dtype), ord(dtype[-1]), len(kind)]
    ps, gs = path_inputs(dtype, kind, seed)
    # The values as the dtype holds them (e.g. 1e20 is inf in float16).
    lib = lib or numpy_lib()

    def as_stored(a):
        return lib.to_numpy(lib.make(a, dtype))

    return [as_stored(p) for p in ps], [[as_stored(g) for g in step] for step in gs]


def test_numpy_small_path_in_fresh_interpreter(tmp_path):
    """In a fresh interpreter the three small arrays take NumPy's ufunc route (numba is not
    imported for them); the kernel paths then take the numba kernel. Same bits, special values
    included, and the same bits as in this process (where numba is loaded)."""
    inputs = {}
    for solver, dtype, kind in _path_cases(NUMPY_PATH_DTYPES):
        key = _case_key(solver, dtype, kind)
        ps, gs = _path_inputs_for(solver, dtype, kind)
        for i, p in enumerate(ps):
            inputs[f"{key}/p{i}"] = p
        for t, step in enumerate(gs):
            for i, g in enumerate(step):
                inputs[f"{key}/g{t}_{i}"] = g
    np.savez(tmp_path / "in.npz", **inputs)
    here = Path(__file__).resolve().parent
    dirs = [str(here), str(here.parent)]  # this file's folder, and tests/ (solver_reference.py)
    script = (
        "import sys; sys.path[:0] = sys.argv[1:3]; import test_solvers_paths; "
        "test_solvers_paths._fresh_main(sys.argv[3], sys.argv[4])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *dirs, str(tmp_path / "in.npz"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = np.load(tmp_path / "out.npz")
    assert not results["numba loaded by the small paths"], (
        "test premise: the small paths should run before numba is imported"
    )
    for solver, dtype, kind in _path_cases(NUMPY_PATH_DTYPES):
        key = _case_key(solver, dtype, kind)
        ps, gs = _path_inputs_for(solver, dtype, kind)
        here = run_path(solver, "small", dtype, ps, gs, numpy_make, np.asarray)
        for k, x in enumerate(here):
            small = results[f"{key}/small/{k}"]
            for path in ("count", "size"):
                assert_same_bits(
                    results[f"{key}/{path}/{k}"], small, f"{key} {path} vs small, {k}", **NAN
                )
            assert_same_bits(x, small, f"{key} this process vs fresh small, {k}", **NAN)


@pytest.mark.parametrize("kind", ["random", "special"])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "lib_name,dtype",
    [("numpy", d) for d in NUMPY_PATH_DTYPES] + [("torch", d) for d in TORCH_PATH_DTYPES],
)
def test_small_and_kernel_paths_same_bits(lib_name, dtype, solver, kind):
    lib = LIBS[lib_name]()
    ps, gs = _path_inputs_for(solver, dtype, kind, lib)
    small = run_path(solver, "small", dtype, ps, gs, lib.make, lib.to_numpy)
    for path in ("count", "size"):
        other = run_path(solver, path, dtype, ps, gs, lib.make, lib.to_numpy)
        for k, (a, b) in enumerate(zip(small, other)):
            assert_same_bits(b, a, f"{path} vs small, output {k}", **NAN)
    if kind == "random":  # and the values are right
        for t in range(PATH_STEPS):
            for i in range(len(SMALL_SHAPES)):
                run = reference(solver, ps[i], [g[i] for g in gs[: t + 1]], dtype)
                k = 2 * len(SMALL_SHAPES) * t
                ref.assert_close(small[k + i], run.p, run.p_bound, dtype, f"p{i} step {t + 1}")


@pytest.mark.parametrize("lib_name", ["numpy", "torch"])
@pytest.mark.parametrize("many", [False, True], ids=["small", "kernel"])
def test_float32_squared_gradient_overflows_as_matlab(lib_name, many):
    """MATLAB's order in float32: (1-β2)·g² with g = 1e20 overflows to inf, the step
    α·g/(inf + ε) is 0 and θ stays; SGDM's velocity -α·1e20 is finite."""
    lib = LIBS[lib_name]()
    n = FILLERS + 1 if many else 1
    p = [lib.make(np.array([1.0, -2.0, 0.5]), "float32") for _ in range(n)]
    g = [lib.make(np.array([1e20, -1e20, 3e38]), "float32") for _ in range(n)]
    new, v = rmspropupdate(p, g, None, 0.01, 0.9, 1e-8)
    for x, s in zip(new, v):
        assert np.all(lib.to_numpy(s) == math.inf)
        assert_same_bits(lib.to_numpy(x), np.array([1.0, -2.0, 0.5]), "params")
    new, vel = sgdmupdate(p, g, None, 0.01, 0.9)
    g32 = lib.to_numpy(g[0])
    run = ref.sgdm(np.array([1.0, -2.0, 0.5]), [g32], 0.01, 0.9, dtype_name="float32")
    for x, s in zip(new, vel):
        assert np.all(np.isfinite(lib.to_numpy(s)))
        ref.assert_close(s, run.state, run.state_bound, "float32", "vel")
        ref.assert_close(x, run.p, run.p_bound, "float32", "params")


@pytest.mark.parametrize("lib_name", ["numpy", "torch"])
def test_special_values_follow_the_formula(lib_name):
    """inf and NaN propagate as the formulas say (float64)."""
    lib = LIBS[lib_name]()
    p = lib.make(np.array([1.0, 1.0, 1.0, math.inf]), "float64")
    g = lib.make(np.array([math.inf, math.nan, -math.inf, 1.0]), "float64")
    new, vel = sgdmupdate(p, g, None, 0.01, 0.9)
    # vel = 0 - 0.01*g; θ = θ + vel
    np.testing.assert_array_equal(lib.to_numpy(vel), [-math.inf, math.nan, math.inf, -0.01])
    np.testing.assert_array_equal(lib.to_numpy(new), [-math.inf, math.nan, math.inf, math.inf])
    new, v = rmspropupdate(p, g, None, 0.01, 0.9, 1e-8)
    # v = 0.1*g²: inf, nan, inf, 0.1; step α·g/(√v + ε): inf/inf = nan, nan, nan, finite
    np.testing.assert_array_equal(lib.to_numpy(v), [math.inf, math.nan, math.inf, 1 - 0.9])
    np.testing.assert_array_equal(lib.to_numpy(new)[:3], [math.nan] * 3)
    assert lib.to_numpy(new)[3] == math.inf
