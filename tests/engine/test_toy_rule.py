"""A rule defined here, outside the package, runs through every backend and route.

A rule is its math (:mod:`adamupdate.rules`): nothing in the engine may know which rule it
runs. Plain SGD, ``p - α g``, has no state at all, so it also shows that nothing assumes a
rule keeps one. Expected values are the formula in the arrays' precision (one multiply, one
subtract), computed here with NumPy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

from adamupdate._solve import solve
from adamupdate.rules import Rule

LR = 0.1


class Hyper(NamedTuple):
    learn_rate: float


class SgdCoefficients(NamedTuple):
    learn_rate: float


def sgd_coefficients(hyper: Hyper, factor: float = 1.0) -> SgdCoefficients:
    return SgdCoefficients(hyper.learn_rate * factor)


def sgd_step(xp: Any, c: SgdCoefficients, p: Any, g: Any, g2: Any) -> tuple[Any]:
    return (p - c.learn_rate * g,)


SGD = Rule(
    name="sgdupdate",
    states=(),
    squared=(),
    coefficients=sgd_coefficients,
    coefficients_type=SgdCoefficients,
    step=sgd_step,
)


def expected(p: np.ndarray, g: np.ndarray, lr: float = LR) -> np.ndarray:
    if p.dtype == np.float16:  # computed in float32, stored in half precision
        return expected(p.astype(np.float32), g.astype(np.float32), lr).astype(np.float16)
    real = np.empty(0, p.dtype).real.dtype
    scale = np.asarray(lr, real)
    if p.dtype.kind == "c":  # a real scalar scales both parts
        return (p.real - scale * g.real) + 1j * (p.imag - scale * g.imag)
    return p - scale * g


def problem(dtype: str, shapes=((3, 4), (5,), (2, 2, 2), ())) -> tuple[list, list]:
    rng = np.random.default_rng(7)

    def draw(shape):
        x = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype)

    return [draw(s) for s in shapes], [draw(s) for s in shapes]


def step(params, grads, *, inplace=False, lr=LR):
    new, states = solve(SGD, params, grads, (), Hyper(lr), inplace, None)
    assert states == ()
    return new


DTYPES = ["float32", "float64", "complex64", "complex128"]


# the numba kernel computes the four MATLAB dtypes; half precision takes the ufuncs
NUMPY_ROUTES = [("ufunc", d) for d in [*DTYPES, "float16"]] + [("numba", d) for d in DTYPES]


@pytest.mark.parametrize(("route", "dtype"), NUMPY_ROUTES)
@pytest.mark.parametrize("inplace", [False, True])
def test_numpy(dtype, inplace, route):
    from adamupdate.backends import numpy_backend

    params, grads = problem(dtype)
    want = [expected(p, g) for p, g in zip(params, grads)]
    given = [p.copy() for p in params]
    if route == "numba":
        pytest.importorskip("numba")
        from adamupdate.kernels import numba_kernel

        assert numba_kernel() is not None  # loaded: then the kernel takes groups of any size
    group = numpy_backend.Group(SGD, np.dtype(dtype), (), fresh=True, inplace=inplace, params=given)
    if route == "numba":
        assert group.kernel is not None
    else:
        group.kernel = None  # the ufunc route, which small groups take before numba is loaded
    group.bind(given, grads, [])
    group.run(SGD.coefficients(Hyper(LR)))
    group.commit()
    got = group.outputs()[0]
    for a, b in zip(got, want):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b.astype(dtype))
    if inplace:
        assert all(a is b for a, b in zip(got, given))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_numpy_call(dtype, inplace):
    params, grads = problem(dtype)
    want = [expected(p, g) for p, g in zip(params, grads)]
    given = [p.copy() for p in params]
    got = step(given, grads, inplace=inplace)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b.astype(dtype))
    assert all(a is b for a, b in zip(got, given)) == inplace


def test_containers_keep_their_shape():
    params, grads = problem("float64")
    tree = {"w": params[0], "rest": [params[1], (params[2], params[3])]}
    grad = {"w": grads[0], "rest": [grads[1], (grads[2], grads[3])]}
    got = step(tree, grad)
    np.testing.assert_array_equal(got["w"], expected(params[0], grads[0]))
    np.testing.assert_array_equal(got["rest"][1][0], expected(params[2], grads[2]))


def test_bad_gradient_names_its_leaf():
    params, grads = problem("float64")
    grads[1] = np.ones(7)
    with pytest.raises(ValueError, match=r"grad\[1\]"):
        step(params, grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("route", ["numba", "foreach", None])
@pytest.mark.parametrize("inplace", [False, True])
def test_torch(dtype, route, inplace):
    torch = pytest.importorskip("torch")
    from adamupdate.backends import torch_backend

    params, grads = problem(dtype)
    want = [expected(p, g) for p, g in zip(params, grads)]
    tp = [torch.from_numpy(p.copy()) for p in params]
    tg = [torch.from_numpy(g) for g in grads]
    if route is None:
        got = step(tp, tg, inplace=inplace)
    else:  # the group step itself, with its route forced
        tdtype = tp[0].dtype
        if route == "numba":
            pytest.importorskip("numba")
        group = torch_backend.Group(
            SGD, tdtype, (), fresh=True, inplace=inplace, params=tp, route=route
        )
        group.bind(tp, tg, [])
        group.run(SGD.coefficients(Hyper(LR)))
        group.commit()
        got = group.outputs()[0]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_jax(dtype, inplace):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from reference import jax_x64

    with jax_x64(jax, dtype in ("float64", "complex128")):
        params, grads = problem(dtype)
        want = [expected(p, g) for p, g in zip(params, grads)]
        got = step(
            [jnp.asarray(p) for p in params], [jnp.asarray(g) for g in grads], inplace=inplace
        )
        for a, b, p, g in zip(got, want, params, grads):
            # XLA may fuse p - α·g into one FMA (see docs/numerics.rst): one rounding fewer,
            # within an ulp of the operands
            for part in (np.real, np.imag):  # complex: each part on its own
                bound = np.spacing(np.abs(part(p)) + np.abs(LR * part(g)))
                assert np.all(np.abs(part(np.asarray(a)) - part(b.astype(dtype))) <= bound)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_strict(dtype):
    xp = pytest.importorskip("array_api_strict")
    params, grads = problem(dtype, shapes=((3, 4), (5,)))
    want = [expected(p, g) for p, g in zip(params, grads)]
    got = step([xp.asarray(p) for p in params], [xp.asarray(g) for g in grads])
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_network():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)).double()
    before = [p.detach().clone() for p in net.parameters()]
    grads = [torch.full_like(p, 0.5) for p in net.parameters()]
    got = step(net, grads)
    assert got is net
    for p, b in zip(net.parameters(), before):
        np.testing.assert_array_equal(
            p.detach().numpy(), expected(b.numpy(), np.full(b.shape, 0.5))
        )
