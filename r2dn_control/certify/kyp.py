r"""The structured (KYP) route for a scalar multiplier: Riccati equations instead of an SDP.

docs/theory.md §4 "Frequency-domain route". For a 1-Lipschitz φ (R2DN) the multiplier is a scalar, and
both LMIs are instances of the discrete bounded-real lemma (BRL) for an LTI system
(Â, B̂, Ĉ, D̂): ``‖Ĉ(zI − Â)⁻¹B̂ + D̂‖_∞ ≤ 1`` iff some X ⪰ 0 satisfies

$$
N(X) = \begin{bmatrix} X - \hat A^\top X \hat A - \hat C^\top \hat C &
    -\hat A^\top X \hat B - \hat C^\top \hat D \\ \cdot &
    I - \hat B^\top X \hat B - \hat D^\top \hat D \end{bmatrix} \succeq 0 .
$$

* Contraction at rate ᾱ (4a): ``(Â, B̂, Ĉ, D̂) = (A/ᾱ, B₁/ᾱ, C₁, D₁₁)``; multiplying N by ᾱ²
  gives (4a) with ``𝒫 = X`` and ``λ = ᾱ²``.
* Incremental gain γ (4b, γ-form): for κ > 0, ``B̂ = [B₁/√κ, B₂/γ]``, ``Ĉ = [√κC₁; C₂]``,
  ``D̂ = [[D₁₁, √κD₁₂/γ], [D₂₁/√κ, D₂₂/γ]]``; N(X)/γ in the coordinates (x, w, u) is (4b) for
  the supply (−I/γ, 0, γI) with ``𝒫 = X/γ`` and ``λ = κ/γ``. The feasible (κ, γ²) set is
  convex. `smallest_gain` takes the optimum (κ*, γ*) from the frequency domain
  (`.freq`: no Riccati solves) and proves γ*(1+δ) with one Riccati solve (δ = 1e-7; a
  few more on failure); `bisection_gain` (Brent over log κ, bisection on γ, ~200–400
  solves) is only the fallback.

Each BRL test solves the stabilizing solution of the Riccati equation

$$
X = \bar A^\top X (I - G X)^{-1} \bar A + \bar Q,\quad
\bar A = \hat A + \hat B R^{-1}\hat D^\top \hat C,\;
G = \hat B R^{-1} \hat B^\top,\; \bar Q = \hat C^\top (I - \hat D\hat D^\top)^{-1}\hat C,\;
R = I - \hat D^\top \hat D \succ 0,
$$

by the structure-preserving doubling algorithm (only n×n products and one LU per step, no
2n×2n eigenvalue problem). ``Ĉ`` is augmented with ``√ε I`` so the certificate is strict and 𝒫
is positive definite. Nothing here is trusted: every returned (𝒫, λ) is re-validated as the
LMI of docs/theory.md §4 in float64 by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .blas import blas_threads
from .freq import GainSearch
from .lmi import StateSpaceBlocks

#: Regularization ``ε`` (relative to the scale of Ĉ) added as ``√ε I`` rows to Ĉ.
REGULARIZATION = 1e-10
#: Larger ε tried when a certificate's margin is below float64's rounding bound.
RETRY_REGULARIZATIONS = (1e-8, 1e-6, 1e-4)


@dataclass
class KypCertificate:
    """A BRL-derived certificate in the coordinates of `lmi.dissipation_matrix`."""

    metric: np.ndarray
    multiplier: float
    value: float  # the rate ᾱ or the gain γ it certifies
    solves: int  # number of Riccati solves spent


def _doubling(a: np.ndarray, g: np.ndarray, h: np.ndarray, tol: float = 1e-14,
              max_iter: int = 50) -> np.ndarray | None:
    """Stabilizing solution of ``X = AᵀX(I + GX)⁻¹A + H`` by doubling (None if it fails)."""
    eye = np.eye(a.shape[0])
    for _ in range(max_iter):
        w = eye + g @ h
        try:
            lu = sla.lu_factor(w, check_finite=False)
        except (ValueError, np.linalg.LinAlgError):
            return None
        if np.min(np.abs(np.diag(lu[0]))) < 1e-14 * max(1.0, np.abs(w).max()):
            return None  # I + GH singular: no stabilizing solution along this path
        w_a = sla.lu_solve(lu, a, check_finite=False)
        w_g = sla.lu_solve(lu, g, check_finite=False)
        h_next = h + a.T @ h @ w_a
        g = g + a @ w_g @ a.T
        a = a @ w_a
        h_next = 0.5 * (h_next + h_next.T)
        g = 0.5 * (g + g.T)
        if not np.all(np.isfinite(h_next)):
            return None
        step = np.abs(h_next - h).max()
        h = h_next
        size = np.abs(a).max()
        if step <= tol * max(1.0, np.abs(h).max()) and size < 1e-8:
            return h
        if size > 1e8:  # A_k = A_cl^(2^k) grows: the solution is not stabilizing
            return None
    return None


def bounded_real_riccati(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray,
                         eps: float = REGULARIZATION, schur_known: bool = False
                         ) -> np.ndarray | None:
    r"""X ⪰ 0 with N(X) ⪰ 0 for ``[Ĉ; √ε I]`` (so N(X) ⪰ diag(εI, 0) for Ĉ), or None.

    None means the Riccati test failed: ``‖[Ĉ; √εI](zI − Â)⁻¹B̂ + D̂‖_∞ ≥ 1`` or Â is not
    Schur (or the doubling iteration broke down numerically).
    """
    n, m = b.shape
    if n and not schur_known and not np.all(np.abs(np.linalg.eigvals(a)) < 1.0):
        return None
    scale = max(1.0, float(np.abs(c).max()) if c.size else 1.0)
    c_aug = np.vstack([c, math.sqrt(eps) * scale * np.eye(n)])
    d_aug = np.vstack([d, np.zeros((n, m))])
    r = np.eye(m) - d_aug.T @ d_aug
    try:
        r_chol = sla.cho_factor(r)
        dd = np.eye(d_aug.shape[0]) - d_aug @ d_aug.T
        dd_chol = sla.cho_factor(dd)
    except np.linalg.LinAlgError:
        return None  # ‖D̂‖ ≥ 1: the gain at infinite frequency already exceeds 1
    a_bar = a + b @ sla.cho_solve(r_chol, d_aug.T @ c_aug)
    g = b @ sla.cho_solve(r_chol, b.T)
    q_bar = c_aug.T @ sla.cho_solve(dd_chol, c_aug)
    x = _doubling(a_bar, -0.5 * (g + g.T), 0.5 * (q_bar + q_bar.T))
    if x is None:
        return None
    # Accept only a solution that makes the (w,u) block of N positive definite and X ⪰ 0.
    try:
        np.linalg.cholesky(r - b.T @ x @ b)
        np.linalg.cholesky(x + 1e-12 * max(1.0, np.abs(x).max()) * np.eye(n))
    except np.linalg.LinAlgError:
        return None
    return x


# --------------------------------------------------------------------------- contraction
@blas_threads(1)
def contraction_riccati(ss: StateSpaceBlocks, rate: float, eps: float = REGULARIZATION
                        ) -> tuple[np.ndarray, float] | None:
    """(𝒫, λ) for (4a) at ``rate`` via the BRL of ``(A/ᾱ, B₁/ᾱ, C₁, D₁₁)``, or None."""
    x = bounded_real_riccati(ss.A / rate, ss.B1 / rate, ss.C1, ss.D11, eps=eps)
    if x is None:
        return None
    # (4a) is homogeneous in (𝒫, λ): normalise so that max|𝒫| = 1.
    size = float(np.abs(x).max()) if x.size else 1.0
    return x / size, rate**2 / size


@blas_threads(1)
def smallest_rate(ss: StateSpaceBlocks, upper: float = 1.0, rtol: float = 1e-6,
                  eps: float = REGULARIZATION) -> KypCertificate | None:
    """Smallest ᾱ ∈ (ρ(A), upper] with a BRL certificate, by bisection (None if none at upper)."""
    found = contraction_riccati(ss, upper, eps)
    solves = 1
    if found is None:
        return None
    hi, best = upper, found
    radius = float(np.abs(np.linalg.eigvals(ss.A)).max()) if ss.A.size else 0.0
    lo = radius  # ρ(A) < ᾱ is necessary (Δw = 0)
    while hi - lo > rtol * hi and hi > 1e-12:
        mid = 0.5 * (lo + hi) if lo > 0 else 0.5 * hi
        cand = contraction_riccati(ss, mid, eps)
        solves += 1
        if cand is None:
            lo = mid
        else:
            hi, best = mid, cand
    # Certify slightly above the bisection's edge: there the metric is well conditioned.
    final = min(upper, hi * (1 + rtol))
    cand = contraction_riccati(ss, final, eps) if final != hi else None
    if cand is not None:
        hi, best = final, cand
    return KypCertificate(best[0], best[1], hi, solves + 1)


# --------------------------------------------------------------------------- gain
def _gain_system(ss: StateSpaceBlocks, kappa: float, gamma: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rk = math.sqrt(kappa)
    b = np.hstack([ss.B1 / rk, ss.B2 / gamma])
    c = np.vstack([rk * ss.C1, ss.C2])
    d = np.block([[ss.D11, rk * ss.D12 / gamma], [ss.D21 / rk, ss.D22 / gamma]])
    return ss.A, b, c, d


def gain_riccati(ss: StateSpaceBlocks, kappa: float, gamma: float, schur_known: bool = False,
                 eps: float = REGULARIZATION) -> np.ndarray | None:
    """X of the BRL for the (κ, γ)-scaled system (``𝒫 = X/γ``, ``λ = κ/γ``), or None."""
    return bounded_real_riccati(*_gain_system(ss, kappa, gamma), eps=eps,
                                schur_known=schur_known)


class _GainSearch:
    """Bookkeeping for the (κ, γ) search: counts Riccati solves, keeps the best feasible."""

    def __init__(self, ss: StateSpaceBlocks, rtol: float) -> None:
        self.ss, self.rtol, self.solves = ss, rtol, 0
        # A does not change during the search: test ρ(A) < 1 once.
        self.schur = bool(ss.A.size == 0 or np.abs(np.linalg.eigvals(ss.A)).max() < 1.0)
        self.best: tuple[float, float, np.ndarray] | None = None  # (γ, κ, X)

    def feasible(self, kappa: float, gamma: float) -> np.ndarray | None:
        if not self.schur:
            return None
        self.solves += 1
        x = gain_riccati(self.ss, kappa, gamma, schur_known=True)
        if x is not None and (self.best is None or gamma < self.best[0]):
            self.best = (gamma, kappa, x)
        return x

    def gamma_at(self, kappa: float, hint: float) -> float:
        """Smallest feasible γ at this κ (relative tolerance rtol), ``inf`` if none near."""
        if self.feasible(kappa, hint) is not None:
            hi, below, step = hint, None, 1e-4  # below: an infeasible γ, once found
            while below is None and step < 1.0:
                cand = hint * (1 - step)
                if self.feasible(kappa, cand) is None:
                    below = cand
                else:
                    hi = cand
                step *= 8
            lo = 0.0 if below is None else below
        else:
            lo, above, step = hint, None, 1e-4  # above: a feasible γ, once found
            while above is None and step < 1e3:
                cand = hint * (1 + step)
                if self.feasible(kappa, cand) is not None:
                    above = cand
                else:
                    lo = cand
                step *= 8
            if above is None:
                # Infeasible for every γ near the hint (κ too small for the w-channel): a large
                # finite value, growing away from κ ≈ 1, keeps the outer search unimodal.
                return hint * 1e3 * (kappa + 1.0 / kappa)
            hi = above
        while hi - lo > self.rtol * hi:
            mid = 0.5 * (lo + hi)
            if self.feasible(kappa, mid) is None:
                lo = mid
            else:
                hi = mid
        return hi


def bisection_gain(ss: StateSpaceBlocks, gamma_hint: float | None = None,
                   kappa_hint: float | None = None, rtol: float = 1e-6,
                   kappa_rtol: float = 1e-5) -> KypCertificate | None:
    """Smallest certified γ by Riccati tests only (fallback; ~200–400 solves).

    Brent's method over log κ of the smallest γ at that κ (bisection on γ).

    Parameters
    ----------
    gamma_hint, kappa_hint : float, optional
        A starting point, e.g. the implied certificate (γ, κ = λγ = γ for an R2DN).
    rtol : float
        Relative tolerance of the inner bisection on γ.
    kappa_rtol : float
        Width in log κ at which the outer search stops. The optimum often sits at the edge of
        the feasible κ interval (the w-channel needs κ above a threshold), where γ varies
        like √κ, so this must be about the target relative accuracy of γ.
    """
    search = _GainSearch(ss, rtol)
    nv = ss.C1.shape[0]
    gamma = 1.0 if gamma_hint is None else float(gamma_hint)
    kappa = gamma if kappa_hint is None else float(kappa_hint)
    # Find a feasible starting point: larger γ (and κ, the multiplier scales with γ).
    for _ in range(40):
        if search.feasible(kappa, gamma) is not None:
            break
        gamma, kappa = gamma * 4.0, kappa * 4.0
    else:
        return None
    if nv == 0:  # no multiplier: a plain H∞-norm bisection
        gamma = search.gamma_at(kappa, gamma)
    else:
        # μ*(κ) is convex, so γ*(log κ) is unimodal and smooth near its minimum: Brent's
        # parabolic steps need far fewer Riccati-backed evaluations than a golden section.
        from scipy.optimize import minimize_scalar

        center, half = math.log(kappa), math.log(4.0)

        def value(t: float) -> float:
            hint = search.best[0] if search.best is not None else gamma
            return search.gamma_at(math.exp(t), hint)

        lo, hi = center - half, center + half
        for _ in range(6):  # widen while the minimum sits on an edge of the bracket
            res = minimize_scalar(value, bounds=(lo, hi), method="bounded",
                                  options={"xatol": kappa_rtol})
            if res.x - lo < 2 * kappa_rtol:
                lo, hi = lo - 2 * half, lo + kappa_rtol
            elif hi - res.x < 2 * kappa_rtol:
                lo, hi = hi - kappa_rtol, hi + 2 * half
            else:
                break
    if search.best is None:
        return None
    gamma, kappa, x = search.best
    return KypCertificate(x / gamma, kappa / gamma, gamma, search.solves)


# --------------------------------------------------------------------------- gain, fast path
#: Relative inflations δ tried, in order, for the Riccati test at (κ*, γ*(1 + δ)).
INFLATIONS = (1e-7, 1e-6, 1e-5)
#: After a candidate fails at every δ: how much denser the retry grid is, and larger δ's.
RETRY_GRID_FACTOR = 4
RETRY_INFLATIONS = (1e-6, 1e-5, 1e-4, 1e-3)


def _certify_candidate(ss: StateSpaceBlocks, kappa: float, gamma: float,
                       inflations: tuple[float, ...], eps: float = REGULARIZATION
                       ) -> tuple[KypCertificate | None, int]:
    """One Riccati test per δ at (κ, γ(1+δ)) until one passes: (certificate, solves)."""
    for solves, delta in enumerate(inflations, start=1):
        g = gamma * (1 + delta)
        x = gain_riccati(ss, kappa, g, schur_known=True, eps=eps)
        if x is not None:
            return KypCertificate(x / g, kappa / g, g, solves), solves
    return None, len(inflations)


def frequency_gain(ss: StateSpaceBlocks, grid: int | None = None, eps: float = REGULARIZATION
                   ) -> tuple[KypCertificate | None, int, bool]:
    """Candidate (κ*, γ*) from the frequency domain, then a handful of Riccati tests.

    `GainSearch` minimizes max_ω μ(κ, ω) (μ = γ²) over κ
    on a frequency grid with refined peaks: a lower estimate of the optimum that costs one
    eigen-decomposition of A plus one O(n³) product/factorization per frequency. The
    estimate is then *certified* by the Riccati equation at (κ*, γ*(1 + δ)), δ ≥ 1e-7: its
    stabilizing solution is an explicit 𝒫 (re-validated by the caller). If a peak was missed
    the test fails at every δ; the search is rerun on a denser grid with larger δ.

    Returns
    -------
    (certificate or None, number of Riccati solves, settled)
        ``settled`` is True when the failure is structural (A not Schur, or the w-channel
        gain ‖C₁(e^{jω}I − A)⁻¹B₁‖ ≥ 1 at an evaluated ω, so no (κ, γ) satisfies the LMI);
        a slower search cannot succeed then.
    """
    search = GainSearch(ss, grid)
    if search.resp.poles.size and np.abs(search.resp.poles).max() >= 1.0:
        return None, 0, True  # A not Schur: the Δw = 0, Δu = 0 dynamics already diverge
    cand = search.run()
    if cand is None:
        return None, 0, True  # w-channel gain ≥ 1 at some frequency: no multiplier works
    cert, solves = _certify_candidate(ss, cand.kappa, cand.gamma, INFLATIONS, eps)
    if cert is not None:
        return cert, solves, True
    dense = GainSearch(ss, RETRY_GRID_FACTOR * len(cand.omegas))
    cand = dense.run()
    if cand is None:
        return None, solves, dense.blocked
    cert, more = _certify_candidate(ss, cand.kappa, cand.gamma, RETRY_INFLATIONS, eps)
    if cert is not None:
        cert.solves = solves + more
    return cert, solves + more, cert is not None


def smallest_gain(ss: StateSpaceBlocks, gamma_hint: float | None = None,
                  kappa_hint: float | None = None, rtol: float = 1e-6,
                  eps: float = REGULARIZATION) -> KypCertificate | None:
    """Smallest certified γ with a scalar multiplier (R2DN, LTI; D₁₁ = 0).

    The frequency-domain candidate plus 1–3 Riccati solves (`frequency_gain`); if that
    yields nothing, the slower pure-Riccati search `bisection_gain` (hints: e.g. the
    implied certificate γ, κ = λγ). Runs with one BLAS thread (see `.blas`).
    """
    nu, _, _, ny = ss.sizes
    with blas_threads(1):
        solves = 0
        if nu and ny:
            cert, solves, settled = frequency_gain(ss, eps=eps)
            if settled:
                return cert
        cert = bisection_gain(ss, gamma_hint, kappa_hint, rtol)
        if cert is not None:
            cert.solves += solves
        return cert
