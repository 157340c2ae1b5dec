"""The porting guide's tables (issue 20, case 4): every MATLAB name in them has a Python line
that runs as written, and the names a MATLAB custom loop needs are all there.

The tables of ``docs/porting.rst`` (all but "Data", which names types) are read row by row;
each code literal of a row's Python cell is run, in the order of the page, in one namespace
that holds what the page says the tables assume (``net``, ``X``, ``T``, ``model_loss``, …).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pandas")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "porting.rst"
LITERAL = re.compile(r"``(.+?)``")

# The names a MATLAB port of a custom loop meets (the list, and the first release's).
REQUIRED = [
    "adamupdate",
    "sgdmupdate",
    "rmspropupdate",
    "dlupdate",
    "lbfgsupdate",
    "dlfeval",
    "dlgradient",
    "forward",
    "predict",
    "net.State",
    "net.Learnables",
    "extractdata",
    "gather",
    "canUseGPU",
    "crossentropy",
    "onehotdecode",
    "rng",
    "dlaccelerate",
    "thresholdL2Norm",
    "l2Regularization",
    "learnRate",
    "minibatchqueue",
    "trainingProgressMonitor",
    "recordMetrics",
    "updateInfo",
    "groupSubPlot",
    "yscale",
    "monitor.Status",
    "monitor.Stop",
    "monitor.Progress",
    "setLearnRateFactor",
    "save",
    "load",
]


def tables(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """``(caption, [(matlab cell, python cell), ...])`` for each two-column list-table."""
    found = []
    for match in re.finditer(r"^\.\. list-table:: (.+)$", text, re.M):
        body = text[match.end() :]
        end = re.search(r"^\S", body, re.M)  # the table ends at the next unindented line
        body = body[: end.start() if end else None]
        rows: list[list[str]] = []
        for line in body.splitlines():
            if line.startswith("   * - "):
                rows.append([line[7:]])
            elif line.startswith("     - ") and rows:
                rows[-1].append(line[7:])
            elif line.startswith("       ") and rows:
                rows[-1][-1] += " " + line.strip()
        pairs = [(row[0], row[1]) for row in rows[1:] if len(row) == 2]  # no header row
        found.append((match.group(1).strip(), pairs))
    return found


TABLES = [(caption, rows) for caption, rows in tables(PAGE.read_text()) if caption != "Data"]
ROWS = [row for _, rows in TABLES for row in rows]


def _namespace(tmp_path: Path) -> dict:
    """What the page says the tables assume: a network, a mini-batch, the loop's variables."""
    from torch import nn
    from torch.utils.data import TensorDataset

    import adamupdate as package
    from adamupdate import (
        TrainingProgressMonitor,
        adamupdate,
        dlupdate,
        get_learn_rate_factor,
        gradients,
        learnables,
        load,
        rmspropupdate,
        save,
        set_layer_learn_rate_factors,
        set_learn_rate_factor,
        sgdmupdate,
    )

    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 4, 3),
            bn=nn.BatchNorm2d(4),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 6 * 6, 10),
        )
    )
    X, T = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def model_loss(net, X, T):
        loss = nn.functional.cross_entropy(net(X), T)
        return loss, gradients(loss, net)

    loss, grad = model_loss(net, X, T)
    assert package.__name__ == "adamupdate"
    return dict(
        np=np,
        torch=torch,
        nn=nn,
        TrainingProgressMonitor=TrainingProgressMonitor,
        adamupdate=adamupdate,
        dlupdate=dlupdate,
        get_learn_rate_factor=get_learn_rate_factor,
        gradients=gradients,
        learnables=learnables,
        load=load,
        rmspropupdate=rmspropupdate,
        save=save,
        set_layer_learn_rate_factors=set_layer_learn_rate_factors,
        set_learn_rate_factor=set_learn_rate_factor,
        sgdmupdate=sgdmupdate,
        net=net,
        X=X,
        T=T,
        X_sscb=np.zeros((8, 8, 1, 16), np.float32),
        dataset=TensorDataset(X, T),
        fun=lambda p: 0.999 * p,
        model_loss=model_loss,
        loss=loss,
        grad=grad,
        avg_g=None,
        avg_sq_g=None,
        vel=None,
        iteration=1,
        epoch=1,
        num_epochs=2,
        num_iterations=10,
    )


def test_the_page_has_the_tables() -> None:
    captions = [caption for caption, _ in TABLES]
    assert captions == ["Functions", "The rest of a custom loop", "The monitor"]
    assert len(ROWS) >= 39


def test_every_matlab_name_has_a_python_line() -> None:
    for matlab, python in ROWS:
        assert matlab.strip(), f"a row without its MATLAB name: {python!r}"
        assert LITERAL.search(python), f"{matlab}: no Python code in {python!r}"


@pytest.mark.parametrize("name", REQUIRED)
def test_the_names_of_a_custom_loop_are_in_the_tables(name: str) -> None:
    assert any(name in matlab for matlab, _ in ROWS), f"{name} is not in the porting tables"


def test_every_python_line_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the save/load row writes state.mat here
    namespace = _namespace(tmp_path)
    ran = 0
    for matlab, python in ROWS:
        for code in LITERAL.findall(python):
            try:
                exec(compile(code, f"porting.rst: {matlab}", "exec"), namespace)
            except Exception as error:  # the row and its code in the failure
                pytest.fail(f"{matlab} -> {code}: {type(error).__name__}: {error}")
            ran += 1
    assert ran >= 50
    # The lines did what their rows say.
    assert namespace["S"]["avg_grad"] is not None  # save/load round trip
    assert namespace["monitor"].groups[0] == ("Loss", ["TrainingLoss", "ValidationLoss"])
    assert (tmp_path / "training.png").stat().st_size > 0
    assert namespace["X_nchw"].shape == (16, 1, 8, 8)
    assert callable(namespace["accfun"])  # torch.compile wraps; it compiles at the first call
    assert namespace["learn_rate"] == pytest.approx(0.01 / 1.001)
