"""The compiled step (r2dn_control/nn/realtime.py) equals the model's own rollout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import FAMILIES, Sizes
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control.nn import ContractingR2DN, ContractingREN

ACTS = ["relu", "tanh", "sigmoid", "leaky_relu", "identity"]


def _build(family, seed, activation="relu", dtype=torch.float64, hidden=(5, 7)):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    nu = ny = 2 if family.square_io else None
    sizes = Sizes(nu or 2, 3, 4, ny or 3, hidden)
    model = family.build(sizes, rng, {"dtype": dtype, "activation": activation})
    with torch.no_grad():  # non-zero biases so every term of the step form is exercised
        for name in ("bx", "bv", "by"):
            getattr(model, name).normal_()
    return model


def _rollout(model, u, x0):
    with torch.no_grad():
        return model(u, x0)


@settings(max_examples=30)
@given(family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**31 - 1),
       activation=st.sampled_from(ACTS), batch=st.integers(1, 4),
       hidden=st.sampled_from([(), (5,), (5, 7)]))
def test_compiled_step_matches_rollout_float64(family, seed, activation, batch, hidden):
    model = _build(family, seed, activation, hidden=hidden)
    step = model.compile_step()
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, 6, model.input_size, generator=gen, dtype=torch.float64)
    x0 = torch.randn(batch, model.state_size, generator=gen, dtype=torch.float64)
    y_ref, x_ref = _rollout(model, u, x0)
    x = x0
    for t in range(u.shape[1]):
        y, x = step(x, u[:, t])
        scale = 1 + y_ref[:, t].abs().max()
        assert (y - y_ref[:, t]).abs().max() <= 1e-12 * scale
    assert (x - x_ref).abs().max() <= 1e-12 * (1 + x_ref.abs().max())


@pytest.mark.parametrize("cls", [ContractingR2DN, ContractingREN])
def test_frozen_step_is_the_fast_path_and_matches(cls):
    torch.manual_seed(0)
    model = cls(3, 4, 6, 2) if cls is ContractingREN else cls(3, 4, 6, 2, hidden=(8,))
    x, u = torch.randn(4), torch.randn(3)
    y_slow, x_slow = model.step(x, u)
    with model.frozen():
        y_fast, x_fast = model.step(x, u)
        compiled = model.__dict__["_frozen_step"][1]
        assert compiled.backend == ("torch" if cls is ContractingREN else "numpy")
        y_b, x_b = model.step(x[None], u[None])
        y_n, x_n = model.step(None, u)
    assert y_fast.shape == (2,) and x_fast.shape == (4,) and y_b.shape == (1, 2)
    torch.testing.assert_close(y_fast, y_slow.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_fast, x_slow.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_b[0], y_fast)
    torch.testing.assert_close(y_n, model.step(torch.zeros(4), u)[0].detach(), rtol=1e-5,
                               atol=1e-6)
    assert x_b.shape == (1, 4) and x_n.shape == (4,)


def test_outputs_are_fresh_tensors_not_reused_buffers():
    torch.manual_seed(1)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5,))
    step = model.compile_step()
    u = torch.randn(2)
    y1, x1 = step(torch.zeros(3), u)
    kept = (y1.clone(), x1.clone())
    step(x1, u)
    torch.testing.assert_close(y1, kept[0], rtol=0, atol=0)
    torch.testing.assert_close(x1, kept[1], rtol=0, atol=0)


def test_gradients_flow_to_inputs_through_the_torch_path():
    torch.manual_seed(2)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5,), dtype=torch.float64)
    step = model.compile_step()
    u = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 3, dtype=torch.float64)
    y, _ = step(x, u)
    (g_fast,) = torch.autograd.grad(y.sum(), u)
    y_ref, _ = model(u[:, None], x)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), u)
    torch.testing.assert_close(g_fast, g_ref)


def test_torch_backend_matches_numpy_backend():
    torch.manual_seed(3)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5, 6), activation="tanh", dtype=torch.float64)
    x, u = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    fast, slow = model.compile_step("numpy"), model.compile_step("torch")
    for a, b in zip(fast(x, u), slow(x, u)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    y_np, x_np = fast.numpy(x.numpy(), u.numpy())
    np.testing.assert_allclose(y_np, fast(x, u)[0].numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2,), (3, 2)])
def test_non_finite_inputs_propagate_without_warning_like_the_torch_path(shape):
    """inf·0 inside the numpy products gives nan/inf silently, as torch does (pytest turns warnings
    into errors, so a numpy RuntimeWarning here fails the test)."""
    torch.manual_seed(4)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5,), dtype=torch.float64)
    u = torch.zeros(shape, dtype=torch.float64)
    u[..., 1] = float("inf")
    x = torch.zeros((*shape[:-1], 3), dtype=torch.float64)
    fast, slow = model.compile_step("numpy"), model.compile_step("torch")
    for a, b in zip(fast(x, u), slow(x, u)):
        assert not torch.isfinite(a).all() and not torch.isfinite(b).all()
        both = torch.isfinite(a) & torch.isfinite(b)  # inf vs nan may differ between backends
        torch.testing.assert_close(a[both], b[both], rtol=1e-12, atol=1e-12)


def test_bad_inputs_name_what_was_expected():
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5,))
    step = model.compile_step()
    with pytest.raises(TypeError, match="dtype"):
        step(torch.zeros(3), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"u must have shape \(batch, 2\)"):
        step(torch.zeros(3), torch.zeros(5))
    with pytest.raises(ValueError, match="x must have shape"):
        step(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        step(np.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="backend"):
        model.compile_step("jit")
    with pytest.raises(ValueError, match="numpy backend"):
        ContractingREN(2, 3, 4, 2).compile_step("numpy")


def test_compiled_step_does_not_see_later_parameter_updates():
    torch.manual_seed(4)
    model = ContractingR2DN(2, 3, 4, 2, hidden=(5,))
    step = model.compile_step()
    x, u = torch.randn(3), torch.randn(2)
    before = step(x, u)[0].clone()
    with torch.no_grad():
        model.by.add_(1.0)
    torch.testing.assert_close(step(x, u)[0], before, rtol=0, atol=0)
    with model.frozen():  # a new frozen() context compiles the new weights
        torch.testing.assert_close(model.step(x, u)[0], before + 1.0, rtol=1e-5, atol=1e-5)
