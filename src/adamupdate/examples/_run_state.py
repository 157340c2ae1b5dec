"""The digits run's state to and from its checkpoint: saved each epoch, checked and restored on
``--resume`` (the file itself, its fields and their checks, are :mod:`._checkpoint`'s).

Used by :mod:`adamupdate.examples.train_digits`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adamupdate.examples import _checkpoint
from adamupdate.examples._config import (
    DemoError,
    NothingToDo,
    TrainConfig,
    bad_checkpoint,
    checkpoint_path,
)
from adamupdate.examples._model import DigitsNet
from adamupdate.monitor import TrainingProgressMonitor

__all__ = ["check_resumable", "like_params", "save_checkpoint"]


def like_params(states: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    # Averages go back on the parameters' device and in their memory layout (channels_last), so
    # a resumed step sees exactly the tensors an uninterrupted one would; in parameter order,
    # as adamupdate returns them.
    out = {}
    for name, like in net.named_parameters():
        state = states[name]
        if state.shape != like.shape:  # a frozen parameter's 0-d zero
            out[name] = state.to(like.device)
        else:
            out[name] = torch.empty_like(like, dtype=state.dtype).copy_(state)
    return out


def check_resumable(
    directory: str,
    epochs: int,
    checkpoint: dict[str, Any],
    net: DigitsNet,
    num_observations: int,
    per_epoch: int,
) -> None:
    """Before anything is restored or written: the checkpoint fits this run, and has work left."""
    try:
        _checkpoint.check_fits(checkpoint, net, num_observations, per_epoch)
    except _checkpoint.CheckpointError as exc:
        raise DemoError(bad_checkpoint(directory, checkpoint_path(directory), exc)) from None
    done = _checkpoint.epochs_done(checkpoint, per_epoch)
    if epochs < done:  # only --epochs can ask for fewer: a run is never cut short
        raise NothingToDo(
            f"--epochs {epochs} is fewer than the {done} epochs the run in {directory} has "
            f"already finished; a run is not shortened, so nothing was changed — pass "
            f"--epochs N with N > {done} to continue it"
        )
    if epochs == done:
        raise NothingToDo(
            f"run in {directory} already finished {done} of {checkpoint['config']['epochs']} "
            f"epochs; nothing to do — pass --epochs N with N > {done} to continue"
        )


def save_checkpoint(
    path: Path,
    config: TrainConfig,
    net: DigitsNet,
    avg_grad: Any,
    avg_sq_grad: Any,
    iteration: int,
    epoch: int,
    batch: int,
    order: torch.Tensor | None,
    shuffle: torch.Generator,
    monitor: TrainingProgressMonitor,
) -> Path:
    saved_config = asdict(config)
    checkpoint = {
        "format": _checkpoint.FORMAT,
        "config": {k: saved_config[k] for k in _checkpoint.CONFIG_KEYS},
        "net": dict(net.state_dict()),
        "avg_grad": avg_grad,  # saved as arrays: their values, dtype and shape (0-d ones too)
        "avg_sq_grad": avg_sq_grad,
        "iteration": iteration,
        "epoch": epoch,
        "batch": batch,
        "order": order,
        "shuffle_rng": shuffle.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": monitor.history,
        "elapsed_s": monitor.part_times,
    }
    return _checkpoint.write(path, checkpoint)
