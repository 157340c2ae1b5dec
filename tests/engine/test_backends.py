"""The same random problems on every backend, against an independent float64 reference.

Backends: NumPy, PyTorch (CPU; both its fused and its foreach path), JAX (CPU) and
``array_api_strict``; the GPU variants (torch CUDA, CuPy, JAX GPU) carry the ``gpu`` marker and
skip cleanly without a GPU. Optional libraries are skipped with ``pytest.importorskip``.

The reference (:func:`reference_step`) is written here from the contract (DESIGN.md §2) with
vectorised NumPy float64/complex128 operations and nothing from ``adamupdate``:

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*|g|^2 (|g|^2 = g*conj(g), real)
    p = p - lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps)   (eps on sqrt of the UNCORRECTED v)

Error measure
-------------
Each element's error is divided by a magnitude that no correct implementation can beat by
cancellation, tracked alongside the reference:

* ``v``: ``|v|`` itself (a sum of non-negative terms);
* ``m``: ``sm = b1*sm + (1-b1)*|g|``, the magnitude ``m`` would have without cancellation;
* ``p``: the largest ``|p|`` along the trajectory plus the sum of ``|step|`` so far.

So "relative error 2e-6" below means ``|actual - reference| <= 2e-6 * magnitude`` per element.
Gradients mix scales from 1e-9 to 3 so that epsilon matters for some elements (an epsilon on
the bias-corrected ``sqrt(v_hat)``, PyTorch's and optax's convention, fails these tests).

Measured maxima (CPU, 20 steps, the problems below; set ``ADAMUPDATE_ERROR_REPORT=path.json``
to write them again) are in the comments at :data:`RTOL`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from adamupdate import adamupdate
from reference import container_type, jax_x64

# --------------------------------------------------------------------------------------------
# Independent float64 reference
# --------------------------------------------------------------------------------------------


@dataclass
class Ref:
    """Reference state of one leaf: values and error magnitudes, float64/complex128."""

    p: np.ndarray
    m: Any  # 0.0 before the first step (MATLAB's empty state)
    v: Any
    sp: np.ndarray  # max |p| along the trajectory + sum |step|
    sm: Any  # magnitude of m without cancellation


def ref_start(p0: np.ndarray, m0=None, v0=None) -> Ref:
    p = np.array(p0, dtype=np.complex128 if np.iscomplexobj(p0) else np.float64)
    m = 0.0 if m0 is None else np.array(m0, dtype=p.dtype)
    v = 0.0 if v0 is None else np.array(v0, dtype=np.float64)
    return Ref(p=p, m=m, v=v, sp=np.abs(p), sm=np.abs(m))


def reference_step(r: Ref, g: np.ndarray, t: int, lr, b1, b2, eps) -> Ref:
    g = np.asarray(g, dtype=r.p.dtype)
    m = b1 * r.m + (1.0 - b1) * g
    v = b2 * r.v + (1.0 - b2) * (g * np.conj(g)).real
    step = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t) * m / (np.sqrt(v) + eps)
    p = r.p - step
    sm = b1 * r.sm + (1.0 - b1) * np.abs(g)
    sp = np.maximum(r.sp, np.abs(p)) + np.abs(step)
    return Ref(p=p, m=m, v=v, sp=sp, sm=sm)


def rel_errors(actual: dict[str, np.ndarray], r: Ref) -> dict[str, float]:
    """Max per-element error of p, m, v relative to the magnitudes described above."""
    out = {}
    tiny = np.finfo(np.float64).tiny
    for key, ref, mag in (("p", r.p, r.sp), ("m", r.m, r.sm), ("v", r.v, np.abs(r.v))):
        err = np.abs(actual[key] - ref) / np.maximum(mag, tiny)
        out[key] = float(np.max(err)) if np.size(err) else 0.0
    return out


# Tolerances, relative in the sense above. Measured maxima over this file's problems (CPU):
#   float64:    numpy, array_api_strict and torch's foreach path 0 (bitwise: the same operations
#               in the same order); torch fused 4.8e-16 (p) / 5.4e-16 (m) / 5.9e-16 (v): its
#               kernel rounds differently (m by lerp, denominator sqrt(v)/sqrt(1-b2^t) + eps_t);
#               jax 1.8e-16 / 5.6e-16 / 9.2e-16 (XLA fuses and reorders). 1e-13 as requested:
#               ~100x the measured maximum.
#   complex128: <= 6.3e-16 on every backend.
#   float32:    numpy 4.5e-7, torch 3.7e-7, jax 5.0e-7, array_api_strict 5.3e-7 (a few ulp);
#   complex64:  <= 5.3e-7.  2e-6 as requested: ~4x the measured maximum.
RTOL = {"float64": 1e-13, "complex128": 1e-13, "float32": 2e-6, "complex64": 2e-6}

HYPER = [
    # learn_rate, grad_decay, sq_grad_decay, epsilon
    (0.01, 0.9, 0.999, 1e-8),
    (0.05, 0.75, 0.95, 1e-6),  # MATLAB's documentation example's decays
    (0.003, 0.0, 0.5, 1e-7),  # no momentum
]

# --------------------------------------------------------------------------------------------
# Error report (for the project notes)
# --------------------------------------------------------------------------------------------

MEASURED: dict[str, float] = {}


def record(label: str, errors: dict[str, float]) -> None:
    for key, value in errors.items():
        name = f"{label}/{key}"
        MEASURED[name] = max(MEASURED.get(name, 0.0), value)


@pytest.fixture(scope="module", autouse=True)
def _write_error_report():
    yield
    path = os.environ.get("ADAMUPDATE_ERROR_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(sorted(MEASURED.items())), f, indent=1)


# --------------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------------

REAL_OF = {
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float32": "float32",
    "float64": "float64",
    "complex64": "float32",
    "complex128": "float64",
}


@dataclass(frozen=True)
class Lib:
    name: str
    make: Callable[[np.ndarray, str], Any]
    to_numpy: Callable[[Any], np.ndarray]
    check: Callable[[Any, str, tuple], None]  # asserts library, dtype, device and shape
    context: Callable[[str], Any] = lambda dtype: contextlib.nullcontext()


def _as64(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def numpy_lib() -> Lib:
    def check(x, dtype, shape):
        assert type(x) is np.ndarray, type(x)
        assert x.dtype == np.dtype(dtype), (x.dtype, dtype)
        assert x.shape == shape

    return Lib("numpy", lambda a, dt: np.asarray(a).astype(dt), _as64, check)


def torch_lib(device: str = "cpu") -> Lib:
    torch = pytest.importorskip("torch")

    def make(a, dt):
        a = np.array(_as64(a), order="C")  # (np.ascontiguousarray makes 0-d arrays 1-d)
        return torch.from_numpy(a).to(device=device, dtype=getattr(torch, dt))

    def to_numpy(x):
        wide = torch.complex128 if x.is_complex() else torch.float64
        return x.detach().to("cpu", wide).numpy()

    def check(x, dtype, shape):
        assert isinstance(x, torch.Tensor), type(x)
        assert x.dtype == getattr(torch, dtype), (x.dtype, dtype)
        assert x.device == torch.device(device), (x.device, device)
        assert tuple(x.shape) == shape

    return Lib(f"torch-{device}", make, to_numpy, check)


def jax_lib(platform: str = "cpu") -> Lib:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    device = jax.devices(platform)[0]

    def make(a, dt):
        a = _as64(a)
        if dt == "bfloat16":
            a = a.astype(np.float32)
        return jax.device_put(jnp.asarray(a, dtype=getattr(jnp, dt)), device)

    def check(x, dtype, shape):
        assert isinstance(x, jax.Array), type(x)
        assert x.dtype == jnp.dtype(dtype), (x.dtype, dtype)
        assert x.devices() == {device}, (x.devices(), device)
        assert tuple(x.shape) == shape

    def context(dtype):
        # float64/complex128 need JAX's x64 mode; enable it only around those tests.
        wide = dtype in ("float64", "complex128")
        return jax_x64(jax) if wide else contextlib.nullcontext()

    return Lib(f"jax-{platform}", make, lambda x: _as64(np.asarray(x)), check, context)


def array_api_strict_lib() -> Lib:
    xp = pytest.importorskip("array_api_strict")
    pytest.importorskip("array_api_compat")
    array_type = type(xp.asarray(0.0))
    device = xp.asarray(0.0).device

    def check(x, dtype, shape):
        assert type(x) is array_type, type(x)
        assert x.dtype == getattr(xp, dtype), (x.dtype, dtype)
        assert x.device == device
        assert tuple(x.shape) == shape

    return Lib(
        "array_api_strict",
        lambda a, dt: xp.asarray(_as64(a), dtype=getattr(xp, dt)),
        lambda x: _as64(np.from_dlpack(x)),
        check,
    )


def cupy_lib() -> Lib:
    cupy = pytest.importorskip("cupy")

    def check(x, dtype, shape):
        assert isinstance(x, cupy.ndarray), type(x)
        assert x.dtype == np.dtype(dtype)
        assert x.shape == shape

    return Lib(
        "cupy", lambda a, dt: cupy.asarray(_as64(a)).astype(dt), lambda x: _as64(x.get()), check
    )


LIBS = {
    "numpy": numpy_lib,
    "torch": torch_lib,
    "jax": jax_lib,
    "array_api_strict": array_api_strict_lib,
}
DTYPES = ["float64", "float32", "complex128", "complex64"]

# --------------------------------------------------------------------------------------------
# Random problems in containers
# --------------------------------------------------------------------------------------------

SHAPES = [(7,), (3, 5), (), (2, 3, 4), (1,), (4, 1)]


def build(kind: str, leaves: list) -> Any:
    """Put leaves (at least 6) into a container of the given kind."""
    if kind == "single":
        return leaves[0]
    if kind == "list":
        return [leaves[0], leaves[1], leaves[2]]
    if kind == "dict":
        return {"w": leaves[0], "b": leaves[1], "s": leaves[2]}
    if kind == "nested":
        return {
            "fc1": [leaves[0], (leaves[1], leaves[2])],
            "fc2": {"weight": leaves[3], "bias": [leaves[4]]},
            "scale": leaves[5],
        }
    raise AssertionError(kind)


N_LEAVES = {"single": 1, "list": 3, "dict": 3, "nested": 6}
CONTAINERS = list(N_LEAVES)


def flat(tree: Any) -> list:
    if isinstance(tree, dict):
        return [x for k in tree for x in flat(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for item in tree for x in flat(item)]
    return [tree]


def assert_same_structure(out: Any, like: Any, path: str = "root") -> None:
    """Same container types, keys (in order) and lengths; leaves are checked elsewhere."""
    if isinstance(like, (dict, list, tuple)):
        assert container_type(out) is type(like), f"{path}: {type(out)} is not {type(like)}"
        if isinstance(like, dict):
            assert list(out) == list(like), f"{path}: keys {list(out)} != {list(like)}"
            for k in like:
                assert_same_structure(out[k], like[k], f"{path}[{k!r}]")
        else:
            assert len(out) == len(like), path
            for i, (a, b) in enumerate(zip(out, like)):
                assert_same_structure(a, b, f"{path}[{i}]")


def random_values(rng: np.random.Generator, shape, complex_: bool, scale=None) -> np.ndarray:
    x = rng.standard_normal(shape)
    if complex_:
        x = x + 1j * rng.standard_normal(shape)
    if scale is None:  # mixed scales, 1e-9 .. 3, so that epsilon matters somewhere
        scale = 10.0 ** rng.uniform(-9, 0.5, shape)
    return x * scale


def run_problem(lib: Lib, dtype: str, kind: str, seed: int, n_steps: int = 20, **options):
    """Run ``n_steps`` steps on ``lib`` and the reference; check every step; return errors."""
    rng = np.random.default_rng(seed)
    lr, b1, b2, eps = HYPER[seed % len(HYPER)]
    complex_ = dtype.startswith("complex")
    n = N_LEAVES[kind]
    shapes = SHAPES[:n]
    params = build(kind, [lib.make(random_values(rng, s, complex_, 1.0), dtype) for s in shapes])
    refs = [ref_start(lib.to_numpy(x)) for x in flat(params)]
    avg = avg_sq = None
    worst = {"p": 0.0, "m": 0.0, "v": 0.0}
    for t in range(1, n_steps + 1):
        grad = build(kind, [lib.make(random_values(rng, s, complex_), dtype) for s in shapes])
        before = [lib.to_numpy(x).copy() for x in flat(params)]
        new_params, avg, avg_sq = adamupdate(
            params, grad, avg, avg_sq, t, lr, b1, b2, eps, **options
        )
        if not options.get("inplace"):
            for x, b in zip(flat(params), before):  # inputs untouched
                np.testing.assert_array_equal(lib.to_numpy(x), b)
        params = new_params
        for structure in (params, avg, avg_sq):
            assert_same_structure(structure, grad)
        for i, (p, m, v, g) in enumerate(zip(flat(params), flat(avg), flat(avg_sq), flat(grad))):
            lib.check(p, dtype, shapes[i])
            lib.check(m, dtype, shapes[i])
            lib.check(v, REAL_OF[dtype], shapes[i])
            refs[i] = reference_step(refs[i], lib.to_numpy(g), t, lr, b1, b2, eps)
            errors = rel_errors(
                {"p": lib.to_numpy(p), "m": lib.to_numpy(m), "v": lib.to_numpy(v)}, refs[i]
            )
            for key in worst:
                worst[key] = max(worst[key], errors[key])
    return worst


def assert_within(worst: dict[str, float], rtol: float, label: str) -> None:
    record(label, worst)
    bad = {k: e for k, e in worst.items() if not e <= rtol}
    assert not bad, f"{label}: relative errors {bad} exceed {rtol}"


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
# PyTorch: both kernels, mixed containers, autograd, in-place
# --------------------------------------------------------------------------------------------


def torch_route_step(route, ps, gs, ms, vs, c):
    """One step of torch tensors through a forced route of the torch backend's group step."""
    from adamupdate.backends import torch_backend
    from adamupdate.rules import adam

    n, dtype = len(ps), ps[0].dtype
    fresh = ms is None
    group = torch_backend.group(
        adam.RULE, dtype, (dtype, dtype), fresh=fresh, inplace=False, params=ps, route=route
    )
    group.bind(ps, gs, [ms or [None] * n, vs or [None] * n])
    group.run(c)
    group.commit()
    new_params, (new_m, new_v) = group.outputs()
    return new_params, new_m, new_v


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_fused_foreach_and_numba_paths_agree_with_reference(dtype):
    torch = pytest.importorskip("torch")
    from adamupdate.rules.adam import coefficients

    rng = np.random.default_rng(5)
    shapes = [(17,), (3, 4), ()]
    tdt = getattr(torch, dtype)
    p0 = [random_values(rng, s, False, 1.0) for s in shapes]
    grads = [[random_values(rng, s, False) for s in shapes] for _ in range(15)]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    finals = {}
    for kernel in ("fused", "foreach", "numba"):
        ps = [torch.tensor(x, dtype=tdt) for x in p0]
        refs = [ref_start(x.double().numpy()) for x in ps]
        ms = vs = None
        worst = {"p": 0.0, "m": 0.0, "v": 0.0}
        for t, gs in enumerate(grads, 1):
            gt = [torch.tensor(g, dtype=tdt) for g in gs]
            c = coefficients(lr, b1, b2, eps, t)
            ps, ms, vs = torch_route_step(kernel, ps, gt, ms, vs, c)
            for i in range(len(shapes)):
                refs[i] = reference_step(refs[i], gt[i].double().numpy(), t, lr, b1, b2, eps)
                errors = rel_errors(
                    {k: x[i].double().numpy() for k, x in zip("pmv", (ps, ms, vs))}, refs[i]
                )
                for k in worst:
                    worst[k] = max(worst[k], errors[k])
        assert_within(worst, RTOL[dtype], f"torch-{kernel}/{dtype}")
        finals[kernel] = ps
    for a, b, r in zip(finals["fused"], finals["foreach"], refs):
        diff = np.abs(a.double().numpy() - b.double().numpy()) / r.sp
        assert np.max(diff) <= 2 * RTOL[dtype]
    # the numba kernel applies MATLAB's operations in MATLAB's order, as the NumPy path does
    npdt = np.dtype(dtype)
    pn, mn, vn = [x.astype(npdt) for x in p0], None, None
    for t, gs in enumerate(grads, 1):
        pn, mn, vn = adamupdate(pn, [g.astype(npdt) for g in gs], mn, vn, t, lr, b1, b2, eps)
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(finals["numba"], pn))


