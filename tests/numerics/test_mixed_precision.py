"""Gradients of another floating-point precision are computed in the parameters' precision,
as MATLAB computes ``single`` parameters with ``double`` gradients; complex or integer
gradients of real parameters stay refused."""

from __future__ import annotations

import numpy as np
import pytest

from adamupdate import adamupdate

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("grad_dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_gradients_are_converted_to_the_parameters_dtype(grad_dtype, inplace):
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(40, 30, generator=gen), torch.randn(7, generator=gen)]
    grads = [
        torch.randn(p.shape, generator=gen, dtype=torch.float64).to(grad_dtype) for p in params
    ]
    converted = [g.to(torch.float32) for g in grads]
    want = adamupdate([p.clone() for p in params], converted, None, None, 1, 0.01)
    got = adamupdate([p.clone() for p in params], grads, None, None, 1, 0.01, inplace=inplace)
    for a, b in zip([*got[0], *got[1], *got[2]], [*want[0], *want[1], *want[2]]):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert all(g.dtype == grad_dtype for g in grads)  # the caller's gradients are untouched


def test_a_network_steps_with_double_gradients_in_single_precision():
    net = torch.nn.Linear(5, 3)
    twin = torch.nn.Linear(5, 3)
    twin.load_state_dict(net.state_dict())
    grads = {n: torch.full(p.shape, 0.25, dtype=torch.float64) for n, p in net.named_parameters()}
    single = {n: g.float() for n, g in grads.items()}
    adamupdate(net, grads, None, None, 1, 0.1)
    adamupdate(twin, single, None, None, 1, 0.1)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("bad", ["complex", "integer"])
def test_complex_or_integer_gradients_of_real_parameters_are_refused(bad):
    p = np.ones(3, np.float32)
    g = np.ones(3, np.complex64) if bad == "complex" else np.ones(3, np.int32)
    with pytest.raises(TypeError, match=r"grad"):
        adamupdate(p, g, None, None, 1)
    np.testing.assert_array_equal(p, 1)
