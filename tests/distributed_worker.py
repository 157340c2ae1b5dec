"""One rank of tests/test_distributed.py (run as a script, one process per rank, gloo).

Trains a small network for a few steps with ``adamupdate`` under DDP or FSDP2 (fully_shard:
parameters become DTensor shards) and saves the full parameters and averages from rank 0.
"""

import os
import sys

import torch
import torch.distributed as dist

from adamupdate import adamupdate

STEPS = 5


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(6, 8, generator=gen), torch.randn(6, 4, generator=gen)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def main(mode: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    net = make_net()
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net)
    else:
        from torch.distributed.fsdp import fully_shard

        model = fully_shard(net)
    avg_grad = avg_sq_grad = None
    for t in range(1, STEPS + 1):
        x, y = batch(rank, t)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads = {name: p.grad for name, p in net.named_parameters()}
        net, avg_grad, avg_sq_grad = adamupdate(net, grads, avg_grad, avg_sq_grad, t, 0.01)
        for p in net.parameters():
            p.grad = None
    params = {name: full(p.detach()) for name, p in net.named_parameters()}
    m = {name: full(x) for name, x in avg_grad.items()}
    v = {name: full(x) for name, x in avg_sq_grad.items()}
    kinds = sorted({type(p).__name__ for p in net.parameters()})
    if rank == 0:
        torch.save({"params": params, "m": m, "v": v, "kinds": kinds}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    os._exit(0)
