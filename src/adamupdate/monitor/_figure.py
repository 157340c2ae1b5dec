"""The figure, drawn as MATLAB's training plot reads.

- One subplot per metric group (one per metric unless grouped), in the order of the metrics
  (a group where its first metric stands), each titled (the metric or the group) with labelled
  axes: the
  x label and the metric with its unit (``TestAccuracy (%)``); percent metrics get percent tick
  labels; a metric set to ``"log"`` gets a log axis.
- A metric recorded at most x values (the training loss) is drawn raw in a light colour with a
  smoothed line on top: a debiased exponential moving average, ``s = f·s + (1 − f)·y`` divided
  by ``1 − fᵗ``, with smoothing factor ``f`` = :data:`SMOOTHING` unless given. A metric
  recorded now and then (a test accuracy per epoch) is drawn as points joined by lines, the
  last one labelled with its value.
- Epoch ends are dotted vertical lines on every subplot, and the top axis numbers the epochs.
- The title holds the status; the line under it the information fields, the last x and the
  run's total time (all parts of a resumed run, listed).

matplotlib's object API with the Agg canvas only, never ``pyplot``: it works headless and
leaves an interactive session's backend alone. matplotlib is imported when a figure is made.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._recorder import Recorder
from ._text import format_seconds, format_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SMOOTHING = 0.9
EPOCH_LINE_GID = "epoch-end"
LAST_VALUE_GID = "last-value"


@dataclass
class Layout:
    """Which metrics share a subplot and which y axes are logarithmic.

    As in MATLAB's ``trainingProgressMonitor``, the subplots follow the order of the metrics:
    a group stands where the first of its metrics stands in ``metrics``.
    """

    groups: list[tuple[str, list[str]]]
    y_scales: dict[str, str] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # metric -> its place in `metrics`

    @classmethod
    def one_per_metric(cls, metrics: Sequence[str]) -> Layout:
        return cls(
            [(name, [name]) for name in metrics], order={m: i for i, m in enumerate(metrics)}
        )

    def group(self, name: str, members: list[str]) -> None:
        """Move ``members`` into one subplot titled ``name`` (MATLAB's ``groupSubPlot``)."""
        groups = [(title, [m for m in ms if m not in members]) for title, ms in self.groups]
        self.groups = [(title, ms) for title, ms in groups if ms]
        self.groups.append((name, list(members)))
        self.groups.sort(
            key=lambda group: min(self.order.get(m, len(self.order)) for m in group[1])
        )

    def metrics_of(self, name: str) -> list[str] | None:
        """The metrics of the subplot titled ``name``, or ``None`` if there is none."""
        return next((list(ms) for title, ms in self.groups if title == name), None)


def smooth(values: Sequence[float], factor: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average; non-finite values are skipped (NaN out).

    >>> [round(v, 3) for v in smooth([1.0, 0.0, 0.0], factor=0.5)]
    [1.0, 0.333, 0.143]
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"smoothing factor must be in [0, 1), got {factor}")
    average = weight = 0.0
    out = []
    for value in values:
        if not math.isfinite(value):
            out.append(math.nan)
            continue
        average = factor * average + (1.0 - factor) * value
        weight = factor * weight + (1.0 - factor)
        out.append(average / weight)
    return out


def info_line(recorder: Recorder) -> str:
    """``Epoch: 2 of 20 · LearnRate: 0.001 · Iteration: 62 · Elapsed: 1:02 (2 parts: …)``."""
    parts = [f"{name}: {text}" for name, text in recorder.info.items() if text]
    if recorder.latest_x is not None:
        parts.append(f"{recorder.x_label}: {recorder.latest_x}")
    elapsed = f"Elapsed: {format_seconds(recorder.total_elapsed)}"
    if recorder.earlier_s:
        times = " + ".join(format_seconds(s) for s in recorder.part_times)
        elapsed += f" ({len(recorder.part_times)} parts: {times})"
    parts.append(elapsed)
    return " · ".join(parts)


def build(
    recorder: Recorder,
    layout: Layout,
    *,
    title: str,
    note: str | None = None,
    smoothing: float = SMOOTHING,
) -> Any:
    """A ``matplotlib.figure.Figure`` of everything recorded."""
    try:
        from matplotlib import ticker
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(
            "save_plot needs matplotlib: pip install 'adamupdate[demo]'"
        ) from None
    groups = layout.groups or [("", [])]
    history = recorder.history
    xs = recorder.xs()
    colours = {name: f"C{i}" for i, name in enumerate(recorder.metrics)}
    fig = Figure(figsize=(8.0, 2.9 * len(groups) + 1.3), layout="constrained")
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (group_title, members) in zip(axes, groups, strict=True):
        for name in members:
            points = history[name]
            _draw_metric(ax, name, points, colours[name], len(xs), recorder.units, smoothing)
        units = {recorder.units.get(name, "") for name in members}
        unit = units.pop() if len(units) == 1 else ""
        label = members[0] if len(members) == 1 else group_title
        ax.set_ylabel(f"{label} ({unit})" if unit else label)
        ax.set_title(group_title, fontsize=10)  # every subplot, as MATLAB titles each
        if any(layout.y_scales.get(name) == "log" for name in members):
            ax.set_yscale("log")
            # Plain numbers (0.1, 2), not 10⁻¹ or 2×10⁰; which ticks get a label is matplotlib's.
            ax.yaxis.set_major_formatter(_plain_log_formatter())
            ax.yaxis.set_minor_formatter(_plain_log_formatter())
        elif unit == "%":
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.set_xlabel(recorder.x_label)
        ax.tick_params(labelbottom=True)  # sharex hides them on the upper subplots
        ax.grid(True, which="major", alpha=0.3)
        for end in recorder.epoch_ends:
            if xs and end < xs[-1]:  # the last epoch's end is the plot's right edge
                ax.axvline(end, color="0.45", ls=":", lw=0.9, gid=EPOCH_LINE_GID)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=8, loc="best")
    _number_epochs(axes[0], recorder.epoch_ends, xs)
    status = f" — {recorder.status}" if recorder.status else ""
    fig.suptitle(f"{title}{status}\n{info_line(recorder)}", fontsize=10.5)
    if note:
        fig.supxlabel(textwrap.fill(note, 130), fontsize=8, color="0.35")
    return fig


