"""The optimizer step on an FSDP2 model: adamupdate against torch.optim.Adam, two gloo ranks.

``python -m bench.fsdp2`` (from the repository root) starts two CPU processes (gloo, one thread
each), shards the same model with ``fully_shard`` once per contender, computes its gradients
once, then times the optimizer step alone, round-robin (the starting contender rotates each
round), and prints the median over rounds of the slower rank's time. ``--json`` (default
``bench/results-fsdp2.json``) takes the figures; ``--smoke`` shrinks everything so a test runs it
in seconds.

Contenders (every one steps its own copy; parameters and gradients are DTensor shards):

- ``ours: adamupdate(net)``: the network form, ``net, m, v = adamupdate(net, grads, m, v, t)``,
  as the examples train. The engine steps each DTensor's local shard (the numba kernel on the
  CPU, PyTorch's fused kernel on CUDA), with no DTensor dispatch.
- ``ours: adamupdate(list, inplace)``: the functional form on the list of DTensor parameters.
- ``torch Adam fused`` / ``torch Adam foreach``: ``torch.optim.Adam(fused=True / foreach=True)``
  on the same sharded parameters, through DTensor dispatch, which is known to cost PyTorch's
  optimizers a lot (pytorch/pytorch#134191).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path(__file__).with_name("results-fsdp2.json")
LR = 1e-3

# name -> (description, layers); every case is a stack of Linear layers (weights and biases)
CASES: dict[str, tuple[str, list[tuple[int, int]]]] = {
    "mlp 8x1024": ("8 Linear(1024, 1024): 16 tensors, 8.4 M values", [(1024, 1024)] * 8),
    "transformer-like": (
        "12 blocks of 4 Linear(384, 384) + Linear(384, 1536) + Linear(1536, 384): "
        "144 tensors, 14.2 M values",
        [(384, 384)] * 4 * 12 + [(384, 1536), (1536, 384)] * 12,
    ),
    "many small": ("300 Linear(32, 32): 600 tensors, 0.3 M values", [(32, 32)] * 300),
}
SMOKE_CASES = {
    "smoke": ("3 Linear(16, 16): 6 tensors", [(16, 16)] * 3),
}

CONTENDERS = (
    "ours: adamupdate(net)",
    "ours: adamupdate(list, inplace)",
    "torch Adam fused",
    "torch Adam foreach",
)


def make_net(layers: list[tuple[int, int]]) -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Linear(i, o) for i, o in layers))


def _contender(name: str, net: Any) -> Callable[[int], None]:
    """A closure taking one step at iteration ``t`` with the gradients already in ``.grad``."""
    import torch

    from adamupdate import adamupdate

    params = [p for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    state: dict[str, Any] = {"m": None, "v": None}

    if name == "ours: adamupdate(net)":

        def step(t: int) -> None:
            grads = {n: p.grad for n, p in zip(names, params)}
            _, state["m"], state["v"] = adamupdate(net, grads, state["m"], state["v"], t, LR)

        return step
    if name == "ours: adamupdate(list, inplace)":
        state["p"] = params

        def step(t: int) -> None:
            grads = [p.grad for p in params]
            state["p"], state["m"], state["v"] = adamupdate(
                state["p"], grads, state["m"], state["v"], t, LR, inplace=True
            )

        return step
    if name.startswith("torch Adam"):
        flag = "fused" if name.endswith("fused") else "foreach"
        optimizer = torch.optim.Adam(params, lr=LR, **{flag: True})
        return lambda t: optimizer.step()
    raise ValueError(name)


def worker(case: str, layers: list[tuple[int, int]], args: argparse.Namespace) -> None:
    """One rank: every contender's model, warm-up, round-robin timing; rank 0 prints JSON."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    steps: dict[str, Callable[[int], None]] = {}
    for name in CONTENDERS:
        net = make_net(layers)
        for layer in net:
            fully_shard(layer)
        fully_shard(net)
        x = torch.randn(4, layers[0][0], generator=torch.Generator().manual_seed(rank))
        net(x).square().mean().backward()  # gradients: DTensor shards, kept for every step
        steps[name] = _contender(name, net)
    t = 0
    for _ in range(args.warmup):
        t += 1
        for step in steps.values():
            step(t)
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        t += 1
        for name in names[r % len(names) :] + names[: r % len(names)]:
            dist.barrier()
            start = time.perf_counter()
            steps[name](t)
            times[name].append(time.perf_counter() - start)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, times)
    if rank == 0:
        slowest = {
            name: [max(rank_times[name][i] for rank_times in everyone) for i in range(args.rounds)]
            for name in names
        }
        print(json.dumps({"case": case, "times_s": slowest}))
    sys.stdout.flush()
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # no interpreter teardown: gloo can abort there (see examples/ddp_train.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(case: str, args: argparse.Namespace, world: int = 2) -> dict[str, Any]:
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        command = [sys.executable, "-m", "bench.fsdp2", "--worker", case]
        command += ["--rounds", str(args.rounds), "--warmup", str(args.warmup)]
        command += ["--smoke"] if args.smoke else []
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=1800) for proc in procs]
    for rank, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        if proc.returncode != 0:
            raise RuntimeError(f"rank {rank} of {case!r} failed:\n{out[-2000:]}{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def summarize(record: dict[str, Any], description: str) -> dict[str, Any]:
    medians = {name: statistics.median(ts) for name, ts in record["times_s"].items()}
    fused = medians["torch Adam fused"]
    ours = medians["ours: adamupdate(net)"]
    return {
        "case": record["case"],
        "description": description,
        "median_ms": {name: m * 1e3 for name, m in medians.items()},
        "torch_fused_over_contender": {name: fused / m for name, m in medians.items()},
        "ours_over_contender": {name: ours / m for name, m in medians.items()},
        "times_s": record["times_s"],
    }


def format_table(records: list[dict[str, Any]]) -> str:
    lines = []
    for rec in records:
        lines.append(f"{rec['case']}: {rec['description']}")
        lines.append(
            f"  {'contender':<34}{'median ms':>10}{'fused/this':>12}{'ours(net)/this':>16}"
        )
        for name, ms in rec["median_ms"].items():
            lines.append(
                f"  {name:<34}{ms:>10.3f}{rec['torch_fused_over_contender'][name]:>11.2f}x"
                f"{rec['ours_over_contender'][name]:>15.2f}x"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fsdp2", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 3 rounds")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="write the figures here")
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = SMOKE_CASES if args.smoke else CASES
    if args.smoke:
        args.rounds, args.warmup = min(args.rounds, 3), 1
    if args.worker:
        worker(args.worker, cases[args.worker][1], args)
        return 0
    records = []
    for case, (description, _) in cases.items():
        if args.case and case not in args.case:
            continue
        records.append(summarize(launch(case, args), description))
        print(format_table(records[-1:]), flush=True)
    if records:
        import platform

        import torch

        meta = {"torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        meta.update(ranks=2, backend="gloo", threads_per_rank=1, rounds=args.rounds)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
