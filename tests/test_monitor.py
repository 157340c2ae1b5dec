"""TrainingProgressMonitor: recording, stop flag and Ctrl-C, plain and rich display, saving."""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adamupdate.monitor import TrainingProgressMonitor


def _run_loop(monitor: TrainingProgressMonitor, iterations: int = 12, per_epoch: int = 6) -> None:
    """MATLAB's loop body: record, update info, set progress; accuracy at each epoch end."""
    for it in range(1, iterations + 1):
        monitor.record_metrics(it, Loss=1.0 / it)
        monitor.update_info(Epoch=f"{(it - 1) // per_epoch + 1} of {iterations // per_epoch}")
        monitor.progress = 100 * it / iterations
        if it % per_epoch == 0:
            monitor.record_metrics(it, Accuracy=it / iterations)


def test_records_history_in_order():
    monitor = TrainingProgressMonitor(metrics=["Loss", "Accuracy"], quiet=True)
    _run_loop(monitor)
    history = monitor.history
    assert [x for x, _ in history["Loss"]] == list(range(1, 13))
    assert history["Loss"][2] == (3, 1 / 3)
    assert history["Accuracy"] == [(6, 0.5), (12, 1.0)]
    assert monitor.info == {"Epoch": "2 of 2"}
    assert monitor.progress == 100.0
    # The property hands out copies: editing them leaves the monitor alone.
    history["Loss"].clear()
    assert len(monitor.history["Loss"]) == 12


def test_accepts_numpy_and_0d_tensor_values():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    monitor = TrainingProgressMonitor(quiet=True)
    monitor.record_metrics(np.int64(1), Loss=np.float32(0.5))
    monitor.record_metrics(2, Loss=torch.tensor(0.25))
    assert monitor.history["Loss"] == [(1, 0.5), (2, 0.25)]
    assert isinstance(monitor.history["Loss"][0][0], int)


def test_rejects_undeclared_names_and_bad_values():
    monitor = TrainingProgressMonitor(metrics=["Loss"], info=["Epoch"], quiet=True)
    with pytest.raises(ValueError, match=r"unknown metric.*Accuracy"):
        monitor.record_metrics(1, Accuracy=0.5)
    with pytest.raises(ValueError, match=r"unknown info.*LearnRate"):
        monitor.update_info(LearnRate=0.1)
    with pytest.raises(ValueError, match="'Loss' must be a real scalar"):
        monitor.record_metrics(1, Loss=[1.0, 2.0])
    with pytest.raises(TypeError, match="bool"):
        monitor.record_metrics(True, Loss=1.0)
    with pytest.raises(ValueError, match="percentage"):
        monitor.progress = 101
    with pytest.raises(ValueError, match="identifiers"):
        TrainingProgressMonitor(metrics=["Test accuracy"])
    with pytest.raises(ValueError, match="unique"):
        TrainingProgressMonitor(metrics=["Loss", "Loss"])
    assert monitor.history["Loss"] == []  # a rejected call records nothing


def test_progress_drives_eta():
    monitor = TrainingProgressMonitor(quiet=True)
    assert monitor.eta is None
    monitor.progress = 50
    assert monitor.eta == pytest.approx(monitor.elapsed, rel=0.5, abs=0.05)
    monitor.progress = 100
    assert monitor.eta == 0


def test_stop_flag():
    monitor = TrainingProgressMonitor(quiet=True)
    assert monitor.stop is False
    monitor.request_stop()
    assert monitor.stop is True
    monitor.stop = False
    assert monitor.stop is False


def test_ctrl_c_sets_stop_then_raises_and_handler_is_restored():
    previous = signal.getsignal(signal.SIGINT)
    with TrainingProgressMonitor(quiet=True) as monitor:
        assert signal.getsignal(signal.SIGINT) != previous
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            if monitor.stop:
                break
        assert monitor.stop is True
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert signal.getsignal(signal.SIGINT) is previous


def test_handler_restored_after_an_exception():
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), TrainingProgressMonitor(quiet=True):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGINT) is previous


def test_plain_lines_when_not_a_tty(capsys):
    with TrainingProgressMonitor(metrics=["Loss", "Accuracy"], log_every=5) as monitor:
        _run_loop(monitor)
        monitor.status = "Finished"
    lines = capsys.readouterr().out.splitlines()
    # Iterations 1, 5, 10 (log_every), 7 (epoch changed) and the status change at the end.
    assert [re.search(r"Iteration (\d+)", line)[1] for line in lines] == ["1", "5", "7", "10", "12"]
    assert lines[0].startswith("[  8.3%]  Iteration 1  Loss=1  Epoch: 1 of 2")
    assert "Accuracy=0.5" in lines[2] and "Epoch: 2 of 2" in lines[2]
    assert lines[-1].startswith("[100.0%]") and lines[-1].endswith("(Finished)")
    assert "ETA" in lines[1] and "ETA" not in lines[-1]


