"""Optional dependencies: imported when a call needs them, with the extra that installs them;
and a notice for the one slow thing an optional dependency does (numba's first compile)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import TextIO


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that says which extra installs it.

    The extra is quoted, so the command also works in zsh, where ``[...]`` is a glob.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} need{'s' if not purpose.endswith('s') else ''} {module.split('.')[0]}: "
            f"pip install 'adamupdate[{extra}]'"
        ) from error


@contextlib.contextmanager
def notice_if_slow(
    message: str, after: float = 1.0, stream: TextIO | None = None
) -> Iterator[None]:
    """Write ``message`` as one line (default: on ``sys.stderr``) if the block is still running
    ``after`` seconds in: a first numba compile (several seconds with an empty cache) is then
    announced, while a load from numba's disk cache (well under a second) stays silent.

    The line comes from a timer thread while the block runs; it is cancelled when the block
    ends, so a fast block writes nothing.
    """

    def say() -> None:
        out = stream if stream is not None else sys.stderr
        if out is not None:  # None when Python runs without a stderr
            out.write(message + "\n")
            out.flush()

    timer = threading.Timer(after, say)
    timer.daemon = True  # never keeps the interpreter alive
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


_NOTICED: set[object] = set()


def notice_once(
    key: object, message: str, after: float = 1.0
) -> contextlib.AbstractContextManager[None]:
    """:func:`notice_if_slow` for the first block with this ``key`` (a kernel and its dtype:
    what numba compiles once per process); later blocks get a no-op context, which costs no
    thread. For the kernel's first call::

        with notice_once(("numba", dtype.str), f"adamupdate: compiling ... for {dtype} ..."):
            kernel(...)
    """
    if key in _NOTICED:
        return contextlib.nullcontext()
    _NOTICED.add(key)
    return notice_if_slow(message, after)
