"""One rank of the tests/test_distributed*.py runs (a script, one process per rank, gloo).

``python distributed_worker.py MODE OUT`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set
(see :func:`launch`, which starts every rank). Modes:

- ``ddp``, ``fsdp2``: a few steps of ``adamupdate`` under DDP or FSDP2 (``fully_shard``:
  parameters become DTensor shards); rank 0 saves the full parameters and averages to ``OUT``.
- ``reshard-first`` (world 1), ``reshard-second`` (world 2), ``reshard-third`` (world 1): the
  three runs of the checkpoint tests, for a plain/DDP network and an FSDP2 one; ``OUT`` is a
  directory shared by the three (see tests/distributed/test_distributed.py).
- ``zero``: ZeRO-1 (:class:`adamupdate.distributed.ZeroAdamupdate`) beside unpartitioned DDP,
  then a ZeRO checkpoint saved with DCP; ``zero-reload`` (world 1) reloads that checkpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from adamupdate import adamupdate

STEPS = 5
LR = 0.01
RESHARD_STEPS = 6  # the checkpoint tests: saved after 3, continued for 3 more

# FSDP2 steps on the CPU from torch 2.6 on; torch 2.5's raises "FSDP requires CUDA for streams".
_TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
FSDP2_RUNS_HERE = _TORCH >= (2, 6) or torch.cuda.is_available()


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def make_reshard_net() -> torch.nn.Module:
    """Every parameter's FSDP2 shard at world 1 and 2 is a multiple of 16 floats (see
    ``reshard`` below for why that matters)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(6, 8, generator=gen), torch.randn(6, 4, generator=gen)


def shared_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same batch on every rank: averaging identical gradients over 1 or 2 ranks is exact
    ((g + g) / 2 = g), so the gradients are bitwise independent of the world size."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(6, 8, generator=gen), torch.randn(6, 32, generator=gen)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def snapshot(net: torch.nn.Module, avg_grad: dict, avg_sq_grad: dict) -> dict:
    return {
        "params": {name: full(p.detach()).clone() for name, p in net.named_parameters()},
        "m": {name: full(x).clone() for name, x in avg_grad.items()},
        "v": {name: full(x).clone() for name, x in avg_sq_grad.items()},
    }


def train(mode: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    net = make_net()
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net)
    else:
        fully_shard = _fully_shard()

        model = fully_shard(net)
    avg_grad = avg_sq_grad = None
    for t in range(1, STEPS + 1):
        x, y = batch(rank, t)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads = {name: p.grad for name, p in net.named_parameters()}
        net, avg_grad, avg_sq_grad = adamupdate(net, grads, avg_grad, avg_sq_grad, t, LR)
        for p in net.parameters():
            p.grad = None
    result = snapshot(net, avg_grad, avg_sq_grad)
    result["kinds"] = sorted({type(p).__name__ for p in net.parameters()})
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


# --- checkpoints at another world size ---------------------------------------------------------
#
# Each kind trains make_reshard_net() on shared_batch(t):
#   "plain": one process without a process group, or DDP over two;
#   "fsdp2": fully_shard over a process group of one or two ranks.
# first (world 1):  6 uninterrupted steps -> reference; 3 steps -> checkpoint "one"
# second (world 2): checkpoint "one" + steps 4..6 -> result "1to2"; 3 steps -> checkpoint "two"
# third (world 1):  checkpoint "two" + steps 4..6 -> result "2to1"
# The tests compare both results with the reference bitwise.
#
# Why FSDP2 needs shards of multiples of 16 floats for bitwise equality: on the CPU, FSDP2's
# DTensors take PyTorch's fused Adam kernel, whose vector loop and scalar tail round
# differently (the tail's multiply-adds may be contracted to FMAs, the vector loop's lerp is an
# explicit FMA): an element's result depends on its place in the shard relative to the vector
# width (8 or 16 floats). Resharding moves elements between the two, so the rounding follows
# the layout. The plain kind (the numba kernel, no contraction) is exact for any sizes.


def _model(kind: str, net: torch.nn.Module) -> torch.nn.Module:
    world = dist.get_world_size() if dist.is_initialized() else 1
    if kind == "fsdp2":
        fully_shard = _fully_shard()

        return fully_shard(net)
    if world > 1:
        return torch.nn.parallel.DistributedDataParallel(net)
    return net


def _steps(kind: str, model, first: int, last: int, avg_grad=None, avg_sq_grad=None):
    net = model.module if hasattr(model, "module") else model
    for t in range(first, last + 1):
        x, y = shared_batch(t)
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = {name: p.grad for name, p in net.named_parameters()}
        net, avg_grad, avg_sq_grad = adamupdate(net, grads, avg_grad, avg_sq_grad, t, LR)
        net.zero_grad(set_to_none=True)
    return net, avg_grad, avg_sq_grad


def _describe(tensors: dict) -> dict:
    """What tensors are: type and placements (DTensor) per name."""
    return {
        name: (type(x).__name__, tuple(str(p) for p in getattr(x, "placements", ())))
        for name, x in tensors.items()
    }


def _resume(kind: str, checkpoint: Path) -> dict:
    from adamupdate.distributed import load_checkpoint

    net = make_reshard_net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)  # overwritten by the checkpoint
    model = _model(kind, net)
    avg_grad, avg_sq_grad, iteration = load_checkpoint(checkpoint, model)
    loaded = {"avg_grad": _describe(avg_grad), "avg_sq_grad": _describe(avg_sq_grad)}
    loaded["params"] = _describe(dict(net.named_parameters()))
    net, avg_grad, avg_sq_grad = _steps(
        kind, model, iteration + 1, RESHARD_STEPS, avg_grad, avg_sq_grad
    )
    result = snapshot(net, avg_grad, avg_sq_grad)
    result.update(iteration=iteration, loaded=loaded)
    return result


