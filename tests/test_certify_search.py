"""The fast searches for the smallest certified rate and γ (issue 16) against the slow ones.

Random small R2DNs and blocks, float64: the fast answer is proved (the float64 check, re-run
here), never below what the slow search shows impossible, and as tight as the slow search.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from r2dn_control import certify
from r2dn_control.certify import kyp
from r2dn_control.certify.freq import GainSearch
from r2dn_control.certify.lmi import StateSpaceBlocks, lipschitz_supply, validate
from r2dn_control.nn import ContractingR2DN, LipschitzR2DN

RTOL = 1e-4  # what certify.contraction uses by default
#: The slow reference searches take seconds per draw: report a failure unshrunk.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def _random_blocks(seed: int, n: int, nv: int, scale: float) -> StateSpaceBlocks:
    """A Schur A with random B₁, C₁ scaled so that the w-channel gain at z = 1 is ``scale``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a *= rng.uniform(0.2, 0.95) / np.abs(np.linalg.eigvals(a)).max()
    b1, c1 = rng.normal(size=(n, nv)), rng.normal(size=(nv, n))
    g1 = np.linalg.norm(c1 @ np.linalg.solve(np.eye(n) - a, b1), 2)
    b1 *= scale / g1
    z = np.zeros
    return StateSpaceBlocks(a, b1, z((n, 1)), c1, z((1, n)), z((nv, nv)), z((nv, 1)),
                            z((1, nv)), z((1, 1)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 12), nv=st.integers(1, 6),
       scale=st.floats(0.05, 0.9))
def test_fast_rate_is_proved_and_as_tight_as_bisection(seed, n, nv, scale) -> None:
    ss = _random_blocks(seed, n, nv, scale)
    target = certify.Target(ss, "lipschitz")
    radius = target.spectral_radius
    fast = kyp.smallest_rate(ss, 1.0, RTOL, radius=radius)
    slow = kyp.bisection_rate(ss, 1.0, RTOL)
    assert (fast is None) == (slow is None)
    if fast is None:
        return
    # Proved: the strict float64 check of (4a) holds for the returned (𝒫, λ) at its rate.
    assert validate(ss, fast.metric, fast.multiplier, fast.value).holds
    # Never below what is shown impossible, and that lower end is below every certified rate.
    assert radius <= fast.lower <= fast.value
    assert fast.lower <= slow.value * (1 + 1e-12)
    # As tight as bisection to its tolerance (bisection stops within ~2·rtol above the edge).
    assert fast.value <= slow.value * (1 + 2 * RTOL)
    assert fast.value - fast.lower <= RTOL * fast.value * (1 + 1e-9) or fast.solves >= 2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**20), nx=st.integers(1, 6), nv=st.integers(1, 5))
def test_certified_r2dn_rate_matches_bisection(seed, nx, nv) -> None:
    torch.manual_seed(seed)
    model = ContractingR2DN(2, nx, nv, 2, hidden=(4,), dtype=torch.float64)
    res = certify.contraction(model, method="kyp")
    ss = certify.as_target(model).blocks
    slow = kyp.bisection_rate(ss, 1.0, RTOL)
    assert res.certified and slow is not None, res
    assert validate(ss, res.P, res.multiplier, res.bound).holds
    assert res.details["lower"] <= slow.value * (1 + 1e-12)
    assert res.bound <= slow.value * (1 + 2 * RTOL)


def test_rate_search_needs_few_riccati_solves() -> None:
    """Bisection to 1e-4 spends ~15 Riccati tests; the frequency candidate 1–3."""
    torch.manual_seed(64)
    model = LipschitzR2DN(2, 64, 64, 2, gamma=2.0, dtype=torch.float64)
    res = certify.contraction(model, method="kyp")
    assert res.certified and res.details["riccati_solves"] <= 3, res.details
    assert res.bound - res.details["lower"] <= 1e-4 * res.bound


