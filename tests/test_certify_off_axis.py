"""Round 5 of the certificate speed-up (issue 16): off-axis rate peaks, Lanczos λ_max, threads.

Float64 properties over random draws: the angular slope of the w-channel gain is its derivative
along the circle, the Lanczos λ_max of a Gram matrix equals LAPACK's and never exceeds it, the
slope-aided peak search finds the peak of its bracket, the rate of a system whose w-channel
peak is off the real axis is proved in one Riccati solve (no failed test) and agrees with
bisection, and the certificate's BLAS/torch thread scope is set and restored.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control import certify, config
from r2dn_control.certify import blas, kyp
from r2dn_control.certify.lmi import StateSpaceBlocks, validate
from r2dn_control.nn import LipschitzR2DN

RTOL = 1e-4  # certify.contraction's default


def _sigma(ss: StateSpaceBlocks, r: float, omega: float) -> float:
    """σ_max(C₁(re^{jω}I − A)⁻¹B₁) by the SVD (the reference)."""
    z = kyp._on_ray(r, omega)
    n = ss.A.shape[0]
    return float(np.linalg.norm(ss.C1 @ np.linalg.solve(z * np.eye(n) - ss.A, ss.B1), 2))


def _resonant(seed: int, n: int = 12, nv: int = 4, theta: float = 2.75, radius: float = 0.8,
              scale: float = 0.9) -> StateSpaceBlocks:
    """A with a lightly damped pair at radius·e^{±jθ} (the rest real, |λ| ≤ 0.5), in a random
    orthogonal basis; B₁ scaled so that σ_max(G(e^{jθ})) = ``scale``: the w-channel gain peaks
    near ω = θ, off the real axis."""
    rng = np.random.default_rng(seed)
    a = np.diag(rng.uniform(-0.5, 0.5, n))
    a[:2, :2] = radius * np.array([[math.cos(theta), -math.sin(theta)],
                                   [math.sin(theta), math.cos(theta)]])
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ a @ q.T
    b1, c1 = rng.normal(size=(n, nv)), rng.normal(size=(nv, n))
    z = kyp._on_ray(1.0, theta)
    b1 *= scale / np.linalg.norm(c1 @ np.linalg.solve(z * np.eye(n) - a, b1), 2)
    zero = np.zeros
    return StateSpaceBlocks(a, b1, zero((n, 1)), c1, zero((1, n)), zero((nv, nv)),
                            zero((nv, 1)), zero((1, nv)), zero((1, 1)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(2, 9), nv=st.integers(1, 6),
       r=st.floats(0.6, 1.4), omega=st.floats(0.05, 3.09))
def test_circle_point_slopes_are_the_derivatives(seed, n, nv, r, omega) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a *= 0.5 / np.abs(np.linalg.eigvals(a)).max()
    zero = np.zeros
    ss = StateSpaceBlocks(a, rng.normal(size=(n, nv)), zero((n, 1)), rng.normal(size=(nv, n)),
                          zero((1, n)), zero((nv, nv)), zero((nv, 1)), zero((1, nv)),
                          zero((1, 1)))
    sigma, d_r, d_omega = kyp.circle_point(ss, r, omega)
    assert abs(sigma - _sigma(ss, r, omega)) <= 1e-10 * max(1.0, sigma)
    assert d_r == pytest.approx(kyp._w_channel(ss, kyp._on_ray(r, omega), slope=True)[1],
                                rel=1e-12, abs=1e-12)
    z = kyp._on_ray(r, omega)
    s = np.linalg.svd(ss.C1 @ np.linalg.solve(z * np.eye(n) - ss.A, ss.B1), compute_uv=False)
    if s.size > 1 and s[0] - s[1] < 1e-3 * s[0]:
        return  # σ is differentiable only where its top singular value is simple
    h = 1e-6
    central = (_sigma(ss, r, omega + h) - _sigma(ss, r, omega - h)) / (2 * h)
    assert abs(d_omega - central) <= 1e-5 * max(1.0, abs(central), sigma), (d_omega, central)
    # On the real axis the angular slope is exactly 0 (σ is even in ω there).
    assert kyp.circle_point(ss, r, 0.0)[2] == 0.0 == kyp.circle_point(ss, r, math.pi)[2]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), k=st.integers(8, 60), m=st.integers(1, 80),
       complex_=st.booleans())
def test_lanczos_largest_gram_eigenvalue_equals_lapack(seed, k, m, complex_) -> None:
    """Lanczos (ARPACK on the upper triangle) gives LAPACK's λ_max to 1e-10 relative and never
    more than it (a Ritz value is a Rayleigh quotient), with a unit eigenvector."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(k, m)) + (1j * rng.normal(size=(k, m)) if complex_ else 0.0)
    gram = kyp._gram(g)
    dense, _ = kyp._dense_top(gram, vectors=False)
    found = kyp._lanczos_top(gram) if gram.shape[0] > 1 else None
    if found is None:
        return  # ARPACK refused (too small a problem): `_top` falls back to LAPACK
    value, vec = found
    assert abs(value - dense) <= 1e-10 * dense
    assert value <= dense * (1 + 1e-13)
    full = np.triu(gram) + np.triu(gram, 1).conj().T
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.norm(full @ vec - value * vec) <= 1e-6 * dense
    # Through `_largest_gram_eigenvalue` with the threshold lowered: the same σ².
    threshold = kyp.LANCZOS_GRAM_MIN
    kyp.LANCZOS_GRAM_MIN = 2
    try:
        assert kyp._largest_gram_eigenvalue(g) == pytest.approx(np.linalg.norm(g, 2) ** 2,
                                                                rel=1e-10)
    finally:
        kyp.LANCZOS_GRAM_MIN = threshold


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), theta=st.floats(0.4, 2.9), radius=st.floats(0.6, 0.9),
       r=st.floats(0.92, 1.0))
