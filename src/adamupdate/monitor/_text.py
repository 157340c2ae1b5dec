"""Text shared by every renderer: durations, values with units, and the one log-line format.

A log line is ``[progress%]`` followed by ``Name=value`` fields separated by two spaces::

    [ 62.5%]  Iteration=5  Loss=2.065  TestAccuracy=43.4%  Epoch="2 of 2"  Elapsed=0:02  ETA=0:01

Values holding a space, a quote or ``=`` are written as JSON strings, so :func:`parse_line`
(and any ``key=value`` reader) gets every field back.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._recorder import Recorder

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
_LINE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)%\]((?:\s+\w+=(?:\"(?:[^\"\\]|\\.)*\"|\S+))*)$")


def format_seconds(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = round(max(seconds, 0.0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:d}:{secs:02d}"


def format_value(value: float | None, unit: str = "") -> str:
    """Four significant digits and the unit after a space; percentages with one decimal.

    >>> format_value(0.123456), format_value(94.0, "%"), format_value(2.5, "s")
    ('0.1235', '94.0%', '2.5 s')
    """
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if unit == "%":
        return f"{value:.1f}%"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def quote(text: str) -> str:
    """``text`` as a field value: bare when it is one word, else a JSON string."""
    if text and not re.search(r'[\s"=]', text):
        return text
    return json.dumps(text, ensure_ascii=False)


def log_line(recorder: Recorder, *, now: float | None = None) -> str:
    """The line that describes ``recorder`` now: progress, x, metrics, info, time, status."""
    fields: list[tuple[str, str]] = []
    if recorder.latest_x is not None:
        # The x label as a field name: "Global step" becomes GlobalStep.
        words = re.split(r"\W+", recorder.x_label)
        x_name = "".join(word[:1].upper() + word[1:] for word in words)
        fields.append((x_name or "X", str(recorder.latest_x)))
    for name, value in recorder.latest.items():
        if value is not None:
            fields.append((name, format_value(value, recorder.units.get(name, ""))))
    fields += [(name, text) for name, text in recorder.info.items() if text]
    fields.append(("Elapsed", format_seconds(recorder.total_elapsed)))
    eta = recorder.eta(now)
    if eta is not None and recorder.progress < 100.0:
        fields.append(("ETA", format_seconds(eta)))
    if recorder.status:
        fields.append(("Status", recorder.status))
    body = "  ".join(f"{name}={quote(value)}" for name, value in fields)
    return f"[{recorder.progress:5.1f}%]  {body}"


def parse_line(line: str) -> tuple[float, dict[str, str]]:
    """Read a :func:`log_line` back: ``(progress, {field: value})``.

    Raises
    ------
    ValueError
        If ``line`` is not in that format.
    """
    match = _LINE.match(line)
    if match is None:
        raise ValueError(f"not a progress line: {line!r}")
    fields = {}
    for name, value in _FIELD.findall(match[2]):
        fields[name] = json.loads(value) if value.startswith('"') else value
    return float(match[1]), fields


def ctrl_c_hints(on_stop: str | None) -> tuple[str, str]:
    """The Ctrl-C hint while it is armed, and the line once it was pressed.

    Only what is true for the loop at hand: without ``on_stop`` (what the loop does when it
    stops early, which only the loop knows) the hint says that Ctrl-C sets ``monitor.stop``.

    >>> ctrl_c_hints("saves")[0]
    'Ctrl-C stops after this iteration and saves'
    >>> ctrl_c_hints(None)[1]
    'Ctrl-C: monitor.stop is set (press again to interrupt)'
    """
    if on_stop:
        return (
            f"Ctrl-C stops after this iteration and {on_stop}",
            f"Ctrl-C: stopping after this iteration, then {on_stop} (press again to abort)",
        )
    return (
        "Ctrl-C sets monitor.stop (press it twice to interrupt)",
        "Ctrl-C: monitor.stop is set (press again to interrupt)",
    )