def test_mixed_container_each_leaf_in_its_own_library():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    libs = {"np": numpy_lib(), "torch": torch_lib(), "jax": jax_lib()}
    rng = np.random.default_rng(3)
    values = {k: random_values(rng, (6,), False, 1.0) for k in libs}
    grads = {k: random_values(rng, (6,), False) for k in libs}
    params = {k: lib.make(values[k], "float32") for k, lib in libs.items()}
    grad = {k: lib.make(grads[k], "float32") for k, lib in libs.items()}
    p, m, v = adamupdate(params, grad, None, None, 1, 0.01)
    assert isinstance(p["np"], np.ndarray) and isinstance(m["np"], np.ndarray)
    assert isinstance(p["torch"], torch.Tensor) and isinstance(v["torch"], torch.Tensor)
    assert isinstance(p["jax"], jax.Array) and isinstance(m["jax"], jax.Array)
    for k, lib in libs.items():
        ref = reference_step(
            ref_start(lib.to_numpy(params[k])), lib.to_numpy(grad[k]), 1, 0.01, 0.9, 0.999, 1e-8
        )
        errors = rel_errors(
            {"p": lib.to_numpy(p[k]), "m": lib.to_numpy(m[k]), "v": lib.to_numpy(v[k])}, ref
        )
        assert_within(errors, RTOL["float32"], f"mixed/{k}")
    # a second step with those states
    p2, _, _ = adamupdate(p, grad, m, v, 2, 0.01)
    assert all(not np.array_equal(libs[k].to_numpy(p2[k]), libs[k].to_numpy(p[k])) for k in libs)


