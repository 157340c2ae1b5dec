"""The optax adapter, ``adamupdate.optax.adam``, against the independent float64 reference.

It must take MATLAB's step, not optax's: gradients of 1e-6..1e-3 make ε's placement visible
(ε = 1e-8 is a third of √v at the first step), and ``optax.adam`` is shown to fail the very
check the adapter passes. The other tests exercise what an optax user does with ``optax.adam``
and expects to keep doing after the swap: chains, jit, injected hyper-parameters, schedules,
Python-number leaves, ``mu_dtype``, sharded states (eight CPU devices, in a subprocess: this
file run as a script) and states that ``optax.adam`` made.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from adapter_helpers import small_gradients
from reference import assert_matches, jax_x64, run

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8
SRC = Path(__file__).parents[2] / "src"
TESTS = Path(__file__).parents[1]


def reference_bounds(p0, grads, learn_rates, b1=B1, b2=B2, eps=EPS, m0=None, v0=None, first=1):
    """The reference run with a learning rate per step (for schedules): values and bounds."""
    p, m, v = p0, m0, v0
    bounds = np.zeros(np.shape(p0))
    for t, (g, lr) in enumerate(zip(grads, learn_rates), start=first):
        traj = run(p, [g], lr, b1, b2, eps, m0=m, v0=v, first_iteration=t)
        p, m, v = traj.p, traj.m, traj.v
        bounds = bounds + traj.p_bound
    return p, bounds


def x64(jax, on):
    """JAX's 64-bit mode on or off (see ``reference.jax_x64``)."""
    return jax_x64(jax, on)


