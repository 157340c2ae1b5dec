"""``import adamupdate`` must not import any optional heavy dependency."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

OPTIONAL = ["torch", "jax", "pandas", "matplotlib", "numba", "rich"]


def test_import_pulls_in_no_optional_dependency():
    spec = importlib.util.find_spec("adamupdate")
    assert spec is not None and spec.origin is not None
    package_root = str(Path(spec.origin).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    code = (
        "import json, sys\n"
        "import adamupdate\n"
        "from adamupdate import adamupdate as f\n"
        "assert callable(f)\n"
        f"print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import adamupdate imported {loaded}"


NOT_FOR_NUMPY = [m for m in OPTIONAL if m != "numba"]  # numba may accelerate NumPy arrays


def test_numpy_call_pulls_in_no_other_framework():
    """A plain NumPy step may load numba (the NumPy fast path) but not torch/jax/pandas/..."""
    spec = importlib.util.find_spec("adamupdate")
    assert spec is not None and spec.origin is not None
    package_root = str(Path(spec.origin).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from adamupdate import adamupdate\n"
        "p, m, v = adamupdate({'w': [np.ones(3)]}, {'w': [np.ones(3)]}, None, None, 1)\n"
        "assert p['w'][0].shape == (3,)\n"
        f"print(json.dumps(sorted(m for m in {NOT_FOR_NUMPY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"a NumPy call imported {loaded}"
