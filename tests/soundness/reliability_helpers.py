"""Shared parts of the test_reliability_*.py files (issue #11's reliability contract): the
backends, snapshots of every buffer (bitwise), and leaves lifted into or copied out of a library.

The contract is written from MATLAB's adamupdate reference page, docs/numerics.rst, the public
docstring of ``adamupdate`` and issue #11, not from the implementation; expected values come
from the independent float64 reference in ``tests/reference.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - jax is an optional dependency
    jax = jnp = None


needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
needs_jax = pytest.mark.skipif(jax is None, reason="needs jax")

BACKENDS = [
    "numpy",
    pytest.param("torch", marks=needs_torch),
    pytest.param("jax", marks=needs_jax),
]
ARGS = ("params", "grad", "avg_grad", "avg_sq_grad")


# --- snapshots: every buffer, bitwise --------------------------------------------------------


def _record(x):
    """Identity, dtype, shape and raw bytes of one leaf (``None`` stays ``None``)."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return ("numpy", id(x), x.dtype.str, x.shape, x.tobytes())
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_sparse:
            return (
                "torch-sparse",
                id(x),
                str(t.dtype),
                tuple(t.shape),
                _record(t._indices().clone())[2:],  # without the id of a temporary clone
                _record(t._values().clone())[2:],
            )
        raw = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return ("torch", id(x), str(t.dtype), tuple(t.shape), raw)
    if jax is not None and isinstance(x, jax.Array):
        if x.is_deleted():
            return ("jax-deleted", id(x))
        return ("jax", id(x), str(x.dtype), tuple(x.shape), np.asarray(x).tobytes())
    if np.isscalar(x):
        return ("scalar", repr(x))
    raise AssertionError(f"cannot snapshot {type(x)}")


def _snapshot(tree):
    if torch is not None and isinstance(tree, torch.nn.Module):
        return {
            "module": id(tree),
            **{name: _record(p) for name, p in tree.named_parameters()},
        }
    if isinstance(tree, dict):
        return {"dict": id(tree), **{repr(k): _snapshot(v) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        return [type(tree).__name__, id(tree), *[_snapshot(v) for v in tree]]
    return _record(tree)


def snapshot(trees: tuple):
    """A bitwise record of every buffer (and the identity of every container and leaf) in each
    of ``trees``: nested lists/tuples/dicts of arrays, or networks."""
    assert isinstance(trees, tuple)
    return {f"argument {i}": _snapshot(tree) for i, tree in enumerate(trees)}


def _first_difference(before, after, path="inputs"):
    if type(before) is not type(after):
        return path
    if isinstance(before, dict):
        if before.keys() != after.keys():
            return path + " (keys)"
        for key in before:
            found = _first_difference(before[key], after[key], f"{path}[{key}]")
            if found:
                return found
        return None
    if isinstance(before, list):
        if len(before) != len(after):
            return path + " (length)"
        if before[:2] != after[:2]:
            return path + " (the container was replaced)"
        for i, (b, a) in enumerate(zip(before[2:], after[2:])):
            found = _first_difference(b, a, f"{path}[{i}]")
            if found:
                return found
        return None
    if before != after:
        if isinstance(after, tuple) and after[0] == "jax-deleted":
            return path + " (JAX buffer deleted/donated)"
        return path
    return None


def assert_unchanged(trees: tuple, before, what="inputs"):
    """Every buffer of ``trees`` is bitwise what :func:`snapshot` recorded (same objects too)."""
    where = _first_difference(before, snapshot(trees), what)
    assert where is None, f"{where} changed although the call was refused or not in place"


def names(message: str, path: str) -> bool:
    """``path`` (e.g. ``grad[1]``) appears in ``message`` as a whole (not inside avg_grad[1])."""
    return re.search(r"(?<!\w)" + re.escape(path), message) is not None


def to_numpy(x) -> np.ndarray:
    """A NumPy copy of a leaf (bfloat16 goes through float32, exactly)."""
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.clone().numpy()
    return np.array(x, copy=True)


def lift(arr: np.ndarray, backend: str):
    """A fresh, independent ``backend`` array holding ``arr``."""
    if backend == "numpy":
        return np.array(arr, copy=True)
    if backend == "torch":
        return torch.from_numpy(np.array(arr, copy=True))
    if backend == "jax":
        return jnp.asarray(np.array(arr, copy=True))
    raise AssertionError(backend)


def independent_copy(x):
    """A copy sharing no memory with anything (contiguous)."""
    if x is None:
        return None
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().clone(memory_format=torch.contiguous_format)
    return np.array(x, copy=True)
