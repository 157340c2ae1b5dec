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

The other aspects: test_solvers_paths.py (small and kernel paths), test_solvers_networks.py
(networks and ``dlupdate``), test_solvers_validation.py (bad calls; JAX in place).
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest

import solver_reference as ref
from adamupdate import rmspropupdate, sgdmupdate
from solver_helpers import (
    CASES,
    LEAF_SHAPES,
    LIBS,
    SOLVERS,
    STEPS,
    assert_same_bits,
    check_container,
    flat,
    nest,
    reference,
    state_dtype_name,
    trajectory_problem,
    update,
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
