"""``TrainingProgressMonitor``: MATLAB's API over a recorder, a display, files and Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from . import _display, _figure, _files
from ._ctrl_c import CtrlC
from ._recorder import Point, Recorder, check_names


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
    units : mapping of str to str, optional
        Units of some metrics, e.g. ``{"TestAccuracy": "%"}``. Values are recorded in that
        unit; the display, the log lines and the plot show it (``"%"``: percent tick labels).
    console : rich.console.Console, optional
        Console for the live display; giving one selects the ``rich`` display unless
        ``plain=True``.
    plain : bool, optional
        ``True`` forces plain log lines, ``False`` asks for the live display (falling back to
        plain lines, with a warning, when ``rich`` is missing). ``None`` (default) picks the
        live display when the output stream is a terminal and ``rich`` is installed.
    log_every : int, default 50
        In plain mode, also write a line for every iteration that is a multiple of this.
    stream : file-like, optional
        Where the display goes; default ``sys.stdout`` (looked up at each write).
    quiet : bool, default False
        Record everything but display nothing.
    title : str, default "Training progress"
        Heading of the live display and of the saved plot.
    handle_sigint : bool, default True
        Inside a ``with`` block (main thread only), turn Ctrl-C into :attr:`stop`.
    on_stop : str, optional
        What your loop does when it stops early, for the Ctrl-C hint: with ``"saves"`` the
        live view reads "Ctrl-C stops after this iteration and saves". Without it the hint
        says only what is sure, that Ctrl-C sets :attr:`stop`.
    clock : callable, optional
        Seconds from any origin (default ``time.monotonic``); for tests.

    Attributes
    ----------
    history : dict of str to list of (x, value)
        Recorded values of every metric, in recording order.

    Notes
    -----
    The clock starts when the monitor is created, as MATLAB's does, so create it next to the
    loop. The ETA comes from the pace of recent progress updates, leaving out the first ones,
    which hold the start-up (see :mod:`adamupdate.monitor._pace`).

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
        units: Mapping[str, str] | None = None,
        console: Any = None,
        plain: bool | None = None,
        log_every: int = 50,
        stream: TextIO | None = None,
        quiet: bool = False,
        title: str = "Training progress",
        handle_sigint: bool = True,
        on_stop: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        self._recorder = Recorder(metrics, info, x_label, units=units, **extra)
        self._layout = _figure.Layout.one_per_metric(self._recorder.metrics)
        self.title = str(title)
        self._display_options = dict(
            quiet=bool(quiet),
            plain=plain,
            console=console,
            stream=stream,
            log_every=log_every,
            on_stop=None if on_stop is None else str(on_stop),
        )
        self._display: _display.Display | None = None  # chosen at the first update
        self._ctrl_c = CtrlC(self._on_ctrl_c) if handle_sigint else None
        self._closed = False

    # ----------------------------------------------------------------- properties (MATLAB's)
    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics, in declaration order."""
        return self._recorder.metrics

    @property
    def x_label(self) -> str:
        return self._recorder.x_label

    @property
    def units(self) -> dict[str, str]:
        return dict(self._recorder.units)

    @property
    def info(self) -> dict[str, str]:
        """Current values of the information fields (a copy)."""
        return dict(self._recorder.info)

    @property
    def history(self) -> dict[str, list[Point]]:
        """Per metric, the recorded ``(x, value)`` pairs (copies of the lists)."""
        return self._recorder.history

    @property
    def epoch_ends(self) -> list[float]:
        """The x values passed to :meth:`mark_epoch`, sorted."""
        return self._recorder.epoch_ends

    @property
    def progress(self) -> float:
        """Percentage of training done, 0–100 (MATLAB's ``Progress``)."""
        return self._recorder.progress

    @progress.setter
    def progress(self, value: float) -> None:
        self._recorder.progress = value
        self._show().progressed()

    @property
    def status(self) -> str:
        """A short free-text status (MATLAB's ``Status``), e.g. ``"Running"`` or ``"Stopped"``."""
        return self._recorder.status

    @status.setter
    def status(self, value: str) -> None:
        value = str(value)
        changed = value != self._recorder.status
        self._recorder.status = value
        self._show().status_changed(changed)

    @property
    def stop(self) -> bool:
        """Whether a stop was requested (MATLAB's ``Stop``); the loop should test it."""
        return self._recorder.stop

    @stop.setter
    def stop(self, value: bool) -> None:
        self._recorder.stop = bool(value)

    def request_stop(self) -> None:
        """Set :attr:`stop`, as MATLAB's *Stop* button does."""
        self._recorder.stop = True

    @property
    def elapsed(self) -> float:
        """Seconds since the monitor was created (frozen once it is closed)."""
        return self._recorder.elapsed

    @property
    def total_elapsed(self) -> float:
        """Seconds of the whole run: :attr:`elapsed` plus the earlier parts of a resumed run."""
        return self._recorder.total_elapsed

    @property
    def part_times(self) -> list[float]:
        """Seconds of each part of the run, this one last (keep them to resume)."""
        return self._recorder.part_times

    @property
    def eta(self) -> float | None:
        """Estimated seconds left, from the pace of recent iterations; ``None`` until known."""
        return self._recorder.eta()

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
        occasional = self._recorder.record(iteration, values)
        self._show().recorded(bool(occasional))

    def update_info(self, **values: Any) -> None:
        """Set information fields (MATLAB's ``updateInfo``); values are shown as text.

        Raises
        ------
        ValueError
            For a field that was not declared.
        """
        changed = self._recorder.update_info(values)
        self._show().info_changed(bool(changed))

    def mark_epoch(self, iteration: float) -> None:
        """Note that an epoch ended at ``iteration``: the plot draws a dotted line there and
        numbers the epochs along its top axis."""
        self._recorder.mark_epoch(iteration)

    def group_subplot(self, name: str, metrics: Iterable[str]) -> None:
        """Plot several metrics in one subplot titled ``name`` (MATLAB's ``groupSubPlot``).

        The subplot stands where the first of its metrics stands in :attr:`metrics`; its name
        is what :meth:`set_y_scale` takes.
        """
        members = list(check_names(metrics, "metric"))
        self._recorder.check_metrics(members)
        self._layout.group(str(name), members)

    @property
    def groups(self) -> list[tuple[str, list[str]]]:
        """The subplots: ``(title, metrics)`` in drawing order."""
        return [(title, list(members)) for title, members in self._layout.groups]

    def set_y_scale(self, subplots: str | Iterable[str], scale: str) -> None:
        """Use a ``"linear"`` or ``"log"`` y axis for ``subplots`` (MATLAB's ``yscale``).

        Parameters
        ----------
        subplots : str or iterable of str
            Subplot names, as MATLAB's ``yscale(monitor, "Loss", "log")`` takes them: the name
            given to :meth:`group_subplot`, or a metric's name (its own subplot, or the subplot
            it is grouped in).
        scale : {"linear", "log"}

        Raises
        ------
        ValueError
            For a name that is neither a subplot nor a metric (the message lists both), or
            another scale.
        """
        if scale not in ("linear", "log"):
            raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
        names = (subplots,) if isinstance(subplots, str) else tuple(subplots)
        metrics: list[str] = []
        for name in names:
            members = self._layout.metrics_of(name) if isinstance(name, str) else None
            if members is None and name in self._recorder.metrics:
                members = self._group_of(name)
            if members is None:
                raise ValueError(
                    f"set_y_scale: {name!r} is neither a subplot nor a metric; subplots: "
                    f"{[title for title, _ in self._layout.groups]}, metrics: "
                    f"{list(self._recorder.metrics)}"
                )
            metrics += members
        for name in metrics:
            self._layout.y_scales[name] = scale

    def _group_of(self, metric: str) -> list[str]:
        """The metrics that share ``metric``'s subplot (one y axis for all of them)."""
        return next(list(ms) for _, ms in self._layout.groups if metric in ms)

    # ------------------------------------------------------------------------- display
    def _show(self) -> _display.Display:
        if self._closed:
            return _display.NoDisplay()
        if self._display is None:
            log_scales = {n for n, s in self._layout.y_scales.items() if s == "log"}
            self._display = _display.choose(
                self._recorder,
                title=self.title,
                log_scales=log_scales,
                ctrl_c_armed=lambda: self._ctrl_c is not None and self._ctrl_c.installed,
                **self._display_options,
            )
        return self._display

    def close(self) -> None:
        """Finish the display (final line or frame) and stop the clock; safe to call twice."""
        if self._closed:
            return
        self._recorder.close()
        if self._display is not None:
            self._display.close()
        self._closed = True

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> TrainingProgressMonitor:
        if self._ctrl_c is not None:
            self._ctrl_c.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._ctrl_c is not None:
            self._ctrl_c.restore()
        self.close()

    def _on_ctrl_c(self) -> None:
        self._recorder.stop = True
        if self._display is not None:
            self._display.stop_requested()

    # ----------------------------------------------------------------------- saving
    def save_history(
        self, path: str | os.PathLike[str], *, run: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the recorded metrics to ``.csv`` (one column per metric) or ``.json``.

        The CSV has one row per x value, the x label as first column and an empty cell where
        a metric was not recorded at that x. The JSON holds ``x_label``, ``units``,
        ``status``, ``progress``, ``elapsed_s`` (the whole run), ``part_elapsed_s`` (each
        part of a resumed run), ``info``, ``epoch_ends``, ``run`` (what you pass: settings,
        versions) and ``metrics`` (``{name: [[x, value], ...]}``, one pair per line,
        non-finite values as ``null``).

        Returns
        -------
        pathlib.Path
            The file written (parent directories are created).

        Raises
        ------
        ValueError
            If the suffix is neither ``.csv`` nor ``.json``.
        """
        return _files.save(self._recorder, Path(path), run)

    def load_history(self, source: str | os.PathLike[str] | Mapping[str, Iterable]) -> None:
        """Replace the history of some metrics, e.g. to continue a resumed run's plot.

        Parameters
        ----------
        source : path or mapping
            A file written by :meth:`save_history` (a JSON file also brings back its epoch
            ends and, as earlier parts, its part times), or ``{name: [(x, value), ...]}`` as
            returned by :attr:`history`. Metrics absent from ``source`` keep their history.
        """
        if isinstance(source, Mapping):
            self._recorder.load(source)
            return
        history, extra = _files.read(Path(source))
        self._recorder.load(history)
        for x in extra.get("epoch_ends", ()):
            self._recorder.mark_epoch(x)
        if "part_elapsed_s" in extra:
            self._recorder.continue_after(extra["part_elapsed_s"])

    def resume(
        self,
        history: Mapping[str, Iterable],
        *,
        part_times: Iterable[float] = (),
        epoch_ends: Iterable[float] = (),
    ) -> None:
        """Continue an earlier run: its metric history, the durations of its parts (counted in
        the total time) and its epoch ends."""
        self._recorder.load(history)
        self._recorder.continue_after(part_times)
        for x in epoch_ends:
            self._recorder.mark_epoch(x)

    def figure(self, *, note: str | None = None, smoothing: float = _figure.SMOOTHING) -> Any:
        """The plot as a ``matplotlib.figure.Figure`` (see :meth:`save_plot`)."""
        return _figure.build(
            self._recorder, self._layout, title=self.title, note=note, smoothing=smoothing
        )

    def save_plot(
        self,
        path: str | os.PathLike[str],
        *,
        dpi: int = 120,
        note: str | None = None,
        smoothing: float = _figure.SMOOTHING,
    ) -> Path:
        """Save the training plot (PNG, SVG, PDF …, from the suffix).

        One subplot per metric group with labelled axes; metrics recorded at most iterations
        drawn raw (light) and smoothed (an exponential moving average with factor
        ``smoothing``); epoch ends from :meth:`mark_epoch` as dotted lines; the status, the
        information fields and the total time above; ``note`` (run settings) below.

        Returns
        -------
        pathlib.Path
            The file written (parent directories are created).

        Raises
        ------
        ModuleNotFoundError
            If matplotlib is not installed.
        """
        return _figure.save(self.figure(note=note, smoothing=smoothing), Path(path), dpi)

    def __repr__(self) -> str:
        return (
            f"TrainingProgressMonitor(metrics={list(self.metrics)}, "
            f"info={list(self._recorder.info_names)}, progress={self.progress:.1f}, "
            f"stop={self.stop}, status={self.status!r})"
        )
