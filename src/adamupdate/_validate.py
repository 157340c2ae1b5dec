"""Checks on the scalar arguments, made before anything is touched.

MATLAB's rules (its reference page, Input Arguments): ``iteration`` a positive integer,
``learnRate`` a positive scalar (MATLAB accepts 0, and so do we), ``gradDecay`` and
``sqGradDecay`` in [0, 1), ``epsilon`` a positive scalar. We also insist on finite values: an
infinite or NaN hyper-parameter would silently turn every parameter into NaN.

Each argument may be a Python or NumPy number, or a one-element array or tensor of any library
(a 0-d ``torch.tensor(1)``, ``np.array(0.9)``, a JAX array): its value is taken with ``.item()``,
as MATLAB takes a 1-by-1 ``dlarray``. Libraries are recognised by what they do (``.item()``,
``.numel()`` or ``.size``), so checking a number never imports torch or JAX. Booleans and complex
numbers are refused whatever their container: ``True`` or ``1+0j`` here is almost surely a
mistake. Every message names the argument and shows the value.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

_FLOAT64_MAX = sys.float_info.max


def is_traced(value: Any) -> bool:
    """True for a JAX tracer (a value inside ``jax.jit``), whose number is not known yet."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, jax.core.Tracer)


def learn_rate(value: Any, name: str = "learn_rate") -> float:
    """A finite scalar >= 0."""
    number = _finite(name, value, "a finite number >= 0")
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {_shown(value)}")
    return number


def decay(value: Any, name: str) -> float:
    """A finite scalar in [0, 1)."""
    number = _finite(name, value, "a finite number in [0, 1)")
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {_shown(value)}")
    return number


def epsilon(value: Any) -> float:
    """A finite scalar > 0."""
    number = _finite("epsilon", value, "a finite number > 0")
    if number <= 0:
        raise ValueError(f"epsilon must be > 0, got {_shown(value)}")
    return number


def iteration(value: Any) -> int:
    """A positive integer: a Python/NumPy integer, or a float with an integral value (MATLAB's
    double ``1``), or a one-element array or tensor holding one.

    Any count up to the largest float64 is valid — the bias correction is computed in double, as
    MATLAB does, and for large counts it is simply 1.0. Beyond that it cannot be computed.
    """
    kind = "a positive integer"
    number = _real("iteration", value, kind)
    if not isinstance(number, numbers.Integral):
        as_float = float(number)
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise ValueError(f"iteration must be {kind}, got {_shown(value)}")
        number = as_float
    count = int(number)
    if count < 1:
        raise ValueError(f"iteration must be {kind} (1 on the first call), got {_shown(value)}")
    if count > _FLOAT64_MAX:
        raise ValueError(
            f"iteration must be at most {_FLOAT64_MAX!r} (its bias correction is computed in "
            f"float64), got {_shown(value)}"
        )
    return count


def _finite(name: str, value: Any, kind: str) -> float:
    number = _real(name, value, kind)
    try:
        as_float = float(number)
    except OverflowError:  # an int beyond the float64 range
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {_shown(value)}")
    return as_float


def _real(name: str, value: Any, kind: str) -> float | numbers.Real:
    """The real number ``value`` stands for; a one-element array or tensor gives its element."""
    if type(value) is float or type(value) is int:  # the usual case, without ABC checks
        return value
    number = value if isinstance(value, numbers.Number) else _only_element(name, value, kind)
    # bool is an Integral and NumPy/torch booleans come out of .item() as bool: one check.
    if isinstance(number, bool):
        raise TypeError(f"{name} must be {kind}, not a boolean: got {_shown(value)}")
    if isinstance(number, numbers.Complex) and not isinstance(number, numbers.Real):
        raise TypeError(f"{name} must be {kind}, not complex: got {_shown(value)}")
    if not isinstance(number, numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {_shown(value)}")
    return number


def _only_element(name: str, value: Any, kind: str) -> Any:
    if is_traced(value):
        raise TypeError(
            f"{name} must be {kind} known before jax.jit traces the call (only iteration may "
            f"be traced), got {_shown(value)}"
        )
    item = getattr(value, "item", None)
    if not callable(item):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {_shown(value)}")
    count = _element_count(value)
    if count is not None and count != 1:
        raise TypeError(
            f"{name} must be a single number, got {type(value).__name__} with {count} "
            f"elements: {_shown(value)}"
        )
    try:
        return item()
    except (TypeError, ValueError, RuntimeError) as exc:  # an .item() that is not NumPy's
        raise TypeError(
            f"{name} must be {kind}, got {type(value).__name__} {_shown(value)} ({exc})"
        ) from None


def _element_count(value: Any) -> int | None:
    # torch's .size is a method and .numel() the count; NumPy, JAX and CuPy give .size.
    numel = getattr(value, "numel", None)
    if callable(numel):
        return int(numel())
    size = getattr(value, "size", None)
    return size if isinstance(size, int) else None


def _shown(value: Any) -> str:
    """``repr(value)`` on one short line; huge ints by magnitude (their repr may even fail)."""
    if isinstance(value, int) and abs(value) > _FLOAT64_MAX:
        exponent = math.floor(math.log10(abs(value)))
        return f"about {'-' if value < 0 else ''}1e{exponent}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."
