"""Youla controllers, observers and policy-gradient training."""

from __future__ import annotations

import time
from dataclasses import replace

import control
import numpy as np
import pytest
import torch
from families import FAMILIES, Sizes

from r2dn_control.control import (
    ClosedLoopState,
    Observer,
    ObserverBasedController,
    YoulaController,
    fit_observer,
    simulate_closed_loop,
    step_disturbances,
    train_policy_gradient,
)
from r2dn_control.nn import ContractingR2DN
from r2dn_control.systems import LTIPlant

F64 = torch.float64
# Open-loop unstable plant (eigenvalues 1.1 and 0.9), one input, one measurement.
UNSTABLE = control.ss([[1.1, 0.3], [0.0, 0.9]], [[0.0], [1.0]], [[1.0, 0.0]], 0, 1.0)
# docs/experiments.md, youla: T(q) = 0.3 / (q² − 2ρcosφ q + ρ²); plant inputs (w, u), outputs (z, y),
# both z and y equal T(w + u). With K = L = 0 the Youla form is exactly [T0 T1; T2 0].
_T = control.ss(control.tf([0.3], [1, -2 * 0.8 * np.cos(0.2 * np.pi), 0.64], 1))
YOULA_BENCHMARK = control.ss(_T.A, np.hstack([_T.B, _T.B]), np.vstack([_T.C, _T.C]),
                             np.zeros((2, 2)), 1.0)


def _perturb(model, scale, gen, biases):
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_bias = name.split(".")[-1] in ("bx", "bv", "by", "bias")
            if biases or not is_bias:
                p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _random_q(draw: int, biases: bool):
    """An untrained model of some family with nu = ny = 1 and random sizes and weights."""
    rng = np.random.default_rng(draw)
    gen = torch.Generator().manual_seed(draw)
    family = FAMILIES[draw % len(FAMILIES)]
    sizes = Sizes(1, int(rng.integers(1, 7)), int(rng.integers(1, 9)), 1,
                  tuple(int(h) for h in rng.integers(2, 10, size=rng.integers(0, 3))))
    model = family.build(sizes, rng, {"dtype": F64})
    return _perturb(model, float(rng.choice([0.1, 0.5, 1.0])), gen, biases), family.name


def _random_loop_state(controller, batch, gen, scale=3.0):
    nu, nx, _ = controller.sizes
    randn = lambda *s: scale * torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    return ClosedLoopState(randn(batch, controller.base.A.shape[0]),
                           controller.initial_state(batch, randn(batch, nx),
                                                    randn(batch, controller.Q.state_size)))


def _decay(plant, controller, steps, gen, batch=16):
    """max ‖x_T‖ / max ‖x_0‖ over random initial states (plant, estimate and Q state)."""
    state = _random_loop_state(controller, batch, gen)
    with torch.no_grad():
        traj = simulate_closed_loop(plant, controller, steps=steps, state=state)
    start = torch.cat([state.plant, state.controller.estimate], -1).norm(dim=-1).max()
    end = torch.cat([traj.final.plant, traj.final.controller.estimate], -1).norm(dim=-1).max()
    return float(end / start)


