"""MATLAB's sibling solvers ``sgdmupdate``, ``rmspropupdate`` and ``dlupdate`` against independent
truth: MATLAB's documented numbers, hand-computed cases (40-digit decimal arithmetic on the
float64 inputs), and the element-by-element float64 reference of ``tests/solver_reference.py``.

Tolerances
----------
The reference carries, per element, a first-order running bound on the rounding error any
correct evaluation of the formula may make in the working precision (see its docstring: every
rounding of a coefficient, product, sum, square root and quotient is counted relative to the
magnitude it rounds, errors of the states are propagated, and the parameter's own rounding is
added each step). Both the implementation and the reference are within that bound of the exact
result, so they may differ by twice it (√2 more for complex, stepped componentwise). For half
precision (float16, bfloat16) the step runs in float32 with float32 states and the parameter is
rounded to half after each step: the reference rounds its parameter to half the same way, and
the bound adds half's unit roundoff (4.9e-4 / 3.9e-3 relative) per step. So the 30-step
trajectory check is loose for half (linear growth with the number of steps) and the tight check
is the per-step one: each step is compared with one reference step started from the
implementation's own previous parameter and state, which allows one to two ulps of half.

Bitwise comparisons (in place vs not, small vs kernel paths, network vs functional call, learn
rate factor 2 vs twice the learn rate) compare float64 widenings of the values, which keeps
signed zeros apart; where special values make NaNs, two NaNs count as equal whatever their sign
and payload bits (see ``NAN``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import solver_reference as ref
from adamupdate import dlupdate, rmspropupdate, sgdmupdate

SGDM = {"learn_rate": 0.05, "momentum": 0.9}
RMSPROP = {"learn_rate": 0.01, "sq_grad_decay": 0.9, "epsilon": 1e-4}
SOLVERS = ["sgdm", "rmsprop"]
STATE_NAME = {"sgdm": "vel", "rmsprop": "avg_sq_grad"}


def update(solver: str, params, grad, state, learn_rate: float | None = None, **kw):
    """One call of the solver with this file's hyperparameters (``kw``: inplace, ...)."""
    if solver == "sgdm":
        lr = SGDM["learn_rate"] if learn_rate is None else learn_rate
        return sgdmupdate(params, grad, state, lr, SGDM["momentum"], **kw)
    lr = RMSPROP["learn_rate"] if learn_rate is None else learn_rate
    return rmspropupdate(
        params, grad, state, lr, RMSPROP["sq_grad_decay"], RMSPROP["epsilon"], **kw
    )


def reference(solver: str, p0, grads, dtype_name: str, state0=None, learn_rate=None) -> ref.Run:
    if solver == "sgdm":
        lr = SGDM["learn_rate"] if learn_rate is None else learn_rate
        return ref.sgdm(p0, grads, lr, SGDM["momentum"], dtype_name=dtype_name, vel0=state0)
    lr = RMSPROP["learn_rate"] if learn_rate is None else learn_rate
    return ref.rmsprop(
        p0,
        grads,
        lr,
        RMSPROP["sq_grad_decay"],
        RMSPROP["epsilon"],
        dtype_name=dtype_name,
        v0=state0,
    )


def state_dtype_name(solver: str, dtype: str) -> str:
    """Half precision keeps float32 states; RMSProp's average of a complex gradient is real."""
    if dtype in ("float16", "bfloat16"):
        return "float32"
    if solver == "rmsprop":
        return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)
    return dtype


def bits(x) -> np.ndarray:
    """The bit patterns of an array's values (widened exactly to float64/complex128)."""
    a = np.ascontiguousarray(ref.as_float64(x)).reshape(-1)
    return a.view(np.uint64)


def assert_same_bits(a, b, what: str, *, nan_payloads: bool = True) -> None:
    """Bitwise equality (signed zeros included). ``nan_payloads=False``: a NaN only has to
    meet a NaN — IEEE 754 leaves the sign and payload of a NaN result unspecified, and they
    differ between vectorised and scalar loops of the same library (see the path tests)."""
    fa, fb = ref.as_float64(a), ref.as_float64(b)
    ba, bb = bits(fa), bits(fb)
    assert ba.shape == bb.shape, f"{what}: shapes {ba.shape} != {bb.shape}"
    differ = ba != bb
    if not nan_payloads:
        va = np.ascontiguousarray(fa).reshape(-1).view(np.float64)
        vb = np.ascontiguousarray(fb).reshape(-1).view(np.float64)
        differ &= ~(np.isnan(va) & np.isnan(vb))
    where = np.flatnonzero(differ)
    assert where.size == 0, (
        f"{what}: {where.size} elements differ, first at {where[0]}: "
        f"{hex(ba[where[0]])} vs {hex(bb[where[0]])}"
    )


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclass
class Lib:
    name: str
    make: Callable[[np.ndarray, str], Any]  # float64/complex128 values -> array of a dtype
    to_numpy: Callable[[Any], np.ndarray]  # exact float64/complex128 copy
    dtype: Callable[[str], Any]
    context: Callable[[str], Any] = lambda dtype: contextlib.nullcontext()
    same_objects_in_place: bool = True
    alive: Callable[[Any], bool] = lambda x: True  # JAX: not a donated (deleted) buffer


def numpy_lib() -> Lib:
    return Lib("numpy", numpy_make, ref.as_float64, np.dtype)


def torch_lib() -> Lib:
    torch = pytest.importorskip("torch")

    def make(a, dt):
        return torch.from_numpy(np.array(ref.as_float64(a), order="C")).to(getattr(torch, dt))

    def to_numpy(x):
        wide = torch.complex128 if x.is_complex() else torch.float64
        return x.detach().to("cpu", wide).numpy()

    return Lib("torch", make, to_numpy, lambda dt: getattr(torch, dt))


