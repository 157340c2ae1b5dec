"""MATLAB's *Stop* button as Ctrl-C: the first press asks the loop to stop, the second aborts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class CtrlC:
    """While installed, the first SIGINT calls ``on_first`` and the second raises
    :class:`KeyboardInterrupt`; :meth:`restore` puts the previous handler back.

    ``on_first`` runs inside a signal handler: it must only set flags, never write to a
    buffered stream.
    """

    def __init__(self, on_first: Callable[[], None]) -> None:
        self._on_first = on_first
        self._presses = 0
        self._previous: Any = None
        self.installed = False

    def install(self) -> bool:
        """Install the handler (the main thread only: Python delivers signals there)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return self.installed
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handle)
        self.installed = True
        return True

    def restore(self) -> None:
        if self.installed:
            previous = self._previous
            # None means a handler installed outside Python; the default is the closest match.
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
            self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self._presses += 1
        if self._presses > 1:
            self.restore()
            raise KeyboardInterrupt
        self._on_first()
