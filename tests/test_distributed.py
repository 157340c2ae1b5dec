"""Scale: adamupdate under PyTorch's own distributed engine, two CPU processes with gloo.

DDP keeps a full replica per rank and averages gradients; FSDP2 (``fully_shard``) shards each
parameter and its gradient as DTensors, and each rank updates its own shard. Either way the
result must equal one process training on both ranks' data with ``torch.optim.Adam`` driven to
MATLAB's step (ε_torch = ε/√(1−β2^t)), an independent implementation.
"""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

WORLD = 2
LR = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, out: Path) -> None:
    port = free_port()
    src = str(Path(__file__).parents[1] / "src")
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, worker.__file__, mode, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]


def single_process_reference():
    net = worker.make_net().double()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999))
    for t in range(1, worker.STEPS + 1):
        optimizer.zero_grad()
        # DDP and FSDP average gradients over ranks: the mean of the per-rank losses
        losses = []
        for rank in range(WORLD):
            x, y = worker.batch(rank, t)
            losses.append(torch.nn.functional.mse_loss(net(x.double()), y.double()))
        (sum(losses) / WORLD).backward()
        optimizer.param_groups[0]["eps"] = 1e-8 / math.sqrt(1 - 0.999**t)
        optimizer.step()
    states = optimizer.state
    params = dict(net.named_parameters())
    return (
        {n: p.detach() for n, p in params.items()},
        {n: states[p]["exp_avg"] for n, p in params.items()},
        {n: states[p]["exp_avg_sq"] for n, p in params.items()},
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_matches_single_process_training(mode, tmp_path):
    out = tmp_path / f"{mode}.pt"
    launch(mode, out)
    result = torch.load(out)
    if mode == "fsdp2":
        assert result["kinds"] == ["DTensor"]  # the shards really were DTensors
    params, m, v = single_process_reference()
    for name in params:
        # float32 training against a float64 reference: a few float32 roundings per step
        torch.testing.assert_close(result["params"][name].double(), params[name], rtol=0, atol=2e-6)
        torch.testing.assert_close(result["m"][name].double(), m[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(result["v"][name].double(), v[name], rtol=1e-4, atol=1e-9)