def test_peak_angle_finds_the_peak_of_its_bracket(seed, theta, radius, r) -> None:
    """The slope-aided search returns a gain no smaller than the best of its grid and, against
    the largest gain on a 2,000-point grid of that grid cell's neighbours, within 1e-8 or (a
    sharp peak where the steps ran out) close enough for the rate search: the shortfall in
    log σ moves the gain-1 crossing by less than rtol/16 (first order, d log σ/d log r)."""
    ss = _resonant(seed, theta=theta, radius=radius)
    omega, (sigma, d_r, _), _ = kyp.peak_angle(ss, r)
    grid = np.linspace(0.0, math.pi, kyp.RAY_GRID)
    coarse = [_sigma(ss, r, float(om)) for om in grid]
    assert sigma == pytest.approx(_sigma(ss, r, omega), rel=1e-10)
    assert sigma >= max(coarse) * (1 - 1e-12)
    i = int(np.argmax(coarse))
    fine = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, kyp.RAY_GRID - 1)], 2000)
    top = max(_sigma(ss, r, float(om)) for om in fine)
    shortfall = math.log(top / sigma)
    assert shortfall <= 1e-8 or shortfall <= RTOL / 16 * r * abs(d_r) / sigma, (sigma, top)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5, 6])
def test_off_axis_rate_in_one_riccati_solve(seed, monkeypatch) -> None:
    """The w-channel peaks near ω = 2.75, off the real axis: the probe one grid step off the
    axis refutes the axis crossing, so no Riccati test is spent on it; the crossing at the
    circle's peak (followed along r*(ω) by `_climb`) is proved by one solve, agrees with
    bisection to the tolerance and passes the float64 check."""
    ss = _resonant(seed)
    tests: list[tuple[float, bool]] = []
    inner = kyp._test

    def counted(ss_, state, alpha, eps):
        inner(ss_, state, alpha, eps)
        tests.append((alpha, state.best is not None))

    monkeypatch.setattr(kyp, "_test", counted)
    cert = kyp.smallest_rate(ss, 1.0, RTOL)
    assert cert is not None and cert.solves == 1 and tests == [(tests[0][0], True)], tests
    assert "peak angle" in cert.lower_proof
    reference = kyp.bisection_rate(ss, 1.0, RTOL)
    assert reference is not None
    assert abs(cert.value - reference.value) <= 2 * RTOL * reference.value
    assert cert.lower is not None and cert.lower < cert.value
    assert _sigma(ss, cert.lower, 2.75) < 1.0 + 1e-2  # a diagnostic, near the crossing
    assert validate(ss, cert.metric, cert.multiplier, cert.value).holds


