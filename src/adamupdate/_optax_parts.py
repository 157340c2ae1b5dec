"""The dtypes and trees of :mod:`adamupdate.optax`: which dtype each state takes, the checks
of the options that are not MATLAB's, and tree maps that pass masked-out (``None``) leaves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import _validate

_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _state_dtype(dtype: Any) -> Any:
    """The averages' dtype: float32 for half precision (as adamupdate keeps them)."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype in _HALF else dtype


def _real(dtype: Any) -> Any:
    return jnp.finfo(dtype).dtype


def _param_dtype(path: Any, p: Any) -> Any:
    """A parameter's dtype, canonical for JAX's precision setting: a Python float or int is a
    default float (as ``jnp.asarray(1.0)``), a Python complex a default complex."""
    if isinstance(p, int) and not isinstance(p, bool):
        p = float(p)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(p))
    if not jnp.issubdtype(dtype, jnp.inexact):
        where = jax.tree_util.keystr(path)
        raise TypeError(
            f"params{where} has dtype {dtype}: Adam updates floating-point or complex "
            "parameters only"
        )
    return dtype


def _mu_dtype(path: Any, param_dtype: Any, mu_dtype: Any) -> Any:
    """The first moment's dtype: ``mu_dtype`` (canonical), or the averages' default."""
    if mu_dtype is None:
        return _state_dtype(param_dtype)
    dtype = jax.dtypes.canonicalize_dtype(mu_dtype)
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and not jnp.issubdtype(
        dtype, jnp.complexfloating
    ):
        raise TypeError(
            f"mu_dtype={dtype} cannot hold the first moment of params"
            f"{jax.tree_util.keystr(path)}, which are {param_dtype}: the imaginary part would "
            "be lost (give a complex mu_dtype)"
        )
    return dtype


def _check_moment_dtype(mu_dtype: Any) -> None:
    try:
        dtype = jnp.dtype(mu_dtype)
    except TypeError as error:
        raise TypeError(f"mu_dtype must be a dtype or None, got {mu_dtype!r}") from error
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"mu_dtype must be a floating-point or complex dtype, got {dtype}")


def _check_not_matlab_options(eps_root: Any, nesterov: Any) -> None:
    """Refuse what optax.adam offers and MATLAB's adamupdate does not have."""
    if nesterov:
        raise ValueError(
            f"nesterov={nesterov!r}: MATLAB's adamupdate has no Nesterov variant, so this "
            "would not be its step (optax.nadam is Adam with Nesterov momentum); use False"
        )
    if eps_root is None:
        return
    if _validate.is_traced(eps_root):
        raise TypeError(
            "eps_root is traced (optax.inject_hyperparams makes it a state): it must be 0, "
            "which cannot be checked under jax.jit; leave it out or list it in static_args"
        )
    if _validate.learn_rate(eps_root, "eps_root") != 0:
        raise ValueError(
            f"eps_root={eps_root!r}: MATLAB's adamupdate adds epsilon outside the square root "
            "only (sqrt(v) + epsilon) and has no term inside it, so a non-zero eps_root would "
            "not be its step; use 0 or None"
        )


def _as_array(x: Any) -> Any:
    """A gradient leaf as an array: Python numbers as ``jnp.asarray`` makes them (an int as a
    float)."""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        x = float(x)
    return jnp.asarray(x)


def _real_part(v: Any) -> Any:
    """MATLAB's real v from a state that stores it complex (``optax.adam``'s, for complex
    parameters: the imaginary part is zero)."""
    return v.real if jnp.iscomplexobj(v) else v


def _like(scalar: Any, dtype: Any) -> Any:
    """A scalar (a Python number, or an array such as inject_hyperparams makes) in ``dtype``'s
    real precision: a double times a single array is a single operation, as in MATLAB."""
    return jnp.asarray(scalar, dtype=_real(dtype))


def _is_number(x: Any) -> bool:
    """A Python or NumPy number (checked here); arrays and tracers, as inject_hyperparams
    passes, are taken as they are."""
    return isinstance(x, (int, float)) or (hasattr(x, "dtype") and not isinstance(x, jax.Array))


def _increment(count: Any) -> Any:
    """``count + 1``, held at int32's largest value instead of wrapping (as optax's
    ``safe_increment``, which optax 0.2.0, our oldest, does not have under that name)."""
    top = jnp.iinfo(jnp.int32).max
    return jnp.where(count < top, count + 1, top).astype(jnp.int32)


def _tree_map(f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``jax.tree.map`` that passes ``None`` leaves (masked-out updates) through."""
    return jax.tree.map(
        lambda x, *xs: None if x is None else f(x, *xs), tree, *rest, is_leaf=lambda x: x is None
    )
