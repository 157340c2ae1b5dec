"""Which buffers overlap: in-place updates need every written buffer to be its own.

``p, m, v`` are written and ``g`` is read, element by element, possibly on several threads: a
gradient that is also a state, a state used for two parameters, or two slices that overlap
would make the step read values it has already overwritten. Overlap between gradients is fine
(they are only read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Region:
    """The bytes ``[lo, hi)`` of one leaf of one argument."""

    lo: int
    hi: int
    written: bool
    argument: str
    index: int
    leaf: Any
    backend: Any


def overlaps_itself(shape: tuple[int, ...], strides: tuple[int, ...], item: int) -> bool:
    """Whether two elements of a strided array may share memory (a broadcast view, stride 0).

    Sorted by stride, each dimension must step past everything the smaller ones span; arrays
    that fail this (rare hand-made ``as_strided`` views) count as overlapping.
    """
    extent = item
    for stride, n in sorted((abs(s), n) for s, n in zip(strides, shape) if n > 1):
        if stride < extent:
            return True
        extent += stride * (n - 1)
    return False


def first_overlap(regions: list[Region]) -> tuple[Region, Region] | None:
    """The first pair of regions that share memory where at least one is written, else ``None``.

    Sorting by start makes this O(n log n): a region can only overlap the regions still open
    when it starts. Byte ranges that overlap are confirmed element by element by the backend
    (two interleaved strided views span the same bytes without sharing an element).
    """
    regions = sorted((r for r in regions if r.hi > r.lo), key=lambda r: r.lo)
    open_: list[Region] = []
    for region in regions:
        open_ = [r for r in open_ if r.hi > region.lo]
        for other in open_:
            if (region.written or other.written) and _share(region, other):
                return other, region
        open_.append(region)
    return None


def _share(a: Region, b: Region) -> bool:
    if a.leaf is b.leaf:
        return True
    if a.backend is not b.backend:
        return True  # one buffer seen by two libraries (torch.from_numpy): byte ranges decide
    return a.backend.shares_memory(a.leaf, b.leaf)


def written_spans(
    addresses: np.ndarray, sizes: np.ndarray, items: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The byte ranges ``[lo, hi)`` of the buffers a kernel writes — rows 4-6 (``p, m, v``
    outputs) of its ``(7, n)`` address table, each contiguous — sorted, empty ones left out.
    ``items`` has the element size of each written row: two for a rule with one state, whose
    table repeats it in row 6."""
    rows = range(len(items))
    lo = np.concatenate([addresses[4 + r] for r in rows])
    hi = lo + np.concatenate([sizes * item for item in items])
    keep = hi > lo
    order = np.argsort(lo[keep], kind="stable")
    return lo[keep][order], hi[keep][order]


def reads_overlap(
    spans: tuple[np.ndarray, np.ndarray], starts: np.ndarray, sizes: np.ndarray, item: int
) -> bool:
    """Whether a buffer read at ``starts`` (``sizes`` elements of ``item`` bytes each, e.g. the
    gradients) overlaps any of the disjoint written ``spans``; O(n log n), vectorised.

    Used by the bulk checks of an in-place call (after :func:`written_overlap`).
    """
    lo, hi = spans
    if not (lo.size and starts.size):
        return False
    ends = starts + sizes * item
    # The last written span that starts before a read ends is the only one it can overlap:
    # the spans are disjoint and sorted, so their ends are sorted too.
    k = np.searchsorted(lo, ends, side="left") - 1
    hit = (k >= 0) & (hi[np.maximum(k, 0)] > starts) & (sizes > 0)
    return bool(hit.any())


def overlap_message(a: Region, b: Region, path: Callable[[str, int], str]) -> str:
    return (
        f"{path(a.argument, a.index)} and {path(b.argument, b.index)} share memory, so "
        "inplace=True would read values it has already overwritten; pass separate buffers "
        "(copies), or call without inplace"
    )


def written_overlap(spans: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether any two of the sorted written ``spans`` (from :func:`written_spans`) overlap."""
    lo, hi = spans
    return bool(lo.size > 1 and np.any(lo[1:] < hi[:-1]))
