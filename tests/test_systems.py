"""python-control bridge: LTIPlant against control.forced_response, to_nlsys against rollouts."""

from __future__ import annotations

import control
import numpy as np
import pytest
import torch

from r2dn_control.nn import ContractingR2DN, LipschitzR2DN
from r2dn_control.systems import LTIPlant, to_nlsys

F64 = torch.float64


def _random_discrete(seed: int, nx: int, ny: int, nu: int, dt: float = 0.1) -> control.StateSpace:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(nx, nx))
    a *= 0.95 / max(abs(np.linalg.eigvals(a)))
    return control.ss(a, rng.normal(size=(nx, nu)), rng.normal(size=(ny, nx)),
                      rng.normal(size=(ny, nu)), dt)


def _perturbed(model: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """Move every parameter away from its init (biases included) so nothing is trivially 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


# ---------------------------------------------------------------------------------- LTIPlant
@pytest.mark.parametrize("sizes", [(1, 1, 1), (4, 2, 3), (6, 3, 1)])
def test_plant_matches_forced_response(sizes):
    nx, ny, nu = sizes
    sys = _random_discrete(sum(sizes), nx, ny, nu)
    plant = LTIPlant.from_control(sys, dtype=F64)
    rng = np.random.default_rng(1)
    steps, batch = 40, 3
    u = rng.normal(size=(batch, steps, nu))
    x0 = rng.normal(size=(batch, nx))
    y, x_T = plant(torch.tensor(u), torch.tensor(x0))
    assert y.shape == (batch, steps, ny) and x_T.shape == (batch, nx)
    times = np.arange(steps) * sys.dt
    for b in range(batch):
        ref = control.forced_response(sys, times, u[b].T, X0=x0[b], return_x=True)
        np.testing.assert_allclose(y[b].numpy(), np.atleast_2d(ref.outputs).reshape(ny, -1).T,
                                   atol=1e-10, rtol=0)
        # x_T is one step past the last output: A x_{T−1} + B u_{T−1}.
        x_last = np.atleast_2d(ref.states).reshape(nx, -1)[:, -1]
        expected = sys.A @ x_last + sys.B @ u[b, -1]
        np.testing.assert_allclose(x_T[b].numpy(), expected, atol=1e-10, rtol=0)


def test_transfer_function_and_continuous_plants():
    tf = control.tf([0.3], [1, -1.2944, 0.64], 1)  # the plant of docs/experiments.md, youla
    u = np.random.default_rng(0).normal(size=60)
    y, _ = LTIPlant.from_control(tf, dtype=F64)(torch.tensor(u)[:, None])
    ref = control.forced_response(tf, np.arange(60), u)
    np.testing.assert_allclose(y[:, 0].numpy(), ref.outputs, atol=1e-10, rtol=0)

    box = control.tf([1.0], [1.0, 0.5, 5.0])  # continuous: discretized with c2d
    plant = LTIPlant.from_control(box, dt=0.05, method="zoh", dtype=F64)
    y, _ = plant(torch.tensor(u)[:, None])
    ref = control.forced_response(control.c2d(box, 0.05, "zoh"), np.arange(60) * 0.05, u)
    np.testing.assert_allclose(y[:, 0].numpy(), ref.outputs, atol=1e-10, rtol=0)
    assert plant.dt == 0.05


def test_step_equals_rollout_and_shapes():
    plant = LTIPlant.from_control(_random_discrete(3, 3, 2, 2), dtype=F64)
    u = torch.randn(4, 10, 2, dtype=F64)
    x0 = torch.randn(4, 3, dtype=F64)
    y, x_T = plant(u, x0)
    x, ys = x0, []
    for t in range(10):
        y_t, x = plant.step(x, u[:, t])
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-12, rtol=0)
    torch.testing.assert_close(x, x_T, atol=1e-12, rtol=0)
    y1, x1 = plant(u[0], x0[0])  # unbatched (time, nu), like the models
    assert y1.shape == (10, 2) and x1.shape == (3,)
    torch.testing.assert_close(y1, y[0])


def test_plant_is_differentiable():
    plant = LTIPlant.from_control(_random_discrete(5, 3, 1, 2), dtype=F64)
    u = torch.randn(2, 6, 2, dtype=F64, requires_grad=True)
    x0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: plant(a, b)[0], (u, x0))


def test_saturation_and_noise():
    sys = _random_discrete(7, 2, 1, 1)
    u = 3 * torch.randn(1, 50, 1, dtype=F64)
    clipped = LTIPlant.from_control(sys, input_limit=0.5, dtype=F64)
    plain = LTIPlant.from_control(sys, dtype=F64)
    torch.testing.assert_close(clipped(u)[0], plain(u.clamp(-0.5, 0.5))[0])
    assert not torch.allclose(clipped(u)[0], plain(u)[0])

    noisy = dict(process_noise=0.1, measurement_noise=[0.2], dtype=F64)
    a = LTIPlant.from_control(sys, generator=3, **noisy)(u)[0]
    b = LTIPlant.from_control(sys, generator=3, **noisy)(u)[0]
    c = LTIPlant.from_control(sys, generator=4, **noisy)(u)[0]
    torch.testing.assert_close(a, b)  # seeded: reproducible
    assert not torch.allclose(a, c)
    quiet = LTIPlant.from_control(sys, generator=3, **noisy)(u, noise=False)[0]
    torch.testing.assert_close(quiet, plain(u)[0])
    # measurement noise alone: residual std ≈ 0.2
    only_v = LTIPlant.from_control(sys, measurement_noise=0.2, generator=0, dtype=F64)
    resid = only_v(torch.zeros(400, 50, 1, dtype=F64))[0]
    assert abs(float(resid.std()) - 0.2) < 0.01


def test_plant_bad_input():
    continuous = control.ss([[0.0, 1.0], [-5.0, -0.5]], [[0.0], [1.0]], [[1.0, 0.0]], 0)
    with pytest.raises(ValueError, match="continuous-time.*dt"):
        LTIPlant.from_control(continuous)
    with pytest.raises(ValueError, match="already discrete"):
        LTIPlant.from_control(_random_discrete(0, 2, 1, 1, dt=0.1), dt=0.2)
    with pytest.raises(TypeError, match="StateSpace"):
        LTIPlant.from_control(np.eye(2))
    plant = LTIPlant.from_control(_random_discrete(0, 2, 1, 1), dtype=F64)
    with pytest.raises(ValueError, match="last dimension 1"):
        plant(torch.zeros(3, 5, 2, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        plant(torch.zeros(3, 5, 1, dtype=torch.float32))
    with pytest.raises(ValueError, match="x0 must have shape"):
        plant(torch.zeros(3, 5, 1, dtype=F64), torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="input_limit"):
        LTIPlant.from_control(_random_discrete(0, 2, 1, 1), input_limit=[1.0, 2.0])


# ---------------------------------------------------------------------------------- to_nlsys
def _models():
    yield _perturbed(ContractingR2DN(2, 4, 6, 3, hidden=(8, 8), dtype=F64), 0.2, 0)
    yield _perturbed(LipschitzR2DN(2, 3, 5, 2, hidden=(6,), gamma=3.0, full_d22=True,
                                   dtype=F64), 0.2, 1)
    import r2dn_control.nn as nn_pkg
    if hasattr(nn_pkg, "ContractingREN"):  # the REN family, once it has landed
        yield _perturbed(nn_pkg.ContractingREN(2, 4, 5, 3, dtype=F64), 0.2, 2)


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_nlsys_matches_rollout(model):
    nu, nx, ny = model.input_size, model.state_size, model.output_size
    sys = to_nlsys(model, dt=0.1, name="net", inputs="e", outputs="u")
    assert sys.isdtime(strict=True) and sys.name == "net"
    assert sys.input_labels == [f"e[{i}]" for i in range(nu)]
    assert sys.output_labels == [f"u[{i}]" for i in range(ny)]
    assert sys.nstates == nx
    rng = np.random.default_rng(0)
    u = rng.normal(size=(40, nu))
    x0 = rng.normal(size=nx)
    resp = control.input_output_response(sys, np.arange(40) * 0.1, u.T, X0=x0)
    y, _ = model(torch.tensor(u), torch.tensor(x0))
    np.testing.assert_allclose(np.atleast_2d(resp.outputs).T, y.detach().numpy(),
                               atol=1e-10, rtol=0)


def test_nlsys_in_feedback_with_a_plant():
    """control.interconnect of an exported model with an LTI plant equals a torch loop."""
    model = _perturbed(ContractingR2DN(1, 3, 4, 1, hidden=(6,), dtype=F64), 0.2, 3)
    lti = control.ss([[0.9, 0.2], [0.0, 0.7]], [[0.0], [1.0]], [[1.0, 0.0]], 0, 1.0,
                     name="plant", inputs="u", outputs="y")
    net = to_nlsys(model, dt=1.0, name="net", inputs=["e"], outputs=["u"])
    loop = control.interconnect([lti, net], connections=[["net.e", "-plant.y"],
                                                          ["plant.u", "net.u"]],
                                inplist=["net.e"], outlist=["plant.y", "net.u"], dt=1.0)
    r = np.sin(0.3 * np.arange(30))
    resp = control.input_output_response(loop, np.arange(30), r)
    plant = LTIPlant.from_control(lti, dtype=F64)
    x, q, ys = torch.zeros(1, 2, dtype=F64), torch.zeros(1, 3, dtype=F64), []
    for t in range(30):
        y_t = x @ plant.C.T  # strictly proper plant: y_t before u_t
        u_t, q = model.step(q, torch.tensor([[r[t]]], dtype=F64) - y_t)
        _, x = plant.step(x, u_t)
        ys.append(y_t[0, 0].item())
    np.testing.assert_allclose(resp.outputs[0], ys, atol=1e-10, rtol=0)


def test_nlsys_bad_input():
    model = ContractingR2DN(1, 2, 3, 1, hidden=(4,), dtype=F64)
    with pytest.raises(ValueError, match="dt"):
        to_nlsys(model, dt=0)
    with pytest.raises(ValueError, match="inputs must name 1"):
        to_nlsys(model, inputs=["a", "b"])
    with pytest.raises(TypeError, match="recurrent model"):
        to_nlsys(torch.nn.Linear(1, 1))