def test_probe_on_the_axis_peak_keeps_the_first_test(monkeypatch) -> None:
    """Positive real poles and positive B₁, C₁ put the peak on the real axis (ω = 0): the probe
    finds σ < 1 off the axis and the first Riccati test goes to the axis crossing, as before
    (one solve); the probe is the only complex gain evaluated."""
    rng = np.random.default_rng(7)
    n, nv = 10, 3
    a = np.diag(rng.uniform(0.3, 0.7, n))
    b1, c1 = rng.uniform(0.1, 1.0, (n, nv)), rng.uniform(0.1, 1.0, (nv, n))
    b1 *= 0.8 / np.linalg.norm(c1 @ np.linalg.solve(np.eye(n) - a, b1), 2)
    zero = np.zeros
    ss = StateSpaceBlocks(a, b1, zero((n, 1)), c1, zero((1, n)), zero((nv, nv)), zero((nv, 1)),
                          zero((1, nv)), zero((1, 1)))
    points: list[complex] = []
    inner = kyp._w_channel_derivative

    def counted(ss_, z, derivative=True):
        points.append(z)
        return inner(ss_, z, derivative)

    monkeypatch.setattr(kyp, "_w_channel_derivative", counted)
    cert = kyp.smallest_rate(ss, 1.0, RTOL)
    assert cert is not None and cert.solves == 1
    assert cert.lower_proof == "w-channel gain ≥ 1 on the real axis"
    assert sum(1 for z in points if z.imag != 0.0) == 1
    reference = kyp.bisection_rate(ss, 1.0, RTOL)
    assert reference is not None and abs(cert.value - reference.value) <= 2 * RTOL * cert.value


def _pool_counts() -> list[int]:
    return [get() for get, _ in blas._openblas_pools()]


def test_certificate_threads_default_is_one_thread_and_leaves_torch_alone() -> None:
    torch_before, pools_before = torch.get_num_threads(), _pool_counts()
    assert blas.threads_for(8) == (1, False)
    with blas.certificate_threads(8) as count:
        assert count == 1
        assert torch.get_num_threads() == torch_before
        assert all(c == 1 for c in _pool_counts())
        with blas.blas_threads():  # the KYP functions' decorator keeps the scope's count
            assert all(c == 1 for c in _pool_counts())
    assert _pool_counts() == pools_before and torch.get_num_threads() == torch_before


def test_certificate_threads_setting_raises_and_restores() -> None:
    torch_before, pools_before = torch.get_num_threads(), _pool_counts()
    config.set_defaults("certify", threads=2)
    try:
        assert blas.threads_for(8) == (2, True)
        with blas.certificate_threads(8) as count:
            assert count == 2 and torch.get_num_threads() == 2
            inside = _pool_counts()
            with blas.blas_threads():
                assert _pool_counts() == inside
        assert _pool_counts() == pools_before and torch.get_num_threads() == torch_before
        # Large models follow the pool's count without the setting (never more than it).
        config.set_defaults("certify", threads=None, threads_from=4)
        count, exact = blas.threads_for(8)
        assert not exact and count == max([c for c in pools_before if c > 0], default=1)
    finally:
        config.reset_defaults()


def test_certificate_threads_settings_are_checked() -> None:
    try:
        for bad, error in ((0, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)):
            with pytest.raises(error):
                config.set_defaults("certify", threads=bad)
        with pytest.raises(ValueError):
            config.set_defaults("certify", threads_from=0)
        assert config.defaults["certify.threads"] == 1
        config.set_defaults("certify", threads=3)
        config.set_defaults("certify", threads=None)
        assert config.defaults["certify.threads"] is None
    finally:
        config.reset_defaults()


def test_certificates_with_two_threads_prove_the_same_bounds() -> None:
    """The thread count changes only the order of floating-point sums: both runs are proved
    in float64 and give the same certified values to the search tolerance."""
    torch.manual_seed(48)
    model = LipschitzR2DN(2, 48, 48, 2, gamma=2.0, dtype=torch.float64)
    one_rate = certify.contraction(model, method="kyp")
    one_gain = certify.lipschitz(model, method="kyp")
    config.set_defaults("certify", threads=2)
    try:
        two_rate = certify.contraction(model, method="kyp")
        two_gain = certify.lipschitz(model, method="kyp")
    finally:
        config.reset_defaults()
    for one, two in ((one_rate, two_rate), (one_gain, two_gain)):
        assert one.certified and two.certified
        assert two.bound == pytest.approx(one.bound, rel=RTOL)