@pytest.fixture
def jx():
    """jax, jax.numpy, optax and the adapter, or a skip."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    adapter = importlib.import_module("adamupdate.optax")
    return types.SimpleNamespace(jax=jax, jnp=jax.numpy, optax=optax, adam=adapter.adam)


def optax_run(jx, solver, params0, grads, *, jit=True, between=None, state=None):
    """``len(grads)`` steps of ``solver``; ``between(t, state)`` may change the state."""

    def step(params, state, grad):
        updates, state = solver.update(grad, state, params)
        return jx.optax.apply_updates(params, updates), state

    step = jx.jax.jit(step) if jit else step
    params = jx.jax.tree.map(jx.jnp.asarray, params0)
    state = solver.init(params) if state is None else state
    for t, grad in enumerate(grads, start=1):
        params, state = step(params, state, jx.jax.tree.map(jx.jnp.asarray, grad))
        if between is not None:
            state = between(t, state)
    return params, state


# --- MATLAB's step inside optax --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_twenty_jitted_steps_match_the_reference(jx, dtype):
    rng = np.random.default_rng(10)
    p0 = np.asarray(rng.standard_normal((4, 5))).astype(dtype)
    grads = small_gradients(rng, (4, 5), 20, dtype)
    with x64(jx.jax, dtype == "float64"):
        params, (adam_state, _) = optax_run(jx, jx.adam(LR), p0, grads)
        assert params.dtype == np.dtype(dtype) and int(adam_state.count) == 20
        traj = run(p0, grads, LR, B1, B2, EPS)
        assert_matches(np.asarray(params), traj.p, traj.p_bound, dtype, "params")
        assert_matches(np.asarray(adam_state.mu), traj.m, traj.m_bound, dtype, "mu")
        assert_matches(np.asarray(adam_state.nu), traj.v, traj.v_bound, dtype, "nu")
        assert not np.iscomplexobj(adam_state.nu)


def test_optax_adam_fails_the_same_check(jx):
    rng = np.random.default_rng(10)
    p0 = rng.standard_normal((4, 5)).astype(np.float32)
    grads = small_gradients(rng, (4, 5), 20, "float32")
    params, _ = optax_run(jx, jx.optax.adam(LR, eps=EPS), p0, grads)
    traj = run(p0, grads, LR, B1, B2, EPS)
    with pytest.raises(AssertionError):
        assert_matches(np.asarray(params), traj.p, traj.p_bound, "float32")


def test_pytree_within_float32_ulps_of_the_functional_call(jx):
    from adamupdate import adamupdate

    rng = np.random.default_rng(11)
    p0 = {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": [np.float32(0.5)]}
    grads = [
        {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": [rng.standard_normal(())]}
        for _ in range(15)
    ]
    for g in grads:
        g["b"] = [np.float32(g["b"][0])]
    params, _ = optax_run(jx, jx.adam(LR, 0.8, 0.99, 1e-6), p0, grads)
    ours = jx.jax.tree.map(jx.jnp.asarray, p0)
    m = v = None
    for t, g in enumerate(grads, start=1):
        g = jx.jax.tree.map(jx.jnp.asarray, g)
        ours, m, v = adamupdate(ours, g, m, v, t, LR, 0.8, 0.99, 1e-6)
    for a, b in zip(jx.jax.tree.leaves(params), jx.jax.tree.leaves(ours)):
        a, b = np.asarray(a), np.asarray(b)
        ulps = np.abs(a - b) / np.spacing(np.maximum(np.abs(b), np.float32(LR)))
        assert np.max(ulps) <= 4, np.max(ulps)


def test_inside_a_chain_with_clipping(jx):
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal(10).astype(np.float32)
    grads = [rng.standard_normal(10).astype(np.float32) for _ in range(12)]
    alone, _ = optax_run(jx, jx.adam(LR), p0, grads)
    loose = jx.optax.chain(jx.optax.clip_by_global_norm(1e6), jx.adam(LR))
    params, _ = optax_run(jx, loose, p0, grads)
    # the clip does nothing; XLA may fuse the longer chain differently (1 ulp on JAX 0.4.30)
    np.testing.assert_array_max_ulp(np.asarray(params), np.asarray(alone), maxulp=1)

    clip = jx.optax.clip_by_global_norm(0.5)
    clipped = [np.asarray(clip.update(jx.jnp.asarray(g), clip.init(None))[0]) for g in grads]
    assert np.linalg.norm(clipped[0]) < np.linalg.norm(grads[0])
    tight = jx.optax.chain(jx.optax.clip_by_global_norm(0.5), jx.adam(LR))
    params, _ = optax_run(jx, tight, p0, grads)
    traj = run(p0, clipped, LR, B1, B2, EPS)
    assert_matches(np.asarray(params), traj.p, traj.p_bound, "float32")


@pytest.mark.parametrize("static_args", [(), ("b1", "b2", "eps")])
def test_inject_hyperparams_changes_the_rate_mid_run(jx, static_args):
    rng = np.random.default_rng(13)
    p0 = rng.standard_normal(12).astype(np.float32)
    grads = small_gradients(rng, 12, 16, "float32")
    solver = jx.optax.inject_hyperparams(jx.adam, static_args=static_args)(learning_rate=LR)

    def halve_after_eight(t, state):
        if t == 8:
            state.hyperparams["learning_rate"] = jx.jnp.asarray(LR / 2, jx.jnp.float32)
        return state

    params, _ = optax_run(jx, solver, p0, grads, between=halve_after_eight)
    want, bound = reference_bounds(p0, grads, [LR] * 8 + [LR / 2] * 8)
    assert_matches(np.asarray(params), want, bound, "float32")


def test_schedule(jx):
    rng = np.random.default_rng(14)
    p0 = rng.standard_normal(12).astype(np.float32)
    grads = small_gradients(rng, 12, 10, "float32")
    schedule = jx.optax.exponential_decay(LR, transition_steps=1, decay_rate=0.8)
    params, state = optax_run(jx, jx.adam(schedule), p0, grads)
    want, bound = reference_bounds(p0, grads, [LR * 0.8**t for t in range(10)])
    assert_matches(np.asarray(params), want, bound, "float32")
    assert int(state[1].count) == 10


def test_bad_hyperparameters_raise(jx):
    for kwargs in ({"learning_rate": -1.0}, {"b1": 1.0}, {"b2": -0.5}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            jx.adam(**kwargs)
    with pytest.raises(TypeError):
        jx.adam(b1=True)


# --- optax.adam's arguments ------------------------------------------------------------------


def test_arguments_in_optax_adams_order(jx):
    """``adam(lr, b1, b2, eps, eps_root, mu_dtype, nesterov=...)``, as ``optax.adam``."""
    import inspect

    ours = list(inspect.signature(jx.adam).parameters)
    theirs = list(inspect.signature(jx.optax.adam).parameters)
    assert ours == theirs
    solver = jx.adam(LR, B1, B2, EPS, 0.0, jx.jnp.bfloat16, nesterov=False)
    assert solver.init(jx.jnp.zeros(3))[0].mu.dtype == jx.jnp.bfloat16


def test_python_number_leaves_take_matlabs_step(jx):
    """``init({'a': 1.0})`` works, as with ``optax.adam``, and the step is MATLAB's own example
    (learn rate 0.05, decays 0.75 and 0.95, gradient 1): a drop of 0.05·√0.05/(√0.05 + 1e-8)."""
    params = {"a": 1.0, "b": [2.0, -3.0]}
    jx.optax.adam(0.05).init(params)  # what the user's code did before the swap
    solver = jx.adam(0.05, 0.75, 0.95)
    state = solver.init(params)
    assert all(x.dtype == jx.jnp.float32 for x in jx.jax.tree.leaves(state[0].mu))
    grads = {"a": 1.0, "b": [1, 1.0]}  # an int gradient is the number 1 too
    updates, state = solver.update(grads, state, params)
    new = jx.optax.apply_updates(params, updates)
    traj = run(np.float32(1.0), [np.float32(1.0)], 0.05, 0.75, 0.95, EPS)
    assert traj.p - 1.0 == pytest.approx(-0.04999999776393212, rel=1e-15)
    for before, after in zip(jx.jax.tree.leaves(params), jx.jax.tree.leaves(new)):
        # the chain scales by -α after the division: a few float32 ulps of rounding
        assert_matches(np.asarray(after) - np.float32(before), traj.p - 1.0, 8, "float32")
    assert_matches(np.asarray(state[0].nu["a"]), traj.v, traj.v_bound, "float32", "nu")


def test_integer_and_boolean_parameters_are_refused_by_path(jx):
    for params, path in (({"w": jx.jnp.zeros(2, jx.jnp.int32)}, "['w']"), ([0.0, True], "[1]")):
        with pytest.raises(TypeError, match=re.escape(f"params{path} has dtype")):
            jx.adam().init(params)


@pytest.mark.parametrize("param_dtype", ["bfloat16", "float32", "complex64", None])
@pytest.mark.parametrize("mu_dtype", ["bfloat16", "float32", "complex64", None])
def test_mu_dtype_is_the_first_moments_dtype(jx, param_dtype, mu_dtype):
    """optax's ``test_explicit_dtype`` cases, with two deliberate differences: complex
    parameters refuse a real ``mu_dtype`` (it would drop the imaginary part of m, which optax
    does with a ComplexWarning), and without ``mu_dtype`` half-precision parameters keep a
    float32 average, as every route of adamupdate does."""
    jnp = jx.jnp
    params = jnp.zeros(2, jx.jax.dtypes.canonicalize_dtype(param_dtype))
    solver = jx.adam(0.1, mu_dtype=mu_dtype)
    if params.dtype == jnp.complex64 and mu_dtype not in ("complex64", None):
        with pytest.raises(TypeError, match="imaginary part"):
            solver.init(params)
        return
    state = solver.init(params)
    if mu_dtype is not None:
        want = jnp.dtype(mu_dtype)
    else:
        want = jnp.float32 if params.dtype == jnp.bfloat16 else params.dtype
    assert state[0].mu.dtype == want
    updates, state = solver.update(jnp.ones_like(params), state, params)
    assert state[0].mu.dtype == want and updates.dtype == params.dtype
    assert not jnp.iscomplexobj(state[0].nu)


def test_bfloat16_mu_is_computed_wide_and_stored_rounded(jx):
    """With ``mu_dtype=bfloat16`` on float32 parameters m is β1·m + (1-β1)·g in float32,
    rounded to bfloat16 when stored; v and the step stay float32."""
    jnp = jx.jnp
    rng = np.random.default_rng(15)
    p0 = rng.standard_normal(64).astype(np.float32)
    grads = [rng.standard_normal(64).astype(np.float32) for _ in range(3)]
    params, state = optax_run(jx, jx.adam(LR, mu_dtype=jnp.bfloat16), p0, grads[:1])
    mu = np.asarray(state[0].mu.astype(jnp.float32))
    exact = np.float32(1 - B1) * grads[0]  # m after one step from zero
    assert np.array_equal(mu, np.asarray(jnp.asarray(exact).astype(jnp.bfloat16), np.float32))
    assert state[0].nu.dtype == jnp.float32 and params.dtype == jnp.float32
    # three steps: within bfloat16's rounding of m (2^-8 relative) of the reference
    params, state = optax_run(jx, jx.adam(LR, mu_dtype=jnp.bfloat16), p0, grads)
    traj = run(p0, grads, LR, B1, B2, EPS)
    assert np.allclose(np.asarray(params), traj.p, rtol=0, atol=3 * LR * 2.0**-8)
    assert not np.allclose(np.asarray(params), traj.p, rtol=0, atol=1e-9)


def test_complex_mu_dtype_for_real_parameters_gives_the_real_step(jx):
    rng = np.random.default_rng(16)
    p0 = rng.standard_normal(8).astype(np.float32)
    grads = small_gradients(rng, 8, 6, "float32")
    plain, _ = optax_run(jx, jx.adam(LR), p0, grads)
    wide, state = optax_run(jx, jx.adam(LR, mu_dtype=jx.jnp.complex64), p0, grads)
    assert state[0].mu.dtype == jx.jnp.complex64 and not np.any(np.imag(state[0].mu))
    assert wide.dtype == jx.jnp.float32
    assert np.array_equal(np.asarray(wide), np.asarray(plain))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nesterov": True}, "no Nesterov variant"),
        ({"eps_root": 1e-8}, "no term inside"),
        ({"eps_root": -1.0}, ">= 0"),
    ],
)
def test_options_that_are_not_matlabs_are_refused(jx, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jx.adam(LR, **kwargs)


def test_neutral_eps_root_and_nesterov_are_matlabs_step(jx):
    rng = np.random.default_rng(17)
    p0 = rng.standard_normal(6).astype(np.float32)
    grads = small_gradients(rng, 6, 5, "float32")
    plain, _ = optax_run(jx, jx.adam(LR), p0, grads)
    for kwargs in ({"eps_root": 0.0}, {"eps_root": 0}, {"nesterov": False}):
        same, _ = optax_run(jx, jx.adam(LR, **kwargs), p0, grads)
        assert np.array_equal(np.asarray(same), np.asarray(plain))


def test_bad_mu_dtype_raises(jx):
    with pytest.raises(TypeError, match="floating-point or complex"):
        jx.adam(mu_dtype="int32")
    with pytest.raises(TypeError, match="a dtype"):
        jx.adam(mu_dtype="not a dtype")


def test_injected_eps_root_is_refused_under_jit(jx):
    """A traced eps_root cannot be checked: the error says what to do instead."""
    solver = jx.optax.inject_hyperparams(jx.adam)(learning_rate=LR, eps_root=0.0)
    params = jx.jnp.zeros(3)
    state = solver.init(params)
    with pytest.raises(TypeError, match="static_args"):
        jx.jax.jit(solver.update)(params, state, params)
    static = jx.optax.inject_hyperparams(jx.adam, static_args="eps_root")
    solver = static(learning_rate=LR, eps_root=0.0)
    updates, _ = jx.jax.jit(solver.update)(jx.jnp.ones(3), solver.init(params), params)
    assert np.allclose(np.asarray(updates), -LR, rtol=1e-6)


# --- states made by optax.adam ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_continues_from_an_optax_adam_state(jx, dtype):
    """optax's moments are MATLAB's uncorrected m and v (for complex parameters it stores v as
    a complex array with a zero imaginary part): after five steps of ``optax.adam``, ten of
    ours are the reference's ten steps from that state, and the state becomes ours (v real)."""
    rng = np.random.default_rng(18)
    p0 = np.asarray(rng.standard_normal((3, 4))).astype(dtype)
    grads = small_gradients(rng, (3, 4), 15, dtype)
    params, optax_state = optax_run(jx, jx.optax.adam(LR), p0, grads[:5])
    assert np.iscomplexobj(optax_state[0].nu) == (dtype == "complex64")
    mu, nu = np.asarray(optax_state[0].mu), np.asarray(optax_state[0].nu)
    assert not np.any(np.imag(nu))
    params_5 = np.asarray(params)
    params, state = optax_run(jx, jx.adam(LR), params_5, grads[5:], state=optax_state)
    assert int(state[0].count) == 15 and not np.iscomplexobj(state[0].nu)
    want, bound = reference_bounds(params_5, grads[5:], [LR] * 10, m0=mu, v0=np.real(nu), first=6)
    assert_matches(np.asarray(params), want, bound, dtype)


