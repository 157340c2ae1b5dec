"""The memory of PyTorch tensors, for :mod:`adamupdate.backends.torch_backend`: where their
elements are, whether they overlap, the bulk check of a column of tensors, and the layout of
new outputs and staged copies."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from .. import _reuse
from .._memory import overlaps_itself
from ._torch_dtensor import _dtensor_type

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}


_DTYPE = operator.attrgetter("dtype")
_IS_CPU = operator.attrgetter("is_cpu")


def _addressable(x: torch.Tensor) -> bool:
    """Whether ``x``'s elements are where its ``data_ptr()`` and strides say: plain tensors
    and subclasses that keep their own memory, not DTensors (whose shape is global while
    their memory is one shard; their overlap is their local tensors')."""
    if type(x) in _PLAIN:
        return True
    dtensor = _dtensor_type()
    return not (dtensor is not None and isinstance(x, dtensor))


def memory(x: torch.Tensor) -> tuple[int, int] | None:
    if not x.numel() or not _addressable(x):
        return None
    try:
        lo = x.data_ptr()
    except RuntimeError:  # a subclass without storage of its own
        return None
    return lo, lo + _extent(x) * x.element_size()


def internal_overlap(x: torch.Tensor) -> bool:
    if x.numel() < 2 or not _addressable(x):
        return False
    return overlaps_itself(tuple(x.shape), x.stride(), 1)  # strides in elements


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    if _is_dense(a) and _is_dense(b):
        return True  # a dense tensor covers every byte of its range
    try:
        return bool(np.shares_memory(a.detach().numpy(), b.detach().numpy()))
    except (TypeError, RuntimeError):  # off the CPU, bfloat16, lazy views: cannot tell
        return True


def _plain_contiguous(
    column: list, dtype: torch.dtype, numels: np.ndarray, writeable: bool
) -> np.ndarray | None:
    """The data addresses of ``column`` if every tensor is a plain contiguous CPU tensor of
    ``dtype`` without a lazy conjugate or negative bit, with storage behind each of its
    ``numels`` elements (a storage can shrink under a tensor) and, if ``writeable``, not an
    inference tensor; else ``None``. One C-level pass per attribute."""
    n = len(column)
    if not all(map(_PLAIN.__contains__, map(type, column))):
        return None
    if list(map(_DTYPE, column)).count(dtype) != n or not all(map(_IS_CPU, column)):
        return None
    if not all(map(torch.Tensor.is_contiguous, column)) or any(map(torch.Tensor.is_neg, column)):
        return None
    if dtype.is_complex and any(map(torch.Tensor.is_conj, column)):
        return None
    if writeable and any(map(torch.Tensor.is_inference, column)):
        return None
    ends = np.fromiter(map(torch.Tensor.storage_offset, column), np.intp, n)
    ends += numels
    capacity = np.fromiter(
        map(torch.UntypedStorage.nbytes, map(torch.Tensor.untyped_storage, column)), np.intp, n
    )
    if not np.all(ends * dtype.itemsize <= capacity):
        return None
    addresses = np.fromiter(map(torch.Tensor.data_ptr, column), np.intp, n)
    if not np.all(addresses | (numels == 0)):  # memory behind every element (a ZeroTensor's
        return None  # data pointer is null)
    return addresses


def _new_like(p: torch.Tensor, dtype: torch.dtype, replacing: Any = None) -> torch.Tensor:
    """A new output laid out as ``p``, replacing the input ``replacing``: never memory that
    anyone else can reach.

    A large contiguous CPU output lives in a block of :mod:`adamupdate._reuse` (made by NumPy,
    which asks Linux for transparent huge pages; PyTorch's CPU allocator does not, and then the
    step's first touch of each 4 KiB page costs more than the step itself), which may be the
    block of an earlier output that nothing refers to any more.
    """
    numpy_dtype = _NUMPY_DTYPES.get(dtype)
    if (
        numpy_dtype is not None
        and p.is_cpu
        and p.numel() * dtype.itemsize >= _reuse.MIN_BYTES
        and p.is_contiguous()
    ):
        array = _reuse.new_array(tuple(p.shape), numpy_dtype, replacing)
        if type(array.base) is _reuse.Memory:
            _reuse.register(array.base)
        return torch.from_numpy(array)
    return torch.empty_like(p, dtype=dtype)


def _extent(t: torch.Tensor) -> int:
    """Elements from a tensor's first to its last, as its strides lay them out."""
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0


def _is_dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _is_lazy(t: torch.Tensor) -> bool:
    """A conjugate or negative *view*: its memory holds the unconjugated/unnegated values."""
    return t.is_conj() or t.is_neg()


def _dense(p: torch.Tensor) -> torch.Tensor:
    """The parameter itself when the kernels can walk it, else a contiguous copy."""
    if _is_dense(p) and not _is_lazy(p):
        return p
    return p.resolve_conj().resolve_neg().contiguous()


def _like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``t`` in ``p``'s memory layout: the kernels pair elements by their place in memory."""
    if t.stride() == p.stride() and not _is_lazy(t):
        return t
    return torch.empty_like(p, dtype=t.dtype).copy_(t)


def _full(state: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """MATLAB's scalar-0 average of a frozen parameter, broadcast to the parameter's shape."""
    return state if state.shape == p.shape else state.expand(p.shape).clone()