def jax_lib() -> Lib:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def context(dtype):
        # float64/complex128 need JAX's x64 mode; enable it only around those tests.
        wide = dtype in ("float64", "complex128")
        from reference import jax_x64

        return jax_x64(jax) if wide else contextlib.nullcontext()

    return Lib(
        "jax",
        lambda a, dt: jnp.asarray(ref.as_float64(a), dtype=getattr(jnp, dt)),
        lambda x: ref.as_float64(np.asarray(x)),
        lambda dt: jnp.dtype(dt),
        context,
        same_objects_in_place=False,  # in place donates the buffers: results are new arrays
        alive=lambda x: not x.is_deleted(),
    )


def array_api_strict_lib() -> Lib:
    xp = pytest.importorskip("array_api_strict")
    pytest.importorskip("array_api_compat")
    return Lib(
        "array_api_strict",
        lambda a, dt: xp.asarray(ref.as_float64(a), dtype=getattr(xp, dt)),
        lambda x: ref.as_float64(np.from_dlpack(x)),
        lambda dt: getattr(xp, dt),
    )


LIBS = {
    "numpy": numpy_lib,
    "torch": torch_lib,
    "jax": jax_lib,
    "array_api_strict": array_api_strict_lib,
}
WIDE = ["float32", "float64", "complex64", "complex128"]
CASES = (
    [("numpy", d) for d in ["float16", *WIDE]]
    + [("torch", d) for d in ["float16", "bfloat16", *WIDE]]
    + [("jax", d) for d in WIDE]
    + [("array_api_strict", d) for d in WIDE]
)


# --------------------------------------------------------------------------------------------
# 1. MATLAB's documentation examples and hand-computed cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, [], np.array([]), np.zeros((0, 0))], ids=repr)
def test_sgdm_matlab_doc_example(empty):
    # params = rand(3,3,4); grad = ones(3,3,4); vel = [];
    # [params,vel] = sgdmupdate(params,grad,vel,0.05,0.95)
    params = np.random.default_rng(2019).random((3, 3, 4))
    p0 = params.copy()
    new, vel = sgdmupdate(params, np.ones((3, 3, 4)), empty, 0.05, 0.95)
    assert type(vel) is np.ndarray and vel.dtype == np.float64 and vel.shape == (3, 3, 4)
    assert type(new) is np.ndarray and new.dtype == np.float64 and new.shape == (3, 3, 4)
    # vel = 0.95*0 - 0.05*1 = -0.05 exactly; params + vel is one correctly rounded sum.
    assert np.all(vel == -0.05)
    assert_same_bits(new, p0 - 0.05, "params")
    assert_same_bits(params, p0, "the input (not in place)")


def test_sgdm_second_step_hand_computed():
    p, vel = sgdmupdate(np.array([1.0, -2.0]), np.array([1.0, 1.0]), None, 0.05, 0.95)
    p, vel = sgdmupdate(p, np.array([2.0, -4.0]), vel, 0.05, 0.95)
    # vel = 0.95*(-0.05) - 0.05*g = [-0.1475, 0.1525]; p = p0 - 0.05 + vel
    # (a few ulp: each value is a handful of roundings away from the exact decimal one)
    np.testing.assert_allclose(vel, [-0.1475, 0.1525], rtol=1e-15, atol=0)
    np.testing.assert_allclose(p, [0.8025, -1.8975], rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "sq_grad_decay,v,step",
    [
        # v = (1 - β2)*1 (1 - β2 is exact in float64); step = 0.05/(sqrt(v) + 1e-8), evaluated
        # with 40-digit decimal arithmetic: 0.158113878008419151045..., 0.223606787749979329966...
        (None, 0.09999999999999998, 0.15811387800841915),  # the default β2 = 0.9
        (0.95, 0.050000000000000044, 0.22360678774997933),
    ],
)
@pytest.mark.parametrize("empty", [None, [], np.array([])], ids=repr)
def test_rmsprop_one_step_in_matlab_example_form(empty, sq_grad_decay, v, step):
    # MATLAB's example form: params = rand(3,3,4); grad = ones(3,3,4); avgSqGrad = [];
    # [params,avgSqGrad] = rmspropupdate(params,grad,avgSqGrad,0.05[,sqGradDecay])
    params = np.random.default_rng(2019).random((3, 3, 4))
    p0 = params.copy()
    extra = () if sq_grad_decay is None else (sq_grad_decay,)
    new, avg = rmspropupdate(params, np.ones((3, 3, 4)), empty, 0.05, *extra)
    assert avg.dtype == np.float64 and avg.shape == (3, 3, 4)
    assert np.all(avg == v)
    drop = p0 - new
    # new = fl(p0 - step'), step' within a few ulp of step: the drop recovers it up to half an
    # ulp of the parameter.
    assert np.all(np.abs(drop - step) <= 0.5 * np.spacing(new) + 4 * np.spacing(step))
    assert_same_bits(params, p0, "the input (not in place)")