@pytest.mark.parametrize("argument", ["grad", "avg_grad", "avg_sq_grad"])
def test_leaf_from_another_library_is_a_type_error_naming_the_path(argument):
    torch = pytest.importorskip("torch")
    params = {"b": torch.zeros(3), "w": torch.ones(3)}
    args = {
        "grad": {"b": torch.ones(3), "w": torch.ones(3)},
        "avg_grad": {"b": torch.zeros(3), "w": torch.zeros(3)},
        "avg_sq_grad": {"b": torch.zeros(3), "w": torch.zeros(3)},
    }
    args[argument]["w"] = np.ones(3, np.float32)  # a NumPy leaf for a torch parameter

    def values(x):
        return x.numpy().copy() if isinstance(x, torch.Tensor) else np.array(x)

    snapshot = {k: {kk: values(vv) for kk, vv in d.items()} for k, d in args.items()}
    with pytest.raises(TypeError, match=rf"{argument}\['w'\]"):
        adamupdate(params, args["grad"], args["avg_grad"], args["avg_sq_grad"], 2, inplace=True)
    # nothing was touched, not even the leaves before the bad one
    assert torch.equal(params["b"], torch.zeros(3)) and torch.equal(params["w"], torch.ones(3))
    for k, d in args.items():
        for kk, vv in d.items():
            np.testing.assert_array_equal(values(vv), snapshot[k][kk])


