"""Shared parts of the test_backends_*.py files: the same random problems on every backend, against
an independent float64 reference.

Backends: NumPy, PyTorch (CPU; both its fused and its foreach path), JAX (CPU) and
``array_api_strict``; the GPU variants (torch CUDA, CuPy, JAX GPU) carry the ``gpu`` marker and
skip cleanly without a GPU. Optional libraries are skipped with ``pytest.importorskip``.

The reference (:func:`reference_step`) is written here from the contract (docs/numerics.rst) with
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
to write them again) are in the comments at :data:`RTOL` (tests/engine/conftest.py writes the
report).
"""

from __future__ import annotations

import contextlib
import math
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

# Filled by the test_backends_*.py files; tests/engine/conftest.py writes it at the end of the run.
MEASURED: dict[str, float] = {}


def record(label: str, errors: dict[str, float]) -> None:
    for key, value in errors.items():
        name = f"{label}/{key}"
        MEASURED[name] = max(MEASURED.get(name, 0.0), value)


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
