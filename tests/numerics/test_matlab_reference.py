"""adamupdate against MATLAB's documented numbers, hand-computed cases and the float64 reference.

Containers, scalars and in place: test_matlab_containers.py.

Tolerances
----------
* MATLAB's documentation example is checked to the last bit that float64 can represent: the
  expected drop ``D = 0.04999999776393212`` is recovered from ``p0 - p1`` up to the rounding of
  ``p1`` itself (half an ulp of ``p1``) plus a couple of ulps of ``D``; with ``params = 0`` the drop
  is ``-p1`` and must equal ``D`` within 2 ulp (relative 4.4e-16).
* Random cases compare with ``tests/reference.py``, which carries a first-order running bound on
  the rounding error of the formula in the working precision (see its docstring); the assertion is
  ``|ours - reference| <= 2 * u * bound`` with u the unit roundoff of the dtype (1.1e-16 for
  float64 / complex128, 6e-8 for float32 / complex64, 4.9e-4 for float16). For one float64 step on
  O(1) parameters that is ~2-3 ulp of ``p`` plus ~7 ulp of the step size - the "few ulp" a
  different but valid evaluation order may cost. Over t steps it grows linearly (worst case: each
  step rounds ``p`` once).
* float32 is additionally held to the plain rule "relative error <= 2e-6, absolute floor 2e-6 of
  the largest |p|" over up to 50 steps (rounding of ``p`` each step is 6e-8 relative; 50 steps in
  the worst case accumulate 3e-6, in practice a random walk of ~4e-7).
* float16 has 11 significant bits; every step rounds ``p`` (and the states) to 4.9e-4 relative, so
  the trajectory check is loose (linear growth with t) and the tight check is the *per-step* one:
  each step is compared with one reference step started from the implementation's own float16
  states.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from adamupdate import adamupdate
from matlab_helpers import average_dtype, real_dtype, ulp

DOC_DROP = 0.04999999776393212  # MATLAB documentation example, iteration 1

# --------------------------------------------------------------------------------------------
# MATLAB's documentation example
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, [], np.array([]), np.zeros((0, 0))], ids=repr)
def test_doc_example_rand_params(empty):
    rng = np.random.default_rng(20190901)
    params = rng.random((3, 3, 4))  # rand(3,3,4)
    grad = np.ones((3, 3, 4))
    p0 = params.copy()
    p1, m1, v1 = adamupdate(params, grad, empty, empty, 1, 0.05, 0.75, 0.95)

    assert isinstance(p1, np.ndarray) and p1.dtype == np.float64 and p1.shape == (3, 3, 4)
    # p1 = fl(p0 - step) with step within a few ulp of D: p0 - p1 recovers D up to half an ulp
    # of p1 (the float64 resolution of the parameter) and ~4 ulp of D (evaluation order).
    drop = p0 - p1
    err = np.abs(drop - DOC_DROP)
    allowed = 0.5 * ulp(p1) + 4 * ulp(DOC_DROP)
    assert np.all(err <= allowed), (err / DOC_DROP).max()
    # Relative to the drop: at most the resolution of p (<= 1.1e-16 absolute for p < 1).
    assert np.max(err) / DOC_DROP <= 3e-15

    # States: m = (1 - 0.75)*1 = 0.25 exactly, v = (1 - 0.95)*1 (the float64 value of 1-0.95).
    assert m1.dtype == np.float64 and m1.shape == (3, 3, 4)
    assert v1.dtype == np.float64 and v1.shape == (3, 3, 4)
    assert np.all(m1 == 0.25)
    assert np.all(np.abs(v1 - (1 - 0.95)) <= ulp(1 - 0.95))


def test_doc_example_zero_params_exact_drop():
    params = np.zeros((3, 3, 4))
    grad = np.ones((3, 3, 4))
    p1, _, _ = adamupdate(params, grad, None, None, 1, 0.05, 0.75, 0.95)
    rel = np.abs(-p1 - DOC_DROP) / DOC_DROP
    assert np.all(rel <= 4.5e-16), rel.max()  # ~1e-16 relative: within 2 ulp of D
    # and D itself is 0.05*sqrt(0.05)/(sqrt(0.05)+1e-8)
    assert math.isclose(DOC_DROP, 0.05 * math.sqrt(0.05) / (math.sqrt(0.05) + 1e-8), rel_tol=3e-16)


def test_doc_example_second_iteration():
    rng = np.random.default_rng(7)
    params = rng.random((3, 3, 4))
    grad = np.ones((3, 3, 4))
    p1, m1, v1 = adamupdate(params, grad, None, None, 1, 0.05, 0.75, 0.95)
    p2, m2, v2 = adamupdate(p1, grad, m1, v1, 2, 0.05, 0.75, 0.95)
    # By hand: m2 = 0.75*0.25 + 0.25 = 0.4375 (exact), v2 = 0.95*0.05 + 0.05 = 1 - 0.95^2,
    # a2 = 0.05*sqrt(1-0.95^2)/(1-0.75^2) = 0.05*sqrt(v2)/0.4375, step = a2*m2/(sqrt(v2)+1e-8)
    v2_hand = 0.95 * (1 - 0.95) + (1 - 0.95)
    step2 = 0.05 * math.sqrt(v2_hand) / (math.sqrt(v2_hand) + 1e-8)
    assert np.all(m2 == 0.4375)
    assert np.all(np.abs(v2 - v2_hand) <= 2 * ulp(v2_hand))
    err = np.abs((p1 - p2) - step2)
    assert np.all(err <= 0.5 * ulp(p2) + 8 * ulp(step2)), err.max()


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------


def test_two_steps_exact_binary_numbers():
    # b1 = 1/2, b2 = 3/4, lr = 1/2: every state is exactly representable.
    lr, b1, b2, eps = 0.5, 0.5, 0.75, 1e-8
    p0 = np.array([1.0, -2.0, 0.25])
    g1 = np.array([2.0, 2.0, -2.0])
    g2 = np.array([4.0, 4.0, -4.0])
    p1, m1, v1 = adamupdate(p0, g1, None, None, 1, lr, b1, b2, eps)
    # t=1: m = 0.5*g = +-1, v = 0.25*4 = 1, a1 = 0.5*sqrt(0.25)/0.5 = 0.5
    np.testing.assert_array_equal(m1, [1.0, 1.0, -1.0])
    np.testing.assert_array_equal(v1, [1.0, 1.0, 1.0])
    step1 = 0.5 * 1.0 / (1.0 + eps)
    expected1 = np.array([1.0 - step1, -2.0 - step1, 0.25 + step1])
    np.testing.assert_allclose(p1, expected1, rtol=4.5e-16, atol=0)
    p2, m2, v2 = adamupdate(p1, g2, m1, v1, 2, lr, b1, b2, eps)
    # t=2: m = 0.5*1 + 0.5*4 = 2.5, v = 0.75*1 + 0.25*16 = 4.75,
    #      a2 = 0.5*sqrt(1 - 0.5625)/(1 - 0.25)
    np.testing.assert_array_equal(m2, [2.5, 2.5, -2.5])
    np.testing.assert_array_equal(v2, [4.75, 4.75, 4.75])
    step2 = 0.5 * math.sqrt(0.4375) / 0.75 * 2.5 / (math.sqrt(4.75) + eps)
    expected2 = expected1 - np.array([step2, step2, -step2])
    np.testing.assert_allclose(p2, expected2, rtol=1e-15, atol=0)


def test_mid_training_step_with_given_states():
    # Not a first call: t = 5, states supplied, default hyper-parameters.
    p, g, m, v = 0.75, -0.3, 0.1, 0.04
    m_new = 0.9 * m + 0.1 * g
    v_new = 0.999 * v + 0.001 * g * g
    a5 = 0.001 * math.sqrt(1 - 0.999**5) / (1 - 0.9**5)
    p_new = p - a5 * m_new / (math.sqrt(v_new) + 1e-8)
    out = adamupdate(np.array([p]), np.array([g]), np.array([m]), np.array([v]), 5)
    assert math.isclose(out[1][0], m_new, rel_tol=1e-15)
    assert math.isclose(out[2][0], v_new, rel_tol=1e-15)
    assert abs(out[0][0] - p_new) <= 2 * ulp(p_new) + 1e-15 * abs(p - p_new)


def test_epsilon_goes_on_uncorrected_sqrt_v():
    """Tiny gradients, large epsilon: MATLAB's placement differs from PyTorch's by ~16x."""
    g, eps, lr, b1, b2 = 1e-6, 1e-6, 0.001, 0.9, 0.999
    p, m, v = adamupdate(np.array([0.0]), np.array([g]), None, None, 1, lr, b1, b2, eps)
    a1 = lr * math.sqrt(1 - b2) / (1 - b1)
    m1, v1 = (1 - b1) * g, (1 - b2) * g * g
    matlab = -a1 * m1 / (math.sqrt(v1) + eps)  # ~ -3.07e-5
    torch_like = -lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)  # = -5e-4
    assert math.isclose(p[0], matlab, rel_tol=2e-15), (p[0], matlab)
    assert math.isclose(m[0], m1, rel_tol=4.5e-16) and math.isclose(v[0], v1, rel_tol=6.7e-16)
    assert abs(p[0] - torch_like) > 10 * abs(matlab)
    # eps on sqrt(v) (not on v, not on sqrt(v)+... inside the bias correction)
    eps_on_v = -a1 * m1 / math.sqrt(v1 + eps)
    assert not math.isclose(p[0], eps_on_v, rel_tol=1e-3)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_hand_computed(dtype):
    lr, b1, b2, eps = 0.1, 0.5, 0.75, 1e-8
    p0 = np.array([1 - 1j, 0.5j], dtype=dtype)
    g = np.array([3 + 4j, -4 + 3j], dtype=dtype)
    p1, m1, v1 = adamupdate(p0, g, None, None, 1, lr, b1, b2, eps)
    assert p1.dtype == dtype and m1.dtype == dtype
    assert v1.dtype == real_dtype(dtype)  # v is real: |g|^2 = g*conj(g)
    np.testing.assert_array_equal(m1, np.array([1.5 + 2j, -2 + 1.5j], dtype=dtype))
    np.testing.assert_array_equal(v1, np.array([6.25, 6.25], dtype=real_dtype(dtype)))
    # a1 = 0.1*sqrt(0.25)/0.5 = 0.1; step = 0.1*m/(2.5 + eps) = 0.1*(0.6+0.8j)*(2.5/(2.5+eps))
    shrink = 2.5 / (2.5 + eps)
    expected = np.array([1 - 1j - 0.1 * (0.6 + 0.8j) * shrink, 0.5j - 0.1 * (-0.8 + 0.6j) * shrink])
    rtol = 4 * ref.unit_roundoff(dtype) * 2
    np.testing.assert_allclose(p1, expected, rtol=rtol, atol=0)
    # PyTorch's view_as_real convention would give p0 - 0.1*(1+1j) (each part its own Adam)
    split = np.array([1 - 1j - 0.1 * (1 + 1j), 0.5j - 0.1 * (-1 + 1j)])
    assert np.all(np.abs(p1 - split) > 0.01)


def test_nan_and_inf_gradients_propagate():
    p0 = np.array([1.0, 1.0, 1.0, 1.0])
    g = np.array([np.nan, np.inf, -np.inf, 0.5])
    p1, m1, v1 = adamupdate(p0, g, None, None, 1)
    assert np.isnan(p1[0]) and np.isnan(m1[0]) and np.isnan(v1[0])
    # inf: m = 0.1*inf = inf, v = inf, step = a*inf/inf = nan (MATLAB does not skip the step)
    assert m1[1] == np.inf and v1[1] == np.inf and np.isnan(p1[1])
    assert m1[2] == -np.inf and v1[2] == np.inf and np.isnan(p1[2])
    expected = ref.step(p0[3:], g[3:], None, None, 1)
    assert math.isclose(p1[3], expected[0][0], rel_tol=1e-15)


def test_zero_learn_rate_keeps_params_updates_states():
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 5))
    p1, m1, v1 = adamupdate(p0, g, None, None, 1, 0.0)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_allclose(m1, (1 - 0.9) * g, rtol=4.5e-16)
    np.testing.assert_allclose(v1, (1 - 0.999) * g * g, rtol=6.7e-16)


def test_zero_grad_decay_means_no_momentum():
    rng = np.random.default_rng(4)
    p0, g1, g2 = (rng.standard_normal(6) for _ in range(3))
    p1, m1, v1 = adamupdate(p0, g1, None, None, 1, 0.01, 0.0, 0.99)
    p2, m2, v2 = adamupdate(p1, g2, m1, v1, 2, 0.01, 0.0, 0.99)
    np.testing.assert_array_equal(m2, g2)
    traj = ref.run(p0, [g1, g2], 0.01, 0.0, 0.99, 1e-8)
    ref.assert_matches(p2, traj.p, traj.p_bound, np.float64, "p")
    ref.assert_matches(v2, traj.v, traj.v_bound, np.float64, "v")


def test_defaults_keywords_and_positional_agree():
    rng = np.random.default_rng(5)
    p0, g = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    a = adamupdate(p0, g, None, None, 1)
    b = adamupdate(p0, g, None, None, 1, 0.001, 0.9, 0.999, 1e-8)
    c = adamupdate(
        p0, g, None, None, 1, learn_rate=0.001, grad_decay=0.9, sq_grad_decay=0.999, epsilon=1e-8
    )
    d = adamupdate(params=p0, grad=g, avg_grad=None, avg_sq_grad=None, iteration=1)
    for x, y, z, w in zip(a, b, c, d, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(x, w)
    e = adamupdate(p0, g, None, None, 1, 0.01)
    assert not np.array_equal(a[0], e[0])  # the positional learn rate is honoured
    ref_p, _, _ = ref.step(p0, g, None, None, 1, 0.01)
    np.testing.assert_allclose(e[0], ref_p, rtol=1e-15)


@pytest.mark.parametrize("iteration", [3, np.int64(3), np.int32(3), 3.0, np.float64(3.0)], ids=repr)
def test_iteration_forms(iteration):
    rng = np.random.default_rng(6)
    p0, g, m, v = rng.standard_normal((4, 3))
    v = np.abs(v)
    expected = adamupdate(p0, g, m, v, 3)
    got = adamupdate(p0, g, m, v, iteration)
    for x, y in zip(expected, got, strict=True):
        np.testing.assert_array_equal(x, y)
    # and iteration 3 really is not iteration 1
    assert not np.array_equal(adamupdate(p0, g, m, v, 1)[0], got[0])


# --------------------------------------------------------------------------------------------
# Random shapes, dtypes and trajectories against the reference
# --------------------------------------------------------------------------------------------

DTYPES = [np.float64, np.float32, np.complex128, np.complex64, np.float16]


def _random_case(rng: np.random.Generator, dtype, n_steps: int):
    ndim = int(rng.integers(0, 5))
    shape = tuple(int(d) for d in rng.integers(1, 5, size=ndim))
    cplx = np.issubdtype(dtype, np.complexfloating)
    if dtype == np.float16:
        # Keep every quantity a normal float16: |g| in [0.5, 2], v >= 1e-2*0.25.
        hp = dict(learn_rate=0.01, grad_decay=0.9, sq_grad_decay=0.99, epsilon=1e-4)

        def draw():
            x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
            return np.asarray(x).astype(dtype)

        p0 = np.asarray(rng.uniform(-4, 4, shape)).astype(dtype)
    else:
        hp = dict(
            learn_rate=float(10 ** rng.uniform(-4, -1)),
            grad_decay=float(rng.uniform(0.0, 0.99)),
            sq_grad_decay=float(rng.uniform(0.9, 0.9999)),
            epsilon=float(10 ** rng.uniform(-10, -6)),
        )

        def draw():
            x = rng.standard_normal(shape) * 10 ** rng.uniform(-3, 1)
            if cplx:
                x = x + 1j * rng.standard_normal(shape)
            return np.asarray(x).astype(dtype)

        p0 = np.asarray(
            rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)
        )
        p0 = p0.astype(dtype)
    grads = [draw() for _ in range(n_steps)]
    return p0, grads, hp


def _check_types(p, m, v, dtype, shape):
    averages = average_dtype(dtype)
    for name, x, want in (("p", p, dtype), ("m", m, averages), ("v", v, real_dtype(averages))):
        assert isinstance(x, np.ndarray), (name, type(x))
        assert x.dtype == want, (name, x.dtype, want)
        assert x.shape == shape, (name, x.shape, shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_steps,seed", [(1, 0), (2, 1), (5, 2), (13, 3), (50, 4), (50, 5)])
def test_random_trajectory_matches_reference(dtype, n_steps, seed):
    rng = np.random.default_rng([seed, np.dtype(dtype).num])
    p0, grads, hp = _random_case(rng, dtype, n_steps)
    hp_args = (hp["learn_rate"], hp["grad_decay"], hp["sq_grad_decay"], hp["epsilon"])
    p, m, v = p0, None, None
    for t, g in enumerate(grads, start=1):
        p_new, m_new, v_new = adamupdate(p, g, m, v, t, *hp_args)
        _check_types(p_new, m_new, v_new, dtype, p0.shape)
        # Tight per-step check, started from our own (rounded) state.
        one = ref.run(p, [g], *hp_args, m0=m, v0=v, first_iteration=t)
        ref.assert_matches(p_new, one.p, one.p_bound, dtype, f"p at step {t}")
        ref.assert_matches(m_new, one.m, one.m_bound, dtype, f"m at step {t}")
        ref.assert_matches(v_new, one.v, one.v_bound, dtype, f"v at step {t}")
        p, m, v = p_new, m_new, v_new
    # Whole trajectory from the exact inputs.
    traj = ref.run(p0, grads, *hp_args)
    assert traj.iteration == n_steps
    ref.assert_matches(p, traj.p, traj.p_bound, dtype, "p (trajectory)")
    ref.assert_matches(m, traj.m, traj.m_bound, dtype, "m (trajectory)")
    ref.assert_matches(v, traj.v, traj.v_bound, dtype, "v (trajectory)")
    if dtype in (np.float32, np.complex64):
        floor = 2e-6 * float(np.max(np.abs(traj.p)))
        np.testing.assert_allclose(p, traj.p, rtol=2e-6, atol=floor)
    if dtype in (np.float64, np.complex128):
        # Plain-language version of the bound: a few ulp per step at most.
        floor = 4.5e-16 * n_steps * float(np.max(np.abs(traj.p)))
        np.testing.assert_allclose(p, traj.p, rtol=4.5e-16 * n_steps, atol=floor)


def test_reference_bound_is_not_vacuous():
    """The trajectory tolerance must reject a wrong answer (e.g. PyTorch's eps placement)."""
    rng = np.random.default_rng(11)
    p0, grads, _ = _random_case(rng, np.float64, 10)
    hp = (1e-2, 0.9, 0.999, 1e-3)
    traj = ref.run(p0, grads, *hp)
    tol = ref.tolerance(traj.p_bound, np.float64)
    assert np.max(tol) < 1e-13 * np.max(np.abs(traj.p))
    wrong = ref.run(p0, grads, *hp[:3], 1e-3 * 1.000001)
    assert np.any(np.abs(wrong.p - traj.p) > tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_non_contiguous_and_readonly_inputs(dtype):
    rng = np.random.default_rng(12)
    base_p = rng.standard_normal((6, 8)).astype(dtype)
    base_g = rng.standard_normal((8, 6)).astype(dtype)
    p0 = base_p[::2, 1:]  # strided view, shape (3, 7)
    g = base_g.T[::2, 1:]  # transposed strided view, shape (3, 7)
    assert not p0.flags.c_contiguous and not g.flags.c_contiguous
    g_ro = g.copy(order="F")
    g_ro.flags.writeable = False
    for grad in (g, g_ro):
        p1, m1, v1 = adamupdate(p0, grad, None, None, 1, 0.01)
        traj = ref.run(p0, [grad], 0.01)
        assert p1.shape == (3, 7)
        ref.assert_matches(p1, traj.p, traj.p_bound, dtype, "p")
        ref.assert_matches(m1, traj.m, traj.m_bound, dtype, "m")
        ref.assert_matches(v1, traj.v, traj.v_bound, dtype, "v")
