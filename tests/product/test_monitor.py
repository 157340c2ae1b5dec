"""TrainingProgressMonitor and its parts, each on its own: the recorder, the ETA, the log-line
format, the plain and live renderers, the figure, the files, and Ctrl-C."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys

import pytest

from adamupdate.monitor import TrainingProgressMonitor
from adamupdate.monitor._ctrl_c import CtrlC
from adamupdate.monitor._pace import Pace
from adamupdate.monitor._plain import PlainLog
from adamupdate.monitor._recorder import Recorder
from adamupdate.monitor._text import format_seconds, format_value, log_line, parse_line


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _run_loop(monitor, iterations: int = 12, per_epoch: int = 6, clock=None) -> None:
    """MATLAB's loop body: record, update info, set progress; accuracy at each epoch end."""
    for it in range(1, iterations + 1):
        if clock is not None:
            clock.advance(1.0)
        monitor.record_metrics(it, Loss=1.0 / it)
        if it % per_epoch == 0:
            monitor.record_metrics(it, Accuracy=100 * it / iterations)
            monitor.mark_epoch(it)
        monitor.update_info(Epoch=f"{(it - 1) // per_epoch + 1} of {iterations // per_epoch}")
        monitor.progress = 100 * it / iterations


def _monitor(**options) -> TrainingProgressMonitor:
    options.setdefault("metrics", ["Loss", "Accuracy"])
    options.setdefault("units", {"Accuracy": "%"})
    return TrainingProgressMonitor(**options)


# ------------------------------------------------------------------------------ recorder
def test_recorder_keeps_history_info_progress_and_stop():
    recorder = Recorder(["Loss", "Accuracy"], ["Epoch"], clock=FakeClock())
    assert recorder.record(1, {"Loss": 2.0}) == []  # the run's first x: nothing is "occasional"
    assert recorder.record(2, {"Loss": 1.0}) == []
    # Accuracy comes only now and then: renderers show such a value at once.
    assert recorder.record(2, {"Accuracy": 50.0}) == ["Accuracy"]
    assert recorder.record(3, {"Loss": 0.5}) == []
    assert recorder.record(4, {"Loss": 0.25, "Accuracy": 75.0}) == ["Accuracy"]
    assert recorder.history == {"Loss": [(1, 2.0), (2, 1.0), (3, 0.5), (4, 0.25)],
                                "Accuracy": [(2, 50.0), (4, 75.0)]}  # fmt: skip
    assert recorder.latest == {"Loss": 0.25, "Accuracy": 75.0} and recorder.latest_x == 4
    assert recorder.update_info({"Epoch": "1 of 2"}) == ["Epoch"]
    assert recorder.update_info({"Epoch": "1 of 2"}) == []
    recorder.progress = 50
    assert recorder.progress == 50.0 and recorder.stop is False
    recorder.history["Loss"].clear()  # a copy
    assert len(recorder.history["Loss"]) == 4


def test_recorder_refuses_bad_input_and_keeps_nothing_of_it():
    recorder = Recorder(["Loss"], ["Epoch"])
    with pytest.raises(ValueError, match=r"unknown metric.*Accuracy"):
        recorder.record(1, {"Accuracy": 0.5})
    with pytest.raises(ValueError, match="'Loss' must be a real scalar"):
        recorder.record(1, {"Loss": [1.0, 2.0]})
    with pytest.raises(TypeError, match="bool"):
        recorder.record(True, {"Loss": 1.0})
    with pytest.raises(ValueError, match="finite"):
        recorder.record(math.inf, {"Loss": 1.0})
    with pytest.raises(ValueError, match=r"unknown info.*LearnRate"):
        recorder.update_info({"LearnRate": 0.1})
    for bad in (101, -1, math.nan):
        with pytest.raises(ValueError, match="percentage"):
            recorder.progress = bad
    with pytest.raises(ValueError, match="identifiers"):
        Recorder(["Test accuracy"], [])
    with pytest.raises(ValueError, match="unique"):
        Recorder(["Loss", "Loss"], [])
    with pytest.raises(ValueError, match="unknown metric"):
        Recorder(["Loss"], [], units={"Accuracy": "%"})
    assert recorder.history["Loss"] == [] and recorder.latest_x is None


