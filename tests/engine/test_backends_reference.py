"""The same random problems on every backend (NumPy, PyTorch, JAX, ``array_api_strict``; torch CUDA,
CuPy and JAX GPU with the ``gpu`` marker, skipped cleanly without a GPU), in every container,
against an independent float64 reference: float64/float32/complex, low precision (float16,
bfloat16) and the backends against each other. The reference, the error measure and the
tolerances are described in backend_helpers.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from adamupdate import adamupdate
from backend_helpers import (
    CONTAINERS,
    DTYPES,
    LIBS,
    RTOL,
    Lib,
    assert_within,
    cupy_lib,
    jax_lib,
    random_values,
    record,
    ref_start,
    reference_step,
    rel_errors,
    run_problem,
    torch_lib,
    torch_route_step,
)

# --------------------------------------------------------------------------------------------
# The suite over every CPU backend
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CONTAINERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lib_name", list(LIBS))
def test_random_problem_matches_reference(lib_name, dtype, kind):
    lib = LIBS[lib_name]()
    seed = 100 * list(LIBS).index(lib_name) + 10 * DTYPES.index(dtype) + CONTAINERS.index(kind)
    with lib.context(dtype):
        worst = run_problem(lib, dtype, kind, seed)
    assert_within(worst, RTOL[dtype], f"{lib.name}/{dtype}")


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex64"])
@pytest.mark.parametrize("lib_name", ["numpy", "torch", "array_api_strict"])
def test_inplace_matches_reference_and_reuses_buffers(lib_name, dtype):
    lib = LIBS[lib_name]()
    rng = np.random.default_rng(7)
    complex_ = dtype.startswith("complex")
    params = {"a": lib.make(random_values(rng, (5, 3), complex_, 1.0), dtype)}
    ref = ref_start(lib.to_numpy(params["a"]))
    avg = avg_sq = None
    for t in range(1, 6):
        g = random_values(rng, (5, 3), complex_)
        out, new_avg, new_avg_sq = adamupdate(
            params, {"a": lib.make(g, dtype)}, avg, avg_sq, t, 0.01, inplace=True
        )
        assert out["a"] is params["a"]  # the caller's buffer, written in place
        if avg is not None:
            assert new_avg["a"] is avg["a"] and new_avg_sq["a"] is avg_sq["a"]
        avg, avg_sq, params = new_avg, new_avg_sq, out
        ref = reference_step(ref, g, t, 0.01, 0.9, 0.999, 1e-8)
        errors = rel_errors(
            {
                "p": lib.to_numpy(out["a"]),
                "m": lib.to_numpy(avg["a"]),
                "v": lib.to_numpy(avg_sq["a"]),
            },
            ref,
        )
        assert_within(errors, RTOL[dtype], f"{lib.name}-inplace/{dtype}")


@pytest.mark.parametrize("lib_name", list(LIBS))
def test_known_matlab_value_on_every_backend(lib_name):
    """MATLAB's documentation example: every parameter drops by 0.04999999776393212."""
    expected = 0.05 * math.sqrt(0.05) / (math.sqrt(0.05) + 1e-8)
    assert expected == 0.04999999776393212
    lib = LIBS[lib_name]()
    with lib.context("float64"):
        p, m, v = adamupdate(
            lib.make(np.zeros((3, 3, 4)), "float64"),
            lib.make(np.ones((3, 3, 4)), "float64"),
            None,
            None,
            1,
            0.05,
            0.75,
            0.95,
        )
        got, m, v = lib.to_numpy(p), lib.to_numpy(m), lib.to_numpy(v)
    assert np.all(np.abs(got + expected) <= 1e-16), np.unique(got)
    np.testing.assert_allclose(m, 0.25, rtol=1e-15)
    np.testing.assert_allclose(v, 0.05, rtol=1e-15)


# --------------------------------------------------------------------------------------------
# Low precision: float16 / bfloat16
# --------------------------------------------------------------------------------------------