def test_rmsprop_hand_computed_two_steps():
    # lr 0.01, β2 0.9, ε 1e-8; the values below are the formula evaluated with 40-digit decimal
    # arithmetic on the float64 inputs; compared to a few ulp (rtol 1e-15).
    g = np.array([0.3, -4.0, 0.0])
    p0 = np.array([1.0, -2.0, 0.5])
    p1, v1 = rmspropupdate(p0, g, None, 0.01, 0.9, 1e-8)
    np.testing.assert_allclose(v1, [0.008999999999999998, 1.5999999999999996, 0.0], rtol=1e-15)
    steps1 = np.array([0.031622773268350814, -0.0316227763516838, 0.0])
    np.testing.assert_allclose(p1, p0 - steps1, rtol=1e-15, atol=0)
    assert p1[2] == 0.5  # g = 0, v = 0: 0/(0 + ε) = 0
    p2, v2 = rmspropupdate(p1, g, v1, 0.01, 0.9, 1e-8)
    np.testing.assert_allclose(v2, [0.017099999999999994, 3.039999999999999, 0.0], rtol=1e-15)
    steps2 = np.array([0.022941571632670348, -0.022941573255477233, 0.0])
    np.testing.assert_allclose(p2, p0 - steps1 - steps2, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_rmsprop_hand_computed_complex(dtype):
    # g = 3+4i: |g|^2 = 25, v = 0.1*25 = 2.5, θ = 0 - 0.01*(3+4i)/(sqrt(2.5) + 1e-8)
    p, v = rmspropupdate(np.zeros(2, dtype), np.full(2, 3 + 4j, dtype), None, 0.01, 0.9, 1e-8)
    real = np.finfo(dtype).dtype
    assert v.dtype == real and p.dtype == np.dtype(dtype)
    rtol = 4 * np.finfo(real).eps
    np.testing.assert_allclose(v, [2.4999999999999996] * 2, rtol=rtol)
    want = -(0.01897366584101028 + 0.02529822112134704j)
    np.testing.assert_allclose(p.real, [want.real] * 2, rtol=rtol)
    np.testing.assert_allclose(p.imag, [want.imag] * 2, rtol=rtol)


# --------------------------------------------------------------------------------------------
# 2. Thirty steps against the reference on every backend and dtype; containers; in place
# --------------------------------------------------------------------------------------------

LEAF_SHAPES = [(4, 5), (3,), (2, 2), ()]
STEPS = 30


def nest(leaves: list) -> dict:
    """A dict holding a nested list: MATLAB's structure of cell arrays."""
    return {"w": leaves[0], "layers": [leaves[1], [leaves[2], leaves[3]]]}


def flat(tree: dict) -> list:
    return [tree["w"], tree["layers"][0], tree["layers"][1][0], tree["layers"][1][1]]


def random_values(rng, shape, dtype: str, scale: float = 1.0) -> np.ndarray:
    x = rng.standard_normal(shape) * scale
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape) * scale
    return np.asarray(x)


def check_container(tree, leaf_check) -> None:
    assert isinstance(tree, dict) and set(tree) == {"w", "layers"}
    assert isinstance(tree["layers"], list) and len(tree["layers"]) == 2
    assert isinstance(tree["layers"][1], list) and len(tree["layers"][1]) == 2
    for shape, leaf in zip(LEAF_SHAPES, flat(tree)):
        leaf_check(leaf, shape)


def trajectory_problem(lib: Lib, dtype: str, solver: str, steps: int):
    """Initial parameters and ``steps`` gradients (lists of leaves in LEAF_SHAPES), in the
    library and dtype, with their float64 values as stored."""
    rng = np.random.default_rng([len(lib.name), len(dtype), len(solver)])
    p0 = [lib.make(random_values(rng, s, dtype), dtype) for s in LEAF_SHAPES]
    grads = [
        [
            lib.make(random_values(rng, s, dtype, 10 ** rng.uniform(-2, 1)), dtype)
            for s in LEAF_SHAPES
        ]
        for _ in range(steps)
    ]
    p0_64 = [lib.to_numpy(x) for x in p0]
    g_64 = [[lib.to_numpy(x) for x in step] for step in grads]
    return p0, grads, p0_64, g_64


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("lib_name,dtype", CASES)
def test_thirty_steps_match_reference(solver, lib_name, dtype):
    lib = LIBS[lib_name]()
    with lib.context(dtype):
        p0, grads, p0_64, g_64 = trajectory_problem(lib, dtype, solver, STEPS)
        sdt = state_dtype_name(solver, dtype)

        def leaf_check(want_dtype):
            def check(leaf, shape):
                assert tuple(leaf.shape) == shape
                assert leaf.dtype == lib.dtype(want_dtype), (leaf.dtype, want_dtype)

            return check

        params, state = nest(list(p0)), None
        for t in range(STEPS):
            before_p = [lib.to_numpy(x) for x in flat(params)]
            before_s = None if state is None else [lib.to_numpy(x) for x in flat(state)]
            params, state = update(solver, params, nest(grads[t]), state)
            check_container(params, leaf_check(dtype))
            check_container(state, leaf_check(sdt))
            # The tight check: one reference step from the implementation's own values.
            for i in range(len(LEAF_SHAPES)):
                one = reference(
                    solver,
                    before_p[i],
                    [g_64[t][i]],
                    dtype,
                    None if before_s is None else before_s[i],
                )
                where = f"step {t + 1}, leaf {i}"
                ref.assert_close(flat(params)[i], one.p, one.p_bound, dtype, f"params, {where}")
                ref.assert_close(flat(state)[i], one.state, one.state_bound, sdt, f"state, {where}")
        # The trajectory: thirty steps from the start.
        for i in range(len(LEAF_SHAPES)):
            run = reference(solver, p0_64[i], [g[i] for g in g_64], dtype)
            ref.assert_close(flat(params)[i], run.p, run.p_bound, dtype, f"params[{i}] @30")
            ref.assert_close(flat(state)[i], run.state, run.state_bound, sdt, f"state[{i}] @30")
        # Not in place: the inputs were never written.
        for x, x64 in zip(p0, p0_64):
            assert_same_bits(lib.to_numpy(x), x64, "an input parameter")


