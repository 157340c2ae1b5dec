"""What is timed: parameter shapes and dtypes, the full sizes and the ``--smoke`` ones.

The cases separate the two costs of an optimizer step: memory bandwidth (one big tensor) and
per-tensor overhead (a network's many tensors; 1,000 small ones), plus other dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class Case:
    """Tensors of ``shapes``, all of ``dtype``; ``single`` passes one array, not a list."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    single: bool = False

    @property
    def numel(self) -> int:
        return sum(prod(s) for s in self.shapes)

    @property
    def step_bytes(self) -> int:
        """Bytes one Adam step must move: read p, g, m, v and write p, m, v (v is real)."""
        item = np.dtype(self.dtype).itemsize
        real = np.empty(0, self.dtype).real.itemsize
        return self.numel * (5 * item + 2 * real)


def resnet50_shapes() -> list[tuple[int, ...]]:
    """torchvision's ResNet-50 parameters, in order: 161 tensors, 25,557,032 values.

    Bottleneck blocks [3, 4, 6, 3] of widths 64-512 (expansion 4); each block has three convs
    with a batch norm (weight, bias) after each, the first block of a stage a downsample too.
    """
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    channels = 64
    for blocks, width in zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True):
        for block in range(blocks):
            out = 4 * width
            shapes += [(width, channels, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(out, width, 1, 1), (out,), (out,)]
            if block == 0:
                shapes += [(out, channels, 1, 1), (out,), (out,)]
            channels = out
    return [*shapes, (1000, 2048), (1000,)]


FLAT = 16 * 2**20  # 16M values: 448 MB of traffic per float32 step, far beyond any cache


def cases(smoke: bool = False) -> list[Case]:
    """The benchmark's cases; ``smoke`` keeps their structure with tiny sizes."""
    flat, label = (4096, "4K") if smoke else (FLAT, "16M")
    resnet = resnet50_shapes()
    if smoke:  # the same 161 tensors, each dimension at most 3
        resnet = [tuple(min(d, 3) for d in s) for s in resnet]
    count, size = (20, 10) if smoke else (1000, 1000)
    return [
        Case(f"flat {label} float32", ((flat,),), "float32", single=True),
        Case(f"resnet50{'-tiny' if smoke else ''} float32", tuple(resnet), "float32"),
        Case(f"{count}x{size} float32", ((size,),) * count, "float32"),
        Case(f"{count}x1 float32", ((1,),) * count, "float32"),
        Case(f"flat {label} float64", ((flat,),), "float64", single=True),
        Case(f"flat {label} complex64", ((flat,),), "complex64", single=True),
    ]


def overhead_cases(smoke: bool = False) -> list[Case]:
    """Front-end cost: so many one-value tensors that the arithmetic is negligible, at four
    counts, so that linear growth (a constant cost per tensor) shows."""
    counts = (10, 100) if smoke else (10, 100, 1000, 10000)
    return [Case(f"overhead {n}x1 float32", ((1,),) * n, "float32") for n in counts]


def make_data(case: Case, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Parameters and gradients for ``case`` (every contender steps its own copies)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        if dtype.kind == "c":
            x += 1j * rng.standard_normal(shape, dtype=np.float32)
        return x

    return [draw(s) for s in case.shapes], [draw(s) for s in case.shapes]
