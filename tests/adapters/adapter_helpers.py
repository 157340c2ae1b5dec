"""What the adapter tests share: gradients small enough that where ε sits shows."""

from __future__ import annotations

import numpy as np


def small_gradients(rng, shape, steps, dtype, low=-6.0, high=-3.0):
    """Gradients of magnitude 1e-6..1e-3, random signs: ε's placement matters."""
    out = []
    for _ in range(steps):
        g = rng.standard_normal(shape) * 10 ** rng.uniform(low, high, shape)
        if np.dtype(dtype).kind == "c":
            g = g + 1j * rng.standard_normal(shape) * 10 ** rng.uniform(low, high, shape)
        out.append(np.asarray(g).astype(dtype))
    return out