IN_PLACE_STEPS = 8


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("lib_name,dtype", CASES)
def test_in_place_gives_the_same_bits(solver, lib_name, dtype):
    """inplace=True writes the very results of the call without it, into the caller's own
    buffers (NumPy, PyTorch, Array API) or into donated ones (JAX: new, live arrays)."""
    lib = LIBS[lib_name]()
    with lib.context(dtype):
        _, grads, p0_64, _ = trajectory_problem(lib, dtype, solver, IN_PLACE_STEPS)
        params, state = nest([lib.make(x, dtype) for x in p0_64]), None
        params_ip, state_ip = nest([lib.make(x, dtype) for x in p0_64]), None
        for t in range(IN_PLACE_STEPS):
            params, state = update(solver, params, nest(grads[t]), state)
            given_leaves = flat(params_ip)
            given_state = None if state_ip is None else flat(state_ip)
            params_ip, state_ip = update(solver, params_ip, nest(grads[t]), state_ip, inplace=True)
            returned = flat(params_ip) + flat(state_ip)
            dead = sum(not lib.alive(x) for x in returned)
            assert dead == 0, (
                f"in place, step {t + 1}: {dead} of the returned parameters and states are "
                "deleted (donated) arrays"
            )
            if lib.same_objects_in_place:
                assert all(a is b for a, b in zip(flat(params_ip), given_leaves))
                if given_state is not None:
                    assert all(a is b for a, b in zip(flat(state_ip), given_state))
            same = assert_same_bits
            if lib_name == "jax" and _version(sys.modules["jax"].__version__) < (0, 5):
                same = functools.partial(assert_within_ulps, ulps=t + 1)  # see there
            for i in range(len(LEAF_SHAPES)):
                where = f"step {t + 1}, leaf {i}"
                same(flat(params_ip)[i], lib.to_numpy(flat(params)[i]), f"p, {where}")
                same(flat(state_ip)[i], lib.to_numpy(flat(state)[i]), f"s, {where}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def assert_within_ulps(a, b, what: str, *, ulps: int) -> None:
    """At most ``ulps`` apart, real and imaginary parts alike. For JAX before 0.5 only: XLA
    contracts ``a * b + c`` into one FMA where its fusions allow (openxla/xla#41579), and JAX
    0.4.30 fuses a program with donated buffers differently from the same program without
    (measured: complex RMSProp in place and not drift apart by up to an ulp per step; JAX 0.10
    gives the same bits)."""
    a = np.asarray(a)
    b = np.asarray(b).astype(a.dtype)  # the library's array, as the reference holds it
    if np.iscomplexobj(a):
        a, b = np.stack((a.real, a.imag)), np.stack((b.real, b.imag))
    try:
        np.testing.assert_array_max_ulp(a, b, maxulp=ulps)
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from None


# --------------------------------------------------------------------------------------------
# 2 and 7. The small path and the kernel path give the same bits, special values included
# --------------------------------------------------------------------------------------------

SMALL_SHAPES = [(3, 4), (5,), (2, 3)]
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


def numpy_make(a, dt):
    with np.errstate(over="ignore"):  # 1e20 is inf in float16, as intended
        return np.asarray(a).astype(dt)


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
        "import sys; sys.path[:0] = sys.argv[1:3]; import test_solvers; "
        "test_solvers._fresh_main(sys.argv[3], sys.argv[4])"
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


# --------------------------------------------------------------------------------------------
# 3. torch.optim where the conventions coincide
# --------------------------------------------------------------------------------------------

OPTIM_SHAPES = [(5, 4), (3,), (2, 2, 2)]


def _optim_problem(dtype, steps=20, seed=5):
    rng = np.random.default_rng(seed)
    p0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in OPTIM_SHAPES]
    grads = [
        [
            np.asarray(rng.standard_normal(s) * 10 ** rng.uniform(-2, 1)).astype(dtype)
            for s in OPTIM_SHAPES
        ]
        for _ in range(steps)
    ]
    return p0, grads


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sgdm_matches_torch_sgd(dtype, foreach):
    """torch.optim.SGD(momentum=γ, dampening=0, nesterov=False) keeps b = γb + g and steps
    θ - lr·b; MATLAB's vel = -lr·b for a constant lr. Torch's order fits the reference's bound
    too: b = γb + g rounds 3 times (γ, γ·b, the sum), so lr times b's error grows by at most
    3u·sv a step where the bound allows 5u·sv for vel, and lr·b and θ - lr·b round twice more
    (lr, the product: 2u·sv <= 2/5 of vel's bound) plus once for θ. So torch is held to the
    same tolerance as ours, ours vs torch to the sum of both."""
    torch = pytest.importorskip("torch")
    lr, gamma = 0.05, 0.9
    p0, grads = _optim_problem(dtype)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt = torch.optim.SGD(
        tparams, lr=lr, momentum=gamma, dampening=0, nesterov=False, foreach=foreach
    )
    params, vel = [p.copy() for p in p0], None
    for step in grads:
        params, vel = sgdmupdate(params, step, vel, lr, gamma)
        for tp, g in zip(tparams, step):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
    for i in range(len(OPTIM_SHAPES)):
        run = ref.sgdm(p0[i], [g[i] for g in grads], lr, gamma, dtype_name=dtype)
        theirs = tparams[i].detach().numpy()
        buf = opt.state[tparams[i]]["momentum_buffer"].numpy()
        ref.assert_close(params[i], run.p, run.p_bound, dtype, f"ours p{i}")
        ref.assert_close(theirs, run.p, run.p_bound, dtype, f"torch p{i}")
        ref.assert_close(params[i], theirs, run.p_bound, dtype, f"ours vs torch p{i}", scale=2)
        # vel = -lr·b: within ours' tolerance plus lr times b's (<= vel's); the float64
        # product -lr·b adds one rounding of |vel|, well inside the bound's slack.
        ref.assert_close(vel[i], run.state, run.state_bound, dtype, f"vel{i}")
        ref.assert_close(
            vel[i], -lr * ref.as_float64(buf), run.state_bound, dtype, f"vel vs -lr·b {i}", scale=2
        )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rmsprop_matches_torch_rmsprop(dtype, foreach):
    """torch.optim.RMSprop(alpha=β2, eps=ε, centered=False, momentum=0) computes
    v = αv + (1-α)g², θ - lr·g/(√v + ε): ε outside the square root too, no bias correction —
    MATLAB's formula. Its evaluation order (g/(√v+ε) first, then times lr) rounds as often as
    MATLAB's, so both are held to the same reference bound."""
    torch = pytest.importorskip("torch")
    lr, beta, eps = 0.01, 0.9, 1e-6
    p0, grads = _optim_problem(dtype, seed=6)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt = torch.optim.RMSprop(
        tparams, lr=lr, alpha=beta, eps=eps, centered=False, momentum=0, foreach=foreach
    )
    params, avg = [p.copy() for p in p0], None
    for step in grads:
        params, avg = rmspropupdate(params, step, avg, lr, beta, eps)
        for tp, g in zip(tparams, step):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
    for i in range(len(OPTIM_SHAPES)):
        run = ref.rmsprop(p0[i], [g[i] for g in grads], lr, beta, eps, dtype_name=dtype)
        theirs = tparams[i].detach().numpy()
        square_avg = opt.state[tparams[i]]["square_avg"].numpy()
        ref.assert_close(params[i], run.p, run.p_bound, dtype, f"ours p{i}")
        ref.assert_close(theirs, run.p, run.p_bound, dtype, f"torch p{i}")
        ref.assert_close(params[i], theirs, run.p_bound, dtype, f"ours vs torch p{i}", scale=2)
        ref.assert_close(avg[i], run.state, run.state_bound, dtype, f"v{i}")
        ref.assert_close(
            avg[i], square_avg, run.state_bound, dtype, f"v vs square_avg {i}", scale=2
        )


