"""The runnable examples in examples/ run under torchrun, as the README tells users to run them.

Two launches of two CPU processes (gloo): DDP with ZeRO-1 averages saving a checkpoint, then
FSDP2 resuming it (DCP turns the saved full tensors into this run's DTensor shards). And the
FSDP2 step benchmark (``python -m bench.fsdp2 --smoke``) runs end to end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

ROOT = Path(__file__).parents[2]


def torchrun(script: str, *args: str, nproc: int = 2) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
        "OMP_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", str(ROOT / "examples" / script), *args,
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def losses(output: str) -> list[float]:
    return [float(x) for x in re.findall(r"loss (\d+\.\d+)", output)]


@pytest.mark.fsdp2
def test_ddp_with_zero_then_fsdp2_resuming_its_checkpoint(tmp_path):
    checkpoint = str(tmp_path / "checkpoint")
    out = torchrun("ddp_train.py", "--zero", "--steps", "5", "--save", checkpoint)
    assert "DDP on 2 rank(s), gloo" in out
    assert re.search(r"ZeRO-1: (\d+) bytes of averages on rank 0, (\d+) unpartitioned", out)
    assert "iteration    1  loss" in out and "iteration    5  loss" in out
    first, last = losses(out)
    assert last < first  # a regression task the network learns within a few steps
    assert f"saved iteration 5 to {checkpoint}" in out

    out = torchrun("fsdp2_train.py", "--resume", checkpoint, "--steps", "10")
    assert "FSDP2 on 2 rank(s), gloo, iterations 6.." in out
    assert "DTensor (64, 64) (Shard(dim=0),), rank 0 holds (32, 64)" in out
    assert "iteration    6  loss" in out and "iteration   10  loss" in out
    assert max(losses(out)) < first  # resumed from the trained state, not from scratch


@pytest.mark.fsdp2
def test_fsdp2_bench_smoke(tmp_path):
    out = tmp_path / "fsdp2.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fsdp2", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (record,) = json.loads(out.read_text())["records"]
    assert set(record["median_ms"]) == {
        "ours: adamupdate(net)",
        "ours: adamupdate(list, inplace)",
        "torch Adam fused",
        "torch Adam foreach",
    }
    assert record["torch_fused_over_contender"]["torch Adam fused"] == 1.0
    assert "torch Adam fused" in proc.stdout
