"""sysid.poles: the ARX slowest-pole estimate, the contraction rate default_model derives from it,
and validation that catches a drift by simulating the held-out tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from r2dn_control import sysid
from r2dn_control.nn import ContractingR2DN, cpp
from r2dn_control.sysid.poles import DEFAULT_DECAY_SHARE


@pytest.fixture(autouse=True)
def _pure_torch():
    with cpp.suspended():
        yield


def modal_system(radii, angles, ny, seed, length=2000, experiments=2):
    """Block-diagonal x⁺ = A x + B u (2×2 rotation blocks r·R(θ)), y = C x, white-noise u."""
    rng = np.random.default_rng(seed)
    blocks = [r * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
              for r, a in zip(radii, angles)]
    n = 2 * len(blocks)
    A = np.zeros((n, n))
    for k, b in enumerate(blocks):
        A[2 * k:2 * k + 2, 2 * k:2 * k + 2] = b
    B = rng.normal(size=(n, 1))
    C = rng.normal(size=(ny, n))
    us, ys = [], []
    for _ in range(experiments):
        u = rng.normal(size=(length, 1))
        x = rng.normal(size=n)
        y = np.empty((length, ny))
        for t in range(length):
            y[t] = C @ x
            x = A @ x + B @ u[t]
        us.append(u)
        ys.append(y)
    return sysid.SequenceData(us, ys)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.3, 0.999), min_size=1, max_size=3),
       st.lists(st.floats(0.05, 3.0), min_size=3, max_size=3), st.integers(1, 2),
       st.integers(0, 10_000))
def test_estimated_rate_covers_the_true_slowest_pole(radii, angles, ny, seed):
    data = modal_system(radii, angles[: len(radii)], ny, seed)
    true = max(radii)
    poles = [r * np.exp(1j * a) for r, a in zip(radii, angles)]
    distinct = all(abs(p - q) > 0.05 for i, p in enumerate(poles) for q in poles[i + 1:])
    if ny == 1 and distinct:  # exact (minimal) order: the estimate is the true slowest pole
        exact = sysid.slowest_pole(data, order=2 * len(radii))
        assert abs(exact - true) <= 1e-2 * (1 - true)  # (near-)repeated poles are ill-conditioned
    # over-parameterised (the default order): extra poles cancel zeros and may be slower
    pole = sysid.slowest_pole(data, order=8)
    assert pole >= true - 1e-2 * (1 - true)
    rate = sysid.suggested_contraction_rate(data, order=8)
    assert true <= rate <= 1.0
    assert rate == pytest.approx(max(0.9, pole ** DEFAULT_DECAY_SHARE))
    # the certified decay rate −ln ᾱ is the share κ of the estimate's (unless ᾱ_min binds)
    for share in (0.5, 0.25, 0.125):
        rate = sysid.suggested_contraction_rate(data, order=8, decay_share=share)
        assert true <= rate <= 1.0
        assert -np.log(rate) == pytest.approx(min(-np.log(0.9), -share * np.log(pole)),
                                              rel=1e-9, abs=1e-12)


def test_unstable_or_integrating_data_gives_rate_one():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(1000, 1))
    y = np.cumsum(u, 0)  # an integrator: pole at 1
    data = sysid.SequenceData(u, y)
    assert sysid.slowest_pole(data, order=2) == pytest.approx(1.0, abs=1e-3)
    assert sysid.suggested_contraction_rate(data, order=2) <= 1.0


def test_default_model_takes_the_data_and_keeps_the_old_signature():
    data = modal_system([0.99], [0.2], 1, seed=1)
    model = sysid.default_model(data, seed=0)
    assert model.contraction_rate == pytest.approx(sysid.suggested_contraction_rate(data))
    assert model.contraction_rate >= 0.99
    with torch.no_grad():
        radius = torch.linalg.eigvals(model.explicit(torch.float64).A).abs().max()
    assert float(radius) <= model.contraction_rate + 1e-9
    assert sysid.default_model(1, 1).contraction_rate == 0.995
    assert sysid.default_model(data, contraction_rate=0.98).contraction_rate == 0.98
    gru = sysid.default_model(data, kind="gru")
    assert abs(sysid.parameter_count(gru) - sysid.parameter_count(model)) / \
        sysid.parameter_count(model) < 0.03
    with pytest.raises(TypeError, match="output_size"):
        sysid.default_model(data, 1)
    with pytest.raises(TypeError, match="int output_size"):
        sysid.default_model(1)
    with pytest.raises(TypeError, match="SequenceData"):
        sysid.default_model(np.zeros((10, 1)), 1)
    with pytest.raises(ValueError, match="auto"):
        sysid.default_model(data, contraction_rate="fast")


def test_bad_arguments_are_named():
    data = modal_system([0.9], [0.3], 1, seed=0, length=50, experiments=1)
    with pytest.raises(TypeError, match="SequenceData"):
        sysid.slowest_pole(np.zeros((10, 1)))
    with pytest.raises(ValueError, match="order"):
        sysid.slowest_pole(data, order=0)
    with pytest.raises(ValueError, match="longer than"):
        sysid.slowest_pole(data, order=30)
    with pytest.raises(ValueError, match="min_rate"):
        sysid.suggested_contraction_rate(data, min_rate=1.5)
    for share in (0, 1.5, True, "1/4"):
        with pytest.raises(ValueError, match="decay_share"):
            sysid.suggested_contraction_rate(data, decay_share=share)


class Drift(nn.Module):
    """ŷ_t = b + ε·x_t with the state a clock, x_{t+1} = x_t + 1: small early, large late."""

    input_size = output_size = state_size = 1

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.bias = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, u, x0=None):
        start = u.new_zeros(u.shape[0], 1) if x0 is None else x0
        clock = start[:, None, :] + torch.arange(u.shape[1], dtype=u.dtype)[None, :, None]
        return self.bias + self.rate * clock + 0 * u, start + u.shape[1]


def test_validation_simulates_the_tail_and_catches_a_drift():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(1000, 1))
    data = sysid.SequenceData(rng.normal(size=(1000, 1)), y)
    model = Drift(rate=2e-3)
    res = sysid.fit(model, data, val=None, epochs=1, lr=1e-12, x0="zero", progress=False,
                    normalize=False)
    t = np.arange(1000)
    tail = slice(800, 1000)
    simulated = 2e-3 * t[tail]  # the drift continued from the start of the experiment
    expected = np.sqrt(np.mean((simulated - y[tail, 0]) ** 2)) / y[tail, 0].std()
    restarted = 2e-3 * np.arange(200)  # what a validation that restarted at the cut would see
    naive = np.sqrt(np.mean((restarted - y[tail, 0]) ** 2)) / y[tail, 0].std()
    assert res.history[0]["val_nrmse"] == pytest.approx(expected, rel=1e-6)
    assert res.history[0]["val_nrmse"] > 1.3 * naive


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 1.0), st.integers(1, 6), st.integers(1, 6), st.sampled_from(["random", "long_memory"]),
       st.floats(0.1, 3.0), st.integers(0, 10_000))
def test_a_mode_near_the_rate_leaves_the_nonlinear_channel_no_gain(rate, nx, nv, init, scale,
                                                                   seed):
    """The budget `suggested_contraction_rate` shares out: for every eigenpair A ξ = λ ξ and
    left eigenvector η* A = λ η* of a contracting R2DN at rate ᾱ (metric 𝒫),
    ‖C₁ξ‖² ≤ (ᾱ² − |λ|²) ξ*𝒫ξ and ‖B₁*η‖² ≤ (1 − |λ|²/ᾱ²) η*𝒫⁻¹η: the gain through which
    a mode can drive φ and be driven by it vanishes as |λ| → ᾱ."""
    torch.manual_seed(seed)
    model = ContractingR2DN(1, nx, nv, 1, hidden=(3,), contraction_rate=rate, init=init,
                            dtype=torch.float64)
    with torch.no_grad():
        model.C1.normal_(0.0, scale)  # long_memory starts with C₁ = B̂₁ = 0
        model.B1_hat.normal_(0.0, scale)
        e = model.explicit(torch.float64)
    metric = e.metric.to(torch.complex128)
    a, b1, c1 = (m.detach().to(torch.complex128) for m in (e.A, e.B1, e.C1))
    lam, right = torch.linalg.eig(a)
    lam_left, left = torch.linalg.eig(a.mH)  # eigenvalues conj(λ) with vectors η
    for k in range(nx):
        xi = right[:, k]
        assert float((c1 @ xi).abs().square().sum()) <= (
            (rate**2 - float(lam[k].abs()) ** 2) * float((xi.conj() @ metric @ xi).real)
            + 1e-9 * float(xi.abs().square().sum()))
        eta = left[:, k]
        inverse = torch.linalg.solve(metric, eta)
        assert float((b1.mH @ eta).abs().square().sum()) <= (
            (1 - float(lam_left[k].abs()) ** 2 / rate**2) * float((eta.conj() @ inverse).real)
            + 1e-9 * float(eta.abs().square().sum()))
