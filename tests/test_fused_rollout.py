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


def _sequence_inputs(nu: int = 2, nx: int = 2, nv: int = 3, ny: int = 2, steps: int = 5,
                     batch: int = 3, width: int = 4) -> tuple[list[torch.Tensor], int]:
    """x0, u, A, B1, C1, B2, D12, C2, D21, D22, bx, bv, by, W0, W1, b0, b1 (float64)."""
    f64 = {"dtype": torch.float64}
    shapes = [(batch, nx), (batch, steps, nu), (nx, nx), (nx, nv), (nv, nx), (nx, nu), (nv, nu),
              (ny, nx), (ny, nv), (ny, nu), (nx,), (nv,), (ny,), (nv, width), (width, nv),
              (width,), (nv,)]
    return [0.5 * torch.randn(*shape, **f64) for shape in shapes], 13


@pytest.mark.parametrize("cpp_on", [True, False])
def test_fused_sequence_passes_gradcheck(cpp_on: bool) -> None:
    """The one-node sequence (input terms, loops, outputs): every input's gradient."""
    import contextlib

    from r2dn_control.nn import cpp
    from r2dn_control.nn.fused_rollout import fused_sequence
    from r2dn_control.nn.lbdn import ExplicitMLP

    torch.manual_seed(1)
    tensors, n_model = _sequence_inputs()
    tensors = [t.requires_grad_(True) for t in tensors]

    def run(*ts):
        net = ExplicitMLP(ts[n_model:n_model + 2], ts[n_model + 2:], ACTIVATIONS["tanh"], "tanh")
        return fused_sequence(net, *ts[:n_model])

    with contextlib.nullcontext() if cpp_on else cpp.suspended():
        assert torch.autograd.gradcheck(run, tuple(tensors), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("identity_output", [True, False])
@pytest.mark.parametrize("u_grad", [True, False])
def test_fused_sequence_skips_only_unneeded_gradients(identity_output: bool, u_grad: bool
                                                      ) -> None:
    """Training-call shape (identity output: C₂ = I and zero D₂₁, D₂₂ buffers; u data or a
    leaf): outputs and every parameter gradient equal the reference loop's, and gradients
    are produced exactly for the leaves that require them."""
    torch.manual_seed(2)
    model = ContractingR2DN(2, 2, 4, 2, hidden=(5, 3), identity_output=identity_output,
                            dtype=torch.float64)
    u = torch.randn(3, 7, 2, dtype=torch.float64, requires_grad=u_grad)
    x0 = torch.randn(3, 2, dtype=torch.float64)
    results = {}
    for method in ("fused", "reference"):
        e = model._explicit(None, certificate=False)
        y, x_final = rollout(e, u, x0, method)
        leaves = [p for p in model.parameters()] + ([u] if u_grad else [])
        grads = torch.autograd.grad(y.square().sum() + x_final.sum(), leaves, allow_unused=True)
        results[method] = (y, x_final, grads)
    (y_f, x_f, g_f), (y_r, x_r, g_r) = results["fused"], results["reference"]
    torch.testing.assert_close(y_f, y_r, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_f, x_r, rtol=0, atol=1e-12)
    for a, b in zip(g_f, g_r, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fused_sequence_is_one_node_and_equals_the_split_path() -> None:
    """`rollout` takes the sequence; the recurrent-part Function plus the five ``addmm``
    (the path of backends without a sequence) gives the same values and gradients."""
    from dataclasses import replace

    from r2dn_control.nn import explicit

    torch.manual_seed(3)
    model = ContractingR2DN(1, 2, 3, 1, hidden=(4,), dtype=torch.float64)
    u = torch.randn(2, 6, 1, dtype=torch.float64)
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    e = model._explicit(None, certificate=False)
    y, _ = rollout(e, u, x0)
    assert type(y.grad_fn).__name__ == "_FusedR2DNSequenceBackward"
    split = replace(explicit.BACKENDS["fused_r2dn"], sequence=None)
    backends = dict(explicit.BACKENDS, fused_r2dn=split)
    grads, nodes = [], []
    for table in (explicit.BACKENDS, backends):
        original = explicit.BACKENDS
        explicit.BACKENDS = table
        try:
            y, x_final = rollout(model._explicit(None, certificate=False), u, x0, "fused_r2dn")
        finally:
            explicit.BACKENDS = original
        nodes.append(type(y.grad_fn).__name__)
        grads.append((y, torch.autograd.grad(y.sin().sum() + x_final.sum(),
                                             list(model.parameters()), allow_unused=True)))
    assert nodes[0] == "_FusedR2DNSequenceBackward" != nodes[1]
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-12)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