def test_torch_returned_params_are_detached_leaves_that_keep_requires_grad():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    b = torch.randn(3, generator=gen).requires_grad_()
    c = torch.randn(2, generator=gen)  # requires_grad=False stays False
    x = torch.randn(5, 4, generator=gen)
    params = [w, b, c]
    m = v = None
    first = weakref.ref(w)
    for t in range(1, 101):
        loss = ((x @ params[0] + params[1]) ** 2).sum() + params[2].sum() * 0
        grads = torch.autograd.grad(loss, params[:2], create_graph=True)  # grads carry a graph
        grads = [*grads, torch.ones(2)]
        params, m, v = adamupdate(params, grads, m, v, t, 0.01)
        assert isinstance(params[0], torch.nn.Parameter)
        assert params[0].requires_grad and params[1].requires_grad
        assert not params[2].requires_grad
        for x_ in (*params, *m, *v):
            assert x_.grad_fn is None and x_.is_leaf
        for s in (*m, *v):
            assert not s.requires_grad
        assert all(p._version < 10 for p in params)  # fresh tensors, no history piling up
        if t == 1:
            del w, b, c
    gc.collect()
    assert first() is None  # the first parameter is not kept alive by any graph


def test_torch_inplace_keeps_storage_and_objects():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    w = torch.nn.Parameter(torch.tensor(rng.standard_normal((6, 2)), dtype=torch.float32))
    z = torch.tensor(rng.standard_normal((5,)), dtype=torch.complex64)  # foreach path
    params = {"w": w, "z": z}
    ptrs = {k: x.data_ptr() for k, x in params.items()}
    gen = torch.Generator().manual_seed(1)
    refs = {k: ref_start(x.detach().numpy()) for k, x in params.items()}
    m = v = None
    for t in range(1, 101):
        grad = {k: torch.randn(x.shape, dtype=x.dtype, generator=gen) for k, x in params.items()}
        out, m2, v2 = adamupdate(params, grad, m, v, t, 0.001, inplace=True)
        assert out["w"] is w and out["z"] is z
        assert {k: x.data_ptr() for k, x in out.items()} == ptrs
        if m is not None:
            assert all(m2[k] is m[k] and v2[k] is v[k] for k in params)
        m, v = m2, v2
        assert w.grad_fn is None and w.requires_grad and isinstance(w, torch.nn.Parameter)
        for k in params:
            refs[k] = reference_step(refs[k], grad[k].numpy(), t, 0.001, 0.9, 0.999, 1e-8)
    for k in params:
        errors = rel_errors(
            {"p": params[k].detach().numpy(), "m": m[k].numpy(), "v": v[k].numpy()}, refs[k]
        )
        # 100 steps rather than 20: with b2 = 0.999 the rounding errors of v add up over all
        # of them (measured 1.1e-6 for v, 4e-7 for p), hence 2.5x the 20-step tolerance
        assert_within(errors, 2.5 * RTOL["float32"], f"torch-inplace-100/{k}")


