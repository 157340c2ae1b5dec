"""Compiled kernels: the fused memory walk of an update rule (numba, the ``fast`` extra)."""

from __future__ import annotations

import sys
from types import ModuleType


def numba_kernel() -> ModuleType | None:
    """The numba kernel module when numba is installed and works, else ``None`` (imports numba
    on the first call, ~0.4 s)."""
    try:
        from . import numba_step
    except ImportError:
        return None
    return numba_step if numba_step.available() else None


def numba_kernel_ready() -> bool:
    """Whether the numba kernel is already built in this process (asks nothing of numba)."""
    loaded = sys.modules.get(f"{__name__}.numba_step")
    return loaded is not None and loaded.built()
