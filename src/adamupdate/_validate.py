"""Checks on the scalar arguments, made before anything is touched.

MATLAB's rules (its reference page, Input Arguments): ``iteration`` a positive integer,
``learnRate`` a positive scalar (MATLAB accepts 0, and so do we), ``gradDecay`` and
``sqGradDecay`` in [0, 1), ``epsilon`` a positive scalar. We also insist on finite values: an
infinite or NaN hyper-parameter would silently turn every parameter into NaN.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any


def is_traced(value: Any) -> bool:
    """True for a JAX tracer (a value inside ``jax.jit``), whose number is not known yet."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, jax.core.Tracer)


def _real_scalar(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        size = getattr(value, "size", None)
        if size == 1 and not isinstance(value, bool):
            try:
                return _real_scalar(name, value.item())
            except (TypeError, ValueError, AttributeError):
                pass
        raise TypeError(f"{name} must be a real scalar, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    return number


def learn_rate(value: Any, name: str = "learn_rate") -> float:
    """A finite scalar >= 0."""
    number = _real_scalar(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number!r}")
    return number


def decay(value: Any, name: str) -> float:
    """A finite scalar in [0, 1)."""
    number = _real_scalar(name, value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {number!r}")
    return number


def epsilon(value: Any) -> float:
    """A finite scalar > 0."""
    number = _real_scalar("epsilon", value)
    if number <= 0:
        raise ValueError(f"epsilon must be > 0, got {number!r}")
    return number


def iteration(value: Any) -> int:
    """A positive integer: a Python/NumPy integer, or a float with an integral value (MATLAB's
    double ``1``). ``bool`` is refused: ``True`` is almost certainly a mistake here."""
    if isinstance(value, bool) or (hasattr(value, "dtype") and str(value.dtype) == "bool"):
        raise TypeError(f"iteration must be a positive integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        number_f = float(value)
        if not (math.isfinite(number_f) and number_f.is_integer()):
            raise ValueError(f"iteration must be a positive integer, got {value!r}")
        number = int(number_f)
    elif getattr(value, "size", None) == 1 and hasattr(value, "item"):
        return iteration(value.item())
    else:
        raise TypeError(
            f"iteration must be a positive integer, got {type(value).__name__} {value!r}"
        )
    if number < 1:
        raise ValueError(
            f"iteration must be a positive integer (1 on the first call), got {value!r}"
        )
    return number