# Unit roundoff of the storage formats.
UNIT = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to a storage format and back (the reference stores each step)."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return x.astype(ml_dtypes.bfloat16).astype(np.float64)
    return x.astype(dtype).astype(np.float64)


LOW_PRECISION = [  # state_dtype None: float32 averages by default
    ("numpy", "float16", None),
    ("numpy", "float16", "float16"),
    ("torch", "float16", None),
    ("torch", "float16", "float16"),
    ("torch", "bfloat16", None),
    ("torch", "bfloat16", "bfloat16"),
    ("jax", "float16", None),
    ("jax", "float16", "float16"),
    ("jax", "bfloat16", None),
    ("jax", "bfloat16", "bfloat16"),
]


@pytest.mark.parametrize(("lib_name", "dtype", "state_dtype"), LOW_PRECISION)
def test_low_precision_matches_rounded_reference(lib_name, dtype, state_dtype):
    """float16/bfloat16 parameters (float32 states by default, or asked for in the same format).

    The reference here also rounds p, m and v to their storage formats after each float64
    step, as any implementation must. The implementations compute in float32 and round once;
    where the float64 and float32 results straddle a rounding boundary the stored values differ
    by one storage ulp, and that difference is carried on. Gradients are kept at magnitudes
    0.5..2 so that v stays clear of float16's subnormals (below 6.1e-5), where relative precision
    is lost for every implementation alike. Tolerance: 8 storage ulps (p: float16 3.9e-3,
    bfloat16 3.1e-2; float16/bfloat16 states likewise; float32 states 2e-6 relative to the
    cancellation-free magnitude). Measured maxima: float16 p 8.2e-4, m 7.8e-4, v 9.1e-4
    (<= 1.9 float16 ulps, every backend); bfloat16 p 4.4e-3, m 3.3e-3, v 5.7e-3 (<= 1.5
    bfloat16 ulps); with float32 states p 0, m 2.7e-7, v 5.8e-7 (states tested against the
    float32 tolerance ``RTOL["float32"]``).
    """
    lib = LIBS[lib_name]()
    rng = np.random.default_rng(11)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    state_format = state_dtype or "float32"
    shape = (300,)
    p = lib.make(rng.standard_normal(shape), dtype)
    ref = ref_start(lib.to_numpy(p))
    m = v = None
    worst = {"p": 0.0, "m": 0.0, "v": 0.0}
    for t in range(1, 21):
        g_values = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
        g = lib.make(g_values, dtype)
        p, m, v = adamupdate(p, g, m, v, t, lr, b1, b2, eps, state_dtype=state_dtype)
        lib.check(p, dtype, shape)
        lib.check(m, state_format, shape)
        lib.check(v, state_format, shape)
        ref = reference_step(ref, lib.to_numpy(g), t, lr, b1, b2, eps)
        ref.p = round_to(ref.p, dtype)
        ref.m = round_to(ref.m, state_format)
        ref.v = round_to(ref.v, state_format)
        errors = rel_errors({"p": lib.to_numpy(p), "m": lib.to_numpy(m), "v": lib.to_numpy(v)}, ref)
        for key in worst:
            worst[key] = max(worst[key], errors[key])
    label = f"{lib.name}/{dtype}/states-{state_format}"
    record(label, worst)
    assert worst["p"] <= 8 * UNIT[dtype], (label, worst)
    state_rtol = RTOL["float32"] if state_format == "float32" else 8 * UNIT[state_format]
    assert worst["m"] <= state_rtol, (label, worst)
    assert worst["v"] <= state_rtol, (label, worst)


# --------------------------------------------------------------------------------------------
# Cross-backend agreement
# --------------------------------------------------------------------------------------------

