"""adamupdate.io as files on disk: atomic writes, permissions, lazy imports, missing optional
packages named by their extra, and resuming training (3 steps + save + load + 3 steps equals 6
steps, bit for bit, in every format).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adamupdate import adamupdate
from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from io_helpers import FORMATS, assert_same  # noqa: E402

# ------------------------------------------------------------------------------------------
# Atomic writes, lazy imports, missing packages
# ------------------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    aio.save(path, a=np.ones(2))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        aio.save(path, a=np.zeros(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_saved_file_gets_the_usual_permissions(tmp_path):
    path = tmp_path / "state.npz"
    aio.save(path, a=1)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_importing_io_imports_no_optional_package():
    watched = ["torch", "jax", "pandas", "scipy", "safetensors"]
    code = (
        "import sys, numpy as np, tempfile, os\n"
        "import adamupdate.io as aio\n"
        "p = os.path.join(tempfile.mkdtemp(), 's.npz')\n"
        "aio.save(p, a={'w': [np.ones(2)]}, n=1)\n"
        "assert aio.load(p)['n'] == 1\n"
        f"print([m for m in {watched!r} if m in sys.modules])\n"
    )
    src = str(Path(aio.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("suffix", "module"), [(".safetensors", "safetensors"), (".mat", "scipy.io")]
)
def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, suffix, module):
    aio.save(tmp_path / f"x{suffix}", a=1)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'adamupdate\[io\]'"):
        aio.save(tmp_path / f"x{suffix}", a=1)
    with pytest.raises(ImportError, match=r"pip install 'adamupdate\[io\]'"):
        aio.load(tmp_path / f"x{suffix}")


# ------------------------------------------------------------------------------------------
# Resuming training: 3 steps + save + load + 3 steps == 6 steps, bit for bit
# ------------------------------------------------------------------------------------------


def _numpy_grads(params, iteration):
    rng = np.random.default_rng(iteration)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_numpy_training_bitwise(tmp_path, suffix):
    rng = np.random.default_rng(1)
    start = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3)]

    def run(params, avg, avg_sq, first, last):
        for t in range(first, last + 1):
            params, avg, avg_sq = adamupdate(params, _numpy_grads(params, t), avg, avg_sq, t)
        return params, avg, avg_sq

    straight = run(start, None, None, 1, 6)
    params, avg, avg_sq = run(start, None, None, 1, 3)
    path = tmp_path / f"ckpt{suffix}"
    aio.save(path, params=params, avg_grad=avg, avg_sq_grad=avg_sq, iteration=3)
    state = aio.load(path)
    assert state["iteration"] == 3
    resumed = run(state["params"], state["avg_grad"], state["avg_sq_grad"], 4, 6)
    assert_same(list(resumed), list(straight))


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_torch_training_bitwise(tmp_path, suffix):
    gen = torch.Generator().manual_seed(2)
    start = {
        "w": torch.randn(5, 4, generator=gen),
        "b": torch.randn(4, generator=gen, dtype=torch.float64),
    }

    def grads(params, t):
        g = torch.Generator().manual_seed(100 + t)
        return {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}

    def run(params, avg, avg_sq, first, last):
        for t in range(first, last + 1):
            params, avg, avg_sq = adamupdate(
                params, grads(params, t), avg, avg_sq, t, inplace=False
            )
        return params, avg, avg_sq

    straight = run(start, None, None, 1, 6)
    params, avg, avg_sq = run(start, None, None, 1, 3)
    path = tmp_path / f"ckpt{suffix}"
    aio.save(path, params=params, avg_grad=avg, avg_sq_grad=avg_sq, iteration=3)
    like = dict.fromkeys(["params", "avg_grad", "avg_sq_grad"], start)
    state = aio.load(path, like=like)
    resumed = run(state["params"], state["avg_grad"], state["avg_sq_grad"], 4, 6)
    for got, want in zip(resumed, straight):
        assert list(got) == list(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert torch.equal(got[name].view(torch.uint8), want[name].view(torch.uint8))
