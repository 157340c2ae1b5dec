"""adamupdate at scale with ``torch.distributed``: checkpoints that reshard, and ZeRO-1 for DDP.

The step is elementwise, so PyTorch's own engines need nothing from this package to train:
under DDP every replica calls ``adamupdate(net, grads, avg_grad, avg_sq_grad, t)`` on its full
copy, and under FSDP2 (``fully_shard``) the parameters, gradients and therefore the averages are
DTensor shards that each rank updates where they are. This package adds the two things that do
need the process group:

- :func:`save_checkpoint` / :func:`load_checkpoint`: parameters, both averages, the iteration
  and the learn-rate factors through ``torch.distributed.checkpoint`` (DCP), which writes each
  rank's shards and reads them back at any other world size (2 ranks → 1, 1 → 2, DDP ↔ FSDP2).
  Loading runs no code from the checkpoint folder: :class:`SafeFileSystemReader` and
  :class:`SafeLoadPlanner` replace DCP's full unpickling of ``.metadata`` and of non-tensor
  entries (also usable with ``torch.distributed.checkpoint.load`` directly).
- :class:`ZeroAdamupdate`: ZeRO stage 1 for DDP users. Each rank keeps the averages of
  1/world of the (flattened, concatenated) parameters, steps that slice with
  :func:`adamupdate.adamupdate`, and all-gathers the parameters. The arithmetic per element is
  the network form's, so the result is bitwise the same as unpartitioned DDP + ``adamupdate``.

Both need ``torch`` (the ``torch`` extra); collectives run on the default process group unless a
``process_group`` is given. ``torch.distributed.checkpoint`` is imported only when a checkpoint
function or the safe reader is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._extras import require

# first, so that a missing torch names the extra even when the submodules are already loaded
require("torch", "torch", "adamupdate.distributed")

from ._checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from ._zero import ZeroAdamupdate  # noqa: E402

if TYPE_CHECKING:
    from ._safe_dcp import SafeFileSystemReader, SafeLoadPlanner

__all__ = [
    "SafeFileSystemReader",
    "SafeLoadPlanner",
    "ZeroAdamupdate",
    "load_checkpoint",
    "save_checkpoint",
]

_LAZY = ("SafeFileSystemReader", "SafeLoadPlanner")  # subclasses of DCP's: import it on use


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _safe_dcp

        return getattr(_safe_dcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
