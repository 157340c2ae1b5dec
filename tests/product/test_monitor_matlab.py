"""The monitor as MATLAB's ``trainingProgressMonitor`` (issue 20, case 1): ``yscale`` by
subplot name, subplots in the order of the metrics, a title on every subplot, last-value
labels clear of their markers, and Ctrl-C hints that are true for the loop they are in."""

from __future__ import annotations

import io

import pytest

from adamupdate import TrainingProgressMonitor

METRICS = ["TrainingLoss", "ValidationLoss", "TrainingAccuracy", "ValidationAccuracy"]


def _matlab_example(**options: object) -> TrainingProgressMonitor:
    """MATLAB's documented setup: two losses grouped in "Loss", shown on a log scale."""
    monitor = TrainingProgressMonitor(metrics=METRICS, info=["Epoch"], quiet=True, **options)
    monitor.group_subplot("Loss", ["TrainingLoss", "ValidationLoss"])
    monitor.set_y_scale("Loss", "log")
    return monitor


def _record(monitor: TrainingProgressMonitor, n: int = 20) -> None:
    for it in range(1, n + 1):
        monitor.record_metrics(it, TrainingLoss=2.0 / it, TrainingAccuracy=5.0 * it)
        if it % 10 == 0:
            monitor.record_metrics(it, ValidationLoss=2.5 / it, ValidationAccuracy=4.0 * it)
            monitor.mark_epoch(it)
        monitor.progress = 100 * it / n


def test_y_scale_by_subplot_name_as_matlab_yscale() -> None:
    monitor = _matlab_example()
    _record(monitor)
    axes = monitor.figure().axes
    titled = {ax.get_title(): ax for ax in axes if ax.get_title()}
    assert titled["Loss"].get_yscale() == "log"
    assert titled["TrainingAccuracy"].get_yscale() == "linear"


def test_y_scale_by_metric_sets_its_whole_subplot() -> None:
    monitor = _matlab_example()
    monitor.set_y_scale("Loss", "linear")
    monitor.set_y_scale("ValidationLoss", "log")  # a grouped metric: its subplot's axis
    _record(monitor)
    titled = {ax.get_title(): ax for ax in monitor.figure().axes if ax.get_title()}
    assert titled["Loss"].get_yscale() == "log"


def test_y_scale_unknown_name_lists_subplots_and_metrics() -> None:
    monitor = _matlab_example()
    with pytest.raises(ValueError) as caught:
        monitor.set_y_scale("Losses", "log")
    message = str(caught.value)
    assert "'Losses' is neither a subplot nor a metric" in message
    assert "'Loss'" in message and "'TrainingAccuracy'" in message


def test_subplots_follow_the_order_of_the_metrics() -> None:
    monitor = TrainingProgressMonitor(metrics=["A", "B", "C", "D"], quiet=True)
    monitor.group_subplot("BD", ["B", "D"])
    assert [title for title, _ in monitor.groups] == ["A", "BD", "C"]
    monitor.group_subplot("CA", ["C", "A"])  # the group's first metric in `metrics` is A
    assert monitor.groups == [("CA", ["C", "A"]), ("BD", ["B", "D"])]


def test_matlab_example_order_and_a_title_per_subplot() -> None:
    monitor = _matlab_example()
    monitor.group_subplot("Accuracy", ["TrainingAccuracy", "ValidationAccuracy"])
    _record(monitor)
    figure = monitor.figure()
    main_axes = [ax for ax in figure.axes if ax.get_ylabel()]
    assert [ax.get_title() for ax in main_axes] == ["Loss", "Accuracy"]
    single = TrainingProgressMonitor(metrics=["Loss", "TestAccuracy"], quiet=True)
    _record_two(single)
    titles = [ax.get_title() for ax in single.figure().axes if ax.get_ylabel()]
    assert titles == ["Loss", "TestAccuracy"]  # ungrouped subplots are titled too


def _record_two(monitor: TrainingProgressMonitor) -> None:
    for it in range(1, 11):
        monitor.record_metrics(it, Loss=1.0 / it)
    monitor.record_metrics(5, TestAccuracy=50.0)
    monitor.record_metrics(10, TestAccuracy=75.0)


def test_last_value_label_is_clear_of_its_marker() -> None:
    monitor = TrainingProgressMonitor(metrics=["Loss", "TestAccuracy"], quiet=True)
    _record_two(monitor)
    figure = monitor.figure()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for ax in figure.axes for t in ax.texts if t.get_gid() == "last-value"]
    assert [t.get_text() for t in labels] == ["75"]
    label = labels[0]
    ax = label.axes
    marker = ax.transData.transform((10, 75.0))
    box = label.get_window_extent(renderer)
    # The marker (4 pt, about 3.3 px at this dpi) lies outside the label's box.
    radius = 4 * figure.dpi / 72 / 2
    assert (
        marker[0] + radius < box.x0
        or marker[0] - radius > box.x1
        or (marker[1] + radius < box.y0 or marker[1] - radius > box.y1)
    )
    assert label.get_bbox_patch() is not None  # on a box, readable over lines and grid


def test_plot_file_is_written(tmp_path) -> None:
    monitor = _matlab_example()
    _record(monitor)
    path = monitor.save_plot(tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- Ctrl-C hints -------------------------------------------------------------------------------


def _frame(on_stop: str | None, stopping: bool) -> str:
    rich_console = pytest.importorskip("rich.console")
    from adamupdate.monitor._live import LiveView
    from adamupdate.monitor._recorder import Recorder

    console = rich_console.Console(file=io.StringIO(), force_terminal=True, width=100)
    view = LiveView(
        Recorder(["Loss"], ["Epoch"]),
        "t",
        console=console,
        ctrl_c_armed=lambda: True,
        on_stop=on_stop,
    )
    try:
        if stopping:
            view.stop_requested()
        render = rich_console.Console(width=100, record=True, file=io.StringIO())
        render.print(view.renderable())
        return render.export_text()
    finally:
        view.close()


def test_hint_in_a_users_loop_does_not_promise_a_save() -> None:
    frame = _frame(None, stopping=False)
    assert "saves" not in frame
    assert "Ctrl-C sets monitor.stop" in frame
    assert "monitor.stop is set" in _frame(None, stopping=True)


def test_hint_where_the_loop_saves() -> None:
    assert "Ctrl-C stops after this iteration and saves" in _frame("saves", stopping=False)
    assert "stopping after this iteration, then saves" in _frame("saves", stopping=True)


def test_plain_stop_message_follows_on_stop() -> None:
    from adamupdate.monitor._plain import PlainLog
    from adamupdate.monitor._recorder import Recorder

    plain = PlainLog(Recorder(["Loss"], []), io.StringIO())
    assert b"saves" not in plain._stop_message and b"monitor.stop" in plain._stop_message
    saving = PlainLog(Recorder(["Loss"], []), io.StringIO(), on_stop="saves a checkpoint")
    assert b"then saves a checkpoint" in saving._stop_message
