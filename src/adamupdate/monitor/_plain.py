"""Plain progress lines, for pipes, files, CI logs, or when ``rich`` is missing.

A line (format: :func:`._text.log_line`) is written for the first iteration, for every
iteration that is a multiple of ``log_every``, whenever a metric comes that is not recorded at
every iteration (a test accuracy per epoch) or the status changes, and once at the end.
Information fields show in the next line. A line is written when the loop sets the progress
(or records the next x), so values recorded in several calls during one iteration share one
line; at 100 % it waits for the status or the end, so the last iteration and "Finished" share
the last line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO

from ._recorder import Recorder
from ._text import ctrl_c_hints, log_line


class PlainLog:
    """Writes :func:`._text.log_line` lines to ``stream`` (default: ``sys.stdout`` at each
    write, so redirection and test capture work)."""

    def __init__(
        self,
        recorder: Recorder,
        stream: TextIO | None = None,
        log_every: int = 50,
        on_stop: str | None = None,
    ):
        self._recorder = recorder
        # Encoded now: the signal handler must not build strings it could fail on.
        self._stop_message = f"\n{ctrl_c_hints(on_stop)[1]}\n".encode()
        self._stream = stream
        self._every = log_every
        self._due = False  # a line is owed
        self._pending_x: float | None = None  # ... for this x
        self._dirty = False  # something changed since the last line
        self.lines_written = 0

    def recorded(self, occasional: bool) -> None:
        x = self._recorder.latest_x
        # A line owed for an earlier x is complete once a new x arrives.
        if self._pending_x is not None and x != self._pending_x:
            self._flush()
        every = isinstance(x, int) and x % self._every == 0
        if not self.lines_written or occasional or every:
            self._due = True
        if self._due:
            self._pending_x = x
        self._dirty = True

    def info_changed(self, changed: bool) -> None:
        self._dirty = self._dirty or changed

    def progressed(self) -> None:
        self._dirty = True
        if self._recorder.progress < 100.0:
            self._flush()

    def status_changed(self, changed: bool) -> None:
        self._due = self._due or changed
        self._dirty = True
        self._flush()

    def stop_requested(self) -> None:
        # Called from the signal handler: os.write, because a buffered stream's write could be
        # re-entered if the signal landed inside one, which raises RuntimeError.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if sys.__stderr__ is not None:  # None when Python runs without one
                os.write(sys.__stderr__.fileno(), self._stop_message)

    def close(self) -> None:
        # The last state gets a line unless the last line already showed it.
        self._due = self._due or self._dirty
        self._flush()

    def _flush(self) -> None:
        if self._due:
            stream = self._stream if self._stream is not None else sys.stdout
            stream.write(log_line(self._recorder) + "\n")
            stream.flush()
            self.lines_written += 1
            self._dirty = False
        self._due = False
        self._pending_x = None
