"""What the checkpoints and ZeRO share: torch (required), the unwrapped network, named averages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._extras import require
from ..network import learn_rate_factors

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch", "adamupdate.distributed")
dist = torch.distributed


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (FSDP2 wraps nothing)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def by_name(net: torch.nn.Module, state: Any, argument: str) -> dict[str, Any]:
    """Averages as :func:`adamupdate.adamupdate` returned them, keyed by learnable name."""
    if is_table(state):
        names = [
            f"{layer}.{p}" if layer else p for layer, p in zip(state["Layer"], state["Parameter"])
        ]
        return dict(zip(names, state["Value"]))
    if isinstance(state, Mapping):
        return dict(state)
    if isinstance(state, Sequence) and not isinstance(state, str):
        names = list(learn_rate_factors(unwrap(net)))
        if len(names) != len(state):
            raise ValueError(
                f"{argument}: has {len(state)} entries, the network has {len(names)} learnables"
            )
        return dict(zip(names, state))
    raise TypeError(
        f"{argument}: expected the averages adamupdate(net, ...) returned (a dict keyed by "
        f"parameter name, a list or a Learnables table), got {type(state).__name__}"
    )


def is_table(obj: Any) -> bool:
    return hasattr(obj, "columns") and {"Layer", "Parameter", "Value"} <= set(obj.columns)


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered (a collective: every rank calls it), a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