# Measured (max over elements, relative to the magnitudes above): float64 torch vs numpy
# 4.4e-16, jax vs numpy 6.1e-16 (complex128 8.2e-16), array_api_strict bitwise; float32 and
# complex64 <= 3.5e-7.
CROSS_RTOL = {"float64": 1e-14, "complex128": 1e-14, "float32": 2e-6, "complex64": 2e-6}


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_with_each_other(dtype):
    rng = np.random.default_rng(23)
    complex_ = dtype.startswith("complex")
    shape = (4, 33)
    p0 = random_values(rng, shape, complex_, 1.0).astype(dtype)
    grads = [random_values(rng, shape, complex_).astype(dtype) for _ in range(10)]
    results = {}
    for name in ("numpy", "torch", "jax", "array_api_strict"):
        lib = LIBS[name]()
        with lib.context(dtype):
            p, m, v = lib.make(p0, dtype), None, None
            for t, g in enumerate(grads, 1):
                p, m, v = adamupdate(p, lib.make(g, dtype), m, v, t, 0.02, 0.8, 0.99, 1e-8)
            results[name] = [lib.to_numpy(x) for x in (p, m, v)]
    # magnitudes for the error measure, from an independent reference run
    ref = ref_start(p0)
    for t, g in enumerate(grads, 1):
        ref = reference_step(ref, g, t, 0.02, 0.8, 0.99, 1e-8)
    base = results.pop("numpy")
    for name, (p, m, v) in results.items():
        errors = {
            key: float(np.max(np.abs(a - b) / np.maximum(mag, 1e-300)))
            for key, a, b, mag in zip("pmv", (p, m, v), base, (ref.sp, ref.sm, np.abs(ref.v)))
        }
        record(f"cross/{name}-vs-numpy/{dtype}", errors)
        assert max(errors.values()) <= CROSS_RTOL[dtype], (name, dtype, errors)


# --------------------------------------------------------------------------------------------
# GPU variants (skip cleanly without a GPU)
# --------------------------------------------------------------------------------------------


def _gpu_lib(name: str) -> Lib:
    if name == "torch-cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device for PyTorch")
        return torch_lib("cuda")
    if name == "cupy":
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                pytest.skip("no CUDA device for CuPy")
        except cupy.cuda.runtime.CUDARuntimeError:
            pytest.skip("no CUDA device for CuPy")
        return cupy_lib()
    if name == "jax-gpu":
        jax = pytest.importorskip("jax")
        try:
            jax.devices("gpu")
        except RuntimeError:
            pytest.skip("no GPU backend for JAX")
        return jax_lib("gpu")
    raise AssertionError(name)


GPU_LIBS = ["torch-cuda", "cupy", "jax-gpu"]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["single", "nested"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lib_name", GPU_LIBS)
def test_gpu_random_problem_matches_reference(lib_name, dtype, kind):
    lib = _gpu_lib(lib_name)
    with lib.context(dtype):
        worst = run_problem(lib, dtype, kind, seed=31 + DTYPES.index(dtype))
    # GPU libraries may contract multiply-adds (FMA) and use their own sqrt/divide; allow a few
    # more ulps than on the CPU for float32, the same bound for float64.
    rtol = RTOL[dtype] * (4 if dtype in ("float32", "complex64") else 1)
    assert_within(worst, rtol, f"{lib.name}/{dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_torch_fused_and_foreach_agree(dtype):
    lib = _gpu_lib("torch-cuda")
    import torch

    from adamupdate.rules.adam import coefficients

    rng = np.random.default_rng(4)
    p0 = lib.make(random_values(rng, (1000,), False, 1.0), dtype)
    g = lib.make(random_values(rng, (1000,), False), dtype)
    c = coefficients(0.01, 0.9, 0.999, 1e-8, 1)
    out = {}
    for kernel in ("fused", "foreach"):
        ps, _, _ = torch_route_step(kernel, [p0], [g], None, None, c)
        assert ps[0].device.type == "cuda"
        out[kernel] = ps[0]
    ref = reference_step(ref_start(lib.to_numpy(p0)), lib.to_numpy(g), 1, 0.01, 0.9, 0.999, 1e-8)
    for fused, p in out.items():
        err = np.max(np.abs(lib.to_numpy(p) - ref.p) / ref.sp)
        assert err <= 4 * RTOL[dtype], (fused, err)
    assert torch.allclose(out["fused"], out["foreach"], rtol=8 * RTOL[dtype], atol=0)