def test_a_missed_real_axis_peak_falls_back_and_stays_sound() -> None:
    """Blocks whose w-channel peak is off the real axis (a lightly damped rotation)."""
    th, r = 1.3, 0.9
    a = np.zeros((4, 4))
    a[:2, :2] = r * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a[2:, 2:] = np.diag([0.3, -0.2])
    rng = np.random.default_rng(7)
    b1, c1 = 0.05 * rng.normal(size=(4, 2)), rng.normal(size=(2, 4))
    z = np.zeros
    ss = StateSpaceBlocks(a, b1, z((4, 1)), c1, z((1, 4)), z((2, 2)), z((2, 1)), z((1, 2)),
                          z((1, 1)))
    fast = kyp.smallest_rate(ss, 1.0, RTOL)
    slow = kyp.bisection_rate(ss, 1.0, RTOL)
    assert fast is not None and slow is not None
    assert validate(ss, fast.metric, fast.multiplier, fast.value).holds
    assert fast.lower <= slow.value and fast.value <= slow.value * (1 + 2 * RTOL)
    assert "real axis" not in fast.lower_proof


@settings(max_examples=8, deadline=None, phases=NO_SHRINK)
@given(seed=st.integers(0, 2**20), nx=st.integers(1, 4), nv=st.integers(1, 4),
       full_d22=st.booleans())
def test_fast_gain_is_proved_and_matches_the_riccati_search(seed, nx, nv, full_d22) -> None:
    torch.manual_seed(seed)
    model = LipschitzR2DN(2, nx, nv, 2, hidden=(4,), gamma=1.5, full_d22=full_d22,
                          dtype=torch.float64)
    ss = certify.as_target(model).blocks
    res = certify.lipschitz(model, method="kyp")
    assert res.certified, res
    assert validate(ss, res.P, res.multiplier, 1.0, lipschitz_supply(res.bound, 2, 2)).holds
    slow = kyp.bisection_gain(ss, 1.5, 1.5)
    assert slow is not None
    # The slow search's γ is a point it found feasible (its Brent search over κ is not exact,
    # so the fast γ may well be smaller); the fast one is never looser than it by more than
    # the proof margin (κ and γ raised by 4τ each; τ ≤ 1e-5 unless the check's rounding
    # bound asked for more) plus the slow search's tolerance.
    tau = res.details["proof_margin"]
    assert res.bound <= slow.value * ((1 + 4 * tau) ** 2 + 1e-4), (res.bound, slow.value, tau)
    # γ* on the evaluated frequencies is a lower estimate of the optimum: the proved γ is
    # above it, by no more than the proof margins.
    cand = GainSearch(ss).run()
    assert cand is not None
    assert cand.gamma * (1 - 1e-12) <= res.bound <= cand.gamma * (1 + 1e-3), (res.bound, cand)


def test_margin_riccati_leaves_a_margin_the_float64_check_sees() -> None:
    """The plain Riccati equation's 𝒫 makes the LMI singular; the margin solve does not."""
    torch.manual_seed(40)
    model = LipschitzR2DN(2, 40, 40, 2, gamma=2.0, dtype=torch.float64)
    ss = certify.as_target(model).blocks
    search = GainSearch(ss)
    cand = search.run()
    tau = 1e-6
    k = cand.kappa * (1 + 4 * tau)
    g = math.sqrt(search.mu_max(k)) * (1 + 4 * tau)
    x = kyp.margin_riccati(ss, k, g, tau)
    assert x is not None
    check = validate(ss, x / g, k / g, 1.0, lipschitz_supply(g, 2, 2))
    assert check.holds and check.min_eigenvalue > 0.1 * tau / g, check
    plain = kyp.gain_riccati(ss, k, g, schur_known=True, eps=tau)
    flat = validate(ss, plain / g, k / g, 1.0, lipschitz_supply(g, 2, 2))
    assert flat.min_eigenvalue < 1e-3 * check.min_eigenvalue


