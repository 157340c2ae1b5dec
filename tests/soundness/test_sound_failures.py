"""Issue 17, case 4: a call that raises changes nothing, in every group of every library.

A call can hold several groups (a NumPy and a JAX parameter, float32 and bfloat16 parameters).
If any of them cannot be done, none may have been: no group written, no JAX buffer donated
(deleted), before the failure. Where a call succeeds instead, its results must be a fresh
call's on copies of the same inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adamupdate import adamupdate

ROOT = Path(__file__).resolve().parents[2]


# --- JAX: nothing donated before every group is bound --------------------------------------------


@pytest.fixture(scope="module")
def jnp():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    return jnp


def test_jax_same_array_twice_in_place_leaves_the_numpy_parameter_alone(jnp):
    """Case 4: ``[np a, jax x, x]`` in place raises, and ``a`` is unchanged."""
    a = np.ones(4, np.float32)
    x = jnp.ones(3, jnp.float32)
    grads = [np.full(4, 0.5, np.float32), jnp.full(3, 0.5), jnp.full(3, 0.5)]
    with pytest.raises((ValueError, RuntimeError)):
        adamupdate([a, x, x], grads, None, None, 1, inplace=True)
    assert np.all(a == 1.0), f"the NumPy parameter was updated by a call that raised: {a}"
    assert not x.is_deleted()


@pytest.mark.parametrize("remembered", [False, True], ids=["fresh", "remembered"])
def test_jax_failed_call_deletes_no_buffer_of_another_group(jnp, remembered):
    """Case 4: a float32 and a bfloat16 group in place, the bfloat16 group failing: the float32
    parameter (and its averages) are neither deleted (donated) nor changed."""
    p32 = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32)
    pbf = jnp.ones(4, jnp.bfloat16)
    grads = [jnp.full(5, 0.5, jnp.float32), jnp.full(4, 0.5, jnp.bfloat16)]
    m = v = None
    if remembered:
        params, m, v = adamupdate([p32, pbf], grads, None, None, 1, inplace=True)
        p32, pbf = params
    seen = np.asarray(p32).copy()
    states = [] if m is None else [m[0], v[0]]
    seen_states = [np.asarray(s).copy() for s in states]
    # The bfloat16 parameter twice: its group cannot donate one buffer for two outputs.
    with pytest.raises((ValueError, RuntimeError)):
        adamupdate(
            [p32, pbf, pbf],
            [*grads, grads[1]],
            None if m is None else [*m, m[1]],
            None if v is None else [*v, v[1]],
            2 if remembered else 1,
            inplace=True,
        )
    assert not p32.is_deleted(), "the float32 parameter was donated by a call that raised"
    assert np.array_equal(np.asarray(p32), seen)
    for state, values in zip(states, seen_states):
        assert not state.is_deleted() and np.array_equal(np.asarray(state), values)


# --- torch: no group written before every group is bound -----------------------------------------


@pytest.mark.parametrize("bad", ["shape", "dtype", "device"])
def test_torch_failing_half_group_leaves_the_float32_group_alone(bad):
    """Case 4: a float32 group and a float16 group whose gradient is wrong: nothing written."""
    torch = pytest.importorskip("torch")
    if bad == "device" and not torch.cuda.is_available():
        bad = "shape"
    gen = torch.Generator().manual_seed(5)
    ps = [torch.randn(64, generator=gen), torch.randn(16, generator=gen).half()]
    gs = [torch.randn(64, generator=gen), torch.randn(16, generator=gen).half()]
    _, m, v = adamupdate(ps, gs, None, None, 1, inplace=True)
    before = [t.clone() for t in (*ps, *m, *v)]
    wrong = {
        "shape": lambda g: torch.zeros(17, dtype=g.dtype),
        "dtype": lambda g: g.to(torch.complex64),  # another real precision is converted
        "device": lambda g: g.cuda(),
    }[bad]
    with pytest.raises((TypeError, ValueError)):
        adamupdate(ps, [gs[0], wrong(gs[1])], m, v, 2, inplace=True)
    assert all(torch.equal(a, b) for a, b in zip((*ps, *m, *v), before))


# The half-precision group needs float32 working copies as big as its parameter. Under an
# address-space limit with room for the float32 group but not for those copies, the call must
# either fail before anything is written, or succeed with a fresh call's results.
_LIMITED_SCRIPT = textwrap.dedent(
    """
    import copy, resource, sys
    import torch
    from adamupdate import adamupdate

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize"):
                return int(line.split()[1]) * 1024

    def attempt(remembered):
        gen = torch.Generator().manual_seed(0)
        half = 1 << 21  # 4 MiB of float16; each float32 copy is 8 MiB
        ps = [torch.randn(1000, generator=gen) for _ in range(3)]
        ps.append(torch.randn(half, generator=gen).half())
        gs = [torch.randn(1000, generator=gen) for _ in range(3)]
        gs.append(torch.randn(half, generator=gen).half())
        _, m, v = adamupdate(ps, gs, None, None, 1, inplace=True)
        _, m, v = adamupdate(ps, gs, m, v, 2, inplace=True)  # loads and compiles everything
        if not remembered:
            m, v = list(m), list(v)
        copies = copy.deepcopy((ps, gs, list(m), list(v)))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (4 << 20), hard))
        try:
            adamupdate(ps, gs, m, v, 3, inplace=True)
            failed = None
        except (MemoryError, RuntimeError) as error:
            failed = error
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        form = "remembered" if remembered else "fresh"
        if failed is not None:
            olds = (*copies[0], *copies[2], *copies[3])
            news = (*ps, *m, *v)
            changed = [i for i, (a, b) in enumerate(zip(news, olds)) if not torch.equal(a, b)]
            print(f"{form}: raised {type(failed).__name__}; leaves changed: {changed}")
            return not changed
        fp, fg, fm, fv = copies
        adamupdate(fp, fg, fm, fv, 3, inplace=True)
        same = all(torch.equal(a, b) for a, b in zip((*ps, *m, *v), (*fp, *fm, *fv)))
        print(f"{form}: succeeded", "as a fresh call" if same else "unlike a fresh call")
        return same

    sys.exit(0 if all([attempt(False), attempt(True)]) else 1)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc and RLIMIT_AS")
def test_torch_half_group_out_of_memory_leaves_the_float32_group_alone():
    """Case 4: a float16 group that runs out of memory while it computes must not leave the
    float32 group stepped (the issue's "allocates inside run() after the float32 group"),
    planned fresh or remembered."""
    pytest.importorskip("torch")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout[-600:]} {proc.stderr[-600:]}"