# --- sharding (eight CPU devices, in a subprocess) -------------------------------------------


def sharding_checks() -> dict:
    """In the subprocess: where ``init`` and ``update`` put the states of sharded params."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adamupdate.optax import adam

    report: dict = {"devices": len(jax.devices())}
    solver = adam(0.1)

    # a mesh as jax.sharding.Mesh makes it (axes sharded by device_put, "Auto" where typed)
    mesh = Mesh(np.array(jax.devices()), ("x",))
    shardings = {"w": NamedSharding(mesh, P(None, "x")), "b": NamedSharding(mesh, P("x"))}
    params = {
        "w": jax.device_put(np.ones((2, 8, 4), np.float32), shardings["w"]),
        "b": jax.device_put(np.ones(8, np.float32), shardings["b"]),
    }
    state0 = solver.init(params)
    _, state1 = jax.jit(solver.update)(params, state0, params)
    report["placed"] = {
        f"{when}.{name}.{k}": getattr(state, name)[k].sharding == shardings[k]
        for when, state in (("init", state0[0]), ("update", state1[0]))
        for name in ("mu", "nu")
        for k in shardings
    }

    # explicit sharding: the sharding is part of each array's type
    if not hasattr(jax, "set_mesh"):
        report["explicit"] = "jax " + jax.__version__ + " has no explicit sharding"
        return report
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    report["explicit"] = {}
    for dtype in ("float16", "float32", "complex64"):
        with jax.set_mesh(mesh):
            sharded = NamedSharding(mesh, P(None, "x"))
            params = jnp.zeros((2, 8, 4), dtype=dtype, out_sharding=sharded)
            state0 = solver.init(params)
            _, state1 = solver.update(params, state0, params)
            types0 = jax.tree.map(jax.typeof, state0)
            same = types0 == jax.tree.map(jax.typeof, state1)
            same_jit = types0 == jax.tree.map(jax.typeof, jax.jit(solver.init)(params))
            try:
                jax.lax.cond(params.sum() > 0, lambda a, b: a, lambda a, b: b, state0, state1)
                cond = "ok"
            except TypeError as error:
                cond = str(error).splitlines()[0]
            report["explicit"][dtype] = {
                "mu": str(jax.typeof(state0[0].mu)),
                "init_types_equal_update_types": same,
                "jit_init_types_equal": same_jit,
                "lax_cond": cond,
            }
    return report


@pytest.fixture(scope="module")
def sharding_report() -> dict:
    pytest.importorskip("optax")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        # This file runs as a script: tests/ (reference.py) is not its folder.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(SRC), str(TESTS), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_init_places_the_states_with_the_params_shardings(sharding_report):
    assert sharding_report["devices"] == 8
    placed = sharding_report["placed"]
    assert len(placed) == 8 and all(placed.values()), placed


def test_explicitly_sharded_init_state_has_update_states_types(sharding_report):
    """``lax.cond(pred, init_state, updated_state)`` type-checks: optax's own sharding test."""
    explicit = sharding_report["explicit"]
    if isinstance(explicit, str):
        pytest.skip(explicit)  # an old JAX (before 0.7) without sharding in types
    for dtype, found in explicit.items():
        assert "8@x" in found["mu"], (dtype, found)
        assert found["init_types_equal_update_types"], (dtype, found)
        assert found["jit_init_types_equal"], (dtype, found)
        assert found["lax_cond"] == "ok", (dtype, found)


if __name__ == "__main__":
    print(json.dumps(sharding_checks()))
