"""ZeRO-1's layout: the learnables of each (device, dtype) flattened into one buffer that the
parameters become views of, cut into ``world`` equal slices, one per rank, and a rank's slice
cut again where the learn-rate factor changes. Used by :class:`ZeroAdamupdate
<adamupdate.distributed.ZeroAdamupdate>`, which steps and gathers the buckets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._api import adamupdate
from ._common import torch

__all__ = ["Bucket", "make_buckets", "runs"]


@dataclass(eq=False)
class Bucket:
    """The learnables of one (device, dtype), flattened and concatenated in learnable order.

    ``flat`` holds every parameter (they are views of it) padded to ``chunk * world``; this
    rank owns ``flat[lo:hi]`` (``hi - lo <= chunk``; the padding is nobody's) and keeps the
    averages of that slice only, ``avg_grad[i]`` being the average of ``flat[lo + i]``.
    """

    indices: list[int]  # positions in the learnable list
    offsets: list[int]  # start of each parameter in flat
    flat: torch.Tensor
    chunk: int
    lo: int
    hi: int
    grad: torch.Tensor  # this rank's slice of the gradients, refilled every step
    avg_grad: torch.Tensor
    avg_sq_grad: torch.Tensor
    fresh: bool = True  # no step yet: MATLAB's empty averages
    runs: list[tuple[float, int, int]] = field(default_factory=list)  # (factor, lo, hi) in flat
    carried: dict[float, tuple] = field(default_factory=dict)  # factor -> last outputs

    @property
    def size(self) -> int:
        return self.offsets[-1] if self.offsets else 0


def make_buckets(
    names: list[str], params: list[torch.nn.Parameter], rank: int, world: int, state_dtype: Any
) -> list[Bucket]:
    """One bucket per (device, dtype) of ``params`` (the learnables, in order), each holding its
    parameters from now on (they become views of ``flat``) and this rank's zero averages."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        if hasattr(p, "to_local"):
            raise TypeError(
                f"{names[i]}: is a DTensor; FSDP2 already shards the averages "
                "(call adamupdate(net, ...) directly)"
            )
        groups.setdefault((p.device, p.dtype), []).append(i)
    return [_bucket(params, indices, rank, world, state_dtype) for indices in groups.values()]


def _bucket(
    all_params: list[torch.nn.Parameter],
    indices: list[int],
    rank: int,
    world: int,
    state_dtype: Any,
) -> Bucket:
    params = [all_params[i] for i in indices]
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    size = offsets[-1]
    chunk = max(1, math.ceil(size / world))
    lo = min(rank * chunk, size)
    hi = min(lo + chunk, size)
    first = params[0]
    flat = torch.zeros(chunk * world, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        for p, start in zip(params, offsets):
            view = flat[start : start + p.numel()].view(p.shape)
            view.copy_(p.detach())
            p.data = view
    m_dtype, v_dtype = _state_dtypes(first, state_dtype)
    return Bucket(
        indices=indices,
        offsets=offsets,
        flat=flat,
        chunk=chunk,
        lo=lo,
        hi=hi,
        grad=torch.empty(hi - lo, dtype=first.dtype, device=first.device),
        avg_grad=torch.zeros(hi - lo, dtype=m_dtype, device=first.device),
        avg_sq_grad=torch.zeros(hi - lo, dtype=v_dtype, device=first.device),
    )


def _state_dtypes(p: torch.Tensor, state_dtype: Any) -> tuple[torch.dtype, torch.dtype]:
    """The averages' dtypes adamupdate gives this parameter dtype (asked of adamupdate
    itself, on an empty tensor, so that the rule lives in one place)."""
    empty = torch.empty(0, dtype=p.dtype, device=p.device)
    _, m, v = adamupdate(empty, empty, None, None, 1, state_dtype=state_dtype)
    return m.dtype, v.dtype


def runs(
    bucket: Bucket, names: list[str], factors: Mapping[str, float]
) -> list[tuple[float, int, int]]:
    """This rank's slice cut where the learn-rate factor changes: (factor, lo, hi)."""
    found: list[tuple[float, int, int]] = []
    for j, i in enumerate(bucket.indices):
        a = max(bucket.offsets[j], bucket.lo)
        b = min(bucket.offsets[j + 1], bucket.hi)
        if a >= b:
            continue
        factor = factors[names[i]]
        if found and found[-1][0] == factor and found[-1][2] == a:
            found[-1] = (factor, found[-1][1], b)
        else:
            found.append((factor, a, b))
    return found or [(1.0, bucket.lo, bucket.lo)]  # an empty slice still checks arguments