def test_recorder_time_counts_earlier_parts_and_stops_at_close():
    clock = FakeClock()
    recorder = Recorder(["Loss"], [], clock=clock, earlier_s=[40.0, 20.0])
    clock.advance(5.0)
    assert recorder.elapsed == 5.0
    assert recorder.total_elapsed == 65.0
    assert recorder.part_times == [40.0, 20.0, 5.0]
    recorder.close()
    clock.advance(100.0)
    assert recorder.elapsed == 5.0  # frozen
    with pytest.raises(ValueError, match="finite and >= 0"):
        recorder.continue_after([-1.0])


def test_recorder_epoch_ends_and_load():
    recorder = Recorder(["Loss", "Accuracy"], [])
    for x in (8, 4, 8):
        recorder.mark_epoch(x)
    assert recorder.epoch_ends == [4, 8]
    recorder.load({"Loss": [(1, 2.0), (2.0, 1.0)]})
    assert recorder.history["Loss"] == [(1, 2.0), (2, 1.0)]
    assert isinstance(recorder.history["Loss"][1][0], int)
    assert recorder.latest_x == 2 and recorder.latest["Loss"] == 1.0
    # After a load the next x continues it: a value every iteration is not occasional.
    assert recorder.record(3, {"Loss": 0.5}) == []


def test_accepts_numpy_and_0d_tensor_values():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    monitor = TrainingProgressMonitor(quiet=True)
    monitor.record_metrics(np.int64(1), Loss=np.float32(0.5))
    monitor.record_metrics(2, Loss=torch.tensor(0.25))
    assert monitor.history["Loss"] == [(1, 0.5), (2, 0.25)]
    assert isinstance(monitor.history["Loss"][0][0], int)


def test_monitor_is_matlabs_api_over_the_recorder():
    monitor = _monitor(quiet=True)
    _run_loop(monitor)
    assert monitor.history["Accuracy"] == [(6, 50.0), (12, 100.0)]
    assert monitor.info == {"Epoch": "2 of 2"}
    assert monitor.progress == 100.0 and monitor.eta == 0.0
    assert monitor.epoch_ends == [6, 12]
    assert monitor.stop is False
    monitor.request_stop()
    assert monitor.stop is True
    monitor.stop = False
    assert monitor.stop is False
    monitor.group_subplot("Both", ["Loss", "Accuracy"])
    assert monitor.groups == [("Both", ["Loss", "Accuracy"])]
    with pytest.raises(ValueError, match="unknown metric"):
        monitor.group_subplot("X", ["Nope"])
    with pytest.raises(ValueError, match="'linear' or 'log'"):
        monitor.set_y_scale("Loss", "symlog")


def test_group_subplot_moves_metrics_out_of_their_own_subplots():
    monitor = TrainingProgressMonitor(metrics=["TrainLoss", "TestLoss", "Accuracy"], quiet=True)
    monitor.group_subplot("Loss", ["TrainLoss", "TestLoss"])
    # MATLAB's order: the group stands where its first metric stands in `metrics`.
    assert monitor.groups == [("Loss", ["TrainLoss", "TestLoss"]), ("Accuracy", ["Accuracy"])]


# ----------------------------------------------------------------------------------- ETA
def test_eta_leaves_out_start_up():
    """A 60 s start-up, then 1 s per iteration of 100: the ETA is right from the third
    iteration; elapsed * (100 - progress) / progress would say 60 minutes there."""
    clock = FakeClock()
    recorder = Recorder(["Loss"], [], clock=clock)
    assert recorder.eta() is None
    clock.advance(60.0)  # imports, compilation, caches, first iteration
    recorder.progress = 1
    assert recorder.eta() is None
    for it in (2, 3):
        clock.advance(1.0)
        recorder.progress = it
    assert recorder.eta() == pytest.approx(97.0)
    naive = recorder.elapsed * (100 - 3) / 3
    assert naive > 30 * 60
    for it in range(4, 51):
        clock.advance(1.0)
        recorder.progress = it
    assert recorder.eta() == pytest.approx(50.0)
    clock.advance(10.0)  # counts down between updates (the live view redraws on a timer)
    assert recorder.eta() == pytest.approx(40.0)
    clock.advance(100.0)
    assert recorder.eta() == 0.0