# --------------------------------------------------------------------------------------------
# 4. Networks
# --------------------------------------------------------------------------------------------


def make_net(seed: int = 0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


NET_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]


def net_grads(net, seed: int) -> dict:
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(p.shape, generator=gen, dtype=p.dtype)
        for name, p in net.named_parameters()
    }


def as_form(grads: dict, form: str):
    if form == "dict":
        return dict(grads)
    if form == "list":
        return [grads[n] for n in NET_NAMES]
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "Layer": [n.rpartition(".")[0] for n in NET_NAMES],
            "Parameter": [n.rpartition(".")[2] for n in NET_NAMES],
        }
    )
    frame["Value"] = pd.Series([grads[n] for n in NET_NAMES], index=frame.index, dtype=object)
    return frame


def leaves_of(state, form: str) -> list:
    if form == "dict":
        assert isinstance(state, dict) and list(state) == NET_NAMES
        return [state[n] for n in NET_NAMES]
    if form == "list":
        assert isinstance(state, list) and len(state) == len(NET_NAMES)
        return list(state)
    assert list(state["Layer"]) == ["0", "0", "2", "2"]
    assert list(state["Parameter"]) == ["weight", "bias", "weight", "bias"]
    return list(state["Value"])


def snapshot(net) -> dict:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("form", ["dict", "list", "table"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_network_equals_functional_call_bitwise(solver, form):
    net = make_net()
    plist = [p.detach().clone() for p in net.parameters()]
    state = fstate = None
    for t in range(3):
        grads = net_grads(net, seed=t)
        previous = state
        out, state = update(solver, net, as_form(grads, form), state)
        assert out is net
        plist, fstate = update(solver, plist, [grads[n] for n in NET_NAMES], fstate)
        now = dict(net.named_parameters())
        for i, name in enumerate(NET_NAMES):
            assert_same_bits(now[name].detach(), plist[i], f"step {t + 1}: {name}")
        for i, leaf in enumerate(leaves_of(state, form)):
            assert_same_bits(leaf, fstate[i], f"step {t + 1}: state {NET_NAMES[i]}")
        if previous is not None:  # the returned states are reused in place
            assert state is previous
    # ... and the values are right
    p0 = [p.detach().clone() for p in make_net().parameters()]
    g = [[net_grads(net, seed=t)[n] for n in NET_NAMES] for t in range(3)]
    for i, name in enumerate(NET_NAMES):
        run = reference(solver, p0[i], [step[i] for step in g], "float32")
        ref.assert_close(
            dict(net.named_parameters())[name].detach(), run.p, run.p_bound, "float32", name
        )


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_states_reused_in_place(solver):
    net = make_net()
    _, state = update(solver, net, net_grads(net, 0), None)
    leaves = [state[n] for n in NET_NAMES]
    addresses = [x.data_ptr() for x in leaves]
    before = [x.clone() for x in leaves]
    for t in (1, 2):
        _, new = update(solver, net, net_grads(net, t), state)
        assert new is state
        assert all(new[n] is x for n, x in zip(NET_NAMES, leaves))
        assert [new[n].data_ptr() for n in NET_NAMES] == addresses
    # ... and actually updated
    assert any(not torch_equal(a, b) for a, b in zip(leaves, before))


def torch_equal(a, b) -> bool:
    return bool(np.array_equal(bits(a.detach()), bits(b.detach())))


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_user_states_are_never_written(solver):
    torch = pytest.importorskip("torch")
    net = make_net()
    gen = torch.Generator().manual_seed(3)
    mine = {
        n: (torch.rand if solver == "rmsprop" else torch.randn)(p.shape, generator=gen)
        for n, p in net.named_parameters()
    }
    kept = {n: x.clone() for n, x in mine.items()}
    plist = [p.detach().clone() for p in net.parameters()]
    fl = [mine[n].clone() for n in NET_NAMES]
    _, state = update(solver, net, net_grads(net, 0), mine)
    plist, fl = update(solver, plist, [net_grads(net, 0)[n] for n in NET_NAMES], fl)
    assert all(state[n] is not mine[n] for n in NET_NAMES)
    for n in NET_NAMES:
        assert_same_bits(mine[n], kept[n], f"user state {n} after call 1")
    _, state = update(solver, net, net_grads(net, 1), state)
    plist, fl = update(solver, plist, [net_grads(net, 1)[n] for n in NET_NAMES], fl)
    for i, n in enumerate(NET_NAMES):
        assert_same_bits(mine[n], kept[n], f"user state {n} after call 2")
        assert_same_bits(state[n], fl[i], f"state {n}")
        assert_same_bits(dict(net.named_parameters())[n].detach(), plist[i], f"param {n}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_zero_freezes_parameter_and_state(solver):
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "0", "weight", 0)
    frozen = net[0].weight.detach().clone()
    plist = [p.detach().clone() for p in net.parameters()]
    state = fstate = None
    for t in range(3):
        grads = net_grads(net, t)
        _, state = update(solver, net, grads, state)
        assert_same_bits(net[0].weight.detach(), frozen, f"frozen weight, step {t + 1}")
        s = state["0.weight"]
        assert tuple(s.shape) == () and float(s) == 0.0, s  # MATLAB's scalar-0 state
        # The others move as the functional call on them alone.
        rest = [1, 2, 3]
        sub, fstate = update(
            solver, [plist[i] for i in rest], [grads[NET_NAMES[i]] for i in rest], fstate
        )
        for k, i in enumerate(rest):
            plist[i] = sub[k]
            assert_same_bits(
                dict(net.named_parameters())[NET_NAMES[i]].detach(), sub[k], NET_NAMES[i]
            )
            assert_same_bits(state[NET_NAMES[i]], fstate[k], f"state {NET_NAMES[i]}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_zero_keeps_a_given_state(solver):
    torch = pytest.importorskip("torch")
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "2", "bias", 0.0)
    frozen = net[2].bias.detach().clone()
    given = {n: torch.full_like(p, 0.25) for n, p in net.named_parameters()}
    _, state = update(solver, net, net_grads(net, 0), given)
    _, state = update(solver, net, net_grads(net, 1), state)
    assert_same_bits(net[2].bias.detach(), frozen, "frozen bias")
    assert_same_bits(state["2.bias"], torch.full((2,), 0.25), "frozen bias state")
    assert_same_bits(given["2.bias"], torch.full((2,), 0.25), "the user's state")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_two_is_twice_the_learn_rate(solver):
    from adamupdate.network import set_layer_learn_rate_factors

    net = make_net()
    set_layer_learn_rate_factors(net, "2", weight=2.0, bias=2.0)
    plist = [p.detach().clone() for p in net.parameters()]
    lr = SGDM["learn_rate"] if solver == "sgdm" else RMSPROP["learn_rate"]
    state = s1 = s2 = None
    for t in range(3):
        grads = net_grads(net, t)
        _, state = update(solver, net, grads, state)
        a, s1 = update(solver, plist[:2], [grads[n] for n in NET_NAMES[:2]], s1)
        b, s2 = update(solver, plist[2:], [grads[n] for n in NET_NAMES[2:]], s2, learn_rate=2 * lr)
        plist = [*a, *b]
        now = dict(net.named_parameters())
        for i, n in enumerate(NET_NAMES):
            assert_same_bits(now[n].detach(), plist[i], f"step {t + 1}: {n}")
            assert_same_bits(state[n], [*s1, *s2][i], f"step {t + 1}: state {n}")
    # and against the reference at 2·lr
    p0 = [p.detach().clone() for p in make_net().parameters()]
    g = [[net_grads(net, t)[n] for n in NET_NAMES] for t in range(3)]
    run = reference(solver, p0[3], [step[3] for step in g], "float32", learn_rate=2 * lr)
    ref.assert_close(net[2].bias.detach(), run.p, run.p_bound, "float32", "2.bias")


def test_network_grads_from_autograd_table():
    """grads as MATLAB's dlgradient table, computed by adamupdate.network.gradients."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pandas")
    from adamupdate.network import gradients

    net = make_net()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    loss = net(x).square().sum()
    table = gradients(loss, net)
    glist = [g.clone() for g in gradients(net(x).square().sum(), net, form="list")]
    plist = [p.detach().clone() for p in net.parameters()]
    _, vel = sgdmupdate(net, table, None, 0.01, 0.9)
    plist, fvel = sgdmupdate(plist, glist, None, 0.01, 0.9)
    for i, leaf in enumerate(leaves_of(vel, "table")):
        assert_same_bits(leaf, fvel[i], NET_NAMES[i])
        assert_same_bits(list(net.parameters())[i].detach(), plist[i], NET_NAMES[i])


# --------------------------------------------------------------------------------------------
# 5. dlupdate
# --------------------------------------------------------------------------------------------


def sgdm_fun(lr, gamma):
    """MATLAB's SGDM written as a dlupdate function, with a [] first state."""

    def fun(p, g, v):
        v = 0.0 - lr * g if v is None else gamma * v - lr * g
        return p + v, v

    return fun


def test_dlupdate_one_output_nested_containers():
    rng = np.random.default_rng(0)
    params = nest([rng.standard_normal(s) for s in LEAF_SHAPES])
    grads = nest([rng.standard_normal(s) for s in LEAF_SHAPES])
    out = dlupdate(lambda p, g: p - 0.1 * g, params, grads)
    check_container(out, lambda leaf, shape: None)
    for p, g, o in zip(flat(params), flat(grads), flat(out)):
        o = np.asarray(o)
        assert o.shape == np.shape(p)
        want = [pi - 0.1 * gi for pi, gi in zip(np.ravel(p).tolist(), np.ravel(g).tolist())]
        assert_same_bits(o, np.array(want).reshape(np.shape(p)), "p - 0.1 g")


def test_dlupdate_several_outputs_with_none_state_matches_reference():
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(s) for s in LEAF_SHAPES]
    grads = [[rng.standard_normal(s) for s in LEAF_SHAPES] for _ in range(5)]
    params, vel = nest(p0), None
    for step in grads:
        params, vel = dlupdate(sgdm_fun(0.05, 0.9), params, nest(step), vel)
        check_container(params, lambda leaf, shape: None)
        check_container(vel, lambda leaf, shape: None)
    for i in range(len(LEAF_SHAPES)):
        run = ref.sgdm(p0[i], [g[i] for g in grads], 0.05, 0.9)
        ref.assert_close(flat(params)[i], run.p, run.p_bound, "float64", f"p{i}")
        ref.assert_close(flat(vel)[i], run.state, run.state_bound, "float64", f"vel{i}")


def test_dlupdate_passes_none_for_none_args():
    seen = []

    def fun(p, a, b):
        seen.append((a is None, b is None))
        return p * 2

    out = dlupdate(fun, [np.ones(2), np.ones(3)], None, [np.zeros(2), np.zeros(3)])
    assert seen == [(True, False), (True, False)]
    assert [o.tolist() for o in out] == [[2.0, 2.0], [2.0, 2.0, 2.0]]


def test_dlupdate_on_a_table():
    pd = pytest.importorskip("pandas")
    values = [np.array([1.0, 2.0]), np.array([[3.0]]), np.array([-1.0, 0.5, 4.0])]
    grads = [np.array([0.5, -1.0]), np.array([[2.0]]), np.array([1.0, 1.0, -2.0])]

    def table(vals):
        frame = pd.DataFrame({"Layer": ["fc1", "fc1", "fc2"], "Parameter": ["W", "b", "W"]})
        frame["Value"] = pd.Series(vals, index=frame.index, dtype=object)
        return frame

    out = dlupdate(lambda p, g: p - 0.5 * g, table(values), table(grads))
    assert list(out["Layer"]) == ["fc1", "fc1", "fc2"]
    assert list(out["Parameter"]) == ["W", "b", "W"]
    for o, p, g in zip(out["Value"], values, grads):
        assert_same_bits(o, p - 0.5 * g, "table value")
    new, vel = dlupdate(sgdm_fun(0.1, 0.9), table(values), table(grads), None)
    for frame in (new, vel):
        assert list(frame["Layer"]) == ["fc1", "fc1", "fc2"]
        assert list(frame["Parameter"]) == ["W", "b", "W"]
    for v, g in zip(vel["Value"], grads):
        assert_same_bits(v, 0.0 - 0.1 * g, "vel value")
    # The input table was not changed.
    for o, p in zip(table(values)["Value"], values):
        assert_same_bits(o, p, "input table")


@pytest.mark.parametrize("form", ["dict", "list", "table"])
def test_dlupdate_network_updates_in_place_and_mirrors_grads(form):
    net = make_net()
    objects = list(net.parameters())
    p0 = snapshot(net)
    grads = net_grads(net, 0)
    out, vel = dlupdate(sgdm_fun(0.05, 0.9), net, as_form(grads, form), None)
    assert out is net
    assert list(net.parameters()) == objects and all(
        a is b for a, b in zip(net.parameters(), objects)
    )
    vels = leaves_of(vel, form)
    for i, n in enumerate(NET_NAMES):
        run = ref.sgdm(p0[n], [grads[n]], 0.05, 0.9, dtype_name="float32")
        ref.assert_close(dict(net.named_parameters())[n].detach(), run.p, run.p_bound, "float32", n)
        ref.assert_close(vels[i], run.state, run.state_bound, "float32", f"vel {n}")
        assert not vels[i].requires_grad
    # A second call with the extra outputs as state.
    grads2 = net_grads(net, 1)
    _, vel2 = dlupdate(sgdm_fun(0.05, 0.9), net, as_form(grads2, form), vel)
    for i, n in enumerate(NET_NAMES):
        run = ref.sgdm(p0[n], [grads[n], grads2[n]], 0.05, 0.9, dtype_name="float32")
        ref.assert_close(dict(net.named_parameters())[n].detach(), run.p, run.p_bound, "float32", n)
        ref.assert_close(leaves_of(vel2, form)[i], run.state, run.state_bound, "float32", n)


def test_dlupdate_network_one_output_learn_rate_factors_do_not_apply():
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "0", "weight", 0)
    p0 = snapshot(net)
    grads = net_grads(net, 0)
    out = dlupdate(lambda p, g: p - 0.5 * g, net, grads)
    assert out is net
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n] - 0.5 * grads[n], n)


