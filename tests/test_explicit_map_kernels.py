"""The C++ explicit maps (``cpp/explicit_map_kernels.cpp``: the LBDN's weight map and the
contracting LTI map) against the torch implementations of the same Functions (run inside
``cpp.suspended()``) and the composed reference algebra: values and every parameter gradient
in float64, gradcheck, float32 closeness."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lbdn_map import _packed, _perturbed

from r2dn_control import config
from r2dn_control.nn import LBDN, ContractingR2DN, cpp
from r2dn_control.nn._contracting_map import ContractingLTI
from r2dn_control.nn._lbdn_map import ExplicitWeights

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("cpp_kernels")


def _random_lbdn(n_in: int, n_out: int, hidden: list[int], output_layer: str, learn_gamma: bool,
                 gamma: float, scale: float, seed: int, dtype: torch.dtype = F64) -> LBDN:
    torch.manual_seed(seed)
    return _perturbed(LBDN(n_in, n_out, hidden, gamma=gamma, learn_gamma=learn_gamma,
                           output_layer=output_layer, dtype=dtype), scale, seed)


def _weights_and_grads(net: LBDN, fused: bool, seed: int, dtype: torch.dtype | None = None):
    """The explicit weights and the gradient of a random linear functional of them with respect
    to every parameter that requires grad (zeros for the unused biases)."""
    weights = list(net.explicit(dtype, fused=fused).weights)
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(w.shape, dtype=F64, generator=g).to(w.dtype) * w).sum()
               for w in weights)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return weights, [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]


def _three_ways(net: LBDN, seed: int, dtype: torch.dtype | None = None):
    """(C++ map, torch Function, composed reference) weights and gradients."""
    with cpp.suspended():
        torch_fn = _weights_and_grads(net, True, seed, dtype)
        composed = _weights_and_grads(net, False, seed, dtype)
    return _weights_and_grads(net, True, seed, dtype), torch_fn, composed


def _assert_close(got, expected, rtol: float, atol: float) -> None:
    """Equal shapes and dtypes, and max|a − b| ≤ rtol·max|b| + atol per tensor (round-off is
    relative to the tensor's scale: with |entries| up to 1e4 a tiny entry carries 1e-12)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype
        error, scale = (a - b).abs().max(), b.abs().max()
        assert error <= rtol * scale + atol, (error, scale)


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 20), n_out=st.integers(1, 20),
       hidden=st.lists(st.sampled_from([1, 2, 7, 8, 17, 24]), max_size=6),
       output_layer=st.sampled_from(["linear", "sandwich"]), learn_gamma=st.booleans(),
       gamma=st.sampled_from([0.3, 1.0, 4.0]), scale=st.sampled_from([0.1, 1.0, 5.0]),
       seed=st.integers(0, 2**31 - 1))
def test_cpp_lbdn_map_equals_torch_and_composed(n_in, n_out, hidden, output_layer, learn_gamma,
                                               gamma, scale, seed) -> None:
    """Sizes from 1 to 24 wide (the loop products and BLAS products above 16³ multiply-adds),
    any depth, both output layers, learned or fixed γ."""
    net = _random_lbdn(n_in, n_out, hidden, output_layer, learn_gamma, gamma, scale, seed)
    (w_cpp, g_cpp), (w_fn, g_fn), (w_ref, g_ref) = _three_ways(net, seed)
    _assert_close(w_cpp, w_fn, 1e-11, 1e-13)
    _assert_close(w_cpp, w_ref, 1e-10, 1e-12)
    _assert_close(g_cpp, g_fn, 1e-10, 1e-12)
    _assert_close(g_cpp, g_ref, 1e-9, 1e-11)


@pytest.mark.parametrize("hidden, output_layer", [((70, 70, 65), "linear"),
                                                  ((66,), "sandwich"), ((80, 20, 80), "linear")])
def test_cpp_lbdn_map_with_lapack_inverses(hidden, output_layer) -> None:
    """Layers wider than 64 are inverted by one batched LAPACK call per size."""
    net = _random_lbdn(5, 3, list(hidden), output_layer, True, 2.0, 1.0, 11)
    (w_cpp, g_cpp), (w_fn, g_fn), (w_ref, g_ref) = _three_ways(net, 11)
    _assert_close(w_cpp, w_fn, 1e-10, 1e-12)
    _assert_close(w_cpp, w_ref, 1e-10, 1e-12)
    _assert_close(g_cpp, g_fn, 1e-9, 1e-11)
    _assert_close(g_cpp, g_ref, 1e-9, 1e-11)