def test_eta_follows_the_recent_pace():
    clock = FakeClock()
    recorder = Recorder(["Loss"], [], clock=clock, pace=Pace(window=10))
    for it in range(1, 31):
        clock.advance(2.0)
        recorder.progress = it
    assert recorder.eta() == pytest.approx(70 * 2.0)
    for it in range(31, 51):  # twice as fast now; the window holds only fast iterations
        clock.advance(1.0)
        recorder.progress = it
    assert recorder.eta() == pytest.approx(50 * 1.0)


def test_eta_of_a_resumed_run_leaves_out_its_restart():
    clock = FakeClock()
    recorder = Recorder(["Loss"], [], clock=clock, earlier_s=[300.0])
    recorder.progress = 50  # restored from the checkpoint at once
    clock.advance(20.0)  # the first iteration of this process: start-up again
    recorder.progress = 51
    clock.advance(1.0)
    recorder.progress = 52
    assert recorder.eta() == pytest.approx(48.0)


def test_pace_ignores_repeats_and_restarts_after_progress_goes_back():
    pace = Pace(window=5, warmup=1)
    for t, p in [(0.0, 10.0), (1.0, 20.0), (1.5, 20.0), (2.0, 30.0)]:
        pace.add(t, p)
    assert pace.seconds_per_percent() == pytest.approx(0.1)
    pace.add(3.0, 5.0)  # a new loop
    assert pace.seconds_per_percent() is None
    with pytest.raises(ValueError):
        Pace(window=0)


# --------------------------------------------------------------------------------- text
def test_formats():
    assert format_seconds(None) == "--:--"
    assert format_seconds(59.6) == "1:00"
    assert format_seconds(3725) == "1:02:05"
    assert format_value(86.2, "%") == "86.2%"
    assert format_value(0.123456) == "0.1235"
    assert format_value(None) == "-"
    assert format_value(math.nan, "%") == "nan"


def test_log_line_parses_back():
    clock = FakeClock()
    recorder = Recorder(["Loss", "TestAccuracy"], ["Epoch", "Note"], clock=clock,
                        units={"TestAccuracy": "%"})  # fmt: skip
    recorder.record(4, {"Loss": 2.144, "TestAccuracy": 43.4})
    recorder.update_info({"Epoch": "1 of 2", "Note": 'said "hi" a=b'})
    recorder.status = "Stopped"
    clock.advance(3.0)
    line = log_line(recorder)
    assert line.startswith("[  0.0%]  Iteration=4  Loss=2.144  TestAccuracy=43.4%  ")
    progress, fields = parse_line(line)
    assert progress == 0.0
    assert fields == {"Iteration": "4", "Loss": "2.144", "TestAccuracy": "43.4%",
                      "Epoch": "1 of 2", "Note": 'said "hi" a=b', "Elapsed": "0:03",
                      "Status": "Stopped"}  # fmt: skip
    with pytest.raises(ValueError, match="not a progress line"):
        parse_line("epoch   1/2  iteration     4  loss 2.1442  test accuracy  43.40%")


# ------------------------------------------------------------------------ plain renderer
def test_plain_lines_one_format_when_not_a_tty(capsys):
    clock = FakeClock()
    with _monitor(log_every=5, clock=clock) as monitor:
        _run_loop(monitor, clock=clock)
        monitor.status = "Finished"
    lines = capsys.readouterr().out.splitlines()
    parsed = [parse_line(line) for line in lines]  # every line is in the one format
    # Iteration 1, multiples of 5, the epoch ends (accuracy arrives), and one final line.
    assert [fields["Iteration"] for _, fields in parsed] == ["1", "5", "6", "10", "12"]
    assert all("Accuracy" not in fields for _, fields in parsed[:2])
    assert parsed[2][1]["Accuracy"] == "50.0%" and parsed[2][1]["Epoch"] == "1 of 2"
    assert "ETA" not in parsed[0][1]  # not known from the first iteration alone
    assert parsed[1][1]["ETA"] == "0:07"  # 1 s per iteration, 7 left
    progress, last = parsed[-1]
    assert progress == 100.0 and last["Status"] == "Finished" and "ETA" not in last
    assert last["Accuracy"] == "100.0%" and last["Elapsed"] == "0:12"