def test_dlupdate_exception_inside_fun_changes_nothing():
    net = make_net()
    p0 = snapshot(net)
    calls = []

    def fun(p, g):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in fun")
        return p - g

    with pytest.raises(RuntimeError, match="boom in fun"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)
    # containers: inputs untouched as well
    params = [np.ones(2), np.ones(3), np.ones(1)]
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        dlupdate(fun, params, [np.ones(2), np.ones(3), np.ones(1)])
    assert all(np.all(p == 1.0) for p in params)


def test_dlupdate_network_wrong_shape_output_changes_nothing():
    torch = pytest.importorskip("torch")
    net = make_net()
    p0 = snapshot(net)

    def fun(p, g):
        return torch.zeros(7) if p.shape == (2,) else p - g

    with pytest.raises(ValueError, match=r"'2\.bias'"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)


def test_dlupdate_mismatched_output_counts_raise():
    count = iter([2, 3, 2, 2])

    def fun(p, g):
        k = next(count)
        return (p - g,) + (g,) * (k - 1)

    with pytest.raises(ValueError, match="outputs"):
        dlupdate(fun, [np.ones(2), np.ones(2), np.ones(2)], [np.ones(2)] * 3)

    net = make_net()
    p0 = snapshot(net)
    count = iter([2, 2, 1, 2])
    with pytest.raises(ValueError, match="outputs"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)


