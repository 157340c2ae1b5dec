"""The digits example's options: the settings of a run, what it returns, and the errors it reports.

:func:`make_config` turns the options a user gave into a :class:`TrainConfig` (taking a resumed
run's settings from its checkpoint); :func:`check_options` checks them before anything is loaded
or written. Used by :mod:`adamupdate.examples.train_digits`, which exports the public names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adamupdate.examples import _checkpoint

__all__ = [
    "CHECKPOINT",
    "RUNS",
    "RUN_FILES",
    "DemoError",
    "NothingToDo",
    "TrainConfig",
    "TrainResult",
    "bad_checkpoint",
    "check_options",
    "checkpoint_path",
    "continues",
    "make_config",
    "read_checkpoint",
]

CHECKPOINT = _checkpoint.FILE
RUNS = Path("runs")  # default runs go to a new directory in here
# What a run writes into its directory (and the checkpoint of earlier versions); one that holds
# any of them holds a run.
RUN_FILES = (CHECKPOINT, _checkpoint.LEGACY_FILE, "metrics.csv", "metrics.json", "training.png")


class DemoError(Exception):
    """A problem with the user's options or files (reported in one line, exit code 2)."""


class NothingToDo(Exception):
    """``resume`` names a run that already has the epochs asked for; nothing was changed."""


@dataclass
class TrainConfig:
    """Options of the digits example; the defaults are MATLAB's.

    ``None`` for ``data``/``limit`` means the shipped digits / all training images.
    ``output=None`` means a new directory ``runs/digits-YYYYmmdd-HHMMSS`` (``-2``, ``-3`` …
    when that exists). An ``output`` that already holds a run is refused unless ``force``
    (which replaces it) or it is the ``resume`` directory (whose run continues).
    """

    epochs: int = 20
    batch_size: int = 128
    learn_rate: float = 0.001
    seed: int = 0
    device: str = "auto"
    data: str | None = None
    limit: int | None = None
    output: str | None = None
    resume: str | None = None
    force: bool = False
    quiet: bool = False


@dataclass
class TrainResult:
    """What a run produced; accuracies in percent."""

    test_accuracy_pct: float
    epoch_accuracy_pct: list[tuple[int, float]]
    iteration: int
    epoch: int
    stopped: bool
    wall_s: float  # this process, from the call to its return
    run_s: float  # training time of the whole run, earlier parts of a resumed run included
    output: str
    files: dict[str, str] = field(default_factory=dict)


def checkpoint_path(directory: str) -> Path:
    """The checkpoint ``--resume DIR`` continues (an earlier version's ``checkpoint.pt`` too)."""
    path = _checkpoint.find(Path(directory))
    if path is None:
        raise DemoError(f"--resume {directory}: no {CHECKPOINT} there")
    return path


def read_checkpoint(directory: str) -> dict[str, Any]:
    """The checkpoint in ``directory``, read and checked on its own (:func:`._checkpoint.read`)."""
    path = checkpoint_path(directory)
    try:
        return _checkpoint.read(path)
    except _checkpoint.CheckpointError as exc:
        raise DemoError(bad_checkpoint(directory, path, exc)) from None


def bad_checkpoint(directory: str, path: Path, exc: _checkpoint.CheckpointError) -> str:
    """The one-line message for a checkpoint that is damaged or does not fit this run."""
    return f"--resume {directory}: bad checkpoint {path}: {exc}"


def make_config(**given: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from the options a user gave (``None`` = not given).

    Without ``resume``, missing options take the defaults. With ``resume``, they take the
    checkpoint's values (data, limit, batch size, seed, epochs, learn rate) and the output
    directory defaults to the resumed one, so ``--resume DIR`` alone continues that run.
    """
    unknown = set(given) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    if given.get("resume") is not None:
        values.update(read_checkpoint(given["resume"])["config"])  # checked: known keys only
        values["output"] = given["resume"]
    values.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig(**values)


def check_options(config: TrainConfig, checkpoint: dict[str, Any] | None) -> None:
    """Every check of the options that needs no data: before anything is loaded or written."""
    if checkpoint is not None:
        saved = checkpoint["config"]
        for key in _checkpoint.FIXED_ON_RESUME:
            if getattr(config, key) != saved[key]:
                raise DemoError(
                    f"--resume: {key.replace('_', '-')} must stay {saved[key]!r} as in the "
                    f"checkpoint (got {getattr(config, key)!r})"
                )
    if config.epochs <= 0:
        raise DemoError(f"--epochs must be a positive integer, got {config.epochs}")
    if config.batch_size <= 0:
        raise DemoError(f"--batch-size must be a positive integer, got {config.batch_size}")
    if not (math.isfinite(config.learn_rate) and config.learn_rate >= 0):
        raise DemoError(f"--learn-rate must be a finite number >= 0, got {config.learn_rate}")
    if config.limit is not None and config.limit <= 0:
        raise DemoError(f"--limit must be a positive integer, got {config.limit}")
    if config.output is not None and not config.force and not continues(config):
        found = [name for name in RUN_FILES if (Path(config.output) / name).exists()]
        if found:
            raise DemoError(
                f"--output {config.output} already holds a run ({', '.join(found)}); "
                f"continue it with --resume {config.output}, replace it with --force, "
                "or choose another directory"
            )


def continues(config: TrainConfig) -> bool:
    """Whether ``output`` is the resumed run's own directory."""
    if config.resume is None or config.output is None:
        return False
    return Path(config.output).resolve() == Path(config.resume).resolve()
