"""Compiled kernels: the fused memory walk of an update rule (numba, the ``fast`` extra)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


def table_rows(
    params: Sequence[Any],
    grads: Sequence[Any],
    states: Sequence[Sequence[Any]],
    outputs: Sequence[Sequence[Any]],
    fresh: bool,
) -> tuple[Sequence[Any], ...]:
    """The numba kernel's seven rows (:data:`adamupdate.kernels.numba_step.ROLES`): p, g, two
    states, p out, two states out. Fresh: the state rows are not read (any arrays do); a rule
    with one state repeats it, a rule with none has the parameters' rows there (never
    written)."""
    ins = (params, grads) if fresh else (*states, *states)[:2]
    outs = (*outputs[1:], *outputs[1:])[:2] or (outputs[0], outputs[0])
    return (params, grads, *ins, outputs[0], *outs)


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