# --------------------------------------------------------------------------------------------
# 6. Validation: bad calls name the argument and change nothing, also in place
# --------------------------------------------------------------------------------------------

BAD_SCALARS = [
    ("sgdm", {"momentum": 1.0}, ValueError, "momentum"),
    ("sgdm", {"momentum": -0.1}, ValueError, "momentum"),
    ("sgdm", {"momentum": math.nan}, ValueError, "momentum"),
    ("sgdm", {"momentum": "0.9"}, TypeError, "momentum"),
    ("sgdm", {"learn_rate": -0.01}, ValueError, "learn_rate"),
    ("sgdm", {"learn_rate": math.inf}, ValueError, "learn_rate"),
    ("rmsprop", {"epsilon": 0.0}, ValueError, "epsilon"),
    ("rmsprop", {"epsilon": -1e-8}, ValueError, "epsilon"),
    ("rmsprop", {"sq_grad_decay": 1.0}, ValueError, "sq_grad_decay"),
    ("rmsprop", {"sq_grad_decay": -0.5}, ValueError, "sq_grad_decay"),
    ("rmsprop", {"learn_rate": -1.0}, ValueError, "learn_rate"),
    ("rmsprop", {"learn_rate": math.nan}, ValueError, "learn_rate"),
]


def call_with(solver, params, grad, state, overrides, **kw):
    if solver == "sgdm":
        args = {**SGDM, **overrides}
        return sgdmupdate(params, grad, state, args["learn_rate"], args["momentum"], **kw)
    args = {**RMSPROP, **overrides}
    return rmspropupdate(
        params, grad, state, args["learn_rate"], args["sq_grad_decay"], args["epsilon"], **kw
    )


