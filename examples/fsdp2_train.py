"""Train a small network with adamupdate under FSDP2: parameters, gradients and averages sharded.

    torchrun --nproc-per-node 2 examples/fsdp2_train.py
    torchrun --nproc-per-node 2 examples/fsdp2_train.py --save ckpt
    torchrun --nproc-per-node 1 examples/fsdp2_train.py --resume ckpt --steps 40

``fully_shard`` turns every parameter into a DTensor that each rank holds one shard of; the
gradients arrive as DTensor shards too (reduce-scattered during ``backward()``). The averages
that ``adamupdate(net, grads, avg_grad, avg_sq_grad, t)`` returns mirror the gradients, so
each rank keeps and updates only its shard of them — nothing is gathered for the step.

``--save DIR`` writes each rank's shards with ``torch.distributed.checkpoint``; ``--resume DIR``
reads them back at any world size (DCP reshards), also a checkpoint of
``examples/ddp_train.py``. NCCL and one GPU per rank when there are enough GPUs, else gloo on
CPUs.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from adamupdate import adamupdate
from adamupdate.distributed import load_checkpoint, save_checkpoint


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    )  # fmt: skip


def batch(rank: int, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's batch of a regression task: y = sin(x · w / 4) for a fixed w."""
    gen = torch.Generator().manual_seed(10_000 * step + rank)
    x = torch.randn(32, 16, generator=gen)
    w = torch.linspace(-1, 1, 16, dtype=x.dtype)
    return x.to(device), torch.sin(x @ w / 4).unsqueeze(1).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="last iteration (default 30)")
    parser.add_argument("--learn-rate", type=float, default=0.01)
    parser.add_argument("--save", metavar="DIR", help="save a checkpoint at the end")
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint")
    args = parser.parse_args()

    # NCCL needs one GPU per rank on this machine; otherwise gloo on the CPUs
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(
        os.environ.get("LOCAL_WORLD_SIZE", 1)
    )
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
    if cuda:
        torch.cuda.set_device(device)
    net = make_net().to(device or "cpu")
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)  # one all-gather per layer in forward and backward
    fully_shard(net)

    avg_grad = avg_sq_grad = None
    first = 1
    if args.resume:
        avg_grad, avg_sq_grad, last = load_checkpoint(args.resume, net)  # DTensor shards
        first = last + 1
    if rank == 0:
        print(f"FSDP2 on {world} rank(s), {'nccl' if cuda else 'gloo'}, iterations {first}..")

    for t in range(first, args.steps + 1):
        x, y = batch(rank, t, device or "cpu")
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()  # gradients reduce-scattered: each rank gets its shard's average
        grads = {name: p.grad for name, p in net.named_parameters()}
        net, avg_grad, avg_sq_grad = adamupdate(
            net, grads, avg_grad, avg_sq_grad, t, args.learn_rate
        )
        net.zero_grad(set_to_none=True)
        if t == first and rank == 0:
            w = avg_grad["2.weight"]
            print(
                f"avg_grad['2.weight']: {type(w).__name__} {tuple(w.shape)} {w.placements}, "
                f"rank 0 holds {tuple(w.to_local().shape)}"
            )
        dist.all_reduce(loss.detach_(), op=dist.ReduceOp.SUM)
        if rank == 0 and (t % 5 == 0 or t in (first, args.steps)):
            print(f"iteration {t:4d}  loss {loss.item() / world:.6f}")

    if args.save:
        save_checkpoint(args.save, net, avg_grad, avg_sq_grad, args.steps)
        if rank == 0:
            print(f"saved iteration {args.steps} to {args.save}")
    # Collect cyclic garbage while the process group is alive: with gloo, tensors of finished
    # collectives collected after it is gone abort the process at exit (torch 2.13).
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