def test_plain_final_line_on_close_and_explicit_stream():
    stream = io.StringIO()
    monitor = TrainingProgressMonitor(stream=stream, log_every=100)
    for it in range(1, 5):
        monitor.record_metrics(it, Loss=float(it))
    monitor.close()
    monitor.close()  # idempotent
    monitor.record_metrics(5, Loss=5.0)  # recorded, not shown: the display is closed
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert parse_line(lines[-1])[1]["Iteration"] == "4"
    assert monitor.history["Loss"][-1] == (5, 5.0)


def test_plain_log_renders_a_recorder_alone():
    recorder = Recorder(["Loss"], ["Epoch"], clock=FakeClock())
    stream = io.StringIO()
    log = PlainLog(recorder, stream, log_every=2)
    for it in range(1, 4):
        log.recorded(bool(recorder.record(it, {"Loss": 1.0})))
        recorder.progress = it
        log.progressed()
    log.close()
    assert [parse_line(line)[1]["Iteration"] for line in stream.getvalue().splitlines()] == [
        "1", "2", "3",
    ]  # fmt: skip


def test_quiet_prints_nothing(capsys):
    with _monitor(quiet=True) as monitor:
        _run_loop(monitor)
    assert capsys.readouterr().out == ""


def test_falls_back_to_plain_lines_without_rich(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)  # makes `import rich` fail
    stream = io.StringIO()
    with (
        pytest.warns(UserWarning, match="rich is not installed"),
        TrainingProgressMonitor(plain=False, stream=stream) as monitor,
    ):
        monitor.record_metrics(1, Loss=0.5)
    assert stream.getvalue().startswith("[  0.0%]  Iteration=1  Loss=0.5")


# ------------------------------------------------------------------------- live renderer
def test_live_view_on_a_terminal_console():
    rich_console = pytest.importorskip("rich.console")
    out = io.StringIO()
    console = rich_console.Console(file=out, force_terminal=True, width=110, color_system=None)
    clock = FakeClock()
    with _monitor(console=console, clock=clock, title="Digits") as monitor:
        monitor.set_y_scale("Loss", "log")
        _run_loop(monitor, clock=clock)
        monitor.status = "Finished"
    text = out.getvalue()
    assert "Digits" in text and "100.0%" in text and "2 of 2" in text
    assert "Finished" in text and "Elapsed 0:12" in text
    # Each epoch's line is printed above the view, in the plain log's format.
    printed = [line[line.index("[ 50.0%]") :] for line in text.splitlines() if "[ 50.0%]" in line]
    assert len(printed) == 1 and parse_line(printed[0])[1]["Accuracy"] == "50.0%"


def test_live_view_frame_shows_values_units_and_ctrl_c_hint():
    rich_console = pytest.importorskip("rich.console")
    from adamupdate.monitor._live import LiveView, sparkline

    console = rich_console.Console(file=io.StringIO(), force_terminal=True, width=100)
    clock = FakeClock()
    recorder = Recorder(["Loss", "Accuracy"], ["Epoch"], clock=clock, units={"Accuracy": "%"},
                        earlier_s=[30.0])  # fmt: skip
    view = LiveView(recorder, "Digits", console=console, ctrl_c_armed=lambda: True, on_stop="saves")
    try:
        for it in range(1, 5):
            clock.advance(1.0)
            recorder.record(it, {"Loss": 1.0 / it})
            recorder.progress = 25 * it
        recorder.record(4, {"Accuracy": 92.5})
        view.stop_requested()
        render = rich_console.Console(width=100, record=True, file=io.StringIO())
        render.print(view.renderable())
        frame = render.export_text()
    finally:
        view.close()
    assert "92.5%" in frame and "Elapsed 0:34 (2 parts, this one 0:04)" in frame
    assert sparkline([1.0, 1 / 2, 1 / 3, 1 / 4]) in frame
    assert "Ctrl-C: stopping after this iteration" in frame
    assert sparkline([4, 3, 2, 1], width=4) == "█▆▃▁"
    assert sparkline([1, 10, 100], log=True) == "▁▅█"
    assert sparkline([]) == "" and sparkline([2.0, 2.0]) == "▁▁"


