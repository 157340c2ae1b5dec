"""The stream reference: the memory traffic of an Adam step with almost no arithmetic.

It reads ``p, g, m, v`` and writes ``p, m, v`` -- the same bytes an in-place Adam step must
move -- on all cores in one pass, so its time is this machine's practical floor for a step, and
``time / stream time`` says how far an implementation is from it (1.0 = at the limit). For a
complex step ``p, g, m`` hold two reals per value of the real ``v``.

This module imports numba: import it only when numba is installed.
"""

from __future__ import annotations

from typing import Any

import numba


@numba.njit(parallel=True, fastmath=False, cache=True)
def stream_real(p: Any, g: Any, m: Any, v: Any) -> None:
    """``m += g; v += g; p += g``: 4 reads and 3 writes per value."""
    for i in numba.prange(v.shape[0]):
        x = g[i]
        m[i] += x
        v[i] += x
        p[i] += x


@numba.njit(parallel=True, fastmath=False, cache=True)
def stream_pairs(p: Any, g: Any, m: Any, v: Any) -> None:
    """As :func:`stream_real` with two values of ``p, g, m`` per value of ``v`` (complex).

    Two unit-stride passes: indexing ``2 * i`` would cost numba's negative-index check per
    access and keep the loop from vectorizing, which would make the floor too slow.
    """
    for i in numba.prange(p.shape[0]):
        x = g[i]
        m[i] += x
        p[i] += x
    for i in numba.prange(v.shape[0]):
        v[i] += v[i]
