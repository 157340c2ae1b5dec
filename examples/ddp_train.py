"""Train a small network with adamupdate under DDP, optionally with ZeRO-1 averages.

    torchrun --nproc-per-node 2 examples/ddp_train.py
    torchrun --nproc-per-node 2 examples/ddp_train.py --zero --save ckpt
    torchrun --nproc-per-node 1 examples/ddp_train.py --resume ckpt --steps 40

Every rank holds a full replica of the network and draws its own batches; DDP averages the
gradients during ``backward()``, so every rank takes the same MATLAB-exact step with
``adamupdate(net, grads, avg_grad, avg_sq_grad, t)`` and the replicas stay identical.

``--zero`` partitions the two averages across the ranks instead
(:class:`adamupdate.distributed.ZeroAdamupdate`): each rank keeps them for 1/world of the
parameters, steps that slice and all-gathers the parameters; the numbers are the same.

``--save DIR`` writes a checkpoint with ``torch.distributed.checkpoint`` at the end;
``--resume DIR`` continues one, at any world size, and also one written by
``examples/fsdp2_train.py``. NCCL and one GPU per rank when there are enough GPUs, else gloo on
CPUs.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from adamupdate import adamupdate
from adamupdate.distributed import ZeroAdamupdate, load_checkpoint, save_checkpoint


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial replica on every rank (DDP also broadcasts rank 0's)
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
    parser.add_argument("--zero", action="store_true", help="partition the averages (ZeRO-1)")
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
    model = DistributedDataParallel(net)

    avg_grad = avg_sq_grad = None
    first = 1
    if args.resume:
        avg_grad, avg_sq_grad, last = load_checkpoint(args.resume, model)
        first = last + 1
    zero = ZeroAdamupdate(net) if args.zero else None
    if zero is not None and avg_grad is not None:
        zero.load_averages(avg_grad, avg_sq_grad)  # this rank keeps its slice only
        avg_grad = avg_sq_grad = None
    if rank == 0:
        print(f"DDP on {world} rank(s), {'nccl' if cuda else 'gloo'}, iterations {first}..")
        if zero is not None:
            print(
                f"ZeRO-1: {zero.state_bytes} bytes of averages on rank 0, "
                f"{zero.unpartitioned_state_bytes} unpartitioned"
            )

    for t in range(first, args.steps + 1):
        x, y = batch(rank, t, device or "cpu")
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # DDP averages the gradients over the ranks here
        if zero is not None:
            zero.step(None, t, args.learn_rate)  # None: each parameter's .grad
        else:
            grads = {name: p.grad for name, p in net.named_parameters()}
            net, avg_grad, avg_sq_grad = adamupdate(
                net, grads, avg_grad, avg_sq_grad, t, args.learn_rate
            )
        net.zero_grad(set_to_none=True)
        dist.all_reduce(loss.detach_(), op=dist.ReduceOp.SUM)
        if rank == 0 and (t % 5 == 0 or t in (first, args.steps)):
            print(f"iteration {t:4d}  loss {loss.item() / world:.6f}")

    if args.save:
        if zero is not None:
            avg_grad, avg_sq_grad = zero.averages()  # gathered: any run can resume them
        save_checkpoint(args.save, model, avg_grad, avg_sq_grad, args.steps)
        if rank == 0:
            print(f"saved iteration {args.steps} to {args.save}")
    # Collect cyclic garbage while the process group is alive: with gloo, tensors of finished
    # collectives collected after it is gone abort the process at exit (torch 2.13).
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