# -------------------------------------------------------------------------------- figure
def _figure_monitor(iterations: int = 160, per_epoch: int = 40) -> TrainingProgressMonitor:
    clock = FakeClock()
    monitor = TrainingProgressMonitor(
        metrics=["Loss", "TestAccuracy"],
        info=["Epoch", "LearnRate"],
        units={"TestAccuracy": "%"},
        quiet=True,
        clock=clock,
        title="Digits",
    )
    monitor.resume({}, part_times=[65.0])  # a resumed run: one earlier part of 1:05
    monitor.set_y_scale("Loss", "log")
    for it in range(1, iterations + 1):
        clock.advance(0.5)
        monitor.record_metrics(it, Loss=2.3 * math.exp(-it / 40) * (1.2 if it % 2 else 0.8))
        if it % per_epoch == 0:
            monitor.record_metrics(it, TestAccuracy=80 + 15 * it / iterations)
            monitor.mark_epoch(it)
        monitor.update_info(Epoch=f"{(it - 1) // per_epoch + 1} of 4", LearnRate=0.001)
        monitor.progress = 100 * it / iterations
    monitor.status = "Finished"
    monitor.close()
    return monitor


def test_figure_reads_as_matlabs_training_plot():
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from adamupdate.monitor._figure import EPOCH_LINE_GID

    fig = _figure_monitor().figure(note="batch 128, seed 0")
    FigureCanvasAgg(fig).draw()  # lays out the tick labels
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and acc_ax.get_yscale() == "linear"
    for ax in (loss_ax, acc_ax):
        assert ax.get_xlabel() == "Iteration"
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]  # not hidden
        # 4 epochs: 3 boundaries inside the plot (the 4th end is its right edge)
        assert len([ln for ln in ax.get_lines() if ln.get_gid() == EPOCH_LINE_GID]) == 3
    assert loss_ax.get_ylabel() == "Loss"
    assert acc_ax.get_ylabel() == "TestAccuracy (%)"
    percent_ticks = [t.get_text() for t in acc_ax.get_yticklabels() if t.get_text()]
    assert percent_ticks and all(t.endswith("%") for t in percent_ticks)
    log_ticks = [t.get_text() for t in loss_ax.get_yticklabels() if t.get_text()]
    assert "1" in log_ticks and "0.1" in log_ticks  # plain numbers, not 10^0
    raw, smoothed = (ln for ln in loss_ax.get_lines() if ln.get_gid() != EPOCH_LINE_GID)
    assert raw.get_alpha() < 0.5 and smoothed.get_alpha() is None
    assert smoothed.get_label() == "Loss, smoothed (EMA, factor 0.9)"
    assert len(raw.get_xdata()) == len(smoothed.get_xdata()) == 160
    assert [t.get_text() for t in acc_ax.texts] == ["95.0%"]  # the last accuracy, labelled
    (top,) = loss_ax.child_axes  # the epoch axis
    assert [t.get_text() for t in top.get_xticklabels()] == ["1", "2", "3", "4"]
    assert top.get_xlabel() == "Epoch"
    title = fig._suptitle.get_text()
    assert title.startswith("Digits — Finished\n")
    assert "Epoch: 4 of 4" in title and "LearnRate: 0.001" in title
    assert "Elapsed: 2:25 (2 parts: 1:05 + 1:20)" in title  # the whole run's time
    assert fig._supxlabel.get_text() == "batch 128, seed 0"


def test_figure_of_a_short_run_draws_the_loss_as_it_is():
    pytest.importorskip("matplotlib")
    monitor = _monitor(quiet=True)
    _run_loop(monitor)  # 12 points: too few to smooth
    fig = monitor.figure()
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() is None]
    assert [ln.get_label() for ln in lines] == ["Loss"] and lines[0].get_alpha() is None


