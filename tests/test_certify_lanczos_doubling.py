"""Certificates at n = 2048 (issue 16): the Lanczos of the rate search's matrix-free
gains (`lanczos.lanczos_top`), the doubling's symmetric products (`kyp.symmetric_product`)
and the doubling that skips the last step's G update (`kyp._doubling`).

Float64 properties: a Ritz value never exceeds λ_max (the inequality the refutations of
`kyp.smallest_rate` read, docs/certificates.md) and meets the residual bound it stops at; the
symmetric product equals the full product to rounding and is exactly symmetric; the doubling's
X satisfies the Riccati equation and makes the BRL matrix N(X) positive semidefinite.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control.certify import kyp
from r2dn_control.certify.lanczos import lanczos_top


def _hermitian(seed: int, n: int, complex_: bool, cluster: float) -> np.ndarray:
    """A PSD Hermitian matrix whose top eigenvalues are 1, 1 − cluster, ... (a hard gap)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n)) + (1j * rng.standard_normal((n, n)) if complex_ else 0)
    q, _ = np.linalg.qr(x)
    vals = np.sort(rng.uniform(0.0, 0.9, n))
    vals[-1], vals[-2] = 1.0, 1.0 - cluster
    m = (q * vals) @ q.conj().T
    return 0.5 * (m + m.conj().T)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 160), complex_=st.booleans(),
       cluster=st.sampled_from([0.3, 1e-2, 1e-4]), tol=st.sampled_from([1e-6, 1e-8, 1e-10]),
       warm=st.booleans())
def test_lanczos_top_is_a_ritz_value_below_lambda_max(seed, n, complex_, cluster, tol,
                                                      warm) -> None:
    m = _hermitian(seed, n, complex_, cluster)
    lam = float(np.linalg.eigvalsh(m)[-1])
    dtype = complex if complex_ else float
    start = None
    if warm:
        start = np.linalg.eigh(m)[1][:, -1] + 1e-3 * np.ones(n)
    found = lanczos_top(lambda x: m @ x, n, dtype, tol=tol, start=start)
    assert found is not None
    theta, y = found
    assert y.dtype == np.dtype(dtype) and y.shape == (n,)
    assert np.linalg.norm(y) == pytest.approx(1.0, abs=1e-12)
    # The inequality the refutations read: a Ritz value is a Rayleigh quotient.
    assert theta <= lam * (1 + 1e-13) + 1e-15
    assert theta == pytest.approx(float(np.real(np.vdot(y, m @ y))), abs=1e-12)
    # The stopping rule: residual ≤ tol·|θ| (up to the rounding of the basis).
    assert np.linalg.norm(m @ y - theta * y) <= tol * abs(theta) + 1e-11
    # Accuracy: θ within residual²/gap of λ_max (gap to the rest of the spectrum).
    assert lam - theta <= (tol * theta) ** 2 / cluster * 2 + 1e-12


def test_lanczos_top_declines_tiny_or_non_finite_operators() -> None:
    assert lanczos_top(lambda x: x, 2, float, tol=1e-8) is None
    assert lanczos_top(lambda x: np.full_like(x, np.nan), 10, float, tol=1e-8) is None
    found = lanczos_top(lambda x: 3.0 * x, 10, float, tol=1e-8)  # invariant at once
    assert found is not None and found[0] == pytest.approx(3.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 90), block=st.sampled_from([7, 16, 128]))
def test_symmetric_product_equals_the_full_product(seed, n, block) -> None:
    rng = np.random.default_rng(seed)
    a, s = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    s = s + s.T
    out = kyp.symmetric_product(a.T, s @ a, block=block, min_size=0)  # AᵀSA: symmetric
    full = a.T @ (s @ a)
    assert np.array_equal(out, out.T)
    bound = 4 * n * np.finfo(float).eps * (np.abs(a.T) @ np.abs(s) @ np.abs(a))
    assert np.all(np.abs(out - full) <= bound + 1e-300)


def _brl_system(seed: int, n: int, m: int, p: int, norm: float):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a *= 0.8 / max(np.abs(np.linalg.eigvals(a)).max(), 1e-12)
    b, c = rng.standard_normal((n, m)), rng.standard_normal((p, n))
    # Scale so that ‖C(zI − A)⁻¹B‖_∞ ≈ norm (on a fine grid).
    z = np.exp(1j * np.linspace(0, np.pi, 400))
    peak = max(np.linalg.norm(c @ np.linalg.solve(w * np.eye(n) - a, b), 2) for w in z)
    return a, b * np.sqrt(norm / peak), c * np.sqrt(norm / peak), np.zeros((p, m))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), m=st.integers(1, 5),
       p=st.integers(1, 5), norm=st.sampled_from([0.3, 0.8, 0.97]))
