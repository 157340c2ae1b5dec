"""What a training loop reports, kept in memory: no display, no files, no signals.

The :class:`Recorder` holds the metric history, the information fields, progress, status, the
stop flag, where epochs ended, and the clock (the time of this part of a run and of the earlier
parts that a resumed run continues). Renderers read it; only the monitor writes to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._pace import Pace

Point = tuple[float, float]


def check_names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    """Metric or info names: identifiers (they are keyword arguments, as in MATLAB), unique."""
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{what} names must be valid identifiers, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique, got {list(names)}")
    return names


def as_x(iteration: Any) -> float:
    """A finite real x value; integral ones stay ``int`` so files read ``12``, not ``12.0``."""
    if isinstance(iteration, bool):
        raise TypeError("iteration must be a number, not bool")
    try:
        x = float(iteration)
    except (TypeError, ValueError):
        raise TypeError(f"iteration must be a real number, got {iteration!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"iteration must be finite, got {iteration!r}")
    return int(x) if x.is_integer() else x


class Recorder:
    """Metrics, information fields, progress, status, stop flag, epoch ends and time of a run.

    Parameters
    ----------
    metrics, info : iterable of str
        Declared metric and information-field names.
    x_label : str
        What the x values are (``"Iteration"``).
    units : mapping of str to str, optional
        Unit of some metrics, e.g. ``{"TestAccuracy": "%"}``: values are recorded in that unit
        and renderers show it.
    earlier_s : iterable of float, optional
        Durations of the earlier parts of a resumed run.
    clock : callable, default time.monotonic
        Seconds from any origin; tests pass a fake clock.
    pace : Pace, optional
        The ETA estimator (default ``Pace()``).
    """

    def __init__(
        self,
        metrics: Iterable[str],
        info: Iterable[str],
        x_label: str = "Iteration",
        *,
        units: Mapping[str, str] | None = None,
        earlier_s: Iterable[float] = (),
        clock: Callable[[], float] = time.monotonic,
        pace: Pace | None = None,
    ) -> None:
        self.metrics = check_names(metrics, "metric")
        self.info_names = check_names(info, "info")
        self.x_label = str(x_label)
        self.units = dict(units or {})
        self.check_metrics(self.units)
        self._history: dict[str, list[Point]] = {name: [] for name in self.metrics}
        self.latest: dict[str, float | None] = dict.fromkeys(self.metrics)
        self.latest_x: float | None = None
        self._previous_x: float | None = None  # the x recorded before latest_x
        self.info: dict[str, str] = dict.fromkeys(self.info_names, "")
        self.status = ""
        self.stop = False
        self._epoch_ends: list[float] = []
        self._progress = 0.0
        self.earlier_s = self._durations(earlier_s)
        self._clock = clock
        self._pace = pace if pace is not None else Pace()
        self._start = clock()
        self._end: float | None = None

    # ------------------------------------------------------------------------- metrics
    def check_metrics(self, names: Iterable[str]) -> None:
        unknown = [name for name in names if name not in self.metrics]
        if unknown:
            raise ValueError(
                f"unknown metric(s) {unknown}; this monitor records {list(self.metrics)}"
            )

    def record(self, iteration: Any, values: Mapping[str, Any]) -> list[str]:
        """Append ``values`` at ``iteration``; nothing is kept if any of them is refused.

        Returns
        -------
        list of str
            The metrics that were not recorded at the previous x — values that come now and
            then (a test accuracy per epoch) rather than at every iteration; renderers show
            those at once.
        """
        x = as_x(iteration)
        self.check_metrics(values)
        converted = {}
        for name, value in values.items():
            try:
                converted[name] = float(value)  # 0-d tensors too (a GPU one synchronises)
            except (TypeError, ValueError):
                raise ValueError(
                    f"metric {name!r} must be a real scalar, got {type(value).__name__}"
                ) from None
        if x != self.latest_x:
            self._previous_x, self.latest_x = self.latest_x, x
        occasional = []
        for name, value in converted.items():
            points = self._history[name]
            if points:  # skipped the previous x: an occasional value
                skipped = points[-1][0] not in (self._previous_x, x)
            else:  # a first value, occasional unless the run is at its first x
                skipped = self._previous_x is not None
            if skipped:
                occasional.append(name)
            points.append((x, value))
            self.latest[name] = value
        return occasional

    @property
    def history(self) -> dict[str, list[Point]]:
        """Per metric, the recorded ``(x, value)`` pairs (copies)."""
        return {name: list(points) for name, points in self._history.items()}

    def load(self, history: Mapping[str, Iterable[Iterable[Any]]]) -> None:
        """Replace the history of the metrics in ``history`` (others keep theirs)."""
        self.check_metrics(history)
        loaded = {
            name: [(as_x(x), float(value)) for x, value in points]
            for name, points in history.items()
        }
        for name, points in loaded.items():
            self._history[name] = points
            self.latest[name] = points[-1][1] if points else None
        xs = [points[-1][0] for points in self._history.values() if points]
        self.latest_x = max(xs) if xs else None
        self._previous_x = None

    def xs(self) -> list[float]:
        """Every distinct x recorded, sorted."""
        return sorted({x for points in self._history.values() for x, _ in points})

    # ----------------------------------------------------------------------- info, epochs
    def update_info(self, fields: Mapping[str, Any]) -> list[str]:
        """Set information fields (shown as text); returns the names whose text changed."""
        unknown = [name for name in fields if name not in self.info]
        if unknown:
            raise ValueError(
                f"unknown info field(s) {unknown}; this monitor shows {list(self.info_names)}"
            )
        changed = []
        for name, value in fields.items():
            text = str(value)
            if text != self.info[name]:
                self.info[name] = text
                changed.append(name)
        return changed

    def mark_epoch(self, iteration: Any) -> None:
        """Note that an epoch ended at ``iteration`` (kept sorted, each x once)."""
        x = as_x(iteration)
        if x not in self._epoch_ends:
            self._epoch_ends.append(x)
            self._epoch_ends.sort()

    @property
    def epoch_ends(self) -> list[float]:
        return list(self._epoch_ends)

    # ------------------------------------------------------------------- progress, time
    @property
    def progress(self) -> float:
        return self._progress

    @progress.setter
    def progress(self, value: Any) -> None:
        value = float(value)
        if not 0.0 <= value <= 100.0:  # NaN fails too
            raise ValueError(f"progress must be a percentage in [0, 100], got {value}")
        self._progress = value
        self._pace.add(self._clock(), value)

    def now(self) -> float:
        """The clock's time, frozen once the recorder is closed."""
        return self._end if self._end is not None else self._clock()

    @property
    def elapsed(self) -> float:
        """Seconds of this part of the run (since the recorder was created)."""
        return self.now() - self._start

    @property
    def total_elapsed(self) -> float:
        """Seconds of the whole run: the earlier parts of a resumed run plus this one."""
        return math.fsum(self.earlier_s) + self.elapsed

    @property
    def part_times(self) -> list[float]:
        """Durations of every part so far, this one last (what a checkpoint keeps)."""
        return [*self.earlier_s, self.elapsed]

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, from the pace of recent progress updates (see :mod:`._pace`)."""
        if self._progress >= 100.0:
            return 0.0
        return self._pace.eta(self.now() if now is None else now)

    def continue_after(self, earlier_s: Iterable[float]) -> None:
        """Set the durations of the earlier parts of this run."""
        self.earlier_s = self._durations(earlier_s)

    def close(self) -> None:
        """Stop the clock (idempotent)."""
        if self._end is None:
            self._end = self._clock()

    @staticmethod
    def _durations(values: Iterable[float]) -> tuple[float, ...]:
        durations = tuple(float(v) for v in values)
        if not all(math.isfinite(v) and v >= 0 for v in durations):
            raise ValueError(f"durations must be finite and >= 0, got {list(durations)}")
        return durations
