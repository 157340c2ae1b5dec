"""``python -m bench --smoke`` runs end to end: a table and a JSON report with every case.

Run as a subprocess from the repository root, as a user would, so that the benchmark's thread
pools and its ``jax_enable_x64`` setting stay out of the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from math import prod
from pathlib import Path

import pytest

# The bench package lives at the repository root (on sys.path: pyproject.toml, pythonpath).
from bench.cases import cases, overhead_cases, resnet50_shapes
from bench.contenders import CONTENDERS, OVERHEAD

ROOT = Path(__file__).resolve().parents[2]


def test_resnet50_shapes_match_torchvision() -> None:
    shapes = resnet50_shapes()
    assert len(shapes) == 161
    assert sum(prod(s) for s in shapes) == 25_557_032


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_smoke_reports_every_case_and_contender(smoke: tuple[str, dict]) -> None:
    table, report = smoke
    names = [c.name for c in cases(smoke=True)]
    assert [rec["case"] for rec in report["cases"]] == names
    for rec in report["cases"]:
        assert set(rec["results"]) == set(CONTENDERS)
        for name, r in rec["results"].items():
            # Every contender either has a time or says why it was skipped.
            assert (r["median_s"] is not None) != (r["skipped"] is not None), (rec["case"], name)
            assert f"{rec['case']:<22} {name:<24}" in table
    for name in names:
        assert name in table and name in report["table"]


def test_smoke_ratios_and_overhead(smoke: tuple[str, dict]) -> None:
    table, report = smoke
    for rec in report["cases"]:
        stream = rec["results"]["stream (floor)"]
        if stream["skipped"]:  # no numba: no floor, no ratios
            continue
        assert stream["x_floor"] == pytest.approx(1.0)
        for r in rec["results"].values():
            assert r["skipped"] or r["x_floor"] > 0
    over = report["overhead"]
    assert [rec["case"] for rec in over] == [c.name for c in overhead_cases(smoke=True)]
    for rec in over:
        assert set(rec["results"]) == set(OVERHEAD)
        ours = rec["results"]["ours: net default"]
        assert ours["us_per_call"] > 0 and ours["us_per_tensor"] > 0
    assert "front-end cost, us per tensor" in table and "torch fused / ours" in table
    for name in OVERHEAD:
        assert name in table.split("torch fused / ours")[1]
    assert report["machine"]["cpus"] and report["settings"]["smoke"] is True
    solvers = {(rec["solver"], rec["case"]) for rec in report["solvers"]}
    assert {solver for solver, _ in solvers} == {"sgdmupdate", "rmspropupdate"}
    for rec in report["solvers"]:
        for r in rec["results"].values():
            assert (r["median_s"] is None) != (r["skipped"] is None)
