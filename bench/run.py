"""Time Adam steps on this machine: ours against PyTorch, optax, NumPy and the bandwidth floor.

``python -m bench`` (from the repository root) runs every case of :mod:`bench.cases` with every
contender of :mod:`bench.contenders`, prints a table and writes JSON (``--json``, default
``bench/results.json``). ``--smoke`` shrinks sizes and repeats so CI runs it in seconds.

Method: each contender steps its own copy of the data; after ``--warmup`` untimed steps, the
contenders are timed round-robin (the starting contender rotates every round) so that a slow
spell of a noisy machine hits them all alike, and medians are reported. A short pause between
calls lets idle OpenMP workers of one library stop spinning before the next library runs.
``x floor`` is median time / stream reference time (1.00 = at the memory-bandwidth limit);
``vs fused`` is torch fused time / median time (above 1 = faster than ``torch.optim.Adam(
fused=True)``). A second table puts every form of call users write against every case as
that ratio; the overhead section calls each front end with 10 to 10,000 one-value tensors and
reports the cost per tensor, which must not grow with their number.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.cases import Case, cases, make_data, overhead_cases
from bench.contenders import (
    CONTENDERS,
    OVERHEAD,
    SOLVER_CONTENDERS,
    STREAM,
    TORCH_FUSED,
    Skip,
    Step,
)

DEFAULT_JSON = Path(__file__).with_name("results.json")


@dataclass
class Timing:
    """One contender on one case: seconds per step (``calls`` steps per sample), or why not."""

    times: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def time_case(
    case: Case,
    names: list[str],
    *,
    repeats: int,
    warmup: int,
    pause: float,
    calls: int = 1,
    contenders: dict[str, Any] = CONTENDERS,
) -> dict[str, Timing]:
    """Build every contender for ``case``, warm it up, and time it round-robin."""
    params, grads = make_data(case)
    timings = {name: Timing() for name in names}
    steps: dict[str, Step] = {}
    for name in names:
        try:
            steps[name] = contenders[name](case, params, grads)
            for _ in range(warmup):
                steps[name]()
        except Skip as why:
            timings[name].skipped = str(why)
        except Exception as error:  # a library that cannot do this case (e.g. complex)
            timings[name].skipped = f"fails: {type(error).__name__}: {str(error)[:60]}"
            steps.pop(name, None)
    del params, grads
    running = list(steps)
    for r in range(repeats if running else 0):
        for name in running[r % len(running) :] + running[: r % len(running)]:
            time.sleep(pause)
            start = time.perf_counter()
            for _ in range(calls):
                steps[name]()
            timings[name].times.append((time.perf_counter() - start) / calls)
    steps.clear()
    gc.collect()
    return timings


def summarize(case: Case, timings: dict[str, Timing]) -> dict[str, Any]:
    """The JSON record of one case: medians, ratios to the floor and to torch fused."""
    floor = timings[STREAM].median if STREAM in timings else None
    fused = timings[TORCH_FUSED].median if TORCH_FUSED in timings else None
    results = {}
    for name, t in timings.items():
        med = t.median
        results[name] = {
            "median_s": med,
            "times_s": t.times,
            "x_floor": med / floor if med and floor else None,
            "vs_torch_fused": fused / med if med and fused else None,
            "gb_per_s": case.step_bytes / med / 1e9 if med else None,
            "skipped": t.skipped,
        }
    return {
        "case": case.name,
        "dtype": case.dtype,
        "tensors": len(case.shapes),
        "numel": case.numel,
        "step_bytes": case.step_bytes,
        "results": results,
    }


def summarize_overhead(case: Case, timings: dict[str, Timing]) -> dict[str, Any]:
    results = {}
    for name, t in timings.items():
        med = t.median
        results[name] = {
            "us_per_call": med * 1e6 if med else None,
            "us_per_tensor": med * 1e6 / len(case.shapes) if med else None,
            "times_s": t.times,
            "skipped": t.skipped,
        }
    return {"case": case.name, "tensors": len(case.shapes), "results": results}


def _fmt(x: float | None, width: int, decimals: int) -> str:
    return f"{x:{width}.{decimals}f}" if x is not None else f"{'-':>{width}}"


def format_table(records: list[dict[str, Any]], overhead: list[dict[str, Any]]) -> str:
    """The human-readable tables of a run."""
    head = f"{'case':<22} {'contender':<24} {'median ms':>10} {'x floor':>8} {'vs fused':>9} "
    lines = [head + f"{'GB/s':>7}", "-" * (len(head) + 7)]
    for rec in records:
        for name, r in rec["results"].items():
            row = f"{rec['case']:<22} {name:<24} "
            if r["skipped"]:
                lines.append(row + f"skipped: {r['skipped']}")
                continue
            lines.append(
                row
                + f"{_fmt(r['median_s'] * 1e3, 10, 3)} {_fmt(r['x_floor'], 8, 2)} "
                + f"{_fmt(r['vs_torch_fused'], 8, 2)}{'x' if r['vs_torch_fused'] else ' '} "
                + f"{_fmt(r['gb_per_s'], 7, 1)}"
            )
        lines.append("")
    lines += ["", format_forms(records), ""]
    if overhead:
        counts = [rec["tensors"] for rec in overhead]
        lines.append(
            f"{'front-end cost, us per tensor':<30}" + "".join(f"{n:>10,}" for n in counts)
        )
        for name in overhead[0]["results"]:
            cells = [rec["results"][name]["us_per_tensor"] for rec in overhead]
            lines.append(f"{name:<30}" + "".join(_fmt(c, 10, 3) for c in cells))
    return "\n".join(lines)


def format_forms(records: list[dict[str, Any]]) -> str:
    """Every form of call against every case: torch fused time / ours (> 1: faster)."""
    forms = [n for n in records[0]["results"] if n.startswith("ours: ") and "kernel" not in n]
    width = max(len(rec["case"]) for rec in records) + 2
    lines = [f"{'torch fused / ours':<26}" + "".join(f"{rec['case']:>{width}}" for rec in records)]
    for name in [*forms, "optax adam jit"]:
        cells = []
        for rec in records:
            ratio = rec["results"].get(name, {}).get("vs_torch_fused")
            cells.append(f"{ratio:>{width - 1}.2f}x" if ratio else f"{'-':>{width}}")
        lines.append(f"{name:<26}" + "".join(cells))
    return "\n".join(lines)


def time_solvers(args: argparse.Namespace, repeats: int, warmup: int) -> list[dict[str, Any]]:
    """sgdmupdate and rmspropupdate against torch.optim's SGD and RMSprop: one big tensor and
    1,000 of a thousand values, round-robin as above; ratio = torch's first contender / ours."""
    records = []
    for solver, contenders in SOLVER_CONTENDERS.items():
        for case in cases(args.smoke)[::2][:2]:  # the flat tensor and the 1,000 small ones
            print(f"timing {solver} {case.name} ...", file=sys.stderr, flush=True)
            timings = time_case(
                case,
                list(contenders),
                repeats=repeats,
                warmup=warmup,
                pause=args.pause,
                contenders=contenders,
            )
            reference = timings[next(iter(contenders))].median
            records.append(
                {
                    "solver": solver,
                    "case": case.name,
                    "results": {
                        name: {
                            "median_s": t.median,
                            "vs_torch": reference / t.median if t.median and reference else None,
                            "skipped": t.skipped,
                        }
                        for name, t in timings.items()
                    },
                }
            )
    return records


