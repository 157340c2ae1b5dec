"""Learnables tables print values, not ``Parameter containing:`` reprs (issue 20, case 5), and
their ``Value`` column still holds the real tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pandas = pytest.importorskip("pandas")

from adamupdate import adamupdate, gradients, io, learnables  # noqa: E402


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(36.0).reshape(4, 1, 3, 3) / 8)
        net[0].bias.fill_(-0.25)
        net[2].bias.copy_(torch.tensor([1.5, 2.0]))
    return net


def test_learnables_prints_size_dtype_and_first_values() -> None:
    net = _net()
    text = repr(learnables(net))
    assert "Parameter containing" not in text and "tensor(" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Parameter", "Value"]
    assert lines[1].split()[1:] == [
        "0",
        "weight",
        "4×1×3×3",
        "float32",
        "[0,",
        "0.125,",
        "0.25,",
        "…]",
    ]
    assert lines[2].endswith("4×1 float32 [-0.25, -0.25, -0.25, …]")
    assert lines[4].endswith("2×1 float32 [1.5, 2]")
    assert str(learnables(net)) == text


def test_value_column_holds_the_parameters_themselves() -> None:
    net = _net()
    table = learnables(net)
    assert isinstance(table, pandas.DataFrame)
    assert all(v is p for v, p in zip(table["Value"], net.parameters()))
    assert isinstance(table.iloc[:2], type(table))  # slices print the same way
    assert "4×1×3×3 float32" in table._repr_html_()


def test_gradients_and_averages_print_values(tmp_path) -> None:
    net = _net()
    grad = gradients(net(torch.ones(1, 1, 4, 4)).sum(), net)
    assert "2×1 float32 [1, 1]" in repr(grad)  # d(sum)/d(bias) of the last layer
    net, avg_grad, _ = adamupdate(net, grad, None, None, 1)
    assert "2×1 float32 [0.1, 0.1]" in repr(avg_grad)
    path = tmp_path / "grad.npz"
    io.save(path, grad=grad)  # saved as the DataFrame it is
    back = io.load(path)["grad"]
    assert list(back["Parameter"]) == ["weight", "bias", "weight", "bias"]
