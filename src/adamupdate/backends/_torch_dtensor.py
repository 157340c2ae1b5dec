"""PyTorch's DTensors (FSDP2's sharded parameters), stepped shard by shard.

The step is elementwise, so each rank's local shards are all it needs: no DTensor dispatch.
``torch.distributed``'s tensor package is never imported here, only looked up when loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def _dtensor_type() -> Any:
    """DTensor's class, when torch.distributed's tensor package is already loaded."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _shardable(x: torch.Tensor) -> bool:
    """A DTensor whose local tensor holds this rank's elements as they are: sharded or
    replicated, not a partial sum waiting for a reduction."""
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(x, dtensor):
        return False
    return not any(placement.is_partial() for placement in x.placements)


def _locals_of(tensors: list, like: list | None = None) -> list:
    """The local shards of DTensors, each laid out as its parameter's (same mesh and
    placements — anything else would pair elements of different shards)."""
    dtensor = _dtensor_type()
    if dtensor is None:  # torch.distributed's tensors not loaded: none of these is one
        return list(tensors)
    shards = []
    for i, t in enumerate(tensors):
        if like is not None and isinstance(t, dtensor):
            p = like[i]
            if t.placements != p.placements or t.device_mesh != p.device_mesh:
                raise ValueError(
                    f"a DTensor sharded as {t.placements} on {t.device_mesh} for a parameter "
                    f"sharded as {p.placements} on {p.device_mesh}; shard it as the parameter"
                )
        shards.append(t._local_tensor if isinstance(t, dtensor) else t)
    return shards


def _sharded(locals_: list, params: list, originals: list) -> list:
    """Local results as DTensors: the caller's own where the result was written into its
    shard, new ones placed like the parameter otherwise."""
    dtensor = _dtensor_type()
    out = []
    for local, p, original in zip(locals_, params, originals):
        if isinstance(original, dtensor) and original._local_tensor is local:
            out.append(original)
        else:
            out.append(
                dtensor.from_local(
                    local,
                    p.device_mesh,
                    p.placements,
                    run_check=False,
                    shape=p.shape,
                    stride=p.stride(),
                )
            )
    return out
