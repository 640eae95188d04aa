"""The non-finite guard: a NaN/inf loss or gradient never reaches the parameters."""

import numpy as np
import pytest
import torch

from r2dn_control.train.guard import (
    NonFiniteError,
    check_finite,
    check_parameters_finite,
    guarded_step,
)


def _setup(poison: float | None):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2, dtype=torch.float64)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    x = torch.randn(5, 3, dtype=torch.float64)
    if poison is not None:
        x[2, 1] = poison
    loss = layer(x).square().mean()
    loss.backward()
    return layer, opt, loss


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_raise_leaves_parameters_and_optimizer_unchanged(poison):
    layer, opt, loss = _setup(poison)
    before = [p.detach().clone() for p in layer.parameters()]
    with pytest.raises(NonFiniteError, match="not updated"):
        guarded_step(opt, loss, layer.parameters(), context="epoch 1")
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert not opt.state  # Adam never took a step


def test_skip_warns_and_returns_false():
    layer, opt, loss = _setup(float("nan"))
    before = [p.detach().clone() for p in layer.parameters()]
    with pytest.warns(RuntimeWarning, match="step skipped"):
        assert guarded_step(opt, loss, layer.parameters(), on_nonfinite="skip") is False
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert all(p.grad is None for p in layer.parameters())


def test_finite_step_updates_and_clips():
    layer, opt, loss = _setup(None)
    before = [p.detach().clone() for p in layer.parameters()]
    assert guarded_step(opt, loss, layer.parameters(), clip_value=1e-3)
    assert all(p.grad.abs().max() <= 1e-3 for p in layer.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_bad_option_and_data_messages():
    layer, opt, loss = _setup(None)
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        guarded_step(opt, loss, layer.parameters(), on_nonfinite="ignore")
    y = np.zeros((4, 3))
    y[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"y must be finite.*\(3, 2\)"):
        check_finite("y", y)
    check_finite("u", torch.arange(3))  # integers cannot be non-finite
    with torch.no_grad():
        layer.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="'weight'"):
        check_parameters_finite(layer)
