"""Shared parts of the test_solvers_*.py files: one call of each solver with their hyper-parameters,
the matching float64 reference run (``tests/solver_reference.py``), bitwise comparisons, the
libraries (:class:`Lib`), the 30-step problems and the small networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import solver_reference as ref
from adamupdate import rmspropupdate, sgdmupdate

SGDM = {"learn_rate": 0.05, "momentum": 0.9}
RMSPROP = {"learn_rate": 0.01, "sq_grad_decay": 0.9, "epsilon": 1e-4}
SOLVERS = ["sgdm", "rmsprop"]
STATE_NAME = {"sgdm": "vel", "rmsprop": "avg_sq_grad"}


def update(solver: str, params, grad, state, learn_rate: float | None = None, **kw):
    """One call of the solver with these hyperparameters (``kw``: inplace, ...)."""
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


SMALL_SHAPES = [(3, 4), (5,), (2, 3)]


def numpy_make(a, dt):
    with np.errstate(over="ignore"):  # 1e20 is inf in float16, as intended
        return np.asarray(a).astype(dt)


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
