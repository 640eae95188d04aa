"""The faster float64 proof of issue 16: shifted Cholesky, O(N²) rounding bound, Arnoldi ρ(A).

Guarantees as hypothesis properties in float64: `cholesky_proof` never accepts a matrix that
is not positive definite and accepts one whose λ_min clears its bound; the O(N²) row sums
equal those of the N×N magnitude matrix; both proofs of `validate` agree on KYP
certificates; the large-n path (Arnoldi ρ(A), Cholesky proof) returns the same rate and γ as
the dense one.
"""

from __future__ import annotations

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
    proof does (both have margins far above rounding here); its reported λ_min is a lower
    bound on the computed one, above the formation error."""
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
        assert form < chol.min_eigenvalue <= eig.min_eigenvalue + eig.error


def test_validate_rejects_an_unknown_proof() -> None:
    _, ss = _model_blocks(0, 3)
    with pytest.raises(ValueError, match="proof must be"):
        validate(ss, np.eye(3), 1.0, 1.0, proof="lu")


def test_large_n_path_gives_the_dense_paths_values(monkeypatch) -> None:
    """n = 300: Arnoldi ρ(A) and the Cholesky proof (LMI size 600) give the same certified
    rate and γ as dense ρ(A) and the eigenvalue proof, and the answers re-validate."""
    model, ss = _model_blocks(300, 300)
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
    est = kyp.spectral_radius_estimate(ss.A)
    assert est is not None
    np.testing.assert_allclose(est, np.abs(np.linalg.eigvals(ss.A)).max(), rtol=1e-8)