def _checkpoint(kind: str, checkpoint: Path) -> None:
    from adamupdate.distributed import save_checkpoint

    model = _model(kind, make_reshard_net())
    _, avg_grad, avg_sq_grad = _steps(kind, model, 1, RESHARD_STEPS // 2)
    save_checkpoint(checkpoint, model, avg_grad, avg_sq_grad, RESHARD_STEPS // 2)


def reshard(mode: str, out: str) -> None:
    root = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    results = {}
    if mode == "reshard-first":
        for kind in ("plain", "fsdp2"):
            if kind == "fsdp2":  # "plain" ran without a process group (DCP's no_dist mode)
                dist.init_process_group("gloo")
            model = _model(kind, make_reshard_net())
            net, avg_grad, avg_sq_grad = _steps(kind, model, 1, RESHARD_STEPS)
            results[f"reference-{kind}"] = snapshot(net, avg_grad, avg_sq_grad)
            _checkpoint(kind, root / f"one-{kind}")
    elif mode == "reshard-second":
        dist.init_process_group("gloo")
        for kind in ("plain", "fsdp2"):
            results[f"1to2-{kind}"] = _resume(kind, root / f"one-{kind}")
            _checkpoint(kind, root / f"two-{kind}")
    else:
        dist.init_process_group("gloo")
        for kind in ("plain", "fsdp2"):
            results[f"2to1-{kind}"] = _resume(kind, root / f"two-{kind}")
    if rank == 0:
        torch.save(results, root / f"{mode}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


# --- ZeRO-1 ------------------------------------------------------------------------------------


def make_zero_net() -> torch.nn.Module:
    """Sizes that do not divide evenly: 9*13+13 + 13*5+5 = 200 and 5*3+3 = 18 -> 218 values,
    which 2 ranks split 109/109 through the middle of a weight."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(9, 13), torch.nn.Tanh(), torch.nn.Linear(13, 5), torch.nn.Linear(5, 3)
    )


def zero(mode: str, out: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from adamupdate import set_learn_rate_factor
    from adamupdate.distributed import ZeroAdamupdate

    root = Path(out)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {}
    if mode == "zero":
        plain, partitioned = make_zero_net(), make_zero_net()
        for net in (plain, partitioned):
            set_learn_rate_factor(net, "3", "bias", 0.0)  # frozen: the last 3 values
            set_learn_rate_factor(net, "2", "weight", 0.5)
        plain_model = torch.nn.parallel.DistributedDataParallel(plain)
        zero_model = torch.nn.parallel.DistributedDataParallel(partitioned)
        opt = ZeroAdamupdate(partitioned)
        avg_grad = avg_sq_grad = None
        for t in range(1, STEPS + 1):
            x = torch.randn(4, 9, generator=torch.Generator().manual_seed(10 * t + rank))
            y = torch.randn(4, 3, generator=torch.Generator().manual_seed(10 * t + rank + 5))
            for model in (plain_model, zero_model):
                torch.nn.functional.mse_loss(model(x), y).backward()
            grads = {name: p.grad for name, p in plain.named_parameters()}
            plain, avg_grad, avg_sq_grad = adamupdate(plain, grads, avg_grad, avg_sq_grad, t, LR)
            opt.step(None, t, LR)
            plain.zero_grad(set_to_none=True)
            partitioned.zero_grad(set_to_none=True)
        zero_m, zero_v = opt.averages()
        result = {
            "plain": snapshot(plain, avg_grad, avg_sq_grad),
            "zero": snapshot(partitioned, zero_m, zero_v),
            "state_bytes": [None] * world,
            "unpartitioned_state_bytes": opt.unpartitioned_state_bytes,
            "plain_state_bytes": sum(
                x.nbytes for avg in (avg_grad, avg_sq_grad) for x in avg.values()
            ),
        }
        dist.all_gather_object(result["state_bytes"], opt.state_bytes)
        # a ZeRO checkpoint, resharded by DCP when loaded at another world size
        state = {"model": get_model_state_dict(zero_model), "zero": opt.state_dict()}
        dcp.save(state, checkpoint_id=root / "zero-checkpoint")
    else:  # zero-reload, at world 1: the checkpoint's averages, gathered, must be the same
        net = make_zero_net()
        opt = ZeroAdamupdate(net)
        state = {"model": get_model_state_dict(net), "zero": opt.state_dict()}
        dcp.load(state, checkpoint_id=root / "zero-checkpoint")
        opt.load_state_dict(state["zero"])
        zero_m, zero_v = opt.averages()
        result = {"reloaded": snapshot(net, zero_m, zero_v), "fresh": bool(state["zero"]["fresh"])}
    if rank == 0:
        torch.save(result, root / f"{mode}.pt")
    dist.destroy_process_group()


# --- launching ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, out: Path, world: int = 2, timeout: float = 300) -> None:
    """Run ``mode`` in ``world`` processes (gloo on this machine); fail with their output."""
    port = free_port()
    src = str(Path(__file__).parents[2] / "src")
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, mode, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append((proc.returncode, output))
    for rank, (code, output) in enumerate(outputs):
        assert code == 0, f"rank {rank} of {mode!r} exited with {code}:\n{output[-3000:]}"


MODES = {
    "ddp": train,
    "fsdp2": train,
    "reshard-first": reshard,
    "reshard-second": reshard,
    "reshard-third": reshard,
    "zero": zero,
    "zero-reload": zero,
}


def _fully_shard():
    """FSDP2's ``fully_shard``: public from torch 2.6, ``_composable.fsdp`` in torch 2.5."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


if __name__ == "__main__":
    MODES[sys.argv[1]](sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    os._exit(0)
