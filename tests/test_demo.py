"""The digits example through its command line: training, files, exact resume, errors, Ctrl-C.

Runs are kept small with ``--limit`` (a few mini-batches per epoch); the full 20-epoch run is
measured separately (see the README).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend", reason="the demo needs adamupdate[demo]")

from adamupdate.__main__ import main  # noqa: E402


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["demo", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _checkpoint(directory: Path) -> dict:
    return torch.load(directory / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two epochs of 8 mini-batches in one go (shared by several tests)."""
    out = tmp_path_factory.mktemp("straight")
    code = main(["demo", "--epochs", "2", "--limit", "1024", "--output", str(out), "--quiet"])
    return code, out


def test_short_run_learns_and_writes_its_files(straight):
    code, out = straight
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    losses = [value for _, value in metrics["Loss"]]
    assert len(losses) == 16
    assert losses[0] == pytest.approx(np.log(10), abs=0.2)  # an untrained net guesses uniformly
    assert np.mean(losses[-4:]) < 0.6 * losses[0]
    accuracy = metrics["TestAccuracy"]
    assert [x for x, _ in accuracy] == [8, 16]
    assert accuracy[-1][1] > 0.2  # chance is 0.1; in practice about 0.75 here

    csv_rows = (out / "metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "Iteration,Loss,TestAccuracy" and len(csv_rows) == 17
    png = (out / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    checkpoint = _checkpoint(out)
    assert (checkpoint["iteration"], checkpoint["epoch"]) == (16, 2)
    assert (
        set(checkpoint["avg_grad"])
        == set(checkpoint["avg_sq_grad"])
        == {
            f"{layer}.{kind}"
            for layer in ("conv_1", "conv_2", "conv_3", "fc")
            for kind in ("weight", "bias")
        }
    )


def test_resume_continues_bitwise(straight, tmp_path, capsys):
    _, out = straight
    first = tmp_path / "resumed"
    code, _, err = _run(
        capsys, "--epochs", "1", "--limit", "1024", "--output", str(first), "--quiet"
    )
    assert code == 0, err
    assert _checkpoint(first)["iteration"] == 8
    # Everything else (data, limit, seed, batch size, output) comes from the checkpoint.
    code, stdout, err = _run(capsys, "--resume", str(first), "--epochs", "2")
    assert code == 0, err
    assert "resuming" in stdout

    a, b = _checkpoint(out), _checkpoint(first)
    assert (b["iteration"], b["epoch"]) == (16, 2)
    for name, tensor in a["net"].items():
        assert torch.equal(tensor, b["net"][name]), name
    for state in ("avg_grad", "avg_sq_grad"):
        for name, tensor in a[state].items():
            assert torch.equal(tensor, b[state][name]), (state, name)
    # The same seed gives the same loss curve, and the resumed run kept the first half's.
    assert b["history"]["Loss"] == a["history"]["Loss"]


def test_stop_mid_epoch_then_resume_matches_a_straight_run(tmp_path, capsys, monkeypatch):
    from adamupdate.examples import train_digits

    class StopAtIteration6(train_digits.TrainingProgressMonitor):
        def record_metrics(self, iteration, **values):
            super().record_metrics(iteration, **values)
            if iteration == 6:
                self.request_stop()  # what Ctrl-C does, at a known point: epoch 2, batch 2

    common = ["--limit", "512", "--epochs", "3", "--quiet"]  # 4 mini-batches per epoch
    assert _run(capsys, *common, "--output", str(tmp_path / "straight"))[0] == 0
    monkeypatch.setattr(train_digits, "TrainingProgressMonitor", StopAtIteration6)
    code, stdout, err = _run(capsys, *common, "--output", str(tmp_path / "stopped"))
    assert code == 0, err
    assert "stopped by user at iteration 6 (epoch 2)" in stdout
    monkeypatch.undo()
    code, stdout, err = _run(capsys, "--resume", str(tmp_path / "stopped"), "--quiet")
    assert code == 0, err

    a, b = _checkpoint(tmp_path / "straight"), _checkpoint(tmp_path / "stopped")
    assert (b["iteration"], b["epoch"]) == (12, 3)
    for name, tensor in a["net"].items():
        assert torch.equal(tensor, b["net"][name]), name
    for state in ("avg_grad", "avg_sq_grad"):
        for name, tensor in a[state].items():
            assert torch.equal(tensor, b[state][name]), (state, name)


def test_resume_rejects_a_changed_run(straight, capsys):
    _, out = straight
    code, _, err = _run(capsys, "--resume", str(out), "--limit", "512", "--output", "/nonexistent")
    assert code == 2
    assert "limit must stay 1024" in err


def test_user_npz_data_and_plain_progress(tmp_path, capsys):
    from adamupdate.datasets import load_digits

    X, y = load_digits()
    pixels = np.round(X[::10, 0] * 255).astype(np.uint8)  # 500 images, 50 per class
    np.savez(tmp_path / "mine.npz", X=pixels, y=y[::10])
    code, stdout, err = _run(
        capsys,
        "--data", str(tmp_path / "mine.npz"),
        "--epochs", "1", "--batch-size", "64", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    # No test set in the file: 10 per class are held out; 400 / 64 = 6 iterations.
    assert "400 training / 100 test images" in stdout
    assert "epoch   1/1  iteration     6" in stdout
    assert "[100.0%]  Iteration 6" in stdout  # the monitor's plain lines (not a TTY)
    assert "test accuracy" in stdout and (tmp_path / "out" / "training.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--epochs", "two"], "expected a positive integer, got 'two'"),
        (["--learn-rate", "-1"], "finite number >= 0"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--data", "/no/such/digits.npz"], "data path not found: /no/such/digits.npz"),
        (["--resume", "/no/such/run"], "--resume /no/such/run: no checkpoint.pt there"),
        (["--limit", "100"], "less than one mini-batch of 128"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, args, message):
    code, _, err = _run(capsys, *args, "--output", str(tmp_path))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_data_file_is_reported(capsys, tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    code, _, err = _run(capsys, "--data", str(bad), "--output", str(tmp_path))
    assert code == 2 and "IDX header truncated" in err and str(bad) in err


def test_help_exits_0_without_importing_torch():
    code = (
        "import sys\n"
        "from adamupdate.__main__ import main\n"
        "assert main(['demo', '--help']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert "--resume DIR" in out.stdout
    assert out.stdout.strip().endswith("False")


def _env() -> dict[str, str]:
    import adamupdate

    src = str(Path(adamupdate.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def test_ctrl_c_stops_saves_and_exits_0(tmp_path):
    env = _env()
    command = [sys.executable, "-m", "adamupdate", "demo", "--epochs", "1000", "--limit", "256",
               "--batch-size", "64", "--output", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        # The first progress line means the loop (and its Ctrl-C handler) is running.
        for line in process.stdout:
            if "Iteration" in line:
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "stopped by user" in stdout and "Traceback" not in stderr
    checkpoint = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert 0 < checkpoint["iteration"] < 4000  # stopped part-way, not before the first step
    assert checkpoint["history"]["TestAccuracy"][-1][0] == checkpoint["iteration"]