def test_doubling_solves_the_riccati_equation_and_the_brl(seed, n, m, p, norm) -> None:
    a, b, c, d = _brl_system(seed, n, m, p, norm)
    eps = 1e-10
    x = kyp.bounded_real_riccati(a, b, c, d, eps=eps)
    assert x is not None  # the gain is below 1: a stabilizing solution exists
    a_bar, g, q = kyp._riccati_data(a, b, c, d, eps)
    # X = ĀᵀX(I + GX)⁻¹Ā + Q̄ (G = −BBᵀ here), to rounding.
    resid = a_bar.T @ x @ np.linalg.solve(np.eye(n) + g @ x, a_bar) + q - x
    assert np.abs(resid).max() <= 1e-8 * max(1.0, np.abs(x).max())
    # N(X) ⪰ −rounding: the BRL inequality itself (with the ε rows, N ⪰ diag(εI, 0) − δ).
    top = x - a.T @ x @ a - c.T @ c
    off = -a.T @ x @ b
    low = np.eye(m) - b.T @ x @ b
    big = np.block([[top, off], [off.T, low]])
    big = 0.5 * (big + big.T)
    scale = max(1.0, np.abs(x).max()) * max(1.0, np.abs(a).max(), np.abs(b).max()) ** 2
    assert np.linalg.eigvalsh(big)[0] >= -1e-8 * scale
    assert np.linalg.eigvalsh(x)[0] >= -1e-10 * max(1.0, np.abs(x).max())


def test_doubling_refuses_a_gain_above_one() -> None:
    a, b, c, d = _brl_system(1, 12, 2, 2, 1.05)
    assert kyp.bounded_real_riccati(a, b, c, d) is None


def test_doubling_last_step_matches_the_full_update() -> None:
    """The solution does not depend on skipping the last G update (G is not read after it)."""
    a, b, c, d = _brl_system(4, 30, 3, 3, 0.9)
    data = kyp._riccati_data(a, b, c, d, 1e-10)
    x = kyp._doubling(*data)
    assert x is not None
    # Reference: the textbook doubling with every update and full products.
    aa, g, h = (m.copy() for m in data)
    for _ in range(40):
        w = np.eye(30) + g @ h
        wa, wg = np.linalg.solve(w, aa), np.linalg.solve(w, g)
        h_new = h + aa.T @ h @ wa
        g = g + aa @ wg @ aa.T
        aa = aa @ wa
        done = np.abs(aa).max() < kyp.CONVERGED_POWER
        h = 0.5 * (h_new + h_new.T)
        g = 0.5 * (g + g.T)
        if done:
            break
    assert np.allclose(x, h, rtol=1e-10, atol=1e-12 * np.abs(h).max())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(0, 40), cols=st.integers(1, 40))
def test_transposed_gram_equals_the_product(seed, rows, cols) -> None:
    f = np.random.default_rng(seed).standard_normal((rows, cols))
    out = kyp.transposed_gram(f)
    assert out.shape == (cols, cols) and np.array_equal(out, out.T)
    bound = 2 * max(rows, 1) * np.finfo(float).eps * (np.abs(f.T) @ np.abs(f))
    assert np.all(np.abs(out - f.T @ f) <= bound)
    # FᵀF ⪰ 0 to rounding (the Q̄ and G of the Riccati data).
    assert np.linalg.eigvalsh(out)[0] >= -1e-12 * max(1.0, np.abs(out).max())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 40), cols=st.integers(1, 70),
       block=st.sampled_from([5, 16, 64]))
def test_blocked_torch_gram_equals_the_product(seed, rows, cols, block) -> None:
    import torch

    from r2dn_control.nn import _algebra

    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, cols)))
    old = (_algebra.BLOCKED_GRAM_MIN, _algebra.GRAM_BLOCK)
    _algebra.BLOCKED_GRAM_MIN, _algebra.GRAM_BLOCK = 1, block
    try:
        with torch.no_grad():
            out = _algebra.transposed_gram(x)
        xg = x.clone().requires_grad_(True)
        plain = _algebra.transposed_gram(xg)  # under autograd: the one product
    finally:
        _algebra.BLOCKED_GRAM_MIN, _algebra.GRAM_BLOCK = old
    assert plain.grad_fn is not None
    assert torch.equal(out, out.T)
    bound = 2 * rows * np.finfo(float).eps * (x.abs().T @ x.abs())
    assert bool(((out - x.T @ x).abs() <= bound).all())
