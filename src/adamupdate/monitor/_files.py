"""The recorded run as files: ``.csv`` (one column per metric) and compact ``.json``.

The JSON keeps one ``[x, value]`` pair per line, so a 20-epoch run reads as a short header and
two lists rather than thousands of lines::

    {
      "x_label": "Iteration",
      "units": {"TestAccuracy": "%"},
      ...
      "run": {...},
      "metrics": {
        "Loss": [
          [1, 2.3042],
          [2, 2.2614],
    ...

Non-finite values are stored as ``null`` (strict JSON).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._recorder import Point, Recorder, as_x


def document(recorder: Recorder, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything recorded, as the JSON file holds it (``metrics`` last)."""
    return {
        "x_label": recorder.x_label,
        "units": dict(recorder.units),
        "status": recorder.status,
        "progress": recorder.progress,
        "elapsed_s": round(recorder.total_elapsed, 3),
        "part_elapsed_s": [round(s, 3) for s in recorder.part_times],
        "info": dict(recorder.info),
        "epoch_ends": recorder.epoch_ends,
        "run": dict(run or {}),
        "metrics": {
            name: [[x, v if math.isfinite(v) else None] for x, v in points]
            for name, points in recorder.history.items()
        },
    }


def dumps(doc: Mapping[str, Any]) -> str:
    """``doc`` as indented JSON in which a list holding no container, and a short dict holding
    none, is written on one line: each ``[x, value]`` pair of ``metrics`` is a line, and so is
    the list of epoch ends."""
    return _dumps(doc, "") + "\n"


def _dumps(value: Any, pad: str) -> str:
    inner = pad + "  "
    one_line = json.dumps(value, allow_nan=False, ensure_ascii=False)
    if isinstance(value, Mapping) and (
        any(isinstance(v, (Mapping, list)) for v in value.values()) or len(pad + one_line) > 96
    ):
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
        items = [f"{inner}{_dumps(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return one_line


def save(recorder: Recorder, path: Path, run: Mapping[str, Any] | None = None) -> Path:
    """Write ``path`` (``.csv`` or ``.json``); parent directories are created."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"{path}: history is saved as .csv or .json, not {suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(dumps(document(recorder, run)))
        return path
    rows: dict[float, dict[str, float]] = {}
    for name, points in recorder.history.items():
        for x, value in points:
            rows.setdefault(x, {})[name] = value  # the last value wins on a repeated x
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([recorder.x_label, *recorder.metrics])
        for x in sorted(rows):
            writer.writerow([x, *(rows[x].get(name, "") for name in recorder.metrics)])
    return path


def read(path: Path) -> tuple[dict[str, list[Point]], dict[str, Any]]:
    """A file written by :func:`save`: ``(history, extra)``, ``extra`` holding the JSON file's
    ``epoch_ends`` and ``part_elapsed_s`` when it has them."""
    if not path.is_file():
        raise FileNotFoundError(f"history file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
            metrics = doc["metrics"]
            history: dict[str, list[Point]] = {
                name: [(as_x(x), math.nan if v is None else float(v)) for x, v in points]
                for name, points in metrics.items()
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a history written by save_history ({exc})") from None
        extra = {key: doc[key] for key in ("epoch_ends", "part_elapsed_s") if key in doc}
        return history, extra
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty history CSV")
        names = header[1:]
        history = {name: [] for name in names}
        for row in reader:
            x = as_x(float(row[0]))
            for name, cell in zip(names, row[1:], strict=False):
                if cell != "":
                    history[name].append((x, float(cell)))
    return history, {}