def _lightly_damped_blocks(seed: int, radius: float, n: int = 6, nv: int = 3
                           ) -> StateSpaceBlocks:
    """Modal A with one pole pair at ``radius`` (the others 0.5–0.95), in random coordinates
    (condition number ≤ 4);
    B₁ scaled so that the w-channel's peak gain is ½ and B₂ so that the u → y channel's is 100
    (γ of a few hundred, as an identified lightly damped model: far larger γ make the LMI's
    entries span γ and 1/γ beyond what a float64 check resolves); random D₁₂, D₂₁."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    for i in range(0, n, 2):
        r = radius if i == 0 else rng.uniform(0.5, 0.95)
        th = rng.uniform(0.1, 3.0)
        a[i:i + 2, i:i + 2] = r * np.array([[math.cos(th), -math.sin(th)],
                                            [math.sin(th), math.cos(th)]])
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    t = q @ np.diag(rng.uniform(0.5, 2.0, n))  # random but well-conditioned coordinates
    a = t @ a @ np.linalg.inv(t)
    b1, c1 = rng.normal(size=(n, nv)), rng.normal(size=(nv, n))
    b2, c2 = rng.normal(size=(n, 1)), rng.normal(size=(1, n))

    def peak(c: np.ndarray, b: np.ndarray) -> float:
        return max(np.linalg.norm(c @ np.linalg.solve(np.exp(1j * om) * np.eye(n) - a, b), 2)
                   for om in np.linspace(0.0, math.pi, 4001))

    z = np.zeros
    return StateSpaceBlocks(a, b1 * 0.5 / peak(c1, b1), b2 * 100.0 / peak(c2, b2), c1, c2,
                            z((nv, nv)), rng.normal(size=(nv, 1)), rng.normal(size=(1, nv)),
                            z((1, 1)))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**20), radius=st.floats(0.99, 0.999))
@example(seed=384, radius=0.996836528002761)  # GainSearch needed 9 rounds (GainSearch.MAX_ROUNDS)
def test_gain_of_a_lightly_damped_system_is_proved_near_the_frequency_optimum(seed, radius
                                                                              ) -> None:
    """Poles near the unit circle: the margin solve's state-direction rows √ε(zI − A)⁻¹B̂ are
    large at the resonance, so ε = τ alone can make every margin test infeasible; the smaller
    ε of `STATE_MARGIN_FRACTIONS` proves γ within the proof margins of the candidate."""
    ss = _lightly_damped_blocks(seed, radius)

    def accept(c: kyp.KypCertificate):
        return validate(ss, c.metric, c.multiplier, 1.0, lipschitz_supply(c.value, 1, 1))

    cand = GainSearch(ss).run()
    cert, _, settled = kyp.frequency_gain(ss, accept=accept)
    assert cand is not None and settled and cert is not None
    assert accept(cert).holds
    # Above the candidate by no more than the proof margin: κ and γ raised by (1 + 4τ) each.
    assert cand.gamma * (1 - 1e-12) <= cert.value <= cand.gamma * (1 + 4 * cert.margin) ** 2 \
        * (1 + 1e-9), (cert.value, cert.margin, cand.gamma)
    assert cert.margin <= kyp.RETRY_MAX_MARGIN


def test_state_margin_fractions_rescue_a_case_the_tau_ladder_alone_cannot_prove(monkeypatch
                                                                                ) -> None:
    ss = _lightly_damped_blocks(23, 0.995)

    def accept(c: kyp.KypCertificate):
        return validate(ss, c.metric, c.multiplier, 1.0, lipschitz_supply(c.value, 1, 1))

    monkeypatch.setattr(kyp, "STATE_MARGIN_FRACTIONS", (1.0,))
    old, _, _ = kyp.frequency_gain(ss, accept=accept)
    monkeypatch.undo()
    new, _, _ = kyp.frequency_gain(ss, accept=accept)
    assert old is None
    assert new is not None and accept(new).holds
