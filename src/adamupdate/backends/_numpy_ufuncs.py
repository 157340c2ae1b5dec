"""NumPy's ufunc route of :mod:`adamupdate.backends.numpy_backend`: a rule's step body on one
leaf, for dtypes and groups the numba kernel does not take (half precision, strided or small
groups before numba is loaded, numba absent)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rules import Rule

_HALF = np.dtype(np.float16)
# Elements per chunk: 4 arrays x 64K x 8 B stays inside a core's L2.
_CHUNK = 1 << 16


def real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def ufunc_leaf(
    rule: Rule,
    p: np.ndarray,
    g: np.ndarray,
    states: tuple[np.ndarray | None, ...],
    p_out: np.ndarray,
    states_out: tuple[np.ndarray, ...],
    c: Any,
) -> list[np.ndarray]:
    """One leaf with ufuncs, in cache-sized chunks, in the precision of the states (float32 for
    half precision); complex arrays as pairs of reals (see :mod:`adamupdate.rules`). Returns
    the new arrays for ``p_out`` and ``states_out``, which are not written here."""
    compute = np.result_type(np.float32 if p.dtype == _HALF else p.dtype, *states_out)
    real = real_dtype(compute)
    pairs = compute.kind == "c"

    def flat(a: Any, dtype: np.dtype, squared: bool = False) -> Any:
        if a is None:
            return None
        a = np.asarray(a, dtype=dtype).reshape(-1)  # a copy only where the dtype differs
        if not pairs:
            return a
        return a.reshape(-1, 1) if squared else a.view(real).reshape(-1, 2)

    p_flat, g_flat = flat(p, compute), flat(g, compute)
    ins = [flat(x, real if sq else compute, sq) for x, sq in zip(states, rule.squared)]
    results = [np.empty(p.shape, compute)]
    results += [np.empty(p.shape, real if sq else compute) for sq in rule.squared]
    outs = [flat(results[0], compute)] + [
        flat(x, x.dtype, sq) for x, sq in zip(results[1:], rule.squared)
    ]
    for start in range(0, p_flat.shape[0], _CHUNK):
        chunk = slice(start, start + _CHUNK)
        g_chunk = g_flat[chunk]
        if pairs:
            g2 = g_chunk[:, :1] * g_chunk[:, :1]
            g2 += g_chunk[:, 1:] * g_chunk[:, 1:]
        else:
            g2 = g_chunk * g_chunk
        states_chunk = (None if x is None else x[chunk] for x in ins)
        new = rule.step(np, c, p_flat[chunk], g_chunk, g2, *states_chunk)
        for out, value in zip(outs, new):
            out[chunk] = value
    return results
