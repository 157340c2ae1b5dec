"""Memory layouts: PyTorch's fused and foreach kernels walk memory linearly, so a parameter, its
gradient and its averages in different layouts (channels_last vs contiguous, strided views) must
still be paired element by element. Checked against the float64 reference in tests/reference.py.
"""

import numpy as np
import pytest

from reference import run

torch = pytest.importorskip("torch")
from adamupdate import adamupdate  # noqa: E402

STEPS = 3


def as_layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other element of a wider tensor: not dense at all
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":  # dense, but strides differ from a contiguous tensor's
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t.contiguous()


LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("param_layout", LAYOUTS)
@pytest.mark.parametrize("grad_layout", LAYOUTS)
def test_any_layouts_pair_the_right_elements(param_layout, grad_layout, inplace):
    gen = torch.Generator().manual_seed(7)
    shape = (3, 4, 5, 6)
    p0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(STEPS)]
    expected = run(p0.numpy(), [g.numpy() for g in grads])

    p, m, v = as_layout(p0.clone(), param_layout), None, None
    for t, g in enumerate(grads, start=1):
        g = as_layout(g, grad_layout)
        if m is not None:  # states in the gradient's layout, which may not be the parameter's
            m, v = as_layout(m, grad_layout), as_layout(v, grad_layout)
        new_p, m, v = adamupdate(p, g, m, v, t, inplace=inplace)
        if inplace:
            assert new_p is p
        p = new_p
    np.testing.assert_allclose(p.numpy(), expected.p, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(m.numpy(), expected.m, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v.numpy(), expected.v, rtol=1e-13, atol=1e-18)


def test_strided_view_updated_in_place_leaves_its_neighbours_alone():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    neighbours = base[:, 1::2].clone()
    view = base[:, ::2]
    adamupdate(view, torch.ones(4, 3), None, None, 1, inplace=True)
    assert torch.equal(base[:, 1::2], neighbours)
    assert not torch.equal(base[:, ::2], torch.arange(24.0).reshape(4, 6)[:, ::2])
