"""What every display does, and which one a monitor gets."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from ._recorder import Recorder


class Display(Protocol):
    """The monitor calls these after each change of its :class:`~._recorder.Recorder`."""

    def recorded(self, occasional: bool) -> None:
        """Metrics were recorded; ``occasional``: some are not recorded at every x."""

    def info_changed(self, changed: bool) -> None:
        """Information fields were set; ``changed``: some text differs."""

    def progressed(self) -> None:
        """The progress was set: the end of an iteration in MATLAB's loop."""

    def status_changed(self, changed: bool) -> None:
        """The status was set."""

    def stop_requested(self) -> None:
        """Ctrl-C was pressed; called from a signal handler (set flags only)."""

    def close(self) -> None:
        """Show the final state; called once."""


class NoDisplay:
    """``quiet=True``: record everything, show nothing."""

    def recorded(self, occasional: bool) -> None:
        pass

    def info_changed(self, changed: bool) -> None:
        pass

    def progressed(self) -> None:
        pass

    def status_changed(self, changed: bool) -> None:
        pass

    def stop_requested(self) -> None:
        pass

    def close(self) -> None:
        pass


def choose(
    recorder: Recorder,
    *,
    title: str,
    quiet: bool,
    plain: bool | None,
    console: Any,
    stream: TextIO | None,
    log_every: int,
    log_scales: Any,
    ctrl_c_armed: Callable[[], bool],
    on_stop: str | None = None,
) -> Display:
    """Quiet, plain lines, or the live ``rich`` view (see ``TrainingProgressMonitor``)."""
    from ._plain import PlainLog

    if quiet:
        return NoDisplay()
    if plain:
        return PlainLog(recorder, stream, log_every, on_stop)
    wants_live = plain is False or console is not None
    if not wants_live:
        out = stream if stream is not None else sys.stdout
        try:
            wants_live = out.isatty()
        except (AttributeError, ValueError):
            wants_live = False
    if wants_live:
        try:
            from ._live import LiveView

            return LiveView(
                recorder,
                title,
                console=console,
                stream=stream,
                log_scales=log_scales,
                ctrl_c_armed=ctrl_c_armed,
                on_stop=on_stop,
            )
        except ImportError:
            if plain is False:
                warnings.warn(
                    "rich is not installed; showing plain progress lines "
                    "(pip install 'adamupdate[demo]')",
                    stacklevel=4,
                )
    return PlainLog(recorder, stream, log_every, on_stop)
