"""Large outputs of functional calls, in memory that provably nobody else can reach.

A functional call, ``p, m, v = adamupdate(p, g, m, v, t)``, returns new arrays, and the caller
drops the old ones when it rebinds its names. Fresh large arrays are expensive: the operating
system zeroes every page on its first touch, as much memory traffic again as the step itself.
So a large CPU output (NumPy, or a CPU tensor) lives in a :class:`Memory` block that this
library allocated, and each block keeps the block of the array it replaced — one generation,
no more. On the next call, the output that replaces an array in block ``B`` may take ``B``'s
predecessor, if and only if nothing but ``B`` refers to that block:

- every array, view or tensor of a block's memory refers to the block (a NumPy view's ``base``
  chain ends at it; a tensor made with ``torch.from_numpy`` keeps its array, which keeps the
  block; a ``memoryview`` keeps its exporter), so Python's reference count of the block counts
  every way to its memory; no weak reference to it may exist either;
- only blocks this library made are ever taken, never an array the caller passed in or owns;
- a block is taken under a lock, so two threads never take the same one.

Tensors find their block through a weak address book (:func:`register`), which keeps nothing
alive; a tensor carries nothing extra, so ``torch.save`` of an output saves its values only.

Nothing is kept anywhere else: when the caller drops the arrays a call returned, their blocks
and their predecessors go with them. The cost is memory: while a loop runs, each large output
keeps its predecessor, two generations of parameters and averages instead of one.
"""

from __future__ import annotations

import math
import sys
import threading
import weakref
from typing import Any

import numpy as np

#: Outputs below this size come from the allocator's free lists cheaply anyway.
MIN_BYTES = 1 << 20

_TAKE = threading.Lock()
_CPYTHON = hasattr(sys, "getrefcount")  # elsewhere reference counts are unknown: no reuse


class Memory(np.ndarray):
    """Bytes that outputs are laid in (an ``ndarray`` subclass so that NumPy's allocator,
    which asks Linux for huge pages, makes it; subclasses carry a ``__dict__``). Its
    ``previous`` attribute holds the block of the array its output replaced."""

    previous: Memory | None


def new_array(shape: tuple[int, ...], dtype: np.dtype, replacing: Any = None) -> np.ndarray:
    """A new C-contiguous array of ``shape`` and ``dtype`` that replaces ``replacing`` (the
    input it is the update of, or ``None``)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or not _CPYTHON:
        return np.empty(shape, dtype)
    replaced = block_of(replacing)
    memory = _take_previous(replaced, nbytes) if replaced is not None else None
    if memory is None:
        memory = np.ndarray.__new__(Memory, (nbytes,), np.uint8)
    memory.previous = replaced
    return np.ndarray(shape, dtype, buffer=memory)


def block_of(array: Any) -> Memory | None:
    """The block behind an output of :func:`new_array` (a NumPy array, or a tensor made from
    one by :func:`adamupdate.backends._torch_memory._new_like`), else ``None``."""
    base = getattr(array, "base", None)
    if type(base) is Memory:
        return base
    storage = getattr(array, "untyped_storage", None)
    if storage is None:
        return None
    try:
        storage = storage()
        ref = _BY_ADDRESS.get(storage.data_ptr())
        found = ref() if ref is not None else None
    except (RuntimeError, TypeError):  # no storage: a tensor subclass, a meta tensor
        return None
    # the tensor's storage is exactly the block's memory (a block is made for one output)
    return found if found is not None and found.nbytes == storage.nbytes() else None


def register(memory: Memory) -> None:
    """Let :func:`block_of` find ``memory`` from a tensor laid in it (a tensor cannot say
    what array it was made from). Only a weak reference is kept, by address."""
    address = _address(memory)

    def forget(ref: weakref.ReferenceType[Memory]) -> None:
        if _BY_ADDRESS.get(address) is ref:
            del _BY_ADDRESS[address]

    _BY_ADDRESS[address] = weakref.ref(memory, forget)


#: Blocks that tensors are laid in, by address; weak, so an entry goes with its block.
_BY_ADDRESS: dict[int, weakref.ReferenceType[Memory]] = {}


def _take_previous(replaced: Memory, nbytes: int) -> Memory | None:
    """``replaced``'s predecessor if nothing else can reach it, else ``None``; either way
    ``replaced`` lets go of it, so a block never holds more than one generation."""
    with _TAKE:
        spare = replaced.__dict__.pop("previous", None)
    if spare is None or spare.nbytes != nbytes:
        return None
    # The references now: ``spare`` here and getrefcount's own argument — no array, view,
    # tensor or buffer of its memory is alive anywhere — and no weak reference but the
    # address book's own.
    if sys.getrefcount(spare) != 2:
        return None
    refs = weakref.getweakrefs(spare)
    if refs and (len(refs) > 1 or refs[0] is not _BY_ADDRESS.get(_address(spare))):
        return None
    return spare


def _address(memory: Memory) -> int:
    return int(memory.__array_interface__["data"][0])
