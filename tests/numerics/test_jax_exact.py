"""JAX computes MATLAB's order of operations: bitwise the float32 reference, once XLA may not
fuse ``a*b + c`` into one FMA.

XLA contracts multiply-adds on the CPU where its fusions allow (openxla/xla#41579), so a JAX
step usually differs from MATLAB's by an ulp in some elements (docs/numerics.rst). With
``XLA_FLAGS=--xla_cpu_max_isa=AVX`` there are no FMA instructions to contract into, and what
is left is the route itself: every operation, its order and its precision. That runs in a child
process (XLA reads its flags once per process).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

_CHILD = textwrap.dedent(
    """
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from adamupdate import adamupdate
    from reference import step_in_precision

    rng = np.random.default_rng(5)
    bad = 0
    for dtype in ("float32", "float64", "complex64", "complex128"):
        shape = (257, 3)
        def draw(scale=1.0):
            x = rng.standard_normal(shape) * scale
            if np.dtype(dtype).kind == "c":
                x = x + 1j * rng.standard_normal(shape) * scale
            return x.astype(dtype)
        p = draw()
        want = (p, None, None)
        got = (jnp.asarray(p), None, None)
        for t in range(1, 4):
            g = draw(10.0 ** rng.uniform(-4, 0))
            want = step_in_precision(*want[:1], g, *want[1:], t, 0.01, 0.8, 0.99, 1e-6)
            got = adamupdate(got[0], jnp.asarray(g), got[1], got[2], t, 0.01, 0.8, 0.99, 1e-6)
            for name, a, b in zip("pmv", got, want):
                a = np.asarray(a)
                b = np.asarray(b)
                if a.dtype != b.dtype or not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
                    bad += 1
                    print(dtype, "step", t, name, "differs in", int(np.sum(a != b)), "elements")
    print("bad", bad)
    """
)


def test_jax_takes_matlabs_step_bit_for_bit_without_fma_contraction(child_env):
    env = {**child_env, "XLA_FLAGS": "--xla_cpu_max_isa=AVX", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    if "Unknown flags in XLA_FLAGS" in proc.stderr:
        pytest.skip("this jaxlib's XLA has no --xla_cpu_max_isa (JAX 0.4.30 has none)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("bad 0"), proc.stdout[-3000:]
