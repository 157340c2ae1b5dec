"""Large output buffers from the inputs a caller has dropped.

A functional call, ``p, m, v = adamupdate(p, g, m, v, t)``, returns new arrays, and the caller
drops the old ones the moment it rebinds its names. Fresh large arrays are expensive — the
kernel zeroes every page on first touch, as much memory traffic again as the whole step — so
after a call its large inputs are kept here, and the next call takes as outputs those that
nothing else refers to any more (no variable, container or view anywhere: the reference count
says so). An array the caller still uses is never touched; it simply stays here until the
caller lets it go, or until newer arrays push it out.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

#: Arrays below this size come from the allocator's free lists cheaply anyway.
MIN_BYTES = 1 << 20
#: At most this many arrays are kept, the oldest dropped first.
MAX_KEPT = 24

_REFCOUNTS = hasattr(sys, "getrefcount")  # CPython; elsewhere nothing is recycled


class Recycler:
    """Arrays kept by ``(kind, shape, dtype, device)``; see the module docstring.

    An array is reused when no Python object but the recycler refers to it and
    ``reusable(x)`` agrees — it owns its memory, which nothing else shares (for a torch tensor,
    no other tensor views its storage).
    """

    def __init__(self, reusable: Callable[[Any], bool]) -> None:
        self._kept: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self._reusable = reusable
        self._lock = threading.Lock()

    def keep(
        self, arrays: Iterable[Any], key: Callable[[Any], Any], nbytes: Callable[[Any], int]
    ) -> None:
        """Keep the large ones of ``arrays`` (a call's inputs, about to be dropped)."""
        if not _REFCOUNTS:
            return
        with self._lock:
            for array in arrays:
                if nbytes(array) >= MIN_BYTES and id(array) not in self._kept:
                    self._kept[id(array)] = (key(array), array)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)

    def take(self, key: Any) -> Any:
        """A kept array of ``key`` that nothing else refers to, or ``None``."""
        if not self._kept:
            return None
        with self._lock:
            for ident in [i for i, (k, _) in self._kept.items() if k == key]:
                array = self._kept.pop(ident)[1]
                # The only references now: ``array`` and getrefcount's own argument.
                if sys.getrefcount(array) == 2 and self._reusable(array):
                    return array
                self._kept[ident] = (key, array)
        return None

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
