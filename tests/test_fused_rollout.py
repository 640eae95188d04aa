"""The fused rollout equals the reference autograd loop (outputs and all gradients)."""

from __future__ import annotations

import pytest
import torch

from r2dn_control.nn import ContractingR2DN, LipschitzR2DN
from r2dn_control.nn.activations import ACTIVATIONS
from r2dn_control.nn.explicit import rollout


def _outputs_and_grads(model, u, x0, method):
    e = model._explicit(None, certificate=False)
    y, x_final = rollout(e, u, x0, method)
    loss = y.sin().sum() + x_final.pow(2).sum()
    leaves = [u, x0, *model.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return y, x_final, grads


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("hidden, output_layer", [((5, 6), "linear"), ((), "linear"),
                                                  ((4,), "sandwich")])
@pytest.mark.parametrize("cls", [ContractingR2DN, LipschitzR2DN])
def test_fused_equals_reference(cls, activation, hidden, output_layer) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, 4, 2, hidden=hidden, activation=activation, output_layer=output_layer,
                dtype=torch.float64)
    u = torch.randn(3, 9, 2, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    y_f, x_f, g_f = _outputs_and_grads(model, u, x0, "fused")
    y_r, x_r, g_r = _outputs_and_grads(model, u, x0, "reference")
    torch.testing.assert_close(y_f, y_r, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_f, x_r, rtol=0, atol=1e-12)
    for a, b in zip(g_f, g_r):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_fused_adjoint_passes_gradcheck(activation: str) -> None:
    from r2dn_control.nn.fused_rollout import fused_rollout
    from r2dn_control.nn.lbdn import ExplicitMLP

    torch.manual_seed(0)
    f64 = {"dtype": torch.float64}
    nx, nv, width, steps, batch = 2, 3, 4, 5, 2
    weights = (0.5 * torch.randn(nv, width, **f64), 0.5 * torch.randn(width, nv, **f64))
    biases = (torch.randn(width, **f64), torch.randn(nv, **f64))
    tensors = [torch.randn(batch, nx, **f64), torch.randn(steps, batch, nx, **f64),
               torch.randn(steps, batch, nv, **f64), 0.5 * torch.randn(nx, nx, **f64),
               0.5 * torch.randn(nx, nv, **f64), 0.5 * torch.randn(nv, nx, **f64),
               *weights, *biases]
    tensors = [t.requires_grad_(True) for t in tensors]

    def run(x0, dx, dv, a, b1, c1, w0, w1, b0, bias1):
        net = ExplicitMLP((w0, w1), (b0, bias1), ACTIVATIONS[activation], activation)
        return fused_rollout(net, x0, dx, dv, a, b1, c1)

    assert torch.autograd.gradcheck(run, tuple(tensors), eps=1e-6, atol=1e-8)


def test_auto_uses_fused_and_bad_method_is_rejected() -> None:
    model = ContractingR2DN(1, 2, 3, 1)
    e = model.explicit()
    u, x0 = torch.randn(2, 4, 1), torch.zeros(2, 2)
    y, _ = rollout(e, u, x0)
    assert y.grad_fn is not None
    with pytest.raises(ValueError, match="method"):
        rollout(e, u, x0, "fast")