def arrays_problem(lib_name: str, seed: int = 0):
    lib = LIBS[lib_name]()
    rng = np.random.default_rng(seed)
    params = [lib.make(rng.standard_normal(s), "float32") for s in SMALL_SHAPES]
    grads = [lib.make(rng.standard_normal(s), "float32") for s in SMALL_SHAPES]
    return lib, params, grads


def bits_all(lib, *trees) -> list:
    return [bits(lib.to_numpy(x)) for tree in trees for x in tree]


@pytest.mark.parametrize("lib_name", ["numpy", "torch"])
@pytest.mark.parametrize("solver,overrides,error,name", BAD_SCALARS)
def test_bad_scalar_names_it_and_changes_nothing(solver, overrides, error, name, lib_name):
    lib, params, grads = arrays_problem(lib_name)
    params, state = update(solver, params, grads, None, inplace=True)  # states to write into
    before = bits_all(lib, params, grads, state)
    with pytest.raises(error, match=name):
        call_with(solver, params, grads, state, overrides, inplace=True)
    with pytest.raises(error, match=name):
        call_with(solver, params, grads, state, overrides)
    after = bits_all(lib, params, grads, state)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("solver,overrides,error,name", BAD_SCALARS)
def test_bad_scalar_on_a_network_changes_nothing(solver, overrides, error, name):
    net = make_net()
    _, state = update(solver, net, net_grads(net, 0), None)
    p0 = snapshot(net)
    s0 = {n: state[n].clone() for n in NET_NAMES}
    with pytest.raises(error, match=name):
        call_with(solver, net, net_grads(net, 1), state, overrides)
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)
        assert_same_bits(state[n], s0[n], f"state {n}")


def _wrong_shape(lib, grads):
    return [grads[0], lib.make(np.zeros((5, 5)), "float32"), grads[2]]


def _wrong_dtype(lib, grads):
    """A complex gradient for a real parameter (another real precision is converted)."""
    return [grads[0], grads[1], lib.make(lib.to_numpy(grads[2]), "complex128")]


BAD_STRUCTURES = [
    ("grad", lambda lib, g, s: (_wrong_shape(lib, g), s), ValueError, r"grad\[1\]"),
    ("grad", lambda lib, g, s: (g[:2], s), ValueError, r"grad"),
    ("grad", lambda lib, g, s: ({"a": g[0]}, s), TypeError, r"grad"),
    ("grad", lambda lib, g, s: (_wrong_dtype(lib, g), s), TypeError, r"grad\[2\]"),
    ("state", lambda lib, g, s: (g, [s[0], s[1]]), ValueError, r"STATE"),
    ("state", lambda lib, g, s: (g, _wrong_shape(lib, s)), ValueError, r"STATE\[1\]"),
]


@pytest.mark.parametrize("lib_name", ["numpy", "torch"])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("what,spoil,error,pattern", BAD_STRUCTURES)
def test_mismatched_structure_names_the_path_and_changes_nothing(
    what, spoil, error, pattern, solver, lib_name
):
    lib, params, grads = arrays_problem(lib_name, seed=1)
    params, state = update(solver, params, grads, None, inplace=True)
    state = list(state)
    before = bits_all(lib, params, grads, state)
    bad_grads, bad_state = spoil(lib, grads, state)
    pattern = pattern.replace("STATE", STATE_NAME[solver])
    for inplace in (True, False):
        with pytest.raises(error, match=pattern):
            update(solver, params, bad_grads, bad_state, inplace=inplace)
    after = bits_all(lib, params, grads, state)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_bad_grads_name_the_learnable_and_change_nothing(solver):
    net = make_net()
    _, state = update(solver, net, net_grads(net, 0), None)
    p0 = snapshot(net)
    s0 = {n: state[n].clone() for n in NET_NAMES}
    grads = net_grads(net, 1)
    missing = {n: g for n, g in grads.items() if n != "2.weight"}
    with pytest.raises(ValueError, match=r"'2\.weight'"):
        update(solver, net, missing, state)
    with pytest.raises(ValueError, match="grad"):
        update(solver, net, [grads[n] for n in NET_NAMES[:3]], state)
    wrong = dict(grads)
    wrong["0.bias"] = grads["0.bias"][:2].clone()
    with pytest.raises(ValueError, match="shape"):
        update(solver, net, wrong, state)
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)
        assert_same_bits(state[n], s0[n], f"state {n}")


# --------------------------------------------------------------------------------------------
# JAX in place: donated buffers, new results
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["array", "list", "dict"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_jax_in_place_returns_live_arrays(solver, form):
    """In place, JAX donates the given parameter and state buffers; every call must return
    arrays that are alive (and equal to the call without inplace)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    wrap = {"array": lambda x: x, "list": lambda x: [x], "dict": lambda x: {"a": x}}[form]
    leaf = {"array": lambda c: c, "list": lambda c: c[0], "dict": lambda c: c["a"]}[form]
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(3)
    grads = [rng.standard_normal(3) for _ in range(4)]
    p, state = wrap(jnp.asarray(p0, jnp.float32)), None
    q, qstate = wrap(jnp.asarray(p0, jnp.float32)), None
    for t, g in enumerate(grads):
        p, state = update(solver, p, wrap(jnp.asarray(g, jnp.float32)), state, inplace=True)
        q, qstate = update(solver, q, wrap(jnp.asarray(g, jnp.float32)), qstate)
        assert not leaf(p).is_deleted(), f"call {t + 1}: the returned params were donated"
        assert not leaf(state).is_deleted(), f"call {t + 1}: the returned state was donated"
        assert_same_bits(np.asarray(leaf(p)), np.asarray(leaf(q)), f"call {t + 1}")