def _plain_log_formatter() -> Any:
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    return PlainLogFormatter(labelOnlyBase=False)


def save(figure: Any, path: Path, dpi: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def is_frequent(points: Sequence[tuple[float, float]], n_xs: int) -> bool:
    """Recorded at half the x values or more (the training loss, not a per-epoch accuracy)."""
    return len(points) > 2 and 2 * len(points) >= n_xs


def worth_smoothing(n_points: int, factor: float) -> bool:
    """At least ten averaging lengths ``1 / (1 - factor)`` of points (100 at 0.9): on fewer,
    the average would mostly lag behind the raw values."""
    return factor > 0 and n_points * (1.0 - factor) >= 10 - 1e-9  # 1 - 0.9 is 0.0999…


def _draw_metric(
    ax: Axes,
    name: str,
    points: Sequence[tuple[float, float]],
    colour: str,
    n_xs: int,
    units: Mapping[str, str],
    smoothing: float,
) -> None:
    xs = [x for x, _ in points]
    ys = [v for _, v in points]
    if is_frequent(points, n_xs):
        if not worth_smoothing(len(points), smoothing):
            ax.plot(xs, ys, color=colour, lw=1.4, label=name)
            return
        ax.plot(xs, ys, color=colour, alpha=0.3, lw=0.8, label=f"{name}, raw")
        label = f"{name}, smoothed (EMA, factor {smoothing:g})"
        ax.plot(xs, smooth(ys, smoothing), color=colour, lw=1.8, label=label)
        return
    ax.plot(xs, ys, color=colour, marker="o", ms=4, lw=1.2, label=name)
    ax.margins(y=0.2)  # room for the label of the last value
    if points and math.isfinite(ys[-1]):
        # Above and to the left of the last marker, on a white box: clear of the marker and
        # of the line, readable over the grid and the raw curve of a grouped metric.
        ax.annotate(
            format_value(ys[-1], units.get(name, "")),
            (xs[-1], ys[-1]),
            xytext=(-7, 9),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color=colour,
            gid=LAST_VALUE_GID,
            bbox={
                "boxstyle": "round,pad=0.2",
                "fc": "white",
                "ec": colour,
                "lw": 0.6,
                "alpha": 0.9,
            },
        )


def _number_epochs(ax: Axes, epoch_ends: list[float], xs: list[float]) -> None:
    """Epoch numbers along the top axis, each in the middle of its epoch's x values."""
    if not epoch_ends or not xs:
        return
    centres = []
    start = -math.inf
    for end in [*epoch_ends, math.inf]:  # the last: an epoch in progress or stopped part-way
        inside = [x for x in xs if start < x <= end]
        if inside:
            centres.append((inside[0] + inside[-1]) / 2)
        start = end
    step = max(1, math.ceil(len(centres) / 20))
    top = ax.secondary_xaxis("top")
    top.set_xticks(centres[::step], [str(i + 1) for i in range(0, len(centres), step)])
    top.tick_params(length=0, labelsize=8)
    top.set_xlabel("Epoch", fontsize=9)
