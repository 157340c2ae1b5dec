"""What a digits run records besides its state: its settings, data and versions
(``metrics.json``), the plot's footer, and the test accuracy at each epoch's end.

Used by :mod:`adamupdate.examples.train_digits`.
"""

from __future__ import annotations

import inspect
import platform
from typing import Any

import numpy as np
import torch

import adamupdate as _package
from adamupdate import adamupdate
from adamupdate.examples._config import TrainConfig

__all__ = ["describe_run", "epoch_accuracy", "plot_note"]


def epoch_accuracy(history: dict[str, list], per_epoch: int) -> list[tuple[int, float]]:
    # TestAccuracy is recorded at each epoch's end and also when a run stops (even before its
    # first step, at iteration 0); a stop right at an epoch's end records the same point twice.
    by_epoch = {
        x // per_epoch: value for x, value in history["TestAccuracy"] if x and x % per_epoch == 0
    }
    return sorted(by_epoch.items())


def describe_run(
    config: TrainConfig,
    device: torch.device,
    source: str,
    num_train: int,
    num_test: int,
    per_epoch: int,
) -> dict[str, Any]:
    """What ``metrics.json`` records besides the metrics: settings, data and versions."""
    defaults = inspect.signature(adamupdate).parameters
    return {
        "example": "MATLAB's 'Train Network Using adamupdate' (adamupdate demo)",
        "hyperparameters": {
            "learn_rate": config.learn_rate,
            **{k: defaults[k].default for k in ("grad_decay", "sq_grad_decay", "epsilon")},
        },
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "iterations_per_epoch": per_epoch,
        "seed": config.seed,
        "data": {
            "source": source,
            "training_images": num_train,
            "test_images": num_test,
        },
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "adamupdate": _package.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }


def plot_note(run: dict[str, Any]) -> str:
    """The plot's footer: the settings a reader needs to compare two runs' figures."""
    h, data, versions = run["hyperparameters"], run["data"], run["versions"]
    return (
        f"{data['training_images']:,} training / {data['test_images']:,} test images, "
        f"mini-batch {run['batch_size']}, seed {run['seed']}, learn rate {h['learn_rate']:g}, "
        f"decays {h['grad_decay']:g}/{h['sq_grad_decay']:g}, epsilon {h['epsilon']:g}; "
        f"adamupdate {versions['adamupdate']}, torch {versions['torch']}, {run['device']}"
    )