def test_plain_final_line_on_close_and_explicit_stream():
    stream = io.StringIO()
    monitor = TrainingProgressMonitor(stream=stream, log_every=100)
    for it in range(1, 5):
        monitor.record_metrics(it, Loss=float(it))
    monitor.close()
    monitor.close()  # idempotent
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "Iteration 4" in lines[-1] and "Loss=4" in lines[-1]


def test_quiet_prints_nothing(capsys):
    with TrainingProgressMonitor(metrics=["Loss", "Accuracy"], quiet=True) as monitor:
        _run_loop(monitor)
    assert capsys.readouterr().out == ""


def test_rich_live_display_on_a_terminal_console():
    rich_console = pytest.importorskip("rich.console")
    out = io.StringIO()
    console = rich_console.Console(file=out, force_terminal=True, width=100)
    with TrainingProgressMonitor(metrics=["Loss", "Accuracy"], console=console) as monitor:
        _run_loop(monitor)
    text = out.getvalue()
    assert "Training progress" in text
    assert "100.0%" in text and "Loss" in text and "2 of 2" in text


def test_falls_back_to_plain_lines_without_rich(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)  # makes `import rich` fail
    stream = io.StringIO()
    with (
        pytest.warns(UserWarning, match="rich is not installed"),
        TrainingProgressMonitor(plain=False, stream=stream) as monitor,
    ):
        monitor.record_metrics(1, Loss=0.5)
    assert stream.getvalue().startswith("[  0.0%]  Iteration 1  Loss=0.5")


def test_importing_the_monitor_imports_no_heavy_library():
    code = (
        "import sys, adamupdate.monitor\n"
        "m = adamupdate.monitor.TrainingProgressMonitor(quiet=True)\n"
        "m.record_metrics(1, Loss=1.0)\n"
        "heavy = {'rich', 'matplotlib', 'torch', 'jax', 'pandas'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env()
    )
    assert out.stdout.strip() == "[]"


def test_history_csv_and_json_round_trip(tmp_path):
    monitor = TrainingProgressMonitor(metrics=["Loss", "Accuracy"], quiet=True)
    _run_loop(monitor)
    monitor.record_metrics(13, Loss=math.nan)
    csv_path = monitor.save_history(tmp_path / "sub" / "metrics.csv")
    json_path = monitor.save_history(tmp_path / "metrics.json")

    rows = csv_path.read_text().splitlines()
    assert rows[0] == "Iteration,Loss,Accuracy"
    assert rows[1] == "1,1.0,"
    assert rows[6] == "6,0.16666666666666666,0.5"
    document = json.loads(json_path.read_text())  # strict JSON: NaN is stored as null
    assert document["metrics"]["Loss"][-1] == [13, None]
    assert document["x_label"] == "Iteration"

    for path in (csv_path, json_path):
        again = TrainingProgressMonitor(metrics=["Loss", "Accuracy"], quiet=True)
        again.load_history(path)
        assert again.history["Accuracy"] == monitor.history["Accuracy"]
        assert again.history["Loss"][:-1] == monitor.history["Loss"][:-1]
        assert math.isnan(again.history["Loss"][-1][1])

    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        monitor.save_history(tmp_path / "metrics.txt")


def test_save_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    monitor = TrainingProgressMonitor(metrics=["Loss", "Accuracy"], quiet=True)
    _run_loop(monitor, iterations=120, per_epoch=30)
    monitor.set_y_scale("Loss", "log")
    path = monitor.save_plot(tmp_path / "plots" / "training.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_group_subplot_merges_metrics():
    monitor = TrainingProgressMonitor(metrics=["TrainLoss", "TestLoss", "Accuracy"], quiet=True)
    monitor.group_subplot("Loss", ["TrainLoss", "TestLoss"])
    assert monitor._groups == [("Accuracy", ["Accuracy"]), ("Loss", ["TrainLoss", "TestLoss"])]
    with pytest.raises(ValueError, match="unknown metric"):
        monitor.group_subplot("X", ["Nope"])


def _env() -> dict[str, str]:
    import adamupdate

    src = str(Path(adamupdate.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env
