"""The faster float64 proof of issue 16: shifted Cholesky, O(N²) rounding bound, Arnoldi ρ(A).

Guarantees as hypothesis properties in float64: `cholesky_proof` never accepts a matrix that
is not positive definite and accepts one whose λ_min clears its bound; the O(N²) row sums
equal those of the N×N magnitude matrix; both proofs of `validate` agree on KYP
certificates; the large-n path (Arnoldi ρ(A), Cholesky proof) returns the same rate and γ as
the dense one.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control import certify
from r2dn_control.certify import kyp, lmi
from r2dn_control.certify.lmi import (
    StateSpaceBlocks,
    Term,
    cholesky_proof,
    formation_bound,
    lipschitz_supply,
    magnitude,
    magnitude_row_sums,
    validate,
)
from r2dn_control.nn import LipschitzR2DN


def _spectrum_matrix(seed: int, n: int, low: float, top: float) -> np.ndarray:
    """A symmetric matrix with eigenvalues in [low, top], λ_min = low exactly (before rounding)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigs = np.concatenate([[low], rng.uniform(low, top, size=n - 1)])
    m = (q * eigs) @ q.T
    return 0.5 * (m + m.T)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 60), top=st.floats(1e-3, 1e3),
       rel=st.floats(1e-6, 1e-2))
def test_cholesky_proof_rejects_indefinite_matrices(seed, n, top, rel) -> None:
    """λ_min = −rel·top, far beyond rounding: the proof must fail (soundness)."""
    m = _spectrum_matrix(seed, n, -rel * top, top)
    assert np.linalg.eigvalsh(m)[0] < 0
    assert not cholesky_proof(m).holds


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 60), top=st.floats(1e-3, 1e3),
       rel=st.floats(1e-9, 1.0), form=st.floats(0.0, 1e-6))
def test_cholesky_proof_is_sound_and_accepts_clear_margins(seed, n, top, rel, form) -> None:
    m = _spectrum_matrix(seed, n, rel * top, top)
    form_err = form * top
    proof = cholesky_proof(m, form_err)
    lam = float(np.linalg.eigvalsh(m)[0])
    eig_err = lmi.EIGEN_ERROR_FACTOR * n * lmi.UNIT_ROUNDOFF * top * 1.01
    if proof.holds:
        # Proved: λ_min(M) ≥ lower, and lower exceeds the formation error.
        assert proof.lower > form_err
        assert lam >= proof.lower - eig_err
        assert proof.shift > proof.error > form_err
    if lam > 4 * proof.error + 2 * eig_err:
        assert proof.holds, (lam, proof)


def _exact_positive_definite(m: list[list[Fraction]]) -> bool:
    """Exact Gaussian elimination on rationals: every pivot > 0 iff the matrix is PD."""
    m = [list(r) for r in m]
    for k in range(len(m)):
        if m[k][k] <= 0:
            return False
        for i in range(k + 1, len(m)):
            f = m[i][k] / m[k][k]
            for j in range(k, len(m)):
                m[i][j] -= f * m[k][j]
    return True


def _exact(a) -> list[list[Fraction]]:
    return [[Fraction(float(v)) for v in row] for row in np.atleast_2d(np.asarray(a, float))]


def _exact_lmi(terms: list[Term]) -> list[list[Fraction]]:
    """Σ sign·Lᵀ·mid·R of the float64 factors, in rational arithmetic (independent of numpy)."""
    size = terms[0].left.shape[1]
    total = [[Fraction(0)] * size for _ in range(size)]
    for t in terms:
        left, right = _exact(t.left), _exact(t.right)
        k = len(left)
        if t.mid is None:
            mid = [[Fraction(int(i == j)) for j in range(k)] for i in range(k)]
        elif np.ndim(t.mid) == 0:
            mid = [[Fraction(float(t.mid)) * int(i == j) for j in range(k)] for i in range(k)]
        else:
            mid = _exact(t.mid)
        mr = [[sum((mid[i][q] * right[q][j] for q in range(k)), Fraction(0))
               for j in range(size)] for i in range(k)]
        sign = Fraction(t.sign)
        for i in range(size):
            for j in range(size):
                total[i][j] += sign * sum((left[q][i] * mr[q][j] for q in range(k)), Fraction(0))
    return total


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 8), t=st.floats(0.3, 5.0))
def test_cholesky_proof_holds_only_for_exactly_positive_definite(seed, n, t) -> None:
    """λ_min near the proof's own threshold: whenever it holds, the float matrix is exactly PD."""
    probe = cholesky_proof(_spectrum_matrix(seed, n, 1.0, 1.0))
    m = _spectrum_matrix(seed, n, t * probe.error, 1.0)
    if cholesky_proof(m).holds:
        assert _exact_positive_definite(_exact(m))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4), nv=st.integers(1, 3),
       bump=st.sampled_from([0.0, 1e-14, 1e-12, 1e-10, 1e-8, 1e-4]))