def test_smoothing_is_a_debiased_moving_average():
    from adamupdate.monitor._figure import smooth, worth_smoothing

    assert smooth([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0
    values = smooth([1.0, math.nan, 0.0], factor=0.5)
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == pytest.approx(1 / 3)
    assert smooth([5.0, 1.0], factor=0.0) == [5.0, 1.0]
    assert worth_smoothing(100, 0.9) and not worth_smoothing(99, 0.9)
    with pytest.raises(ValueError):
        smooth([1.0], factor=1.0)


def test_save_plot_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    monitor = _figure_monitor(iterations=120, per_epoch=30)
    path = monitor.save_plot(tmp_path / "plots" / "training.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert monitor.save_plot(tmp_path / "training.svg").read_text().startswith("<?xml")


# --------------------------------------------------------------------------------- files
def test_json_is_compact_and_round_trips(tmp_path):
    monitor = _monitor(quiet=True)
    _run_loop(monitor)
    monitor.record_metrics(13, Loss=math.nan)
    run = {"seed": 0, "versions": {"python": "3.x"}}
    path = monitor.save_history(tmp_path / "metrics.json", run=run)
    text = path.read_text()
    document = json.loads(text)  # strict JSON: NaN is stored as null
    assert document["metrics"]["Loss"][-1] == [13, None]
    assert document["run"] == run and document["units"] == {"Accuracy": "%"}
    assert document["epoch_ends"] == [6, 12] and document["x_label"] == "Iteration"
    assert len(document["part_elapsed_s"]) == 1
    lines = text.splitlines()
    assert "      [1, 1.0]," in lines and "      [6, 50.0]," in lines  # one point a line
    assert len(lines) < 13 + 2 + 30  # points plus a short header
    assert '  "epoch_ends": [6, 12],' in lines

    again = _monitor(quiet=True)
    again.load_history(path)
    assert again.history["Accuracy"] == monitor.history["Accuracy"]
    assert math.isnan(again.history["Loss"][-1][1])
    assert again.epoch_ends == [6, 12]
    assert again.part_times[:-1] == document["part_elapsed_s"]  # earlier parts now


def test_csv_round_trip_and_suffix(tmp_path):
    monitor = _monitor(quiet=True)
    _run_loop(monitor)
    path = monitor.save_history(tmp_path / "sub" / "metrics.csv")
    rows = path.read_text().splitlines()
    assert rows[0] == "Iteration,Loss,Accuracy"
    assert rows[1] == "1,1.0," and rows[6] == "6,0.16666666666666666,50.0"
    again = _monitor(quiet=True)
    again.load_history(path)
    assert again.history == monitor.history
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        monitor.save_history(tmp_path / "metrics.txt")
    with pytest.raises(FileNotFoundError):
        again.load_history(tmp_path / "none.json")


# -------------------------------------------------------------------------------- Ctrl-C
def _deliver_sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs between bytecodes of the main thread
        pass


def test_ctrl_c_calls_back_then_raises_and_restores():
    previous = signal.getsignal(signal.SIGINT)
    presses = []
    ctrl_c = CtrlC(lambda: presses.append(1))
    assert ctrl_c.install() is True
    try:
        _deliver_sigint()
        assert presses == [1]
        with pytest.raises(KeyboardInterrupt):
            _deliver_sigint()
        assert signal.getsignal(signal.SIGINT) is previous  # restored by the second press
    finally:
        ctrl_c.restore()
    assert signal.getsignal(signal.SIGINT) is previous


def test_ctrl_c_sets_the_monitors_stop():
    previous = signal.getsignal(signal.SIGINT)
    with TrainingProgressMonitor(quiet=True) as monitor:
        assert signal.getsignal(signal.SIGINT) != previous
        _deliver_sigint()
        assert monitor.stop is True
    assert signal.getsignal(signal.SIGINT) is previous


def test_handler_restored_after_an_exception():
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), TrainingProgressMonitor(quiet=True):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGINT) is previous


# ------------------------------------------------------------------------------ imports
def test_importing_the_monitor_imports_no_heavy_library(child_env):
    code = (
        "import sys, adamupdate.monitor\n"
        "from adamupdate import TrainingProgressMonitor as T\n"
        "assert T is adamupdate.monitor.TrainingProgressMonitor\n"
        "m = T(quiet=True)\n"
        "m.record_metrics(1, Loss=1.0)\n"
        "heavy = {'rich', 'matplotlib', 'torch', 'jax', 'pandas'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env
    )
    assert out.stdout.strip() == "[]"