@pytest.mark.parametrize("output_layer", ["linear", "sandwich"])
@pytest.mark.parametrize("hidden", [(), (3,), (3, 5, 2)])
def test_cpp_lbdn_map_passes_gradcheck(output_layer: str, hidden: tuple[int, ...]) -> None:
    net = _random_lbdn(3, 2, list(hidden), output_layer, False, 2.0, 0.5, 1)
    plan = net._plan()
    inputs = tuple(t.detach().clone().requires_grad_()
                   for t in (net.log_gamma, *_packed(net)))
    with torch.enable_grad():
        outputs = ExplicitWeights.apply(plan, F64, *inputs)
    assert outputs[0].grad_fn is not None
    assert torch.autograd.gradcheck(
        lambda log_gamma, *params: ExplicitWeights.apply(plan, F64, log_gamma, *params), inputs)


def test_cpp_lbdn_map_clips_log_psi_like_the_reference() -> None:
    """log ψ outside ±clip: ψ is clipped and its gradient is exactly zero, as in torch."""
    net = _random_lbdn(2, 2, [3, 3], "linear", False, 1.0, 0.3, 2)
    with torch.no_grad():
        net.sandwich_layers[1].log_psi.copy_(torch.tensor([25.0, -30.0, 0.5], dtype=F64))
    (w_cpp, g_cpp), (w_fn, g_fn), _ = _three_ways(net, 2)
    _assert_close(w_cpp, w_fn, 1e-11, 1e-13)
    _assert_close(g_cpp, g_fn, 1e-10, 1e-12)
    net.zero_grad()
    sum((w * w).sum() for w in net.explicit().weights).backward()
    grad = net.sandwich_layers[1].log_psi.grad
    assert grad[:2].abs().max() == 0.0 and grad[2] != 0.0


@pytest.mark.parametrize("parameter_dtype, map_dtype", [(torch.float32, torch.float32),
                                                        (F64, torch.float32),
                                                        (torch.float32, F64)])
def test_cpp_lbdn_map_in_other_dtypes(parameter_dtype, map_dtype) -> None:
    """float32 algebra is close to float64's; gradients come back in the parameters' dtype."""
    net = _random_lbdn(6, 4, [8, 8, 8], "linear", True, 2.0, 0.5, 3, parameter_dtype)
    (w_cpp, g_cpp), (w_fn, g_fn), _ = _three_ways(net, 3, map_dtype)
    assert all(w.dtype == map_dtype for w in w_cpp)
    assert all(g.dtype == parameter_dtype for g in g_cpp)
    _assert_close(w_cpp, w_fn, 1e-5, 1e-6)
    _assert_close(g_cpp, g_fn, 1e-4, 1e-5)


def test_cpp_lbdn_map_rejects_inconsistent_layers() -> None:
    weight = torch.randn(5, 3, dtype=F64)
    with pytest.raises(RuntimeError, match="takes 4 features but layer 0 gives 3"):
        cpp.ops().lbdn_map_forward([weight, torch.randn(6, 2, dtype=F64)],
                                   [torch.ones((), dtype=F64)] * 2,
                                   [torch.zeros(3, dtype=F64)], torch.zeros((), dtype=F64),
                                   1e-8, 20.0)


def _lti_outputs_and_grads(model: ContractingR2DN, dtype: torch.dtype, seed: int):
    tensors = [model.X, model.Y, model.C1, model.B1_hat]
    if model.polar_scale is not None:
        tensors.append(model.polar_scale)
    a, b1 = ContractingLTI.apply(model.contraction_rate, model.eps, dtype, model.X,
                                 model.polar_scale, model.Y, model.C1, model.B1_hat)
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(t.shape, dtype=F64, generator=g).to(t.dtype) * t).sum()
               for t in (a, b1))
    return [a, b1], list(torch.autograd.grad(loss, tensors))


def _random_contracting(nx: int, nv: int, polar: bool, rate: float, scale: float, seed: int,
                        dtype: torch.dtype = F64) -> ContractingR2DN:
    torch.manual_seed(seed)
    model = ContractingR2DN(1, nx, nv, 1, hidden=(2,), polar=polar, contraction_rate=rate,
                            dtype=dtype)
    return _perturbed(model, scale, seed)


@settings(max_examples=40, deadline=None)
@given(nx=st.integers(1, 9), nv=st.integers(1, 20), polar=st.booleans(),
       rate=st.sampled_from([0.5, 0.9, 1.0]), scale=st.sampled_from([0.1, 1.0, 3.0]),
       seed=st.integers(0, 2**31 - 1))
