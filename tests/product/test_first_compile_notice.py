"""The one-line notice for a slow first numba compile (issue 20, case 5): written while a slow
block runs, never for a fast one. No wall-clock assertions: the slow block waits for the line."""

from __future__ import annotations

import io
import threading

from adamupdate._extras import notice_if_slow


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        self.written.set()
        return count


def test_a_slow_block_gets_the_line() -> None:
    stream = _Stream()
    with notice_if_slow("compiling the numba kernel", after=0.0, stream=stream):
        assert stream.written.wait(timeout=60)  # the block is "slow": it outlasts the timer
    assert stream.getvalue() == "compiling the numba kernel\n"


def test_a_fast_block_writes_nothing() -> None:
    stream = _Stream()
    with notice_if_slow("compiling", after=3600.0, stream=stream):
        pass
    live = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in live:
        timer.join(timeout=60)  # a cancelled timer ends at once, without writing
    assert stream.getvalue() == ""


def test_notice_once_times_only_the_first_block() -> None:
    from adamupdate import _extras

    key = ("test", object())
    first = _extras.notice_once(key, "compiling", after=3600.0)
    second = _extras.notice_once(key, "compiling", after=3600.0)
    assert type(first) is not type(second)
    with first, second:
        pass
    assert type(_extras.notice_once(key, "compiling")).__name__ == "nullcontext"
