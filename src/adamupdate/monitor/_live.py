"""The live terminal view (``rich``): MATLAB's progress window, redrawn four times a second.

It shows the title, a progress bar with the elapsed time (of the whole run, earlier parts of a
resumed run included) and the ETA, then one row per metric (latest value with its unit and a
sparkline of its history), the information fields and the status. When a metric comes that is
not recorded at every iteration (a test accuracy per epoch), the same line the plain log would
write is printed above the view, so the terminal keeps a record of each epoch.

``rich`` is imported when a view is created, never when this module is imported.
"""

from __future__ import annotations

import atexit
import math
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._recorder import Recorder
from ._text import ctrl_c_hints, format_seconds, format_value, log_line

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 24, *, log: bool = False) -> str:
    """``values`` in ``width`` block characters (each the mean of a slice of the values).

    >>> sparkline([4, 3, 2, 1], width=4)
    '█▆▃▁'
    """
    data = [math.log10(v) if log else v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not data:
        return ""
    width = min(width, len(data))
    means = []
    for i in range(width):
        chunk = data[i * len(data) // width : (i + 1) * len(data) // width]
        means.append(math.fsum(chunk) / len(chunk))
    low, high = min(means), max(means)
    span = high - low
    top = len(_BARS) - 1
    return "".join(_BARS[round((m - low) / span * top) if span else 0] for m in means)


class LiveView:
    """A ``rich.live.Live`` display of a :class:`~._recorder.Recorder`.

    Parameters
    ----------
    recorder : Recorder
    title : str
    console : rich.console.Console, optional
        Default: a console on ``stream``.
    stream : file-like, optional
    log_scales : collection of str
        Metrics whose sparklines are drawn on a log scale.
    ctrl_c_armed : callable
        Whether Ctrl-C sets the stop flag now (the view then says so).
    on_stop : str, optional
        What the loop does when it stops early (see :func:`._text.ctrl_c_hints`).
    """

    def __init__(
        self,
        recorder: Recorder,
        title: str,
        *,
        console: Any = None,
        stream: TextIO | None = None,
        log_scales: Any = (),
        ctrl_c_armed: Callable[[], bool] = lambda: False,
        on_stop: str | None = None,
    ) -> None:
        import rich  # noqa: F401  (first: its submodules may be cached without it)
        from rich.console import Console
        from rich.live import Live

        self._recorder = recorder
        self._title = title
        self._log_scales = log_scales
        self._milestone = False
        self._ctrl_c_armed = ctrl_c_armed  # whether Ctrl-C sets the stop flag (for the hint)
        self._hints = ctrl_c_hints(on_stop)
        self._stopping = False
        self._closed = False
        self._live = Live(
            get_renderable=self.renderable,
            console=console if console is not None else Console(file=stream),
            refresh_per_second=4,  # refreshing on every update would cost a render per step
            transient=False,
        )
        self._live.start()
        # A loop that never closes its monitor must still give the terminal its cursor back.
        atexit.register(self.close)

    def recorded(self, occasional: bool) -> None:
        self._milestone = self._milestone or occasional

    def info_changed(self, changed: bool) -> None:
        pass

    def progressed(self) -> None:
        self._print_milestone()

    def status_changed(self, changed: bool) -> None:
        self._print_milestone()

    def stop_requested(self) -> None:
        self._stopping = True  # shown at the next refresh; a signal handler must not print

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._print_milestone()
        self._live.refresh()
        self._live.stop()
        atexit.unregister(self.close)

    def _print_milestone(self) -> None:
        if self._milestone:
            from rich.text import Text

            self._live.console.print(Text(log_line(self._recorder)))
            self._milestone = False

    def renderable(self) -> Any:
        from rich.console import Group, RenderableType
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        rec = self._recorder
        elapsed = format_seconds(rec.total_elapsed)
        if rec.earlier_s:
            elapsed += f" ({len(rec.part_times)} parts, this one {format_seconds(rec.elapsed)})"
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=100.0, completed=rec.progress, width=40),
            Text(f"{rec.progress:5.1f}%", style="bold"),
            Text(f"Elapsed {elapsed}", style="cyan"),
            Text(f"ETA {format_seconds(rec.eta())}", style="cyan"),
        )
        fields = Table.grid(padding=(0, 2))
        fields.add_column(style="bold")
        fields.add_column(justify="right")
        fields.add_column(style="green")
        if rec.latest_x is not None:
            fields.add_row(rec.x_label, str(rec.latest_x), "")
        history = rec.history
        for name, value in rec.latest.items():
            values = [v for _, v in history[name]]
            line = sparkline(values, log=name in self._log_scales) if len(values) > 1 else ""
            fields.add_row(name, format_value(value, rec.units.get(name, "")), line)
        for name, text in rec.info.items():
            fields.add_row(name, text, "")
        if rec.status:
            fields.add_row("Status", rec.status, "")
        parts: list[RenderableType] = [Text(self._title, style="bold underline"), bar, fields]
        armed, stopping = self._hints
        if self._stopping:
            parts.append(Text(stopping, style="yellow"))
        elif self._ctrl_c_armed() and not self._closed:
            parts.append(Text(armed, style="dim"))
        return Group(*parts)
