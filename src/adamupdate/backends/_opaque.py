"""The memory parts of the ``Backend`` protocol for libraries whose buffers this package never
writes itself (JAX, other Array-API arrays): their arrays are new or donated results, never the
caller's memory written in place, so nothing they hold can overlap or need a check."""

from __future__ import annotations

from typing import Any


def is_writeable(x: Any) -> bool:
    return True


def memory(x: Any) -> None:
    return None  # no address this package writes through: immutable or computed anew


def internal_overlap(x: Any) -> bool:
    return False


def shares_memory(a: Any, b: Any) -> bool:
    return False


def finish(original: Any, updated: Any) -> Any:
    return updated


finish_state = finish
