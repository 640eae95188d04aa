"""The LBDN's fused explicit-weight map (`r2dn_control.nn._lbdn_map`) against the composed
reference (`LBDN.explicit(fused=False)`) and against finite differences, in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control.nn import LBDN, ContractingR2DN
from r2dn_control.nn._contracting_map import ContractingLTI
from r2dn_control.nn._lbdn_map import ExplicitWeights
from r2dn_control.nn.lbdn import ExplicitMLP

F64 = torch.float64


def _tensors(e: ExplicitMLP) -> list[torch.Tensor]:
    return [*e.weights, *(b for b in e.biases if b is not None)]


def _perturbed(net: LBDN, scale: float, seed: int) -> LBDN:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=g))
    return net


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6),
       hidden=st.lists(st.sampled_from([1, 3, 4]), max_size=5),
       output_layer=st.sampled_from(["linear", "sandwich"]), learn_gamma=st.booleans(),
       gamma=st.sampled_from([0.3, 1.0, 4.0]), scale=st.sampled_from([0.1, 1.0, 5.0]),
       seed=st.integers(0, 2**31 - 1))
def test_fused_map_equals_reference_values_and_gradients(n_in, n_out, hidden, output_layer,
                                                        learn_gamma, gamma, scale, seed) -> None:
    torch.manual_seed(seed)
    net = _perturbed(LBDN(n_in, n_out, hidden, gamma=gamma, learn_gamma=learn_gamma,
                          output_layer=output_layer, dtype=F64), scale, seed)
    fused, reference = _tensors(net.explicit()), _tensors(net.explicit(fused=False))
    assert [t.shape for t in fused] == [t.shape for t in reference]
    for a, b in zip(fused, reference):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    cotangents = [torch.randn_like(t) for t in fused]
    params = list(net.parameters())
    grads = [torch.autograd.grad(sum((c * t).sum() for c, t in zip(cotangents, out)), params)
             for out in (fused, reference)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def _packed(net: LBDN) -> list[torch.Tensor]:
    """The parameters in the order `ExplicitWeights` takes them (weight, scale, log ψ)."""
    out: list[torch.Tensor] = []
    for layer in net.sandwich_layers:
        out += [layer.weight, layer.scale]
        if layer.log_psi is not None:
            out.append(layer.log_psi)
    return out


@pytest.mark.parametrize("output_layer", ["linear", "sandwich"])
@pytest.mark.parametrize("hidden", [(), (3,), (3, 3, 2)])
def test_fused_map_passes_gradcheck(output_layer: str, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    net = _perturbed(LBDN(3, 2, hidden, gamma=2.0, output_layer=output_layer, dtype=F64), 0.5, 1)
    plan = net._plan()
    inputs = tuple(t.detach().clone().requires_grad_()
                   for t in (net.log_gamma, *_packed(net)))
    assert torch.autograd.gradcheck(
        lambda log_gamma, *params: ExplicitWeights.apply(plan, F64, log_gamma, *params), inputs)


def test_clipped_log_psi_has_zero_gradient_as_in_the_reference() -> None:
    torch.manual_seed(2)
    net = LBDN(2, 2, (3, 3), dtype=F64)
    with torch.no_grad():
        net.sandwich_layers[1].log_psi.copy_(torch.tensor([25.0, -30.0, 0.5], dtype=F64))
    grads = []
    for fused in (True, False):
        net.zero_grad()
        sum((t * t).sum() for t in _tensors(net.explicit(fused=fused))).backward()
        grads.append(net.sandwich_layers[1].log_psi.grad.clone())
    assert grads[0][:2].abs().max() == 0.0 and grads[0][2] != 0.0
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_float32_weights_from_float64_parameters_and_frozen_parameters() -> None:
    """Computed in a dtype other than the parameters', gradients come back in the parameters'
    dtype; parameters that do not require grad get none."""
    torch.manual_seed(3)
    net = LBDN(4, 3, (5, 5), dtype=F64)
    net.sandwich_layers[0].scale.requires_grad_(False)
    fused, reference = (net.explicit(torch.float32, fused=f) for f in (True, False))
    for a, b in zip(_tensors(fused), _tensors(reference)):
        assert a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    sum((t * t).sum() for t in _tensors(fused)).backward()
    assert net.sandwich_layers[0].scale.grad is None
    assert all(p.grad.dtype == F64 for p in net.parameters() if p.requires_grad)


def _map_tensors_and_grads(model, cotangent_seed: int):
    e = model._explicit(None, certificate=False)
    outs = [*e.matrices().values(), *_tensors(e.network)]
    g = torch.Generator().manual_seed(cotangent_seed)
    loss = sum((torch.randn(t.shape, dtype=t.dtype, generator=g) * t).sum() for t in outs)
    params = [p for p in model.parameters() if p.requires_grad]
    return outs, torch.autograd.grad(loss, params, allow_unused=True)


@settings(max_examples=40, deadline=None)
@given(nu=st.integers(1, 3), nx=st.integers(1, 5), nv=st.integers(1, 6),
       hidden=st.lists(st.sampled_from([2, 5]), max_size=3), polar=st.booleans(),
       rate=st.sampled_from([0.5, 0.9, 1.0]), identity_output=st.booleans(),
       output_layer=st.sampled_from(["linear", "sandwich"]), scale=st.sampled_from([0.1, 1.0]),
       seed=st.integers(0, 2**31 - 1))
def test_contracting_r2dn_training_map_equals_the_composed_reference(
        nu, nx, nv, hidden, polar, rate, identity_output, output_layer, scale, seed) -> None:
    """The fused maps (LTI `ContractingLTI` and LBDN `ExplicitWeights`) give the composed
    float64 algebra's explicit model and parameter gradients."""
    torch.manual_seed(seed)
    model = ContractingR2DN(nu, nx, nv, nx if identity_output else 2, hidden=tuple(hidden),
                            polar=polar, contraction_rate=rate, identity_output=identity_output,
                            output_layer=output_layer, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=g))
    assert model._contracting_map()
    fused = _map_tensors_and_grads(model, seed)
    model.fused_maps = False
    assert not model._contracting_map()
    reference = _map_tensors_and_grads(model, seed)
    for a, b in zip(fused[0], reference[0]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
    for a, b in zip(fused[1], reference[1]):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("polar", [True, False])
def test_contracting_lti_map_passes_gradcheck(polar: bool) -> None:
    torch.manual_seed(5)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(3,), polar=polar, contraction_rate=0.9, dtype=F64)
    tensors = [model.X, model.polar_scale, model.Y, model.C1, model.B1_hat]
    inputs = tuple(None if t is None else t.detach().clone().requires_grad_() for t in tensors)

    def lti(x, *rest):
        polar_scale, y, c1, b1 = rest if polar else (None, *rest)
        return ContractingLTI.apply(0.9, model.eps, F64, x, polar_scale, y, c1, b1)

    assert torch.autograd.gradcheck(lti, tuple(t for t in inputs if t is not None))


