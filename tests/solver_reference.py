"""An independent float64 reference for MATLAB's ``sgdmupdate`` and ``rmspropupdate``.

Written from the documented formulas only: plain Python ``math`` and built-in ``complex``
arithmetic on one element at a time. NumPy only holds the numbers (reading them in exactly —
float16/bfloat16/float32 convert to float64 without error — and allocating the outputs); nothing
is imported from ``adamupdate``.

Per element (γ = momentum, α = learn_rate, β = sq_grad_decay, ε = epsilon; an empty state is 0)::

    sgdm:     vel = γ·vel − α·g                 θ = θ + vel
    rmsprop:  v   = β·v + (1 − β)·|g|²          θ = θ − α·g/(√v + ε)
              (complex: v real, |g|² = g·conj(g), θ stepped componentwise)

Rounding bounds
---------------
Alongside the values, :func:`sgdm` and :func:`rmsprop` carry for every element a first-order
running bound on the *absolute* rounding error any correct evaluation of the formula may make in
a working precision. Two unit roundoffs enter: ``u_state`` for the arithmetic and the states
(the parameter's own precision; float32 for half precision, which is computed in float32 with
float32 states) and ``u_param`` for the stored parameter (float16/bfloat16 for half precision:
the parameter is rounded to half after each step). With ``sv = γ·sv + α·|g|`` an upper bound on
``|vel|`` that ignores cancellation:

* sgdm, ``vel``: rounding γ and α to the working precision, two products and one difference,
  each at most ``u_state`` relative to ``sv``; the previous error shrinks by γ:
  ``ev = γ·ev + 5·u_state·sv`` (5 = 4 roundings + 1 of slack).
* sgdm, ``θ``: the sum rounds once (``u_state``, then ``u_param`` when stored in half) and the
  velocity's error adds in: ``ep = ep + ev + (u_state + u_param)·|θ|``.
* rmsprop, ``v``: β, 1 − β, ``|g|²`` (complex: two squares and a sum), two products, a sum:
  ``ev = β·ev + 7·u_state·v``.
* rmsprop, step ``s = α·g/(√v + ε)``: α and ε cast, a product, a square root, a sum and a
  quotient (6 roundings, +1 slack) relative to ``|s|``, plus √v's error from v's:
  ``es = |s|·(7·u_state + ev/(2v))``; ``ep = ep + es + (u_state + u_param)·|θ|``.

Complex parameters are stepped componentwise: each part's error obeys the bound of its own
magnitude, so the modulus of the complex error obeys the bound computed from the moduli times
√2 (applied by :func:`tolerance` via ``complex_=True``).

The implementation and this float64 reference are both within the bound of the exact result
(the reference's own float64 error is covered by the same bound with ``u = 2**-53``), so
:func:`tolerance` allows ``2·bound`` plus a floor of a few subnormals of the dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Run",
    "as_float64",
    "assert_close",
    "rmsprop",
    "round_to_bits",
    "sgdm",
    "unit_roundoffs",
]

# (significand bits including the implicit one, smallest normal exponent) of the storage formats
_FORMATS = {"float16": (11, -14), "bfloat16": (8, -126), "float32": (24, -126)}


def round_to_bits(x: float, bits: int, emin: int) -> float:
    """``x`` rounded to nearest-even with ``bits`` significand bits (subnormals below
    ``2**emin``): float16 is ``(11, -14)``, bfloat16 ``(8, -126)``. Pure Python."""
    if x == 0.0 or not math.isfinite(x):
        return x
    _, e = math.frexp(x)  # x = m·2**e, 0.5 <= |m| < 1: the leading bit is 2**(e-1)
    quantum = math.ldexp(1.0, max(e - 1, emin) - (bits - 1))
    return round(x / quantum) * quantum  # x/quantum is exact; round() is half-to-even


def unit_roundoffs(dtype_name: str) -> tuple[float, float]:
    """``(u_state, u_param)`` for a parameter dtype name (see the module docstring)."""
    if dtype_name in ("float16", "bfloat16"):
        return 2.0**-24, 2.0 ** -_FORMATS[dtype_name][0]
    if dtype_name in ("float32", "complex64"):
        return 2.0**-24, 2.0**-24
    if dtype_name in ("float64", "complex128"):
        return 2.0**-53, 2.0**-53
    raise ValueError(dtype_name)


def as_float64(x) -> np.ndarray:
    """A NumPy float64/complex128 copy of anything array-like (read exactly)."""
    if hasattr(x, "detach") and hasattr(x, "is_complex"):  # a torch tensor, bfloat16 too
        x = x.detach().cpu()
        x = (x.cdouble() if x.is_complex() else x.double()).numpy()
    arr = np.asarray(x)
    return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)


@dataclass
class Run:
    """Final values of a reference run and their absolute rounding-error bounds."""

    p: np.ndarray
    state: np.ndarray
    p_bound: np.ndarray
    state_bound: np.ndarray


def _prepare(p0, grads):
    grads = [as_float64(g) for g in grads]
    p = as_float64(p0)
    is_complex = np.iscomplexobj(p) or any(np.iscomplexobj(g) for g in grads)
    shape = p.shape
    for g in grads:
        assert g.shape == shape, (g.shape, shape)
    pf = [complex(x) if is_complex else float(x) for x in p.reshape(-1)]
    gfs = [[complex(x) if is_complex else float(x) for x in g.reshape(-1)] for g in grads]
    return shape, is_complex, pf, gfs


def _param_rounding(dtype_name: str):
    """How the stored parameter is rounded after each step: to half for float16/bfloat16
    (real only: there is no complex half), else not at all (the float64 reference value stands
    for the exact one)."""
    if dtype_name not in ("float16", "bfloat16"):
        return lambda x: x
    bits, emin = _FORMATS[dtype_name]
    return lambda x: round_to_bits(x, bits, emin)


def sgdm(
    p0,
    grads: Sequence,
    learn_rate: float,
    momentum: float,
    *,
    dtype_name: str = "float64",
    vel0=None,
) -> Run:
    """``len(grads)`` MATLAB ``sgdmupdate`` steps, element by element, in float64.

    ``dtype_name`` selects the bound's unit roundoffs; for ``"float16"``/``"bfloat16"`` the
    parameter is also rounded to that format after each step, as the implementation stores it.
    """
    shape, is_complex, pf, gfs = _prepare(p0, grads)
    n = len(pf)
    zero = 0j if is_complex else 0.0
    vel = (
        [zero] * n
        if vel0 is None
        else [complex(x) if is_complex else float(x) for x in as_float64(vel0).reshape(-1)]
    )
    u_state, u_param = unit_roundoffs(dtype_name)
    rnd = _param_rounding(dtype_name)
    sv = [abs(x) for x in vel]
    ev = [0.0] * n
    ep = [0.0] * n
    gamma, alpha = float(momentum), float(learn_rate)
    for gf in gfs:
        for i in range(n):
            g = gf[i]
            vel[i] = gamma * vel[i] - alpha * g
            pf[i] = rnd(pf[i] + vel[i])
            sv[i] = gamma * sv[i] + alpha * abs(g)
            ev[i] = gamma * ev[i] + 5.0 * u_state * sv[i]
            ep[i] = ep[i] + ev[i] + (u_state + u_param) * abs(pf[i])
    dt = np.complex128 if is_complex else np.float64
    return Run(
        p=np.array(pf, dt).reshape(shape),
        state=np.array(vel, dt).reshape(shape),
        p_bound=np.array(ep).reshape(shape),
        state_bound=np.array(ev).reshape(shape),
    )


def rmsprop(
    p0,
    grads: Sequence,
    learn_rate: float,
    sq_grad_decay: float,
    epsilon: float,
    *,
    dtype_name: str = "float64",
    v0=None,
) -> Run:
    """``len(grads)`` MATLAB ``rmspropupdate`` steps, element by element, in float64."""
    shape, is_complex, pf, gfs = _prepare(p0, grads)
    n = len(pf)
    v = [0.0] * n if v0 is None else [float(x) for x in as_float64(v0).reshape(-1)]
    u_state, u_param = unit_roundoffs(dtype_name)
    rnd = _param_rounding(dtype_name)
    ev = [0.0] * n
    ep = [0.0] * n
    beta, alpha, eps = float(sq_grad_decay), float(learn_rate), float(epsilon)
    for gf in gfs:
        for i in range(n):
            g = gf[i]
            g_sq = (g * g.conjugate()).real if is_complex else g * g
            v[i] = beta * v[i] + (1.0 - beta) * g_sq
            denom = math.sqrt(v[i]) + eps
            s = alpha * g / denom
            pf[i] = rnd(pf[i] - s)
            ev[i] = beta * ev[i] + 7.0 * u_state * v[i]
            rel_v = ev[i] / (2.0 * v[i]) if v[i] > 0.0 else 0.0
            es = abs(s) * (7.0 * u_state + rel_v)
            ep[i] = ep[i] + es + (u_state + u_param) * abs(pf[i])
    dt = np.complex128 if is_complex else np.float64
    return Run(
        p=np.array(pf, dt).reshape(shape),
        state=np.array(v, np.float64).reshape(shape),
        p_bound=np.array(ep).reshape(shape),
        state_bound=np.array(ev).reshape(shape),
    )


def _floor(dtype_name: str) -> float:
    smallest = {
        "float16": 2.0**-24,
        "bfloat16": 2.0**-133,
        "float32": 2.0**-149,
        "complex64": 2.0**-149,
    }.get(dtype_name, 5e-324)
    return 4.0 * smallest


def assert_close(actual, expected, bound, dtype_name: str, what: str, *, scale: float = 1.0):
    """``|actual − expected| <= scale·(2·bound·(√2 if complex) + floor)`` element by element
    (NaN fails), with the worst offender in the message."""
    a = as_float64(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    factor = 2.0 * (math.sqrt(2.0) if np.iscomplexobj(e) else 1.0)
    floor = _floor(dtype_name)
    worst = None
    fa, fe, fb = a.reshape(-1), e.reshape(-1), np.asarray(bound).reshape(-1)
    for i in range(fa.size):
        diff = abs(complex(fa[i]) - complex(fe[i]))
        tol = scale * (factor * float(fb[i]) + floor)
        if not diff <= tol:
            ratio = diff / tol if tol > 0 else math.inf
            if worst is None or not ratio <= worst[0]:
                worst = (ratio, i, complex(fa[i]), complex(fe[i]), diff, tol)
    if worst is not None:
        ratio, i, got, want, diff, tol = worst
        raise AssertionError(
            f"{what} ({dtype_name}): element {i} got {got!r}, reference {want!r}, "
            f"|diff|={diff:.3e} > tol={tol:.3e} ({ratio:.3g}x)"
        )
