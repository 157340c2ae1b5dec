"""Bad calls of ``sgdmupdate`` and ``rmspropupdate`` name the argument or the path and change
nothing, in place or not, on arrays and networks; JAX in place returns live arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from adamupdate import rmspropupdate, sgdmupdate
from solver_helpers import (
    LIBS,
    NET_NAMES,
    RMSPROP,
    SGDM,
    SMALL_SHAPES,
    SOLVERS,
    STATE_NAME,
    assert_same_bits,
    bits,
    make_net,
    net_grads,
    snapshot,
    update,
)

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