def test_float32_contracting_r2dn_uses_the_fused_maps_and_matches() -> None:
    """A float32 model: the fused LTI map computes in float64 and returns float32 A, B₁."""
    torch.manual_seed(6)
    model = ContractingR2DN(1, 2, 8, 2, hidden=(8, 8), identity_output=True)
    fused_out, fused_grads = _map_tensors_and_grads(model, 0)
    model.fused_maps = False
    ref_out, ref_grads = _map_tensors_and_grads(model, 0)
    for a, b in zip(fused_out, ref_out):
        assert a.dtype == b.dtype == torch.float32
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(fused_grads, ref_grads):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_torch_func_transforms_of_the_network_use_the_composed_path() -> None:
    """``vmap(jacrev(net))`` (a Lipschitz check users write) works and gives the Jacobian."""
    torch.manual_seed(7)
    net = _perturbed(LBDN(3, 2, (4, 4), gamma=2.0, dtype=F64), 0.5, 7)
    x = torch.randn(5, 3, dtype=F64)
    jac = torch.func.vmap(torch.func.jacrev(net))(x)
    for i in range(5):
        expected = torch.autograd.functional.jacobian(net, x[i])
        assert torch.allclose(jac[i], expected, rtol=1e-10, atol=1e-12)
    assert torch.linalg.matrix_norm(jac, 2).max() <= 2.0 * (1 + 1e-9)
