"""The README's claims that can be run: every Python block runs as written in a fresh process,
its links point at files that exist, and its commands exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```([\w+-]*)\n(.*?)^```", flags=re.S | re.M)
BLOCKS = [(README[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(README)
          if m.group(1) == "python"]  # fmt: skip
TIMEOUT_S = 300


def run_block(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in ``cwd`` that imports this checkout's package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def section_blocks(heading: str) -> list[str]:
    """The Python blocks under the README's ``## heading``, up to the next ``## ``."""
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    section = README[start : end if end >= 0 else None]
    return [m.group(2) for m in FENCE.finditer(section) if m.group(1) == "python"]


def test_the_readme_has_python_blocks_and_no_unlabelled_ones():
    assert len(BLOCKS) >= 2, "the README should show the quick start and the porting loop"
    unlabelled = [README[: m.start()].count("\n") + 1 for m in FENCE.finditer(README)
                  if not m.group(1)]  # fmt: skip
    assert not unlabelled, f"fences without a language (```python, ```text, ```sh) at {unlabelled}"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_every_python_block_runs_as_written_in_a_fresh_process(line, code, tmp_path):
    proc = run_block(code, tmp_path)
    assert proc.returncode == 0, f"README.md block at line {line} failed:\n{proc.stderr[-4000:]}"


def test_quick_start_trains(tmp_path):
    """The quick start minimises w² + (b − 1)²: after 100 steps at learn rate 0.05 it has moved."""
    (quick_start,) = section_blocks("Quick start")
    check = textwrap.dedent(
        """
        assert params["w"].dtype == np.float32 and np.all(np.abs(params["w"]) < 0.5), params
        assert params["b"].dtype == np.float32 and np.all(params["b"] > 0.5), params
        print("ok")
        """
    )
    proc = run_block(quick_start + check, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]


def test_porting_loop_is_the_matlab_loop_and_trains(tmp_path):
    """The porting block uses a torch.nn.Module, gradients, a learn-rate factor and the monitor,
    with the import lines a porting user writes; it trains, and saves the monitor's figure."""
    (loop,) = section_blocks("Porting a MATLAB training loop")
    imports = "from adamupdate import adamupdate, gradients, set_learn_rate_factor, "
    assert imports + "TrainingProgressMonitor" in loop
    for call in ("nn.Sequential", "gradients(loss, net)", "set_learn_rate_factor(net,",
                 "monitor.record_metrics", "adamupdate(net, grad,"):  # fmt: skip
        assert call in loop, call
    check = textwrap.dedent(
        """
        assert iteration == num_iterations == 8 and monitor.progress == 100
        losses = [value for _, value in monitor.history["Loss"]]
        assert losses[-1] < losses[0] / 2, losses
        assert os.path.getsize("training.png") > 0
        print("ok")
        """
    )
    proc = run_block("import os\n" + loop + check, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]


def test_links_to_files_of_the_repository_exist():
    targets = re.findall(r"\]\((?!https?://|#)([^)\s]+)\)", README)
    assert any(t.startswith("docs/") for t in targets), "the README links no documentation page"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"
    pages = {p.stem for p in (ROOT / "docs").glob("*.rst")}
    linked = {Path(t).stem for t in targets if t.startswith("docs/")}
    assert pages - {"index"} <= linked, f"pages the README does not link: {pages - linked}"


def test_numbers_name_the_command_that_produced_them():
    """Accuracy figures in the README say which command measured them, and when."""
    paragraphs = README.split("\n\n")
    quoted = [p for p in paragraphs if re.search(r"\d+(\.\d+)? ?% test accuracy", p)]
    assert quoted, "the README quotes the demo's accuracy"
    for paragraph in quoted:
        assert "adamupdate demo" in paragraph and "measured on" in paragraph, paragraph


def test_the_setup_commands_are_make_targets_and_ci_runs_the_test_one():
    makefile = (ROOT / "Makefile").read_text()
    for command in ("make demo", "make test", "make docs", "make bench"):
        assert command in README
        assert re.search(rf"^{command.split()[1]}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in makefile
    (test_recipe,) = [r for r in makefile.split("\n\n") if r.startswith("test:")]
    assert "docs" in test_recipe, "make test must build the documentation"
