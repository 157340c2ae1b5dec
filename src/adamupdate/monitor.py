"""A training progress monitor for custom loops, after MATLAB's ``trainingProgressMonitor``.

MATLAB's loop reads::

    monitor = trainingProgressMonitor(Metrics="Loss", Info="Epoch", XLabel="Iteration");
    ...
    recordMetrics(monitor, iteration, Loss=loss);
    updateInfo(monitor, Epoch=epoch + " of " + numEpochs);
    monitor.Progress = 100 * iteration / numIterations;
    ... while ~monitor.Stop

and the Python one::

    with TrainingProgressMonitor(metrics=["Loss"], info=["Epoch"]) as monitor:
        while epoch < num_epochs and not monitor.stop:
            ...
            monitor.record_metrics(iteration, Loss=loss)
            monitor.update_info(Epoch=f"{epoch} of {num_epochs}")
            monitor.progress = 100 * iteration / num_iterations
    monitor.save_plot("training.png")

MATLAB's window becomes the terminal: a live ``rich`` display (progress bar with elapsed time and
ETA, current metrics, info fields) when the output is a terminal, plain log lines otherwise
(a pipe, a file, CI logs, or ``rich`` not installed). MATLAB's *Stop* button becomes Ctrl-C:
inside the ``with`` block the first Ctrl-C sets :attr:`~TrainingProgressMonitor.stop` so the loop
can finish its iteration and save; a second one raises :class:`KeyboardInterrupt`.

``rich`` and ``matplotlib`` are imported only when something is displayed or plotted.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["TrainingProgressMonitor"]

Point = tuple[float, float]


def _names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            # Names are keyword arguments of record_metrics/update_info, as in MATLAB.
            raise ValueError(f"{what} names must be valid identifiers, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique, got {list(names)}")
    return names


def _format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:d}:{secs:02d}"


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _as_x(iteration: Any) -> float:
    if isinstance(iteration, bool):
        raise TypeError("iteration must be a number, not bool")
    try:
        x = float(iteration)
    except (TypeError, ValueError):
        raise TypeError(f"iteration must be a real number, got {iteration!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"iteration must be finite, got {iteration!r}")
    # Keep integral x values as int so logs, CSV and JSON read "12", not "12.0".
    return int(x) if x.is_integer() else x


class TrainingProgressMonitor:
    """Track metrics, information fields, progress and a stop flag of a custom training loop.

    Parameters
    ----------
    metrics : str or iterable of str, default ("Loss",)
        Names of the metrics to record (MATLAB's ``Metrics``). Each becomes a keyword of
        :meth:`record_metrics` and, by default, its own subplot.
    info : str or iterable of str, default ("Epoch",)
        Names of the information fields (MATLAB's ``Info``), set with :meth:`update_info`.
    x_label : str, default "Iteration"
        Label of the horizontal axis (MATLAB's ``XLabel``).
    console : rich.console.Console, optional
        Console for the live display; giving one selects the ``rich`` display unless
        ``plain=True``.
    plain : bool, optional
        ``True`` forces plain log lines, ``False`` asks for the live display (falling back to
        plain lines, with a warning, when ``rich`` is missing). ``None`` (default) picks the
        live display when the output stream is a terminal and ``rich`` is installed.
    log_every : int, default 50
        In plain mode, write a line for every iteration that is a multiple of ``log_every``,
        for the first one, and whenever an info field or the status changes.
    stream : file-like, optional
        Where plain lines go; default ``sys.stdout`` (looked up at each write, so redirection
        and test capture work).
    quiet : bool, default False
        Record everything but display nothing.
    title : str, default "Training progress"
        Heading of the live display and of the saved plot.
    handle_sigint : bool, default True
        Inside a ``with`` block (main thread only), turn Ctrl-C into :attr:`stop`.

    Attributes
    ----------
    history : dict of str to list of (x, value)
        Recorded values of every metric, in recording order.

    Notes
    -----
    The clock starts when the monitor is created, as MATLAB's does, so create it next to the
    loop. The elapsed time and ETA are ``elapsed * (100 - progress) / progress``.

    Examples
    --------
    >>> monitor = TrainingProgressMonitor(metrics=["Loss"], info=["Epoch"], quiet=True)
    >>> for it in range(1, 4):
    ...     monitor.record_metrics(it, Loss=1.0 / it)
    ...     monitor.update_info(Epoch="1 of 1")
    ...     monitor.progress = 100 * it / 3
    >>> monitor.history["Loss"][-1]
    (3, 0.3333333333333333)
    >>> monitor.stop
    False
    """

    def __init__(
        self,
        metrics: str | Iterable[str] = ("Loss",),
        info: str | Iterable[str] = ("Epoch",),
        x_label: str = "Iteration",
        *,
        console: Any = None,
        plain: bool | None = None,
        log_every: int = 50,
        stream: TextIO | None = None,
        quiet: bool = False,
        title: str = "Training progress",
        handle_sigint: bool = True,
    ) -> None:
        self._metrics = _names(metrics, "metric")
        self._info_names = _names(info, "info")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
        self.x_label = str(x_label)
        self.title = str(title)
        self._console = console
        self._plain_requested = plain
        self._log_every = log_every
        self._stream = stream
        self._quiet = bool(quiet)
        self._handle_sigint = bool(handle_sigint)

        self._history: dict[str, list[Point]] = {name: [] for name in self._metrics}
        self._latest: dict[str, float | None] = dict.fromkeys(self._metrics)
        self._latest_x: float | None = None
        self._info: dict[str, str] = dict.fromkeys(self._info_names, "")
        self._groups: list[tuple[str, list[str]]] = [(name, [name]) for name in self._metrics]
        self._y_scales: dict[str, str] = {}
        self._progress = 0.0
        self._status = ""
        self._stop = False
        self._start = time.monotonic()
        self._end: float | None = None

        self._mode: str | None = None  # "rich", "plain" or "quiet", chosen at the first display
        self._live: Any = None
        self._pending_x: float | None = None  # plain mode: a line is due for this x
        self._line_due = False
        self._lines_written = 0
        self._dirty = False  # plain mode: something changed since the last line
        self._interrupts = 0
        self._previous_handler: Any = None
        self._sigint_installed = False
        self._closed = False

    # ----------------------------------------------------------------- properties (MATLAB's)
    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics, in declaration order."""
        return self._metrics

    @property
    def info(self) -> dict[str, str]:
        """Current values of the information fields (a copy)."""
        return dict(self._info)

    @property
    def history(self) -> dict[str, list[Point]]:
        """Per metric, the recorded ``(x, value)`` pairs (copies of the lists)."""
        return {name: list(points) for name, points in self._history.items()}

    @property
    def progress(self) -> float:
        """Percentage of training done, 0–100 (MATLAB's ``Progress``); setting it updates ETA."""
        return self._progress

    @progress.setter
    def progress(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"progress must be a percentage in [0, 100], got {value}")
        self._progress = value
        self._after_update(flush=True)

    @property
    def status(self) -> str:
        """A short free-text status (MATLAB's ``Status``), e.g. ``"Running"`` or ``"Stopped"``."""
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        value = str(value)
        changed = value != self._status
        self._status = value
        if changed:
            self._line_due = True
        self._after_update(flush=True)

    @property
    def stop(self) -> bool:
        """Whether a stop was requested (MATLAB's ``Stop``); the loop should test it."""
        return self._stop

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stop = bool(value)

    def request_stop(self) -> None:
        """Set :attr:`stop`, as MATLAB's *Stop* button does."""
        self._stop = True

    @property
    def elapsed(self) -> float:
        """Seconds since the monitor was created (frozen once it is closed)."""
        return (self._end if self._end is not None else time.monotonic()) - self._start

    @property
    def eta(self) -> float | None:
        """Estimated seconds left, from elapsed time and :attr:`progress`; ``None`` at 0 %."""
        if self._progress <= 0.0:
            return None
        return self.elapsed * (100.0 - self._progress) / self._progress

    # ----------------------------------------------------------------------- recording
    def record_metrics(self, iteration: float, **values: Any) -> None:
        """Record metric values at ``iteration`` (MATLAB's ``recordMetrics``).

        Parameters
        ----------
        iteration : int or float
            The x value (usually the iteration counter).
        **values
            ``name=value`` for declared metrics. Values may be Python or NumPy numbers or
            0-d tensors (converted with ``float``; a GPU tensor is synchronised).

        Raises
        ------
        ValueError
            For a metric that was not declared, or a value that is not a real scalar.
        """
        x = _as_x(iteration)
        unknown = [name for name in values if name not in self._history]
        if unknown:
            raise ValueError(
                f"unknown metric(s) {unknown}; this monitor records {list(self._metrics)}"
            )
        converted = {}
        for name, value in values.items():
            try:
                converted[name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"metric {name!r} must be a real scalar, got {type(value).__name__}"
                ) from None
        # A line for an earlier x is complete once a new x arrives; one for the same x waits
        # so that metrics recorded in several calls per iteration share a line.
        if self._pending_x is not None and x != self._pending_x:
            self._flush()
        for name, value in converted.items():
            self._history[name].append((x, value))
            self._latest[name] = value
        self._latest_x = x
        if self._due(x):
            self._line_due = True
        if self._line_due:
            self._pending_x = x
        self._after_update(flush=False)

    def update_info(self, **values: Any) -> None:
        """Set information fields (MATLAB's ``updateInfo``); values are shown as text.

        Raises
        ------
        ValueError
            For a field that was not declared.
        """
        unknown = [name for name in values if name not in self._info]
        if unknown:
            raise ValueError(
                f"unknown info field(s) {unknown}; this monitor shows {list(self._info_names)}"
            )
        for name, value in values.items():
            text = str(value)
            if text != self._info[name]:
                self._info[name] = text
                self._line_due = True
        if self._line_due and self._pending_x is None:
            self._pending_x = self._latest_x
        self._after_update(flush=False)

    def group_subplot(self, name: str, metrics: Iterable[str]) -> None:
        """Plot several metrics in one subplot titled ``name`` (MATLAB's ``groupSubPlot``)."""
        members = list(_names(metrics, "metric"))
        unknown = [m for m in members if m not in self._history]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; declared: {list(self._metrics)}")
        groups = [(title, [m for m in ms if m not in members]) for title, ms in self._groups]
        groups = [(title, ms) for title, ms in groups if ms]
        groups.append((str(name), members))
        self._groups = groups

    def set_y_scale(self, metrics: str | Iterable[str], scale: str) -> None:
        """Use a ``"linear"`` or ``"log"`` y axis for the subplots of ``metrics``."""
        if scale not in ("linear", "log"):
            raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
        for name in _names(metrics, "metric"):
            if name not in self._history:
                raise ValueError(f"unknown metric {name!r}; declared: {list(self._metrics)}")
            self._y_scales[name] = scale

    # ------------------------------------------------------------------------- display
    def _due(self, x: float) -> bool:
        if not self._lines_written:
            return True
        return float(x).is_integer() and int(x) % self._log_every == 0

    def _choose_mode(self) -> str:
        if self._quiet:
            return "quiet"
        if self._plain_requested:
            return "plain"
        wants_rich = self._plain_requested is False or self._console is not None
        if not wants_rich:
            stream = self._stream if self._stream is not None else sys.stdout
            try:
                wants_rich = stream.isatty()
            except (AttributeError, ValueError):
                wants_rich = False
        if not wants_rich:
            return "plain"
        try:
            import rich  # noqa: F401
        except ImportError:
            if self._plain_requested is False:
                warnings.warn(
                    "rich is not installed; showing plain progress lines "
                    "(pip install 'adamupdate[demo]')",
                    stacklevel=3,
                )
            return "plain"
        return "rich"

    def _after_update(self, *, flush: bool) -> None:
        if self._closed:
            return
        self._dirty = True
        if self._mode is None:
            self._mode = self._choose_mode()
            if self._mode == "rich":
                self._start_live()
        # The live display redraws itself from a timer (4 Hz): refreshing here would cost a
        # full render per iteration in fast loops.
        if self._mode == "plain" and flush:
            self._flush()

    def _flush(self) -> None:
        if self._mode == "plain" and self._line_due:
            self._write(self._line())
        self._line_due = False
        self._pending_x = None

    def _write(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(text + "\n")
        stream.flush()
        self._lines_written += 1
        self._dirty = False

    def _line(self) -> str:
        parts = [f"[{self._progress:5.1f}%]"]
        if self._latest_x is not None:
            parts.append(f"{self.x_label} {self._latest_x}")
        parts += [f"{n}={_format_value(v)}" for n, v in self._latest.items() if v is not None]
        parts += [f"{n}: {v}" for n, v in self._info.items() if v]
        parts.append(f"elapsed {_format_seconds(self.elapsed)}")
        if 0.0 < self._progress < 100.0:
            parts.append(f"ETA {_format_seconds(self.eta)}")
        if self._status:
            parts.append(f"({self._status})")
        return "  ".join(parts)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = self._console if self._console is not None else Console(file=self._stream)
        self._live = Live(
            get_renderable=self._renderable,
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self._live.start()
        # A loop that never closes its monitor must still give the terminal its cursor back.
        atexit.register(self.close)

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=100.0, completed=self._progress, width=40),
            Text(f"{self._progress:5.1f}%", style="bold"),
            Text(f"elapsed {_format_seconds(self.elapsed)}", style="cyan"),
            Text(f"ETA {_format_seconds(self.eta)}", style="cyan"),
        )
        fields = Table.grid(padding=(0, 2))
        fields.add_column(style="bold")
        fields.add_column()
        if self._latest_x is not None:
            fields.add_row(self.x_label, str(self._latest_x))
        for name, value in self._latest.items():
            fields.add_row(name, _format_value(value))
        for name, text in self._info.items():
            fields.add_row(name, text)
        if self._status:
            fields.add_row("Status", self._status)
        if self._interrupts:
            fields.add_row("", Text("Ctrl-C: stopping after this iteration", style="yellow"))
        return Group(Text(self.title, style="bold underline"), bar, fields)

    def close(self) -> None:
        """Finish the display (final line or frame) and stop the clock; safe to call twice."""
        if self._closed:
            return
        self._end = time.monotonic()
        if self._mode == "plain":
            # The last state gets a line unless the last line already showed it.
            self._line_due = self._line_due or self._dirty
            self._flush()
        elif self._mode == "rich" and self._live is not None:
            self._live.refresh()
            self._live.stop()
            atexit.unregister(self.close)
        self._closed = True

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> TrainingProgressMonitor:
        if self._handle_sigint and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
            self._sigint_installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore_sigint()
        self.close()

    def _restore_sigint(self) -> None:
        if self._sigint_installed:
            previous = self._previous_handler
            # None means a handler installed outside Python; the default is the closest match.
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
            self._sigint_installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            self._restore_sigint()
            raise KeyboardInterrupt
        self._stop = True
        if self._mode == "plain":
            # os.write: a buffered stream write could be re-entered if the signal landed
            # inside one, which raises RuntimeError.
            message = "\nCtrl-C: stopping after this iteration (press again to abort)\n"
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.write(sys.__stderr__.fileno(), message.encode())

    # ----------------------------------------------------------------------- saving
    def save_history(self, path: str | os.PathLike[str]) -> Path:
        """Write the recorded metrics to ``.csv`` (one column per metric) or ``.json``.

        The CSV has one row per x value, the x label as first column and an empty cell where
        a metric was not recorded at that x. The JSON holds ``x_label``, ``metrics``
        (``{name: [[x, value], ...]}``, non-finite values as ``null``), ``info``, ``status``,
        ``progress`` and ``elapsed_s``.

        Returns
        -------
        pathlib.Path
            The file written (parent directories are created).

        Raises
        ------
        ValueError
            If the suffix is neither ``.csv`` nor ``.json``.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"{path}: history is saved as .csv or .json, not {suffix!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".json":
            document = {
                "x_label": self.x_label,
                "metrics": {
                    name: [[x, v if math.isfinite(v) else None] for x, v in points]
                    for name, points in self._history.items()
                },
                "info": dict(self._info),
                "status": self._status,
                "progress": self._progress,
                "elapsed_s": self.elapsed,
            }
            path.write_text(json.dumps(document, indent=1) + "\n")
            return path
        rows: dict[float, dict[str, float]] = {}
        for name, points in self._history.items():
            for x, value in points:
                rows.setdefault(x, {})[name] = value  # the last value wins on a repeated x
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([self.x_label, *self._metrics])
            for x in sorted(rows):
                writer.writerow([x, *(rows[x].get(name, "") for name in self._metrics)])
        return path

    def load_history(self, source: str | os.PathLike[str] | Mapping[str, Iterable]) -> None:
        """Replace the history of some metrics, e.g. to continue a resumed run's plot.

        Parameters
        ----------
        source : path or mapping
            A file written by :meth:`save_history`, or ``{name: [(x, value), ...]}`` as
            returned by :attr:`history`. Metrics absent from ``source`` keep their history.
        """
        if isinstance(source, Mapping):
            loaded = {name: [(_as_x(x), float(v)) for x, v in pts] for name, pts in source.items()}
        else:
            loaded = _read_history(Path(source))
        unknown = [name for name in loaded if name not in self._history]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; declared: {list(self._metrics)}")
        for name, points in loaded.items():
            self._history[name] = list(points)
            self._latest[name] = points[-1][1] if points else None
            if points:
                last = points[-1][0]
                self._latest_x = last if self._latest_x is None else max(self._latest_x, last)

    def save_plot(self, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
        """Save a figure with one subplot per metric group against the x label (PNG, SVG, …).

        Uses matplotlib's object-oriented API with the Agg renderer and never ``pyplot``, so
        it works headless and leaves the backend of an interactive session alone.

        Returns
        -------
        pathlib.Path
            The file written (parent directories are created).

        Raises
        ------
        ModuleNotFoundError
            If matplotlib is not installed.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ModuleNotFoundError(
                "save_plot needs matplotlib: pip install 'adamupdate[demo]'"
            ) from None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        groups = self._groups or [("", [])]
        fig = Figure(figsize=(7.0, 2.6 * len(groups) + 0.6), layout="constrained")
        axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (group_title, members) in zip(axes, groups, strict=True):
            for name in members:
                points = self._history[name]
                xs = [x for x, _ in points]
                ys = [v for _, v in points]
                ax.plot(xs, ys, marker="o" if len(points) <= 50 else None, ms=3, lw=1.2, label=name)
                if self._y_scales.get(name) == "log":
                    ax.set_yscale("log")
            ax.set_title(group_title, fontsize=10)
            ax.grid(True, alpha=0.3)
            if len(members) > 1:
                ax.legend(fontsize=8)
        axes[-1].set_xlabel(self.x_label)
        suffix = f" — {self._status}" if self._status else ""
        fig.suptitle(f"{self.title}{suffix} ({_format_seconds(self.elapsed)})", fontsize=11)
        fig.savefig(path, dpi=dpi)
        return path

    def __repr__(self) -> str:
        return (
            f"TrainingProgressMonitor(metrics={list(self._metrics)}, "
            f"info={list(self._info_names)}, progress={self._progress:.1f}, "
            f"stop={self._stop}, status={self._status!r})"
        )


def _read_history(path: Path) -> dict[str, list[Point]]:
    if not path.is_file():
        raise FileNotFoundError(f"history file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text())
            metrics = document["metrics"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a history written by save_history ({exc})") from None
        return {
            name: [(_as_x(x), math.nan if v is None else float(v)) for x, v in points]
            for name, points in metrics.items()
        }
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty history CSV")
        names = header[1:]
        history: dict[str, list[Point]] = {name: [] for name in names}
        for row in reader:
            x = _as_x(float(row[0]))
            for name, cell in zip(names, row[1:], strict=False):
                if cell != "":
                    history[name].append((x, float(cell)))
    return history
