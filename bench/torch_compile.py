"""A compiled training step: ``adamupdate.torch.Adam`` against ``torch.optim.Adam``, CPU.

``python -m bench.torch_compile`` (from the repository root) times one whole training step —
``zero_grad``, forward, backward, ``optimizer.step()`` — of a small MLP and a small CNN, each
step function wrapped in ``torch.compile`` (inductor), with each optimizer; eager steps are
timed beside them for scale. Every contender trains its own copy of the model on the same
batch. Contenders are timed round-robin: each round runs a block of steps of every contender,
the starting contender rotating from round to round, so that drift in the machine's speed falls
on all of them alike; the figures are the median (and the minimum) over rounds of the time per
step.

Under ``torch.compile`` our ``step()`` is a deliberate graph break (``torch.compiler.disable``):
the forward and backward are compiled, the MATLAB step runs eagerly in the engine's kernels.
``torch.optim.Adam``'s step is traced and compiled into inductor kernels.

``--json PATH`` writes the figures; ``--smoke`` shrinks everything so a test runs it quickly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from adamupdate.torch import Adam


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 8 * 8, 10),
    )


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "MLP 784-256-256-10, batch 64": (mlp, (64, 784)),
    "CNN 2 conv + linear, 32x32x3, batch 32": (cnn, (32, 3, 32, 32)),
}

CONTENDERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], bool]] = {
    "ours compiled": (Adam, True),
    "torch Adam compiled": (torch.optim.Adam, True),
    "ours eager": (Adam, False),
    "torch Adam eager": (torch.optim.Adam, False),
}


def make_step(
    build: Callable[[], torch.nn.Module], optimizer_class: Callable[..., Any], compiled: bool
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    net = build()
    optimizer = optimizer_class(net.parameters(), lr=1e-3)

    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return torch.compile(train_step) if compiled else train_step


def time_model(
    name: str, rounds: int, block: int, warmup: int
) -> dict[str, dict[str, float | list[float]]]:
    build, shape = MODELS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, 10, (shape[0],), generator=g)
    steps = {
        label: make_step(build, cls, compiled) for label, (cls, compiled) in CONTENDERS.items()
    }
    for step in steps.values():  # compile and warm up
        for _ in range(warmup):
            step(x, y)
    per_step: dict[str, list[float]] = {label: [] for label in steps}
    labels = list(steps)
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            step = steps[label]
            start = time.perf_counter()
            for _ in range(block):
                step(x, y)
            per_step[label].append((time.perf_counter() - start) / block)
    return {
        label: {
            "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times),
            "rounds_ms": [1e3 * t for t in times],
        }
        for label, times in per_step.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=5, help="steps per contender per round")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, block, warmup = (2, 1, 2) if args.smoke else (args.rounds, args.block, 3)
    results: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads, "models": {}}
    for name in MODELS:
        timing = time_model(name, rounds, block, warmup)
        results["models"][name] = timing
        base = timing["torch Adam compiled"]
        print(f"{name}: ms per step, median (min) over rounds; torch compiled / this")
        for label, figures in timing.items():
            med, low = figures["median_ms"], figures["min_ms"]
            ratio = base["median_ms"] / med
            print(f"  {label:<20} {med:8.3f} ({low:8.3f})   {ratio:5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