def test_cpp_lti_map_equals_torch(nx, nv, polar, rate, scale, seed) -> None:
    model = _random_contracting(nx, nv, polar, rate, scale, seed)
    got = _lti_outputs_and_grads(model, F64, seed)
    with cpp.suspended():
        expected = _lti_outputs_and_grads(model, F64, seed)
    _assert_close(got[0], expected[0], 1e-10, 1e-12)
    _assert_close(got[1], expected[1], 1e-9, 1e-11)


@pytest.mark.parametrize("polar", [True, False])
def test_cpp_lti_map_with_a_lapack_inverse(polar: bool) -> None:
    """nx > 64: E is inverted by LAPACK."""
    model = _random_contracting(70, 12, polar, 0.9, 0.3, 4)
    got = _lti_outputs_and_grads(model, F64, 4)
    with cpp.suspended():
        expected = _lti_outputs_and_grads(model, F64, 4)
    _assert_close(got[0], expected[0], 1e-9, 1e-11)
    _assert_close(got[1], expected[1], 1e-8, 1e-10)


@pytest.mark.parametrize("polar", [True, False])
def test_cpp_lti_map_passes_gradcheck(polar: bool) -> None:
    model = _random_contracting(3, 4, polar, 0.9, 0.5, 5)
    tensors = [model.X, model.polar_scale, model.Y, model.C1, model.B1_hat]
    inputs = tuple(t.detach().clone().requires_grad_() for t in tensors if t is not None)

    def lti(x, *rest):
        polar_scale, y, c1, b1 = rest if polar else (None, *rest)
        return ContractingLTI.apply(0.9, model.eps, F64, x, polar_scale, y, c1, b1)

    assert torch.autograd.gradcheck(lti, inputs)


def test_cpp_lti_map_float32_model() -> None:
    """A float32 model: float64 algebra inside, float32 A, B₁ and gradients, close to torch."""
    model = _random_contracting(2, 8, True, 0.9, 0.5, 6, torch.float32)
    got = _lti_outputs_and_grads(model, torch.float32, 6)
    with cpp.suspended():
        expected = _lti_outputs_and_grads(model, torch.float32, 6)
    assert all(t.dtype == torch.float32 for t in got[0] + got[1])
    _assert_close(got[0], expected[0], 1e-6, 1e-7)
    _assert_close(got[1], expected[1], 1e-5, 1e-6)


@settings(max_examples=25, deadline=None)
@given(nx=st.integers(1, 4), nv=st.integers(1, 8), hidden=st.lists(st.sampled_from([3, 8]),
                                                                    max_size=3),
       polar=st.booleans(), output_layer=st.sampled_from(["linear", "sandwich"]),
       seed=st.integers(0, 2**31 - 1))
def test_whole_training_call_with_cpp_maps_equals_torch(nx, nv, hidden, polar, output_layer,
                                                        seed) -> None:
    """A training call (both maps, rollout, loss) with the C++ maps gives the torch path's
    loss and parameter gradients."""
    torch.manual_seed(seed)
    model = ContractingR2DN(2, nx, nv, 2, hidden=tuple(hidden), polar=polar,
                            output_layer=output_layer, dtype=F64)
    u = torch.randn(3, 5, 2, dtype=F64)

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = model(u)[0].square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    got = loss_and_grads()
    with cpp.suspended():
        expected = loss_and_grads()
    assert torch.allclose(got[0], expected[0], rtol=1e-11, atol=1e-13)
    _assert_close(got[1], expected[1], 1e-9, 1e-11)


def _map_ops_called(model: ContractingR2DN) -> set[str]:
    with torch.profiler.profile() as prof:
        model._explicit(None, certificate=False)
    return {e.key for e in prof.key_averages() if e.key.startswith("r2dn_control::")}


def test_the_maps_setting_selects_the_torch_functions() -> None:
    """``nn.cpp.maps=False``: the same explicit model from the torch Functions, no C++ map."""
    model = _random_contracting(2, 5, True, 0.9, 0.5, 8)
    model.inference_cache = False
    names = {"r2dn_control::lbdn_map_forward", "r2dn_control::contracting_lti_forward"}
    assert names <= _map_ops_called(model)
    with_cpp = model._explicit(None, certificate=False)
    try:
        config.set_defaults("nn.cpp", maps=False)
        assert not names & _map_ops_called(model)
        without = model._explicit(None, certificate=False)
    finally:
        config.reset_defaults()
    _assert_close(list(with_cpp.matrices().values()), list(without.matrices().values()),
                  1e-10, 1e-12)
    _assert_close(list(with_cpp.network.weights), list(without.network.weights), 1e-10, 1e-12)