def test_torch_float16_params_with_float32_states():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(2)

    def randn():
        return torch.randn(8, generator=gen).half()

    p = randn()
    m = v = None
    for t in range(1, 4):
        p, m, v = adamupdate(p, randn(), m, v, t, state_dtype="float32")
        assert p.dtype == torch.float16
        assert m.dtype == torch.float32 and v.dtype == torch.float32
    ptrs = (p.data_ptr(), m.data_ptr(), v.data_ptr())
    for t in (4, 5):
        g = randn()
        p2, m2, v2 = adamupdate(p, g, m, v, t, state_dtype=torch.float32, inplace=True)
        assert p2 is p and (p2.data_ptr(), m2.data_ptr(), v2.data_ptr()) == ptrs
        assert m2.dtype == torch.float32 and v2.dtype == torch.float32
        assert m2 is m and v2 is v  # the caller's own state objects come back
        m, v = m2, v2


def test_torch_inplace_returns_the_callers_state_objects():
    torch = pytest.importorskip("torch")
    p, g = torch.zeros(3), torch.ones(3)
    m, v = torch.zeros(3), torch.ones(3)
    p2, m2, v2 = adamupdate(p, g, m, v, 2, inplace=True)
    assert p2 is p
    assert m2.data_ptr() == m.data_ptr()  # written in place either way
    assert m2 is m and v2 is v


