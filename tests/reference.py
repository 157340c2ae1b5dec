"""An independent float64 reference for MATLAB's ``adamupdate`` step.

Written from the contract (MATLAB's adamupdate reference page and docs/numerics.rst) and
nothing else: plain Python ``math`` and built-in ``complex`` arithmetic on one scalar at a
time, looping over the flattened elements.
NumPy is used only to hold the numbers (reading them in, allocating the outputs); no vectorised
NumPy arithmetic, and nothing is imported from ``adamupdate``.

Per element, for iteration t >= 1 (b1 = grad_decay, b2 = sq_grad_decay, lr = learn_rate)::

    m   = b1*m + (1 - b1)*g
    v   = b2*v + (1 - b2)*|g|^2           (|g|^2 = g*conj(g), real)
    a_t = lr*sqrt(1 - b2^t)/(1 - b1^t)
    p   = p - a_t*m/(sqrt(v) + eps)       (eps on sqrt of the *uncorrected* v)

Error bounds
------------
Besides the values, :func:`run` tracks for every element a first-order running bound on the
rounding error that *any* correct implementation of the formula may make when it computes in a
given precision with unit roundoff ``u`` (its parameters, states and coefficients rounded to that
precision). Each bound is kept in units of ``u`` (so ``u * bound`` is an absolute error):

* ``m``: every step rounds ``b1`` and ``1-b1`` to the working precision and performs two products
  and a sum, each at most ``u`` relative to ``sm = b1*sm + (1-b1)*|g|`` (an upper bound on ``|m|``
  without cancellation), and shrinks the old error by ``b1``:  ``em = b1*em + 5*sm``.
* ``v``: the same with one more rounding for ``|g|^2`` (complex: ``re^2 + im^2``):
  ``ev = b2*ev + 6*v``.
* step ``s = a_t*m/(sqrt(v)+eps)``: about six roundings (``a_t`` cast, sqrt, add, divide,
  multiply, slack) relative to ``ss = a_t*sm/(sqrt(v)+eps)``, plus the propagated state errors:
  ``es = ss*(6 + ev/(2v)) + a_t*em/(sqrt(v)+eps)``.
* ``p``: the subtraction rounds once relative to ``|p|`` and errors add up without being
  amplified (the step does not depend on ``p``): ``ep = ep + es + |p|``.

Both the implementation and this float64 reference are within ``u * bound`` of the exact result,
so they differ by at most ``2 * u * bound`` (:func:`tolerance`); for float32/float16 the reference's
own float64 error is negligible and the factor 2 is slack.

In the arrays' precision
------------------------
:func:`step_in_precision` is the one exception to "no vectorised NumPy arithmetic": it computes
the step in the arrays' own precision (float32 or float64), as MATLAB does, for the kernels that
promise MATLAB's exact bits. Each NumPy ufunc rounds every element once, correctly (IEEE 754
``+ - * /`` and ``sqrt``), so the vectorised form gives the bits of the element-by-element
computation in that precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Trajectory",
    "assert_matches",
    "bias_corrected_rate",
    "container_type",
    "run",
    "step",
    "step_in_precision",
    "step_scalar",
    "tolerance",
    "unit_roundoff",
]


def bias_corrected_rate(iteration: int, learn_rate: float, grad_decay: float, sq_grad_decay: float):
    """``a_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`` in float64."""
    t = int(iteration)
    return (
        learn_rate * math.sqrt(1.0 - math.pow(sq_grad_decay, t)) / (1.0 - math.pow(grad_decay, t))
    )


def step_scalar(p, g, m, v, iteration, learn_rate, grad_decay, sq_grad_decay, epsilon):
    """One MATLAB Adam step on Python scalars (float or complex). Returns ``(p, m, v)``.

    ``m``/``v`` may be ``None`` for the first call (MATLAB's empty state = zeros).
    """
    is_complex = isinstance(p, complex) or isinstance(g, complex) or isinstance(m, complex)
    if m is None:
        m = 0.0
    if v is None:
        v = 0.0
    if is_complex:
        g = complex(g)
        m = complex(m)
        p = complex(p)
        g_sq = (g * g.conjugate()).real
    else:
        g = float(g)
        m = float(m)
        p = float(p)
        g_sq = g * g
    v = float(v)
    m = grad_decay * m + (1.0 - grad_decay) * g
    v = sq_grad_decay * v + (1.0 - sq_grad_decay) * g_sq
    a_t = bias_corrected_rate(iteration, learn_rate, grad_decay, sq_grad_decay)
    p = p - a_t * m / (math.sqrt(v) + epsilon)
    return p, m, v


def _as_float64_array(x, complex_: bool) -> np.ndarray:
    arr = np.asarray(x)
    return arr.astype(np.complex128 if complex_ else np.float64)


def step(
    p, g, m, v, iteration, learn_rate=0.001, grad_decay=0.9, sq_grad_decay=0.999, epsilon=1e-8
):
    """One step on arrays, element by element. Returns float64/complex128 ``(p, m, v)``."""
    traj = run(
        p,
        [g],
        learn_rate,
        grad_decay,
        sq_grad_decay,
        epsilon,
        m0=m,
        v0=v,
        first_iteration=iteration,
    )
    return traj.p, traj.m, traj.v


@dataclass
class Trajectory:
    """Final values of a reference run and their per-element rounding-error bounds."""

    p: np.ndarray
    m: np.ndarray
    v: np.ndarray
    p_bound: np.ndarray  # in units of the working precision's unit roundoff
    m_bound: np.ndarray
    v_bound: np.ndarray
    iteration: int  # the last iteration performed


def run(
    p0,
    grads: Sequence | Iterable,
    learn_rate=0.001,
    grad_decay=0.9,
    sq_grad_decay=0.999,
    epsilon=1e-8,
    *,
    m0=None,
    v0=None,
    first_iteration: int = 1,
) -> Trajectory:
    """Run ``len(grads)`` consecutive steps starting at ``first_iteration``.

    ``p0``, each gradient, ``m0`` and ``v0`` are array-likes of one shape (``m0``/``v0`` ``None``
    means empty state). Values are read exactly (float16/32 convert to float64 exactly) and all
    arithmetic is scalar ``math`` and Python ``complex`` in float64.
    """
    grads = [np.asarray(g) for g in grads]
    p0 = np.asarray(p0)
    is_complex = (
        np.iscomplexobj(p0)
        or any(np.iscomplexobj(g) for g in grads)
        or (m0 is not None and np.iscomplexobj(m0))
    )
    shape = p0.shape
    for g in grads:
        if g.shape != shape:
            raise ValueError(f"reference: gradient shape {g.shape} != params shape {shape}")
    p = _as_float64_array(p0, is_complex).copy()
    m = (
        np.zeros(shape, np.complex128 if is_complex else np.float64)
        if m0 is None
        else _as_float64_array(m0, is_complex).reshape(shape).copy()
    )
    v = (
        np.zeros(shape, np.float64)
        if v0 is None
        else np.asarray(v0).astype(np.float64).reshape(shape).copy()
    )
    n = p.size
    pf, mf, vf = p.reshape(-1), m.reshape(-1), v.reshape(-1)
    # Error bookkeeping (units of unit roundoff), all in plain Python floats.
    sm = [abs(x) for x in mf]  # magnitude bound of m without cancellation
    em = [0.0] * n
    ev = [0.0] * n
    ep = [0.0] * n  # p0 is read exactly
    b1, b2, eps = float(grad_decay), float(sq_grad_decay), float(epsilon)
    t = int(first_iteration) - 1
    for g_arr in grads:
        t += 1
        a_t = bias_corrected_rate(t, learn_rate, b1, b2)
        gf = g_arr.reshape(-1)
        for i in range(n):
            g = complex(gf[i]) if is_complex else float(gf[i])
            g_abs = abs(g)
            g_sq = (g * g.conjugate()).real if is_complex else g * g
            m_i = b1 * mf[i] + (1.0 - b1) * g
            v_i = b2 * float(vf[i]) + (1.0 - b2) * g_sq
            denom = math.sqrt(v_i) + eps
            s = a_t * m_i / denom
            p_i = pf[i] - s
            # bounds
            sm[i] = b1 * sm[i] + (1.0 - b1) * g_abs
            em[i] = b1 * em[i] + 5.0 * sm[i]
            ev[i] = b2 * ev[i] + 6.0 * v_i
            ss = a_t * sm[i] / denom
            rel_v = ev[i] / (2.0 * v_i) if v_i > 0.0 else 0.0
            es = ss * (6.0 + rel_v) + a_t * em[i] / denom
            ep[i] = ep[i] + es + abs(p_i)
            mf[i], vf[i], pf[i] = m_i, v_i, p_i
    return Trajectory(
        p=p,
        m=m,
        v=v,
        p_bound=np.array(ep, dtype=np.float64).reshape(shape),
        m_bound=np.array(em, dtype=np.float64).reshape(shape),
        v_bound=np.array(ev, dtype=np.float64).reshape(shape),
        iteration=t,
    )


def unit_roundoff(dtype) -> float:
    """Unit roundoff (half the machine epsilon) of a real or complex floating dtype."""
    real = np.finfo(np.dtype(dtype)).dtype
    return float(np.finfo(real).eps) / 2.0


def tolerance(bound: np.ndarray, dtype) -> np.ndarray:
    """Allowed |actual - reference| per element: ``2*u*bound`` plus a subnormal-sized floor."""
    real = np.finfo(np.dtype(dtype))
    floor = 4.0 * float(real.smallest_subnormal)
    return 2.0 * unit_roundoff(dtype) * np.asarray(bound, dtype=np.float64) + floor


def assert_matches(actual, expected, bound, dtype, what: str = "value") -> None:
    """Assert ``actual`` (any dtype) is within :func:`tolerance` of the float64 ``expected``."""
    actual_arr = np.asarray(actual)
    expected_arr = np.asarray(expected)
    if actual_arr.shape != expected_arr.shape:
        raise AssertionError(f"{what}: shape {actual_arr.shape} != {expected_arr.shape}")
    a = actual_arr.astype(np.complex128 if np.iscomplexobj(actual_arr) else np.float64)
    tol = tolerance(bound, dtype)
    flat_a, flat_e, flat_t = a.reshape(-1), expected_arr.reshape(-1), tol.reshape(-1)
    worst = None
    for i in range(flat_a.size):
        diff = abs(complex(flat_a[i]) - complex(flat_e[i]))
        if not (diff <= flat_t[i]):  # also catches NaN
            ratio = diff / flat_t[i] if flat_t[i] > 0 else math.inf
            if worst is None or ratio > worst[0] or math.isnan(diff):
                worst = (ratio, i, complex(flat_a[i]), complex(flat_e[i]), diff, flat_t[i])
    if worst is not None:
        ratio, i, got, want, diff, tol_i = worst
        raise AssertionError(
            f"{what} ({np.dtype(dtype)}): element {i} got {got!r}, reference {want!r}, "
            f"|diff|={diff:.3e} > tol={tol_i:.3e} ({ratio:.1f}x)"
        )


def step_in_precision(
    p, g, m, v, iteration, learn_rate=0.001, grad_decay=0.9, sq_grad_decay=0.999, epsilon=1e-8
):
    """One step in the precision of ``p`` (float32 or float64, or their complex types), in
    MATLAB's order of operations. Returns new arrays ``(p, m, v)``.

    The coefficients are computed in float64 (MATLAB's ``double``) and each is rounded once to the
    arrays' real precision before it is applied (a double scalar times a ``single`` array is a
    ``single`` operation in MATLAB)::

        m = b1*m + (1-b1)*g
        v = b2*v + (1-b2)*|g|^2        |g|^2 = re*re + im*im for complex g
        p = p - (a_t*m)/(sqrt(v) + eps)

    ``m``/``v`` ``None`` is MATLAB's empty state: then ``m = (1-b1)*g`` and ``v = (1-b2)*|g|^2``,
    with no ``b*0`` term (a ``-0`` gradient keeps its sign). Complex parameters are stepped part
    by part: ``a_t*m`` and the real denominator divide each of the real and imaginary parts.
    """
    p, g = np.asarray(p), np.asarray(g)
    real = np.finfo(p.dtype).dtype  # the real precision the step is computed in
    b1, omb1 = real.type(grad_decay), real.type(1.0 - grad_decay)
    b2, omb2 = real.type(sq_grad_decay), real.type(1.0 - sq_grad_decay)
    a_t = real.type(bias_corrected_rate(iteration, learn_rate, grad_decay, sq_grad_decay))
    eps = real.type(epsilon)

    def moment(state, value, decay, one_minus):
        return one_minus * value if state is None else decay * np.asarray(state) + one_minus * value

    if p.dtype.kind == "c":
        g_sq = g.real * g.real + g.imag * g.imag
        m_re = moment(None if m is None else np.asarray(m).real, g.real, b1, omb1)
        m_im = moment(None if m is None else np.asarray(m).imag, g.imag, b1, omb1)
    else:
        g_sq = g * g
    v_new = moment(v, g_sq, b2, omb2)
    d = np.sqrt(v_new) + eps
    if p.dtype.kind != "c":
        m_new = moment(m, g, b1, omb1)
        return p - (a_t * m_new) / d, m_new, v_new
    p_new, m_new = np.empty_like(p), np.empty_like(p)
    p_new.real, p_new.imag = p.real - (a_t * m_re) / d, p.imag - (a_t * m_im) / d
    m_new.real, m_new.imag = m_re, m_im
    return p_new, m_new, v_new


def is_close_scalar(a, b, rel: float) -> bool:
    """``|a - b| <= rel*|b|`` on Python scalars (float or complex)."""
    return abs(complex(a) - complex(b)) <= rel * abs(complex(b))


def container_type(x: object) -> type:
    """A container's type as a user sees it.

    The averages a network call returns are ``dict``/``list``/``tuple`` subclasses that carry
    the call's receipt (attribute ``_adamupdate_receipt``); everything else is its own type.
    """
    cls = type(x)
    if hasattr(x, "_adamupdate_receipt") and cls.__mro__[1] in (dict, list, tuple):
        return cls.__mro__[1]
    return cls


def jax_x64(jax, on: bool = True):
    """A context with JAX's 64-bit types on or off: ``jax.enable_x64`` from JAX 0.6 (a config
    State, without a truth value), ``jax.experimental.enable_x64`` before."""
    import importlib

    enable = getattr(jax, "enable_x64", None)
    if enable is not None:
        return enable(on)
    return importlib.import_module("jax.experimental").enable_x64(on)