def format_solvers(records: list[dict[str, Any]]) -> str:
    lines = [f"{'solver':<15} {'case':<20} {'contender':<24} {'median ms':>10} {'vs torch':>9}"]
    for rec in records:
        for name, r in rec["results"].items():
            row = f"{rec['solver']:<15} {rec['case']:<20} {name:<24} "
            if r["skipped"]:
                lines.append(row + f"skipped: {r['skipped']}")
            else:
                lines.append(
                    row + f"{_fmt(r['median_s'] * 1e3, 10, 3)} {_fmt(r['vs_torch'], 8, 2)}x"
                )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
    }
    for package in ("adamupdate", "numpy", "numba", "torch", "jax", "optax"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    if "numba" in sys.modules:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat (CI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--repeats", type=int, help="timed rounds per case (default 15; smoke 1)")
    parser.add_argument("--warmup", type=int, help="untimed steps per contender (default 3)")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between timed calls")
    parser.add_argument("--only", help="run cases whose name contains this text")
    parser.add_argument(
        "--contenders", help="comma-separated contender names (default: all)", default=None
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (1 if args.smoke else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    names = list(CONTENDERS)
    if args.contenders:
        names = [n for n in names if n in args.contenders.split(",") or n == STREAM]
    records = []
    for case in cases(args.smoke):
        if args.only and args.only not in case.name:
            continue
        print(f"timing {case.name} ...", file=sys.stderr, flush=True)
        timings = time_case(case, names, repeats=repeats, warmup=warmup, pause=args.pause)
        records.append(summarize(case, timings))
    solvers = time_solvers(args, repeats, warmup)
    overhead = []
    front = [n for n in OVERHEAD if n in names]
    for small in overhead_cases(args.smoke):
        print(f"timing {small.name} ...", file=sys.stderr, flush=True)
        calls = 2 if args.smoke else max(1, 20000 // len(small.shapes))
        timings = time_case(
            small,
            front,
            repeats=max(repeats, 5),
            warmup=warmup + 2,
            pause=args.pause,
            calls=calls,
        )
        overhead.append(summarize_overhead(small, timings))
    table = format_table(records, overhead) + "\n\n" + format_solvers(solvers)
    print(table)
    report = {
        "machine": machine(),
        "settings": {"smoke": args.smoke, "repeats": repeats, "warmup": warmup},
        "cases": records,
        "overhead": overhead,
        "solvers": solvers,
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0
