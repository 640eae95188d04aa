"""Sandwich layers and LBDN: the Cayley identity and the Lipschitz bound."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from r2dn_control.nn import LBDN, SandwichLayer
from r2dn_control.nn._algebra import cayley, contraction


@given(n=st.integers(1, 8), m=st.integers(1, 8), scale=st.sampled_from([0.1, 1.0, 10.0]),
       seed=st.integers(0, 2**31 - 1))
def test_cayley_columns_are_orthonormal(n: int, m: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(n + m, n, dtype=torch.float64, generator=g)
    a_tilde, b = cayley(w, n)
    residual = a_tilde.T @ a_tilde + b @ b.T - torch.eye(n, dtype=torch.float64)
    assert residual.abs().max() < 1e-10


@given(rows=st.integers(1, 6), cols=st.integers(1, 6), scale=st.sampled_from([0.1, 1.0, 10.0]),
       seed=st.integers(0, 2**31 - 1))
def test_contraction_builder_has_norm_below_one(rows: int, cols: int, scale: float,
                                                seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    d = min(rows, cols)
    x, y = (scale * torch.randn(d, d, dtype=torch.float64, generator=g) for _ in range(2))
    z = scale * torch.randn(abs(rows - cols), d, dtype=torch.float64, generator=g)
    n = contraction(x, y, z, rows, cols, 1e-12)
    assert n.shape == (rows, cols)
    assert torch.linalg.matrix_norm(n, ord=2) < 1.0


def _max_jacobian_norm(f, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(f, x)
    return max(torch.linalg.matrix_norm(jac[i, :, i, :], ord=2).item() for i in range(x.shape[0]))


@pytest.mark.parametrize("output_layer", ["linear", "sandwich"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@given(gamma=st.sampled_from([0.5, 1.0, 7.0]), widths=st.lists(st.integers(1, 12), max_size=3),
       scale=st.sampled_from([0.3, 1.0, 3.0]), seed=st.integers(0, 2**31 - 1))
def test_lbdn_is_gamma_lipschitz(output_layer, activation, gamma, widths, scale, seed) -> None:
    torch.manual_seed(seed)
    net = LBDN(3, 2, widths, gamma=gamma, activation=activation, output_layer=output_layer,
               dtype=torch.float64)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    x = 3 * torch.randn(16, 3, dtype=torch.float64)
    assert _max_jacobian_norm(net, x) <= gamma * (1 + 1e-9)
    a, b = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    ratio = (net(a) - net(b)).norm(dim=1) / (a - b).norm(dim=1)
    assert ratio.max() <= gamma * (1 + 1e-9)


def test_training_for_gain_approaches_but_never_exceeds_gamma() -> None:
    """The bound is tight, not vacuous: maximising the gain over the weights gets close to γ."""
    torch.manual_seed(3)
    gamma = 2.0
    net = LBDN(2, 2, (8,), gamma=gamma, activation="tanh", dtype=torch.float64)
    a = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.1]], dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    gains = []
    for _ in range(300):
        gain = (net(a) - net(b)).norm() / (a - b).norm()
        gains.append(gain.item())
        opt.zero_grad()
        (-gain).backward()
        opt.step()
    assert max(gains) <= gamma * (1 + 1e-9)
    assert max(gains) > 0.9 * gamma


def test_folded_network_equals_layer_by_layer_evaluation() -> None:
    torch.manual_seed(0)
    for output_layer in ("linear", "sandwich"):
        net = LBDN(4, 3, (5, 6), gamma=2.5, output_layer=output_layer, dtype=torch.float64)
        x = torch.randn(7, 4, dtype=torch.float64)
        h = x * net.gamma.sqrt()
        for layer in net.layers:
            h = layer(h)
        expected = h * net.gamma.sqrt()
        torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)


def test_learnable_gamma_gets_a_gradient_and_fixed_gamma_is_a_buffer() -> None:
    net = LBDN(2, 2, (4,), gamma=2.0, learn_gamma=True)
    net(torch.randn(5, 2)).sum().backward()
    assert net.log_gamma.grad is not None and net.log_gamma.grad.abs() > 0
    fixed = LBDN(2, 2, (4,), gamma=2.0)
    assert "log_gamma" in dict(fixed.named_buffers())
    assert abs(fixed.gamma.item() - 2.0) < 1e-6


def test_sandwich_layer_is_one_lipschitz() -> None:
    torch.manual_seed(1)
    layer = SandwichLayer(5, 4, "relu", dtype=torch.float64)
    with torch.no_grad():
        layer.log_psi.normal_()
    a, b = torch.randn(200, 5, dtype=torch.float64), torch.randn(200, 5, dtype=torch.float64)
    assert ((layer(a) - layer(b)).norm(dim=1) <= (a - b).norm(dim=1) * (1 + 1e-12)).all()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"gamma": 0.0}, ValueError),
        ({"gamma": -1.0}, ValueError),
        ({"activation": "gelu"}, ValueError),
        ({"output_layer": "softmax"}, ValueError),
        ({"hidden": (4, 0)}, ValueError),
        ({"hidden": 4}, TypeError),
    ],
)
def test_lbdn_rejects_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        LBDN(2, 2, **kwargs)


def test_lbdn_rejects_wrong_input_width() -> None:
    with pytest.raises(ValueError, match="last dimension 3"):
        LBDN(3, 2)(torch.randn(4, 2))
