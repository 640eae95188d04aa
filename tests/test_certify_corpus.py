"""Keep it fixed (issue 12): a corpus of systems that are not contracting, exceed the γ they are
asked about, or are not passive, many within 1e-9 of the boundary. certify must never say
"certified" on any of them, by any tier.

Each entry is a question whose truthful answer is known: a yes/no question whose answer is
"no", or a search whose certified bound must not fall below the true value (the floor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import control
import numpy as np
import pytest
import torch

from r2dn_control import certify
from r2dn_control.certify.lmi import StateSpaceBlocks
from r2dn_control.nn import ContractingR2DN, LipschitzR2DN


@dataclass
class Case:
    name: str
    ask: Callable[[], certify.CertificateResult]
    floor: float | None = None  # for searches: a certified bound below this is false

    def false_certification(self) -> bool:
        res = self.ask()
        if not res.certified:
            return False
        return self.floor is None or res.bound < self.floor


def lti(a, b=None, c=None, d=None) -> control.StateSpace:
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    n = a.shape[0]
    b = np.ones((n, 1)) if b is None else np.atleast_2d(b)
    c = np.ones((1, n)) if c is None else np.atleast_2d(c)
    d = np.zeros((c.shape[0], b.shape[1])) if d is None else np.atleast_2d(d)
    return control.ss(a, b, c, d, dt=1)


def rotation(radius: float, theta: float = 0.7) -> np.ndarray:
    return radius * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def claimed_target(system, metric, rate=None, gamma=None) -> certify.Target:
    """A target that *claims* a certificate (metric, rate/γ) that is false."""
    t = certify.as_target(system)
    return certify.Target(t.blocks, t.nonlinearity, metric=np.atleast_2d(metric),
                          multiplier=0.0, rate=rate, gamma=gamma)


def rescaled_r2dn(radius: float, seed: int = 0) -> certify.Target:
    torch.manual_seed(seed)
    t = certify.as_target(ContractingR2DN(2, 3, 4, 2, dtype=torch.float64))
    a = t.blocks.A * (radius / np.abs(np.linalg.eigvals(t.blocks.A)).max())
    return certify.Target(StateSpaceBlocks(**{**t.blocks.__dict__, "A": a}), "lipschitz")


def large_weight_rnn(scale: float, seed: int) -> certify.Target:
    rng = np.random.default_rng(seed)
    n = 3
    w = scale * rng.normal(size=(n, n))
    blocks = StateSpaceBlocks(np.zeros((n, n)), np.eye(n), np.zeros((n, 1)), w, np.eye(n),
                              np.zeros((n, n)), rng.normal(size=(n, 1)), np.zeros((n, n)),
                              np.zeros((n, 1)))
    return certify.Target.from_blocks(blocks, "slope", torch.tanh, name="RNN")


def float32_unstable() -> tuple[np.ndarray, float]:
    """A 2×2 A with ρ < 1 in float64 but ρ > 1 once rounded to float32."""
    for theta in np.linspace(0.1, 3.0, 400):
        a = rotation(1 - 1e-9, theta)
        r32 = np.abs(np.linalg.eigvals(a.astype(np.float32).astype(np.float64))).max()
        if r32 > 1 + 1e-9:
            return a, float(r32)
    raise AssertionError("no float32-unstable rotation found")


def passivity(gamma_shift: float):
    """y = d u + 1/(z − 0.5) u: positive real iff d ≥ 2/3 (min Re at z = −1)."""
    return lti(0.5, 1.0, 1.0, 2.0 / 3.0 + gamma_shift)


PASSIVE = (np.zeros((1, 1)), 0.5 * np.eye(1), np.zeros((1, 1)))


def gain_supply(gamma: float):
    return -np.eye(1) / gamma, np.zeros((1, 1)), gamma * np.eye(1)


def contraction_cases() -> list[Case]:
    """Sections 1–3 of the corpus: contraction rates and claimed metrics."""
    cases: list[Case] = []
    # 1. Not contracting at any rate ≤ 1 (searches and rate=1), boundary within 1e-9.
    for a in (1.0, 1 + 1e-12, 1 + 4e-10, 1 + 1e-9, -1.0, -(1 + 1e-10), 1.05):
        for method in ("auto", "sdp"):
            cases.append(Case(f"x+={a!r}x search {method}",
                              lambda a=a, m=method: certify.contraction(lti(a), method=m), 1.0001))
        cases.append(Case(f"x+={a!r}x rate<1", lambda a=a: certify.contraction(lti(a), rate=0.999)))
    for r in (1.0, 1 + 1e-10):
        cases.append(Case(f"rotation |λ|={r!r}",
                          lambda r=r: certify.contraction(lti(rotation(r), np.ones((2, 1)),
                                                              np.ones((1, 2)))), 1.0001))
    cases.append(Case("Jordan block at 1", lambda: certify.contraction(
        lti([[1.0, 1.0], [0.0, 1.0]], np.ones((2, 1)), np.ones((1, 2)))), 1.0001))
    # 2. A rate below the true one, within 1e-9 (x⁺ = 0.9x contracts at 0.9, not below).
    for rate in (0.9 - 1e-10, 0.9 * (1 - 1e-9), 0.9 - 1e-6, 0.5):
        for method in ("auto", "kyp", "sdp"):
            cases.append(Case(f"x+=0.9x at {rate!r} {method}",
                              lambda r=rate, m=method: certify.contraction(lti(0.9), rate=r,
                                                                           method=m)))
    cases.append(Case("x+=0.9x search floor 0.9", lambda: certify.contraction(lti(0.9)), 0.9))
    cases.append(Case("x+=0.9x sdp search floor 0.9",
                      lambda: certify.contraction(lti(0.9), method="sdp"), 0.9))
    # 3. A supplied (false) metric: 𝒫 = 1e6 at rate 1 for x⁺ = (1 + 1e-10)x, and others.
    for a, p in ((1 + 1e-10, 1e6), (1 + 1e-10, 1.0), (1.0 + 1e-9, 1e-6), (0.9, 1e6)):
        rate = 1.0 if a > 1 else 0.9 - 1e-10
        cases.append(Case(f"claimed metric {p:g} for x+={a!r}x at {rate!r}",
                          lambda a=a, p=p, r=rate: certify.contraction(
                              claimed_target(lti(a), p, rate=r), rate=r, method="implied")))
    return cases


def build_corpus() -> list[Case]:
    cases = contraction_cases()
    # 4. Gains: H∞ of y = x, x⁺ = 0.5x + u is 2 (at z = 1); static y = 3u has γ = 3.
    for sys_, true in ((lti(0.5), 2.0), (lti(0.0, 0.0, 0.0, 3.0), 3.0),
                       (lti(rotation(0.99), np.ones((2, 1)), np.ones((1, 2))), None)):
        if true is None:
            true = float(control.norm(sys_, p="inf"))
        for shrink in (1e-9, 1e-6, 0.5):
            cases.append(Case(f"gain {true:.6g}(1-{shrink:g})",
                              lambda s=sys_, g=true * (1 - shrink): certify.dissipativity(
                                  s, *gain_supply(g))))
        cases.append(Case(f"lipschitz search floor {true:.6g}",
                          lambda s=sys_: certify.lipschitz(s), true * (1 - 1e-7)))
        # A search from a false claim: whatever it reports must not be below the true γ.
        cases.append(Case(f"claimed γ {true:.6g}(1-1e-9)", lambda s=sys_, g=true * (1 - 1e-9):
                          certify.lipschitz(claimed_target(s, np.eye(s.nstates), gamma=g),
                                            method="implied"), true))
    # 5. Not passive, within 1e-9 of the passivity boundary d = 2/3.
    for shift in (-1e-9, -1e-6, -0.1):
        for method in ("auto", "sdp"):
            cases.append(Case(f"passivity d=2/3{shift:+g} {method}",
                              lambda s=shift, m=method: certify.dissipativity(
                                  passivity(s), *PASSIVE, method=m)))
    cases.append(Case("static y = -1e-10 u passive?", lambda: certify.dissipativity(
        lti(0.0, 0.0, 0.0, -1e-10), *PASSIVE)))
    # 6. Nonlinear: an R2DN with ρ(A) ≥ 1, an RNN with large weights.
    for radius in (1.0, 1 + 1e-9, 1.2):
        cases.append(Case(f"R2DN rho={radius!r}", lambda r=radius: certify.contraction(
            rescaled_r2dn(r)), 1.0001))
        cases.append(Case(f"R2DN rho={radius!r} gain", lambda r=radius: certify.lipschitz(
            rescaled_r2dn(r)), np.inf))
    for seed in range(2):
        cases.append(Case(f"RNN seed {seed}", lambda s=seed: certify.contraction(
            large_weight_rnn(3.0, s)), 1.0001))
    # 7. float32: contracting in float64 (ρ = 1 − 1e-9), not once rounded to float32.
    a, _ = float32_unstable()
    cases.append(Case("float32-rounded rotation", lambda: certify.contraction(
        certify.Target(certify.as_target(lti(a, np.ones((2, 1)), np.ones((1, 2)))).blocks,
                       "none"), dtype=torch.float32), 1.0001))
    # 8. A Lipschitz R2DN asked about half its (empirically shown) gain.
    torch.manual_seed(4)
    model = LipschitzR2DN(1, 2, 2, 1, gamma=2.0, full_d22=True, dtype=torch.float64)
    low = certify.lipschitz_lower_bound(model, steps=10, iters=40)
    cases.append(Case("R2DN at half its lower bound", lambda: certify.dissipativity(
        model, *gain_supply(0.5 * low))))
    cases.append(Case("R2DN search floor lower bound", lambda: certify.lipschitz(model), low))
    return cases


CORPUS = build_corpus()


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 50, len(CORPUS)


def test_no_false_certification_on_the_corpus() -> None:
    false = [c.name for c in CORPUS if c.false_certification()]
    assert not false, f"{len(false)} of {len(CORPUS)} falsely certified: {false}"


def test_the_float32_case_is_contracting_in_float64() -> None:
    """The float32 corpus entry is a real float32 effect: float64 certifies it."""
    a, r32 = float32_unstable()
    assert r32 > 1
    sys64 = lti(a, np.ones((2, 1)), np.ones((1, 2)))
    assert certify.contraction(sys64, rate=1 - 5e-10).certified
    assert not certify.contraction(sys64, rate=1.0, dtype=torch.float32).certified


@pytest.mark.parametrize("a", [0.5, 0.9, 0.99])
def test_boundary_rates_just_above_are_certified(a) -> None:
    """The check is strict but not useless: just above the true rate it certifies."""
    res = certify.contraction(lti(a))
    assert res.certified and a <= res.bound <= a * (1 + 2e-4), res
    assert certify.contraction(lti(a), rate=a * (1 + 1e-6)).certified