def test_cholesky_certified_contraction_is_exactly_valid(seed, n, nv, bump) -> None:
    """Riccati certificates at the edge of feasibility (the LMI singular up to ε, then the
    rate raised by ``bump``): a Cholesky proof that holds means the exact (4a) matrix of the
    float64 blocks and 𝒫 is positive definite (rational arithmetic)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a *= 0.7 / max(np.abs(np.linalg.eigvals(a)).max(), 1e-12)
    z = np.zeros
    ss = StateSpaceBlocks(a, 0.3 * rng.normal(size=(n, nv)), z((n, 1)),
                          0.3 * rng.normal(size=(nv, n)), z((1, n)), z((nv, nv)), z((nv, 1)),
                          z((1, nv)), z((1, 1)))
    found = kyp.contraction_riccati(ss, 0.9)
    if found is None:
        return
    metric, lam = found
    rate = 0.9 * (1 + bump)
    res = validate(ss, metric, lam, rate, proof="cholesky")
    if res.holds:
        sym = 0.5 * (metric + metric.T)
        assert _exact_positive_definite(_exact_lmi(lmi.lmi_terms(ss, sym, np.asarray(lam),
                                                                 rate)))
        assert _exact_positive_definite(_exact(sym))


def _random_terms(seed: int, n: int) -> list[Term]:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    terms = []
    for i in range(k):
        left, right = rng.normal(size=(int(rng.integers(1, 8)), n)), None
        mids = (None, float(rng.normal()), rng.normal(size=(left.shape[0], left.shape[0])))
        mid = mids[i % 3]
        right = rng.normal(size=left.shape) if i % 2 else left
        if i == 1:  # a selector-like factor with exact zeros (the support shortcut)
            left = np.zeros_like(left)
            left[:, : min(n, left.shape[0])] = np.eye(left.shape[0], min(n, left.shape[0]))
        terms.append(Term(float(rng.choice([-1.0, 1.0, 2.0])), left, mid, right))
    return terms


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 20))
def test_row_sums_equal_the_magnitude_matrix(seed, n) -> None:
    terms = _random_terms(seed, n)
    mag = magnitude(terms)
    dense = (0.5 * (mag + mag.T)).sum(axis=1)
    np.testing.assert_allclose(magnitude_row_sums(terms), dense, rtol=1e-12, atol=0)


def _model_blocks(seed: int, n: int) -> tuple[LipschitzR2DN, StateSpaceBlocks]:
    torch.manual_seed(seed)
    model = LipschitzR2DN(2, n, n, 2, gamma=2.0, dtype=torch.float64)
    return model, certify.as_target(model).blocks


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(2, 24))
def test_both_proofs_agree_on_kyp_certificates(seed, n) -> None:
    """Rate and γ certificates of random R2DNs: the Cholesky proof holds when the eigenvalue
    proof does (both have margins far above rounding here); its reported λ_min estimates the
    computed one from above."""
    model, ss = _model_blocks(seed, n)
    rate = certify.contraction(model, method="kyp")
    gain = certify.lipschitz(model, method="kyp")
    nu, _, _, ny = ss.sizes
    checks = [(rate.P, rate.multiplier, rate.bound, None),
              (gain.P, gain.multiplier, 1.0, lipschitz_supply(gain.bound, nu, ny))]
    for metric, mult, value, supply in checks:
        eig = validate(ss, metric, mult, value, supply, proof="eigen")
        chol = validate(ss, metric, mult, value, supply, proof="cholesky")
        assert eig.holds
        assert chol.holds
        form = formation_bound(lmi.lmi_terms(ss, 0.5 * (metric + metric.T), np.asarray(mult),
                                             value, supply=supply))
        assert chol.error == form
        # The reported λ_min is an estimate from above (a Ritz value of the inverse).
        assert chol.min_eigenvalue >= eig.min_eigenvalue - eig.error
        assert chol.min_eigenvalue <= 2 * eig.min_eigenvalue + eig.error


def test_validate_rejects_an_unknown_proof() -> None:
    _, ss = _model_blocks(0, 3)
    with pytest.raises(ValueError, match="proof must be"):
        validate(ss, np.eye(3), 1.0, 1.0, proof="lu")


@pytest.mark.parametrize("seed", [0, 1])
def test_large_n_path_gives_the_dense_paths_values(monkeypatch, seed) -> None:
    """The large-n path (Arnoldi ρ(A), the Cholesky proof), switched on at n = 40 by lowering
    its thresholds, gives the same certified rate and γ as dense ρ(A) with the eigenvalue
    proof, and its answers re-validate with the eigenvalue proof."""
    model, ss = _model_blocks(seed, 40)
    monkeypatch.setattr(kyp, "DENSE_RADIUS_MAX", 8)
    monkeypatch.setattr(lmi, "CHOLESKY_MIN_SIZE", 16)
    fast_rate = certify.contraction(model, method="kyp")
    fast_gain = certify.lipschitz(model, method="kyp")
    monkeypatch.setattr(kyp, "DENSE_RADIUS_MAX", 10**9)
    monkeypatch.setattr(lmi, "CHOLESKY_MIN_SIZE", 10**9)
    dense_rate = certify.contraction(model, method="kyp")
    dense_gain = certify.lipschitz(model, method="kyp")
    assert fast_rate.certified and dense_rate.certified
    assert fast_gain.certified and dense_gain.certified
    assert fast_rate.bound <= dense_rate.bound * (1 + 1e-9)
    assert fast_gain.bound <= dense_gain.bound * (1 + 1e-9)
    nu, _, _, ny = ss.sizes
    assert validate(ss, fast_rate.P, fast_rate.multiplier, fast_rate.bound, proof="eigen").holds
    assert validate(ss, fast_gain.P, fast_gain.multiplier, 1.0,
                    lipschitz_supply(fast_gain.bound, nu, ny), proof="eigen").holds


def test_spectral_radius_estimate_matches_the_eigenvalues() -> None:
    _, ss = _model_blocks(1, 300)
    assert ss.A.shape[0] > kyp.DENSE_RADIUS_MAX  # the Arnoldi branch
    est = kyp.spectral_radius_estimate(ss.A)
    assert est is not None
    np.testing.assert_allclose(est, np.abs(np.linalg.eigvals(ss.A)).max(), rtol=1e-8)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.sampled_from([3, 40, 64, 65, 150]),
       gap=st.floats(1e-6, 1e-1))
def test_the_reported_min_eigenvalue_is_close_from_above(seed, n, gap) -> None:
    """The report's λ_min (dense up to ESTIMATE_DENSE_MAX rows, Lanczos beyond) is within
    1e-5 relative of eigvalsh's and not below it, also with a cluster of small eigenvalues
    (the case where inverse iteration stopped on a small step read 2.5× λ_min)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam_min = 1e-5
    eigs = np.concatenate([[lam_min, lam_min * (1 + gap), lam_min * (1 + 2 * gap)],
                           rng.uniform(0.5, 2.0, n - 3)])
    m = (q * eigs) @ q.T
    m = 0.5 * (m + m.T)
    proof = lmi.cholesky_proof(m)
    assert proof.holds
    exact = float(np.linalg.eigvalsh(m)[0])
    got = lmi.estimate_min_eigenvalue(proof)
    # From above up to the rounding of both eigenvalue computations (~N·u·‖M‖ absolute).
    rounding = 10 * n * np.finfo(float).eps * float(np.abs(eigs).max())
    assert exact - rounding <= got <= exact * (1 + 2 * lmi.ESTIMATE_RTOL) + rounding, (got, exact)
