"""The README's claims that can be run: its Python examples run, and its commands exist."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run_and_train():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
    # the quick start minimises w² + (b − 1)²: after 100 steps at learn rate 0.05 it has moved
    params = namespace["params"]
    assert params["w"].dtype == np.float32 and np.all(np.abs(params["w"]) < 0.5)
    assert np.all(params["b"] > 0.5)


def test_the_two_setup_commands_are_make_targets_and_ci_runs_the_test_one():
    makefile = (ROOT / "Makefile").read_text()
    for command in ("make demo", "make test"):
        assert command in README
        assert re.search(rf"^{command.split()[1]}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in makefile
