"""Checkpoints through ``torch.distributed.checkpoint`` (DCP) that load at another world size.

:func:`save_checkpoint` writes with DCP's own writer; :func:`load_checkpoint` reads with
:mod:`._safe_dcp`'s reader and planner, which run no code from the files (DCP's defaults
unpickle ``.metadata`` and every non-tensor entry in full). DCP is imported on first use: it
costs seconds of import time that a ZeRO-only run does not need.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from ..network import learn_rate_factors, set_learn_rate_factors
from ._common import by_name, dist, local, torch, unwrap


def save_checkpoint(
    checkpoint_id: Any,
    net: torch.nn.Module,
    avg_grad: Any,
    avg_sq_grad: Any,
    iteration: int,
    *,
    process_group: Any = None,
) -> None:
    """Save a training state with ``torch.distributed.checkpoint`` (every rank calls it).

    Parameters
    ----------
    checkpoint_id
        A directory (or anything ``torch.distributed.checkpoint.save`` accepts as
        ``checkpoint_id``).
    net
        The network ``adamupdate(net, ...)`` updates: plain, DDP-wrapped or ``fully_shard``-ed.
    avg_grad, avg_sq_grad
        The averages ``adamupdate(net, ...)`` returned (dicts keyed by parameter name, lists or
        Learnables tables). Under FSDP2 they are DTensor shards and each rank writes its own.
    iteration
        The iteration of the last step taken; continue with ``iteration + 1``.
    process_group
        For DCP's collectives (default: the default group; none is needed in one process).

    The checkpoint holds the model's state dict (``get_model_state_dict``: wrapper prefixes
    removed, so any wrapping can load it), the two averages keyed by parameter name, the
    iteration and the learn-rate factors (:func:`adamupdate.learn_rate_factors`).
    """
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state: dict[str, Any] = {
        "model": get_model_state_dict(net),
        "avg_grad": by_name(net, avg_grad, "avg_grad"),
        "avg_sq_grad": by_name(net, avg_sq_grad, "avg_sq_grad"),
        "iteration": torch.tensor(int(iteration), dtype=torch.int64),
        # a list of pairs, not a dict: DCP stores it as one object instead of one per name
        "learn_rate_factors": [[name, f] for name, f in learn_rate_factors(unwrap(net)).items()],
    }
    with _single_process_is_intended():
        dcp.save(
            state,
            checkpoint_id=checkpoint_id,
            process_group=process_group,
            **_no_dist(dcp.save),
        )


def load_checkpoint(
    checkpoint_id: Any, net: torch.nn.Module, *, process_group: Any = None
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Load a state saved by :func:`save_checkpoint`, at this run's world size and sharding.

    ``net`` is set up as this run trains it (plain, DDP, ``fully_shard``); its parameters and
    learn-rate factors are overwritten with the checkpoint's, and the averages come back shaped
    like the parameters: DTensors with each parameter's placement under FSDP2, plain tensors
    otherwise. DCP reads whichever parts of the saved shards each rank needs, so the saving run
    may have had another world size or sharding.

    Returns
    -------
    avg_grad, avg_sq_grad, iteration
        Averages keyed by parameter name, to pass to ``adamupdate(net, grads, avg_grad,
        avg_sq_grad, iteration + 1)``, and the saved iteration.

    Raises
    ------
    ValueError
        Naming the file, for a checkpoint that would need trust to read: ``.metadata`` naming
        anything but DCP's metadata classes (it is never fully unpickled), a storage record
        outside the checkpoint folder or past the end of its file, a non-tensor entry that is
        not plain data. See :class:`SafeFileSystemReader` and :class:`SafeLoadPlanner`.
        Also for averages that do not fit ``net``.

    Notes
    -----
    What is trusted: the tensors' bytes (read by ``torch.load(..., weights_only=True)``) and
    the values, which are loaded as they are. Nothing in the folder is executed.
    """
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
    )

    from ._safe_dcp import RefusedCheckpoint, SafeFileSystemReader, SafeLoadPlanner

    reader = SafeFileSystemReader(checkpoint_id)
    metadata = reader.read_metadata().state_dict_metadata
    params = dict(unwrap(net).named_parameters())
    state: dict[str, Any] = {
        "model": get_model_state_dict(net),
        "avg_grad": _average_templates(metadata, "avg_grad", params),
        "avg_sq_grad": _average_templates(metadata, "avg_sq_grad", params),
        "iteration": torch.zeros((), dtype=torch.int64),
        "learn_rate_factors": [],
    }
    try:
        with _single_process_is_intended():
            dcp.load(
                state,
                checkpoint_id=checkpoint_id,
                storage_reader=reader,
                planner=SafeLoadPlanner(),
                process_group=process_group,
                **_no_dist(dcp.load),
            )
    except CheckpointException as error:  # DCP gathers every rank's exception into one
        refused = [e for e, _ in error.failures.values() if isinstance(e, RefusedCheckpoint)]
        if refused:
            raise ValueError(f"{checkpoint_id}: {refused[0]}") from None
        raise
    set_model_state_dict(net, state["model"])
    set_learn_rate_factors(unwrap(net), dict(state["learn_rate_factors"]))
    return state["avg_grad"], state["avg_sq_grad"], int(state["iteration"])


def _no_dist(function: Any) -> dict[str, bool]:
    """One process without a process group: DCP's ``no_dist`` mode, for ``function``
    (``dcp.save`` or ``dcp.load``) when it takes the keyword (not in torch 2.5, where DCP runs
    one process without a group by itself)."""
    if dist.is_available() and dist.is_initialized():
        return {}
    return {"no_dist": True} if "no_dist" in inspect.signature(function).parameters else {}


@contextlib.contextmanager
def _single_process_is_intended() -> Iterator[None]:
    """DCP warns that it *assumes* a single process whenever no process group is initialized,
    even when told ``no_dist=True``; here one process is a supported use, not a guess."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        yield


def _average_templates(metadata: Mapping[str, Any], key: str, params: Mapping) -> dict:
    """Buffers DCP loads the saved averages into, in learnable order: zeros shaped, placed and
    sharded like each parameter (a frozen parameter's average may be MATLAB's scalar 0), of
    the saved dtype."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = key + "."
    saved = {fqn[len(prefix) :]: entry for fqn, entry in metadata.items() if fqn.startswith(prefix)}
    unknown = [name for name in saved if name not in params]
    if unknown:
        raise ValueError(
            f"{key}[{unknown[0]!r}]: the checkpoint has it, the network has no such parameter"
        )
    templates = {}
    for name, p in params.items():
        entry = saved.get(name)
        if entry is None:
            continue  # not a learnable when saved (requires_grad=False)
        dtype = getattr(getattr(entry, "properties", None), "dtype", None)
        if not isinstance(entry, TensorStorageMetadata) or not isinstance(dtype, torch.dtype):
            raise ValueError(f"{key}[{name!r}]: the checkpoint holds no tensor for it")
        if tuple(entry.size) == tuple(p.shape):
            templates[name] = torch.zeros_like(p, dtype=dtype, requires_grad=False)
        elif tuple(entry.size) == ():
            templates[name] = torch.zeros((), dtype=dtype, device=local(p).device)
        else:
            raise ValueError(
                f"{key}[{name!r}]: saved with shape {tuple(entry.size)}, the parameter has "
                f"{tuple(p.shape)}"
            )
    return templates
