"""The digits example's checkpoint: what it holds, and the checks that a file holds exactly that.

The checkpoint is ``checkpoint.npz``, written by :func:`adamupdate.io.save` and read by
:func:`adamupdate.io.load` (nothing in it is executed or unpickled; NumPy reads it too, e.g.
``numpy.load(path)["net/fc.weight"]``). Its variables:

- ``format`` (3), ``config`` (the settings of :data:`CONFIG_KEYS`, plain values);
- ``net`` (the network's ``state_dict``), ``avg_grad``/``avg_sq_grad`` (the averages
  :func:`adamupdate.adamupdate` returned, by parameter name; 0-d for a frozen parameter; ``None``
  before the first step);
- ``iteration``, ``epoch``, ``batch`` (integers), ``order`` (the epoch's shuffled indices, int64;
  ``None`` before the first step);
- ``shuffle_rng``, ``torch_rng`` (the states of the shuffling generator and of torch's global
  CPU generator, uint8 arrays: restored bit for bit);
- ``history`` (per metric an ``(n, 2)`` float64 array of ``(iteration, value)`` rows: one entry
  each, so writing it every epoch stays cheap however long the run), ``elapsed_s`` (the seconds
  of each part of the run, a list).

A file that loads may still be damaged, hand-edited or written by other code. Every field is
checked here before the training loop uses any of it, so a bad file is reported in one line
naming the field, never as a traceback halfway through restoring a run. The checks come in two
parts because some need the run's data and network:

- :func:`read` — the file on its own: keys, types, counters, RNG states, history, time;
- :func:`check_fits` — against this run: the network's state and parameters, the number of
  training images (``order``) and mini-batches per epoch (``iteration``/``epoch``/``batch``).

:func:`read` returns the checkpoint in memory: arrays as CPU tensors, the history as lists of
``(iteration, value)`` pairs (as the monitor keeps it).

Earlier versions wrote ``checkpoint.pt`` with ``torch.save``; :func:`read` still reads those
(with ``torch.load(weights_only=True)``) so their runs can be resumed, and the resumed run then
writes ``checkpoint.npz`` beside it. Format 2 recorded the same fields; format 1 (adamupdate 0.2.0)
recorded the test accuracy as a fraction and no time: it is converted, with the time of the
earlier parts unknown (an empty list).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adamupdate import io

FILE = "checkpoint.npz"
LEGACY_FILE = "checkpoint.pt"  # formats 1 and 2, written with torch.save
FORMAT = 3
LEGACY_FORMATS = (1, 2)
# Settings that define the data and the sequence of mini-batches: a resumed run must keep them
# or it would not continue the same run.
FIXED_ON_RESUME = ("data", "limit", "batch_size", "seed")
CONFIG_KEYS = (*FIXED_ON_RESUME, "epochs", "learn_rate")
METRICS = ("Loss", "TestAccuracy")
KEYS_1 = (
    "format", "config", "net", "avg_grad", "avg_sq_grad", "iteration", "epoch", "batch",
    "order", "shuffle_rng", "torch_rng", "history",
)  # fmt: skip
KEYS = (*KEYS_1, "elapsed_s")  # formats 2 and 3


class CheckpointError(ValueError):
    """A checkpoint field is missing, extra, or not what this example writes."""


def find(directory: Path) -> Path | None:
    """The checkpoint in ``directory``: ``checkpoint.npz``, else an earlier ``checkpoint.pt``."""
    for name in (FILE, LEGACY_FILE):
        if (directory / name).is_file():
            return directory / name
    return None


def read(path: Path) -> dict[str, Any]:
    """Load ``path`` on the CPU and check everything that does not depend on the run's data.

    Raises
    ------
    CheckpointError
        Naming the first bad field, e.g. ``config['limit'] must be a positive integer or None,
        got -3``.
    """
    legacy = path.suffix == Path(LEGACY_FILE).suffix
    checkpoint = _load_legacy(path) if legacy else _load(path)
    _check_top_level(checkpoint, LEGACY_FORMATS if legacy else (FORMAT,))
    _check_config(checkpoint["config"])
    _check_counters(checkpoint)
    _check_order_form(checkpoint["order"], started=checkpoint["iteration"] > 0)
    _check_average_forms(checkpoint, started=checkpoint["iteration"] > 0)
    for key in ("shuffle_rng", "torch_rng"):
        _check_rng_state(key, checkpoint[key])
    if not legacy:
        checkpoint["history"] = _history_from_rows(checkpoint["history"])
    _check_history(checkpoint["history"], checkpoint["iteration"])
    if checkpoint["format"] == 1:
        return _from_format_1(checkpoint)
    _check_elapsed(checkpoint["elapsed_s"])
    return {**checkpoint, "format": FORMAT}


def check_fits(
    checkpoint: Mapping[str, Any], net: nn.Module, num_observations: int, per_epoch: int
) -> None:
    """Check a :func:`read` checkpoint against this run's network and data; changes nothing."""
    _check_net_state(checkpoint["net"], net.state_dict())
    params = dict(net.named_parameters())
    for key in ("avg_grad", "avg_sq_grad"):
        if checkpoint[key] is not None:
            _check_averages(key, checkpoint[key], params)
    if checkpoint["iteration"] > 0:
        _check_position(checkpoint, per_epoch)
        _check_order(checkpoint["order"], num_observations)