# --------------------------------------------------------------------------------------------
# JAX
# --------------------------------------------------------------------------------------------


def test_jax_returns_new_arrays_and_leaves_inputs_valid():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    p = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    g = jnp.ones((2, 3), jnp.float32)
    p1, m1, v1 = adamupdate(p, g, None, None, 1, 0.1)
    p2, m2, v2 = adamupdate(p1, g, m1, v1, 2, 0.1)
    for old, new in ((p, p1), (p1, p2), (m1, m2), (v1, v2)):
        assert new is not old
        assert not old.is_deleted()
    np.testing.assert_array_equal(np.asarray(p), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(m1), np.full((2, 3), 0.1, np.float32))
    assert float(p1[0, 0]) < 0.0 and float(p2[0, 0]) < float(p1[0, 0])


def test_jax_jit_with_traced_iteration_agrees_with_eager():
    """Inside ``jax.jit`` the iteration is traced, so the bias-correction factor is computed in
    float32 (as ``-expm1(t*log(b))``) instead of float64 and then rounded. That scalar differs by
    at most an ulp or two, so the parameters may differ by about 2 float32 ulps of the step.
    Measured: not bitwise identical; max 0.92 ulp (relative to |p| + the accumulated step bound
    0.01*t); the averages, which do not involve that scalar, are bitwise identical."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(2)
    p0 = jnp.asarray(rng.standard_normal((3, 16)), jnp.float32)
    grads = [jnp.asarray(random_values(rng, (3, 16), False), jnp.float32) for _ in range(10)]
    step = jax.jit(lambda p, g, m, v, t: adamupdate(p, g, m, v, t, 0.01))
    pj, mj, vj = step(p0, grads[0], None, None, jnp.int32(1))
    pe, me, ve = adamupdate(p0, grads[0], None, None, 1, 0.01)
    worst = 0.0
    ulp = float(np.finfo(np.float32).eps)
    for t in range(1, 11):
        if t > 1:
            pj, mj, vj = step(pj, grads[t - 1], mj, vj, jnp.int32(t))
            pe, me, ve = adamupdate(pe, grads[t - 1], me, ve, t, 0.01)
        # the averages do not involve the step size: identical
        np.testing.assert_array_equal(np.asarray(mj), np.asarray(me))
        np.testing.assert_array_equal(np.asarray(vj), np.asarray(ve))
        assert pj.dtype == jnp.float32 and pj.shape == (3, 16)
        diff = np.abs(np.asarray(pj, np.float64) - np.asarray(pe, np.float64))
        # ulps of |p| plus 2 ulps of the accumulated step (lr * t bounds the step sum)
        worst = max(worst, float(np.max(diff / (np.abs(np.asarray(pe, np.float64)) + 0.01 * t))))
    record("jax-jit/float32", {"p-over-ulp": worst / ulp})
    assert worst <= 2 * ulp, worst / ulp


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
