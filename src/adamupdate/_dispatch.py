"""Which backend handles a leaf: decided here, once per leaf type, and lazily.

Following ``array_api_compat.array_namespace``, a library is only asked about a leaf once it is
already in ``sys.modules``: asking about a NumPy array never imports torch or JAX.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .backends import Backend

_BACKEND_BY_TYPE: dict[type, Backend] = {}


def backend_of(leaf: Any) -> Backend:
    """The backend module (see :mod:`adamupdate.backends`) for ``leaf``.

    Raises
    ------
    TypeError
        If ``leaf`` is not an array or number any backend handles.
    """
    backend = _BACKEND_BY_TYPE.get(type(leaf))
    if backend is None:
        backend = _detect(leaf)
        _BACKEND_BY_TYPE[type(leaf)] = backend
    return backend


def _detect(leaf: Any) -> Backend:
    if isinstance(leaf, (bool, np.bool_)):
        raise TypeError(f"expected a floating-point array or number, got bool {leaf!r}")
    if isinstance(leaf, (np.ndarray, np.generic, float, int, complex)):
        from .backends import numpy_backend

        return numpy_backend
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(leaf, torch.Tensor):
        from .backends import torch_backend

        return torch_backend
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(leaf, (jax.Array, jax.core.Tracer)):
        from .backends import jax_backend

        return jax_backend
    if hasattr(leaf, "__array_namespace__"):
        try:
            from .backends import array_api_backend
        except ImportError as error:
            raise TypeError(
                f"{type(leaf).__name__} arrays need array-api-compat: "
                "pip install 'adamupdate[array-api]'"
            ) from error
        return array_api_backend
    raise TypeError(
        f"expected an array (NumPy, PyTorch, JAX or Array-API) or a number, "
        f"got {type(leaf).__module__}.{type(leaf).__name__}"
    )
