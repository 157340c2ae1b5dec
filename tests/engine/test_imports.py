"""``import adamupdate`` must not import any optional heavy dependency."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

OPTIONAL = ["torch", "jax", "pandas", "matplotlib", "numba", "rich"]


def modules_loaded_by(code: str, watched: list[str]) -> list[str]:
    """Which of ``watched`` are in ``sys.modules`` after running ``code`` in a fresh interpreter
    that finds this checkout's package first."""
    spec = importlib.util.find_spec("adamupdate")
    assert spec is not None and spec.origin is not None
    package_root = str(Path(spec.origin).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    report = f"print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys\n" + code + report],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_pulls_in_no_optional_dependency():
    code = "import adamupdate\nfrom adamupdate import adamupdate as f\nassert callable(f)\n"
    loaded = modules_loaded_by(code, OPTIONAL)
    assert loaded == [], f"import adamupdate imported {loaded}"


NOT_FOR_NUMPY = [m for m in OPTIONAL if m != "numba"]  # numba may accelerate NumPy arrays


def test_numpy_call_pulls_in_no_other_framework():
    """A plain NumPy step may load numba (the NumPy fast path) but not torch/jax/pandas/..."""
    code = (
        "import numpy as np\n"
        "from adamupdate import adamupdate\n"
        "p, m, v = adamupdate({'w': [np.ones(3)]}, {'w': [np.ones(3)]}, None, None, 1)\n"
        "assert p['w'][0].shape == (3,)\n"
    )
    loaded = modules_loaded_by(code, NOT_FOR_NUMPY)
    assert loaded == [], f"a NumPy call imported {loaded}"


def test_network_step_without_torch_distributed():
    """A network step works in a process that never loaded torch.distributed's tensors (the
    engine asks about DTensors only when that module is there) and does not load it."""
    code = (
        "import torch\n"
        "from adamupdate import adamupdate\n"
        "assert 'torch.distributed.tensor' not in sys.modules\n"
        "net, m, v = torch.nn.Linear(3, 2), None, None\n"
        "for t in range(1, 4):\n"
        "    grads = {n: torch.ones_like(p) for n, p in net.named_parameters()}\n"
        "    net, m, v = adamupdate(net, grads, m, v, t)\n"
        "assert torch.equal(m['bias'], torch.full((2,), 0.271))\n"
    )
    assert modules_loaded_by(code, ["torch.distributed.tensor"]) == []