# ---------------------------------------------------------------------------------- Youla
@pytest.mark.parametrize("gains", ["lqr-kalman", "place"])
def test_youla_closed_loop_stable_for_random_q(gains):
    """Every untrained contracting Q (all families, random sizes) stabilizes the plant."""
    options = ({"K": "lqr", "L": "kalman"} if gains == "lqr-kalman" else
               {"K": "place", "L": "place", "controller_poles": [0.5, 0.6],
                "observer_poles": [0.3, 0.4]})
    plant = LTIPlant.from_control(UNSTABLE, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for draw in range(16):
        q, family = _random_q(draw + (100 if gains == "place" else 0), biases=False)
        ratio = _decay(plant, YoulaController(UNSTABLE, q, **options), 300, gen)
        worst = max(worst, ratio)
        assert ratio < 1e-4, f"{family} draw {draw}: ‖x_T‖/‖x_0‖ = {ratio:.3g}"
    print(f"worst decay ratio over 16 draws ({gains}): {worst:.3g}")


def test_youla_incrementally_stable_with_biases():
    """With biases Q has a non-zero equilibrium; any two closed-loop trajectories still meet."""
    plant = LTIPlant.from_control(UNSTABLE, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    for draw in range(8):
        q, family = _random_q(200 + draw, biases=True)
        controller = YoulaController(UNSTABLE, q)
        w = torch.zeros(8, 300, 0, dtype=F64)
        with torch.no_grad():
            a, b = (simulate_closed_loop(plant, controller, w,
                                         state=_random_loop_state(controller, 8, gen))
                    for _ in range(2))
        gap0 = (a.states[:, 0] - b.states[:, 0]).norm(dim=-1).max()
        gap = (a.final.plant - b.final.plant).norm(dim=-1).max()
        assert float(gap / gap0) < 1e-4, f"{family} draw {draw}: gap ratio {float(gap / gap0):.3g}"


class _UnstableQ(torch.nn.Module):
    """Negative control: a 'Q' whose explicit state matrix has spectral radius 1.05."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.input_size, self.output_size = base.input_size, base.output_size
        self.state_size, self.dtype, self.device = base.state_size, base.dtype, base.device

    def explicit(self, dtype=None):
        e = self.base.explicit(dtype)
        a = e.A / torch.linalg.eigvals(e.A).abs().max() * 1.05
        # No feedback through φ (B1 = 0): the state then grows like 1.05ᵗ.
        return replace(e, A=a, B1=torch.zeros_like(e.B1), C2=torch.ones_like(e.C2))


def test_youla_decay_check_detects_an_unstable_q():
    plant = LTIPlant.from_control(UNSTABLE, dtype=F64)
    torch.manual_seed(2)
    q = _UnstableQ(ContractingR2DN(1, 3, 2, 1, hidden=(4,), dtype=F64))
    ratio = _decay(plant, YoulaController(UNSTABLE, q), 400, torch.Generator().manual_seed(2))
    assert ratio > 1.0


def test_youla_innovation_does_not_depend_on_q():
    """The ũ → ỹ block of the nominal loop is zero: the Youla property itself."""
    base = ObserverBasedController.design(UNSTABLE)
    loop = base.youla_system()
    to_y_tilde = loop[0, 0]
    a, b, c = to_y_tilde.A, to_y_tilde.B, to_y_tilde.C
    powers = [c @ np.linalg.matrix_power(a, k) @ b for k in range(20)]
    assert np.max(np.abs(powers)) < 1e-12 and np.all(to_y_tilde.D == 0)
    to_u = loop[1, 0]  # ũ does reach u (feedthrough 1)
    assert abs(float(np.squeeze(to_u.D)) - 1.0) < 1e-12
    assert max(abs(loop.poles())) < 1


def test_youla_benchmark_plant_and_generalized_io():
    """§3: disturbance and control inputs, performance and measured outputs, K = L = 0."""
    gen = torch.Generator().manual_seed(3)
    q = ContractingR2DN(1, 4, 6, 1, hidden=(8,), dtype=F64)
    controller = YoulaController(YOULA_BENCHMARK, q, K=np.zeros((1, 2)), L=np.zeros((2, 1)),
                                 control_inputs=[1], measurements=[1], input_limit=5.0)
    # Only the control input saturates (w ~ U[−10, 10] must pass unclipped).
    plant = LTIPlant.from_control(YOULA_BENCHMARK, input_limit=[np.inf, 5.0], dtype=F64)
    w = step_disturbances(4, 200, generator=gen, dtype=F64)
    traj = simulate_closed_loop(plant, controller, w)
    assert traj.outputs.shape == (4, 200, 2) and traj.inputs.shape == (4, 200, 1)
    assert float(traj.inputs.detach().abs().max()) <= 5.0
    # ỹ = y − ŷ = T w exactly: the observer model cancels the control's effect.
    t_w, _ = LTIPlant.from_control(_T, dtype=F64)(w)
    torch.testing.assert_close(traj.y_tilde, t_w, atol=1e-10, rtol=0)


def test_policy_gradient_reduces_cost():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    q = ContractingR2DN(1, 4, 8, 1, hidden=(16,), init="long_memory", init_output_zero=True,
                        dtype=F64)
    controller = YoulaController(YOULA_BENCHMARK, q, K=np.zeros((1, 2)), L=np.zeros((2, 1)),
                                 control_inputs=["u[1]"], measurements=["y[1]"], input_limit=5.0)
    plant = LTIPlant.from_control(YOULA_BENCHMARK, input_limit=[np.inf, 5.0], dtype=F64)

    def cost(traj):
        return (traj.outputs[..., 0].abs() + 1e-4 * traj.u_tilde.pow(2).sum(-1)).mean()

    test_w = step_disturbances(16, 200, generator=gen, dtype=F64)
    start = time.perf_counter()
    history = train_policy_gradient(
        controller, plant, lambda epoch: step_disturbances(16, 200, generator=gen, dtype=F64),
        cost, epochs=6, segment=50, lr=2e-2, test_disturbance=test_w, progress=False)
    elapsed = time.perf_counter() - start
    assert len(history.train) == 6 * 4 and len(history.test) == 7
    print(f"policy gradient: test cost {history.test[0]:.3f} -> {history.test[-1]:.3f} "
          f"in {elapsed:.1f} s")
    assert history.test[-1] < 0.9 * history.test[0]


# ---------------------------------------------------------------------------------- observer
DT = 0.01


def _box(x):
    """Box in fluid (docs/envs.md), u = 0: q̈ = −5q − 0.5 q̇|q̇|, explicit Euler."""
    q, v = x[..., 0], x[..., 1]
    return torch.stack([q + DT * v, v + DT * (-5 * q - 0.5 * v * v.abs())], -1)


def _box_trajectories(x0, steps):
    xs = [x0]
    for _ in range(steps):
        xs.append(_box(xs[-1]))
    return torch.stack(xs, 1)


def test_observer_converges_from_wrong_initial_states():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = _box_trajectories(torch.rand(100, 2, generator=gen) - 0.5, 100)
    x, x_next = data[:, :-1].reshape(-1, 2), data[:, 1:].reshape(-1, 2)
    model = ContractingR2DN(1, 2, 16, 2, hidden=(16, 16), identity_output=True,
                            init="long_memory")
    observer = Observer(model)
    untrained = Observer(ContractingR2DN(1, 2, 16, 2, hidden=(16, 16), identity_output=True,
                                         init="long_memory"))
    start = time.perf_counter()
    losses = fit_observer(observer, x, x_next, x[:, :1], epochs=40, batches=20, lr=5e-3,
                          progress=False)
    elapsed = time.perf_counter() - start
    assert losses[-1] < 1e-3 * losses[0]

    test = _box_trajectories(0.4 * torch.rand(20, 2, generator=gen) - 0.2, 1500)
    wrong = 0.3 * torch.randn(20, 2, generator=gen)
    with torch.no_grad():
        estimate, _ = observer(test[:, :-1, :1], x0=wrong)
        from_truth, _ = observer(test[:, :-1, :1], x0=test[:, 0])
        baseline, _ = untrained(test[:, :-1, :1], x0=wrong)
    # Contraction: the estimates from wrong and from true initial states merge ...
    gap = (estimate - from_truth).norm(dim=-1).max(0).values
    assert float(gap[-1]) < 1e-2 * float(gap[0])
    # ... and, the correctness loss being small, both track the true state.
    error = (estimate - test[:, :-1]).norm(dim=-1).mean(0)
    base_error = (baseline - test[:, :-1]).norm(dim=-1).mean(0)
    print(f"observer: trained in {elapsed:.1f} s, loss {losses[0]:.2e} -> {losses[-1]:.2e}; "
          f"mean error {error[0]:.3f} -> {error[-1]:.4f} (untrained {base_error[-1]:.3f}), "
          f"max gap to the estimate from x0 {gap[0]:.3f} -> {gap[-1]:.2e}")
    assert float(error[-100:].mean()) < 0.15 * float(error[0])
    assert float(error[-100:].mean()) < 0.2 * float(base_error[-100:].mean())


# ---------------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    q = ContractingR2DN(1, 3, 4, 1, hidden=(4,), dtype=F64)
    two_out = control.ss(UNSTABLE.A, UNSTABLE.B, np.eye(2), 0, 1.0)
    with pytest.raises(ValueError, match="expected input_size=2, output_size=1"):
        YoulaController(two_out, q)
    with pytest.raises(ValueError, match="continuous-time.*dt"):
        YoulaController(control.ss(UNSTABLE.A, UNSTABLE.B, UNSTABLE.C, 0), q)
    YoulaController(control.ss([[0, 1], [2, -1]], [[0], [1]], [[1, 0]], 0), q, dt=0.05)
    with pytest.raises(ValueError, match="not stabilizing.*A - B K.*1.1"):
        YoulaController(UNSTABLE, q, K=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="not stabilizing.*A - L C"):
        YoulaController(UNSTABLE, q, L=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"K must have shape \(1, 2\)"):
        YoulaController(UNSTABLE, q, K=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="feedthrough"):
        YoulaController(control.ss(UNSTABLE.A, UNSTABLE.B, UNSTABLE.C, 1.0, 1.0), q)
    with pytest.raises(ValueError, match="unknown input 'v'"):
        YoulaController(UNSTABLE, q, control_inputs=["v"])
    with pytest.raises(ValueError, match="identity_output=True"):
        Observer(ContractingR2DN(1, 2, 3, 2, hidden=(4,)))
    with pytest.raises(ValueError, match="at least one measurement"):
        Observer(ContractingR2DN(1, 2, 3, 2, hidden=(4,), identity_output=True), input_size=1)
    controller = YoulaController(UNSTABLE, q)
    wrong_plant = LTIPlant.from_control(two_out, dtype=F64)
    with pytest.raises(ValueError, match="designed for"):
        simulate_closed_loop(wrong_plant, controller, steps=5, batch=2)
    with pytest.raises(TypeError, match="share dtype"):
        simulate_closed_loop(LTIPlant.from_control(UNSTABLE, dtype=torch.float32), controller,
                             steps=5, batch=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_closed_loop_on_cuda():
    q = ContractingR2DN(1, 3, 4, 1, hidden=(4,), dtype=F64).cuda()
    controller = YoulaController(UNSTABLE, q).cuda()
    plant = LTIPlant.from_control(UNSTABLE, dtype=F64, process_noise=0.01, generator=0).cuda()
    traj = simulate_closed_loop(plant, controller, steps=20, batch=4)
    cost = traj.outputs.pow(2).mean()
    cost.backward()
    assert traj.outputs.is_cuda
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in q.parameters())


def test_youla_closed_loop_is_certified_contracting():
    """The certify package proves what the decay test observes: Q in feedback with the nominal
    Youla system (ũ → ỹ, identically zero) is contracting, for every family of Q."""
    from r2dn_control import certify

    for draw in range(6):
        q, family = _random_q(300 + draw, biases=False)
        controller = YoulaController(UNSTABLE, q)
        nominal = controller.base.youla_system()
        ny = q.input_size
        loop = certify.ClosedLoop(q, nominal[:ny, :])  # outputs ỹ only: the loop Q closes
        result = certify.contraction(loop)
        assert result.status == "certified", f"{family} draw {draw}: {result}"
        assert result.bound < 1.0
    # ... and the same check refuses a Q whose state matrix is unstable.
    unstable = _UnstableQ(_random_q(400, biases=False)[0])
    loop = certify.ClosedLoop(unstable.explicit(torch.float64), nominal[:ny, :])
    assert certify.contraction(loop).status != "certified"