def epochs_done(checkpoint: Mapping[str, Any], per_epoch: int) -> int:
    """Epochs completed (a run stopped part-way through an epoch has not completed it)."""
    epoch, batch = checkpoint["epoch"], checkpoint["batch"]
    return epoch if batch == per_epoch else max(epoch - 1, 0)


def write(path: Path, checkpoint: Mapping[str, Any]) -> Path:
    """Save ``checkpoint`` (as :func:`read` returns it) to ``path`` with :func:`adamupdate.io.save`.

    The write is atomic: a Ctrl-C or crash mid-write never leaves a torn checkpoint.
    """
    history = {name: _rows(points) for name, points in checkpoint["history"].items()}
    io.save(path, **{**checkpoint, "format": FORMAT, "history": history})
    return path


# ------------------------------------------------------------------------ the file alone
def _load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # a container type of another program: checked below
            warnings.simplefilter("ignore")
            variables = io.load(path)
    except (ValueError, OSError, ImportError) as exc:
        reason = " ".join(str(exc).split()).removeprefix(f"{path}: ")
        raise CheckpointError(f"cannot read it ({reason})") from None
    return _tensors(variables)


def _load_legacy(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read it ({' '.join(str(exc).split())})") from None


def _tensors(tree: Any) -> Any:
    """The loaded variables with every array a CPU tensor (of the same dtype and shape)."""
    if isinstance(tree, dict):
        return {key: _tensors(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_tensors(value) for value in tree]
    if isinstance(tree, tuple):
        return tuple(_tensors(value) for value in tree)
    if not isinstance(tree, np.ndarray):
        return tree
    array = tree if tree.dtype.isnative else tree.astype(tree.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(np.require(array, requirements="W"))
    except TypeError:  # a dtype torch has no tensor of: left an array, refused by the checks
        return array


def _rows(points: list[tuple[int, float]]) -> np.ndarray:
    """``(iteration, value)`` pairs as an ``(n, 2)`` float64 array (iterations exact to 2**53)."""
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def _history_from_rows(history: Any) -> Any:
    """The file's history as the monitor keeps it: per metric a list of ``(x, value)`` pairs."""
    _require(isinstance(history, dict), "history", "a dict", history)
    _check_keys("history", history, METRICS)
    pairs = {}
    for name in METRICS:
        rows = history[name]
        _require(
            isinstance(rows, torch.Tensor)
            and rows.dtype == torch.float64
            and rows.dim() == 2
            and rows.shape[1] == 2,
            f"history[{name!r}]",
            "an (n, 2) float64 tensor of (iteration, value) rows",
            rows,
        )
        pairs[name] = [(int(x) if x.is_integer() else x, value) for x, value in rows.tolist()]
    return pairs


def _check_top_level(checkpoint: Any, formats: tuple[int, ...]) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in formats:
        raise CheckpointError("not a checkpoint of this example")
    _check_keys("the checkpoint", checkpoint, KEYS_1 if checkpoint["format"] == 1 else KEYS)


def _from_format_1(checkpoint: dict[str, Any]) -> dict[str, Any]:
    history = checkpoint["history"]
    accuracy = [(x, 100 * value) for x, value in history["TestAccuracy"]]
    return {
        **checkpoint,
        "format": FORMAT,
        "history": {**history, "TestAccuracy": accuracy},
        "elapsed_s": [],
    }


def _check_config(config: Any) -> None:
    _require(isinstance(config, dict), "config", "a dict", config)
    _check_keys("config", config, CONFIG_KEYS)
    data, limit, learn_rate = config["data"], config["limit"], config["learn_rate"]
    _require(data is None or isinstance(data, str), "config['data']", "a path or None", data)
    _require(
        limit is None or _positive_int(limit),
        "config['limit']",
        "a positive integer or None",
        limit,
    )
    for key in ("batch_size", "epochs"):
        _require(_positive_int(config[key]), f"config[{key!r}]", "a positive integer", config[key])
    _require(_is_int(config["seed"]), "config['seed']", "an integer", config["seed"])
    _require(
        _is_real(learn_rate) and math.isfinite(learn_rate) and learn_rate >= 0,
        "config['learn_rate']",
        "a finite number >= 0",
        learn_rate,
    )


def _check_counters(checkpoint: Mapping[str, Any]) -> None:
    for key in ("iteration", "epoch", "batch"):
        value = checkpoint[key]
        _require(_is_int(value) and value >= 0, key, "an integer >= 0", value)
    iteration, epoch, batch = (checkpoint[k] for k in ("iteration", "epoch", "batch"))
    if (epoch == 0 or batch == 0 or batch > iteration) and (iteration, epoch, batch) != (0, 0, 0):
        raise CheckpointError(
            f"iteration {iteration}, epoch {epoch}, batch {batch} do not fit together "
            "(all 0 before the first step, else epoch and batch >= 1 and batch <= iteration)"
        )
    epochs = checkpoint["config"]["epochs"]
    _require(epoch <= epochs, "epoch", f"at most config['epochs'] = {epochs}", epoch)


def _check_order_form(order: Any, *, started: bool) -> None:
    if not started:
        _require(order is None, "order", "None before the first step", order)
        return
    _require(
        isinstance(order, torch.Tensor) and order.dtype == torch.int64 and order.dim() == 1,
        "order",
        "a 1-D int64 tensor",
        order,
    )


def _check_average_forms(checkpoint: Mapping[str, Any], *, started: bool) -> None:
    for key in ("avg_grad", "avg_sq_grad"):
        averages = checkpoint[key]
        if not started:
            _require(averages is None, key, "None before the first step", averages)
            continue
        _require(isinstance(averages, dict), key, "a dict of tensors", averages)
        for name, value in averages.items():
            _require(
                isinstance(value, torch.Tensor) and value.is_floating_point(),
                f"{key}[{name!r}]",
                "a floating-point tensor",
                value,
            )


def _check_rng_state(key: str, state: Any) -> None:
    _require(
        isinstance(state, torch.Tensor) and state.dtype == torch.uint8,
        key,
        "a uint8 tensor (torch's RNG state)",
        state,
    )
    try:  # torch alone knows what a valid state is; a scratch generator asks it
        torch.Generator().set_state(state)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{key} is not a valid CPU RNG state ({exc})") from None


def _check_history(history: Any, iteration: int) -> None:
    _require(isinstance(history, dict), "history", "a dict", history)
    _check_keys("history", history, METRICS)
    for name in METRICS:
        points = history[name]
        _require(isinstance(points, (list, tuple)), f"history[{name!r}]", "a list", points)
        for i, point in enumerate(points):
            # A run stopped before its first step records its test accuracy at iteration 0.
            _require(
                isinstance(point, (list, tuple))
                and len(point) == 2
                and _is_int(point[0])
                and 0 <= point[0] <= iteration
                and _is_real(point[1]),
                f"history[{name!r}][{i}]",
                f"an (iteration in 0..{iteration}, number) pair",
                point,
            )
    steps = [x for x, _ in history["Loss"]]
    if steps != list(range(1, iteration + 1)):
        raise CheckpointError(
            f"history['Loss'] must hold one point for each iteration 1..{iteration}, "
            f"has {len(steps)}"
        )


def _check_elapsed(elapsed: Any) -> None:
    _require(isinstance(elapsed, list), "elapsed_s", "a list of seconds", elapsed)
    for i, seconds in enumerate(elapsed):
        _require(
            _is_real(seconds) and math.isfinite(seconds) and seconds >= 0,
            f"elapsed_s[{i}]",
            "a finite number of seconds >= 0",
            seconds,
        )


# ------------------------------------------------------------------------ against the run
def _check_net_state(state: Any, expected: Mapping[str, torch.Tensor]) -> None:
    _require(isinstance(state, dict), "net", "a state dict", state)
    _check_keys("net", state, tuple(expected))
    for name, like in expected.items():
        _check_tensor_like(f"net[{name!r}]", state[name], like, allow_scalar=False)


def _check_averages(key: str, averages: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    _check_keys(key, averages, tuple(params))
    for name, param in params.items():
        # A 0-d average is MATLAB's scalar 0 of a frozen parameter (learn-rate factor 0).
        _check_tensor_like(f"{key}[{name!r}]", averages[name], param, allow_scalar=True)
        if key == "avg_sq_grad" and bool((averages[name] < 0).any()):
            raise CheckpointError(f"{key}[{name!r}] has negative values (a mean of squares)")


def _check_tensor_like(field: str, value: Any, like: torch.Tensor, *, allow_scalar: bool) -> None:
    shapes = (tuple(like.shape), ()) if allow_scalar else (tuple(like.shape),)
    _require(
        isinstance(value, torch.Tensor)
        and tuple(value.shape) in shapes
        and value.dtype == like.dtype,
        field,
        f"a {like.dtype} tensor of shape {tuple(like.shape)}",
        value,
    )


def _check_position(checkpoint: Mapping[str, Any], per_epoch: int) -> None:
    iteration, epoch, batch = (checkpoint[k] for k in ("iteration", "epoch", "batch"))
    if batch > per_epoch or iteration != (epoch - 1) * per_epoch + batch:
        raise CheckpointError(
            f"iteration {iteration}, epoch {epoch}, batch {batch} do not fit {per_epoch} "
            "mini-batches per epoch"
        )


def _check_order(order: torch.Tensor, num_observations: int) -> None:
    _require(
        len(order) == num_observations
        and torch.equal(order.sort().values, torch.arange(num_observations)),
        "order",
        f"a permutation of the {num_observations} training images' indices",
        order,
    )


# ------------------------------------------------------------------------------ helpers
def _check_keys(field: str, mapping: Mapping[str, Any], expected: tuple[str, ...]) -> None:
    missing = [k for k in expected if k not in mapping]
    extra = [k for k in mapping if k not in expected]
    if missing or extra:
        parts = [f"lacks {missing}"] * bool(missing) + [f"has unexpected {extra}"] * bool(extra)
        raise CheckpointError(f"{field} {' and '.join(parts)}")


def _require(condition: bool, field: str, wanted: str, value: Any) -> None:
    if not condition:
        raise CheckpointError(f"{field} must be {wanted}, got {_shown(value)}")


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
