"""JAX sharding: ``adamupdate`` on arrays sharded with ``NamedSharding`` over two CPU devices.

The step is elementwise, so under ``jax.jit`` XLA keeps every output where its input lives:
parameters and both averages must come back with the parameters' shardings (rows, columns,
replicated) and bitwise equal to the same steps on unsharded arrays. Two CPU devices need
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts, so the checks run in
a subprocess: this file run as a script, printing its findings as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src"
STEPS = 5


def run_checks() -> dict:
    """In the subprocess: train sharded and unsharded copies, report what came back."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adamupdate import adamupdate

    mesh = Mesh(np.array(jax.devices()), ("x",))
    shardings = {
        "rows": NamedSharding(mesh, P("x")),
        "cols": NamedSharding(mesh, P(None, "x")),
        "bias": NamedSharding(mesh, P("x")),
        "replicated": NamedSharding(mesh, P()),
    }
    shapes = {"rows": (8, 6), "cols": (6, 4), "bias": (6,), "replicated": (3, 3)}
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}

    def grads(t: int) -> dict:
        r = np.random.default_rng(t)
        return {k: r.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}

    @jax.jit
    def first(p, g):
        p, m, v = adamupdate(p, g, None, None, 1, 0.01)
        return p, dict(m), dict(v)  # plain dicts: see test_returned_dicts_are_pytrees

    @jax.jit
    def step(p, g, m, v, t):  # t is traced: one compilation for every iteration
        p, m, v = adamupdate(p, g, m, v, t, 0.01)
        return p, dict(m), dict(v)

    def train(sharded: bool) -> tuple:
        def put(tree):
            if sharded:
                return {k: jax.device_put(x, shardings[k]) for k, x in tree.items()}
            return {k: jnp.asarray(x) for k, x in tree.items()}

        p, m, v = first(put(params), put(grads(1)))
        for t in range(2, STEPS + 1):
            p, m, v = step(p, put(grads(t)), m, v, t)
        return p, m, v

    sharded, plain = train(True), train(False)
    report: dict = {"devices": len(jax.devices()), "shardings": {}, "bitwise": {}}
    for part, got, want in zip(("params", "avg_grad", "avg_sq_grad"), sharded, plain):
        for k in shapes:
            report["shardings"][f"{part}.{k}"] = got[k].sharding == shardings[k]
            a, b = np.asarray(got[k]), np.asarray(want[k])
            report["bitwise"][f"{part}.{k}"] = bool(
                np.array_equal(a.view(np.int32), b.view(np.int32))
            )

    # eager calls keep the shardings as well
    p = {k: jax.device_put(x, shardings[k]) for k, x in params.items()}
    g = {k: jax.device_put(x, shardings[k]) for k, x in grads(1).items()}
    p, m, v = adamupdate(p, g, None, None, 1, 0.01)
    report["eager"] = all(tree[k].sharding == shardings[k] for tree in (p, m, v) for k in shapes)

    # averages returned straight out of jax.jit, as MATLAB users write it
    try:
        jax.jit(lambda p, g: adamupdate(p, g, None, None, 1, 0.01))(params, grads(1))
        report["dicts_out_of_jit"] = "ok"
    except TypeError as error:
        report["dicts_out_of_jit"] = str(error).splitlines()[0]
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    pytest.importorskip("jax")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_two_cpu_devices(report):
    assert report["devices"] == 2


def test_jit_keeps_the_shardings_of_params_and_both_averages(report):
    assert report["shardings"] and all(report["shardings"].values()), report["shardings"]
    assert report["eager"]


def test_sharded_steps_equal_unsharded_steps_bitwise(report):
    assert report["bitwise"] and all(report["bitwise"].values()), report["bitwise"]


def test_returned_dicts_are_pytrees(report):
    """The averages' plan-carrying dicts are JAX pytrees: they leave (and enter) jax.jit."""
    assert report["dicts_out_of_jit"] == "ok", report["dicts_out_of_jit"]


if __name__ == "__main__":
    print(json.dumps(run_checks()))
