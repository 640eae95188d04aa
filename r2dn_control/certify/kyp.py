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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigs

from ..nn._algebra import fill_symmetric_product
from .blas import blas_threads
from .freq import GainSearch, _real_times
from .lanczos import lanczos_top, largest_eigenpair
from .lmi import StateSpaceBlocks, Validation

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
    lower: float | None = None  # a value shown impossible (rate search), if any
    lower_proof: str = ""
    margin: float = 0.0  # the proof margin τ of `margin_riccati` (gain), if used
    proof: Validation | None = None  # the float64 check already run on it, if any


#: `_doubling` stops once max|A_k| (the closed loop to the power 2^k) is below this.
CONVERGED_POWER = 1e-7


def _doubling(a: np.ndarray, g: np.ndarray, h: np.ndarray, tol: float = 1e-14,
              max_iter: int = 40) -> np.ndarray | None:
    """Stabilizing solution of ``X = AᵀX(I + GX)⁻¹A + H`` by doubling (None if it fails).

    The iterates H_k increase monotonically to X from H_0 ≻ 0 when a stabilizing solution
    exists; an H_k that is not positive definite (a failed Cholesky factorization, n³/3
    flops) shows that none does, which stops an infeasible test after a few steps instead
    of ``max_iter``.
    """
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
        h_next = h + symmetric_product(a.T, h @ w_a)
        a_next = a @ w_a
        if not np.all(np.isfinite(h_next)):
            return None
        try:
            sla.cholesky(h_next, check_finite=False)
        except np.linalg.LinAlgError:
            return None  # H_k left the positive definite cone: not stabilizing
        step = np.abs(h_next - h).max()
        h = h_next
        size = np.abs(a_next).max()
        # The rest of the series, Σ_j A_jᵀH_jW_j⁻¹A_j, is O(‖A_k‖²) once A_k is small: with
        # ‖A_k‖ < 1e-7 it is below 1e-14 relative, far under any proof margin (the caller's
        # float64 check decides), so stop without the extra step a tiny `step` would need.
        if size < CONVERGED_POWER or (step <= tol * max(1.0, np.abs(h).max()) and size < 1e-8):
            return h
        if size > 1e8:  # A_k = A_cl^(2^k) grows: the solution is not stabilizing
            return None
        # G_{k+1} only when another step follows (the last step skips its solve and products).
        w_g = sla.lu_solve(lu, g, check_finite=False)
        g = g + symmetric_product(a @ w_g, a.T)
        a = a_next
    return None


#: Rows per block of `symmetric_product` (blocks of this many rows go to one dgemm).
SYMMETRIC_BLOCK = 256
#: From this size on `symmetric_product` uses its block form: below it the one dgemm was as
#: fast or faster (γ at n = 512: 1.87 s against 2.12 s with 2 blocks of 256; same at 1024).
SYMMETRIC_MIN = 1024


def symmetric_product(x: np.ndarray, y: np.ndarray, block: int = SYMMETRIC_BLOCK,
                      min_size: int = SYMMETRIC_MIN) -> np.ndarray:
    """``x @ y`` for a product known to be symmetric (e.g. AᵀHW⁻¹A in `_doubling`), exactly
    symmetric: from ``min_size`` on from its block upper triangle (`fill_symmetric_product`,
    blocks of ``block`` rows: 9/16 of the product at n = 2048), below as ``0.5(P + Pᵀ)`` of
    the one product; the two differ by the rounding of P − Pᵀ.
    """
    n = x.shape[0]
    if n <= block or n < min_size:
        p = x @ y
        return 0.5 * (p + p.T)
    return fill_symmetric_product(x, y, np.empty((n, n), dtype=np.result_type(x, y)), block)


def _riccati_data(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, eps: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ā, −G, Q̄) of the module docstring for ``[Ĉ; √ε·scale·I]`` (D = 0 needs no factoring).

    The regularization rows carry no feedthrough (``D_aug = [D̂; 0]``), so ``I − D_augD_augᵀ =
    blkdiag(I − D̂D̂ᵀ, I)``, ``D_augᵀC_aug = D̂ᵀĈ`` and ``Q̄ = Ĉᵀ(I − D̂D̂ᵀ)⁻¹Ĉ + ε·scale²·I``:
    only the small factorizations of ``I − D̂ᵀD̂`` and ``I − D̂D̂ᵀ`` are needed, not one of size
    n + n_out (the same algebra as augmenting Ĉ and D̂, without the O(n³) work on the ε rows).
    """
    n, m = b.shape
    scale = max(1.0, float(np.abs(c).max()) if c.size else 1.0)
    reg = eps * scale**2
    if not d.any():  # R = I, I − DDᵀ = I: Ā = A, G = BBᵀ, Q̄ = CᵀC + εI
        q_bar = transposed_gram(c)
        q_bar[np.diag_indices(n)] += reg
        return a, -transposed_gram(b.T), q_bar
    r_chol = sla.cholesky(np.eye(m) - d.T @ d, lower=True)
    dd_chol = sla.cholesky(np.eye(d.shape[0]) - d @ d.T, lower=True)
    # Ā = A + B R⁻¹D̂ᵀĈ, G = (L_R⁻¹Bᵀ)ᵀ(L_R⁻¹Bᵀ), Q̄ = (L_D⁻¹Ĉ)ᵀ(L_D⁻¹Ĉ) + ε·scale²·I.
    a_bar = a + b @ sla.cho_solve((r_chol, True), d.T @ c)
    half_g = sla.solve_triangular(r_chol, b.T, lower=True)
    half_q = sla.solve_triangular(dd_chol, c, lower=True)
    q_bar = transposed_gram(half_q)
    q_bar[np.diag_indices(n)] += reg
    return a_bar, -transposed_gram(half_g), q_bar


def transposed_gram(f: np.ndarray) -> np.ndarray:
    """``FᵀF`` by a symmetric rank-k update (dsyrk: half the flops of the product), its upper
    triangle mirrored, so the result is exactly symmetric (as ``0.5(P + Pᵀ)`` of the product
    was; the two differ by rounding)."""
    n = f.shape[1]
    if not f.size:
        return np.zeros((n, n))
    # f.T is Fortran-ordered for a C-ordered f: dsyrk reads it without a copy (trans 0: XXᵀ).
    up = sla.blas.dsyrk(1.0, np.asarray(f, dtype=float).T, trans=0, lower=0)
    low = np.tril_indices(n, -1)
    up[low] = up.T[low]
    return up


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
    r = np.eye(m) - d.T @ d
    try:
        np.linalg.cholesky(r)
        data = _riccati_data(a, b, c, d, eps)
    except np.linalg.LinAlgError:
        return None  # ‖D̂‖ ≥ 1: the gain at infinite frequency already exceeds 1
    x = _doubling(*data)
    if x is None:
        return None
    # Accept only a solution that makes the (w,u) block of N positive definite and X ⪰ 0.
    try:
        np.linalg.cholesky(r - symmetric_product(b.T, x @ b))
        np.linalg.cholesky(x + 1e-12 * max(1.0, np.abs(x).max()) * np.eye(n))
    except np.linalg.LinAlgError:
        return None
    return x


# --------------------------------------------------------------------------- contraction
@blas_threads()
def contraction_riccati(ss: StateSpaceBlocks, rate: float, eps: float = REGULARIZATION,
                        schur_known: bool = False) -> tuple[np.ndarray, float] | None:
    """(𝒫, λ) for (4a) at ``rate`` via the BRL of ``(A/ᾱ, B₁/ᾱ, C₁, D₁₁)``, or None.

    ``schur_known``: the caller knows ρ(A) < ``rate`` (skips one eigenvalue problem).
    """
    x = bounded_real_riccati(ss.A / rate, ss.B1 / rate, ss.C1, ss.D11, eps=eps,
                             schur_known=schur_known)
    if x is None:
        return None
    # (4a) is homogeneous in (𝒫, λ): normalise so that max|𝒫| = 1.
    size = float(np.abs(x).max()) if x.size else 1.0
    return x / size, rate**2 / size


#: Up to this state dimension `closed_loop_pole` uses a dense eigenvalue problem (else Arnoldi).
DENSE_EIG_MAX = 64


def closed_loop_pole(ss: StateSpaceBlocks, rate: float, x: np.ndarray) -> complex:
    """Dominant eigenvalue of the Riccati closed loop ``(I − B̂B̂ᵀX)⁻¹Â`` at ``rate`` (D₁₁ = 0).

    ``x`` is the Riccati solution X (Â = A/ᾱ, B̂ = B₁/ᾱ). The pole's modulus r < 1 tends to 1
    like ``1 − c·√(ᾱ − ᾱ*)`` as ᾱ decreases to the optimum ᾱ* (two eigenvalues of the
    symplectic pencil meet on the unit circle, generically as a square root), and its angle
    tends to the frequency where they meet.
    """
    a, b = ss.A / rate, ss.B1 / rate
    n = a.shape[0]
    w = np.eye(n) - (b @ b.T) @ x
    lu = sla.lu_factor(w, check_finite=False)
    if n <= DENSE_EIG_MAX:
        vals = np.linalg.eigvals(sla.lu_solve(lu, a, check_finite=False))
        return complex(vals[int(np.argmax(np.abs(vals)))])
    op = LinearOperator((n, n), dtype=float,
                        matvec=lambda v: sla.lu_solve(lu, a @ v, check_finite=False))
    z = eigs(op, k=1, which="LM", ncv=min(n - 1, 24), tol=1e-10, maxiter=2000,
             return_eigenvectors=False)
    return complex(z[0])


#: Up to this size the KYP tier computes all eigenvalues of A for ρ(A); above it
#: `spectral_radius_estimate` (Arnoldi).
DENSE_RADIUS_MAX = 256


def spectral_radius_estimate(a: np.ndarray) -> float | None:
    """ρ(A) by Arnoldi (the modulus of the converged dominant Ritz value), or None.

    A nonsymmetric eigenvalue decomposition costs ~25n³ flops (45 s at n = 2048 on one core);
    ARPACK's few hundred O(n²) products cost well under a second. The value only bounds the
    rate search from below and screens ρ(A) ≥ 1 (callers confirm that with the dense
    eigenvalues): nothing is certified from it, every certificate is proved by
    `lmi.validate`, which implies ρ(A) < ᾱ. None when Arnoldi does not converge, or for
    n < 3 (ARPACK needs k < n − 1; use the dense eigenvalues there).
    """
    n = a.shape[0]
    if n < 3:
        return None
    try:
        z = eigs(a, k=1, which="LM", ncv=min(n - 1, 40), tol=1e-10, maxiter=5000,
                 v0=np.ones(n), return_eigenvectors=False)
    except (ArpackError, ArpackNoConvergence):
        return None
    value = float(np.abs(z).max()) if z.size else math.nan
    return value if math.isfinite(value) else None


def _w_channel_gain(ss: StateSpaceBlocks, z: complex) -> float:
    """σ_max(C₁(zI − A)⁻¹B₁). A value ≥ 1 at ``|z| = ᾱ`` shows that no rate below ᾱ has a
    scalar-multiplier certificate (see `smallest_rate`); a real z needs only real arithmetic,
    a complex one multiplies the real C₁ with the real and imaginary parts separately."""
    return _w_channel(ss, z)[0]


def _w_channel(ss: StateSpaceBlocks, z: complex, slope: bool = False) -> tuple[float, float]:
    r"""(σ, dσ/dr): σ = σ_max(G(z)), G(z) = C₁(zI − A)⁻¹B₁, and with ``slope`` its derivative
    along the ray z = r·e^{jω} (else nan).

    With the top singular triplet G v = σu (σ simple) and dG/dz = −C₁(zI − A)⁻²B₁,

    $$
    \frac{d\sigma}{dr} = \operatorname{Re}\big(e^{j\omega}\,u^*\tfrac{dG}{dz}v\big)
      = -\operatorname{Re}\big(e^{j\omega}\,p^*q\big),\quad
    q = (zI - A)^{-1}B_1 v,\; p = (zI - A)^{-*}C_1^\top u :
    $$

    two O(n²) solves with the LU that σ already needs (nothing O(n³) more). Only the radial
    search (`radial_root`) reads the slope; nothing is certified from it.
    """
    sigma, c = _w_channel_derivative(ss, z, slope)
    if not slope or not math.isfinite(c.real):
        return sigma, math.nan
    real = z.imag == 0.0
    direction = 1.0 if real and z.real >= 0 else (-1.0 if real else z / abs(z))
    return sigma, float(np.real(direction * c))


def _w_channel_derivative(ss: StateSpaceBlocks, z: complex, derivative: bool = True
                          ) -> tuple[float, complex]:
    r"""(σ, c): σ = σ_max(G(z)) and, with ``derivative``, c = u*G'(z)v = −p*q (`_w_channel`;
    else nan), so that on z = r·e^{jω}: dσ/dr = Re(e^{jω}c), dσ/dω = −r·Im(e^{jω}c)."""
    n, nv = ss.A.shape[0], ss.C1.shape[0]
    if not nv or not n:
        return 0.0, complex(0.0)
    nan = complex(math.nan, math.nan)
    real = z.imag == 0.0
    if isinstance(ss, SearchBlocks) and n >= REDUCED_MIN:
        reduction = ss.reduction()  # BLAS-3 work: the certificate's thread count
        # Thousands of O(n²) matrix–vector calls: one thread (two OpenBLAS threads made the
        # n = 2048 rate search take 224 s CPU instead of 94 s, at load average ≈ 2).
        with blas_threads(1):
            found = _reduced_w_channel(reduction, z.real if real else z, derivative)
        if found is not None:
            return found
    shift = (z.real if real else z) * np.eye(n) - ss.A
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sla.LinAlgWarning)  # z next to a pole: a large gain
        lu, piv = sla.lu_factor(shift, check_finite=False)
        if not np.all(np.diag(lu)):
            return math.inf, nan  # z is an eigenvalue of A
        sol = sla.lu_solve((lu, piv), ss.B1 if real else ss.B1.astype(complex),
                           check_finite=False)
    g = ss.C1 @ sol if real else _real_times(ss.C1, sol)
    if not np.all(np.isfinite(g)):
        return math.inf, nan
    if not derivative:
        return math.sqrt(max(_largest_gram_eigenvalue(g), 0.0)), nan
    lam, vec = _largest_gram_pair(g)
    sigma = math.sqrt(max(lam, 0.0))
    if sigma == 0.0:
        return 0.0, complex(0.0)
    if g.shape[0] < g.shape[1]:  # vec is u (eigenvector of GG*)
        u, v = vec, (g.conj().T @ vec) / sigma
    else:  # vec is v (eigenvector of G*G)
        u, v = (g @ vec) / sigma, vec
    q = sol @ v
    p = sla.lu_solve((lu, piv), ss.C1.T @ u, trans=1 if real else 2, check_finite=False)
    return sigma, -complex(np.vdot(p, q))


def _gram(g: np.ndarray) -> np.ndarray:
    """The smaller Gram matrix of G (GG* if G has fewer rows, else G*G), upper triangle only,
    by a symmetric / Hermitian rank-k update (half a product)."""
    complex_g = np.iscomplexobj(g)
    # trans 0: G G* (G has fewer rows than columns); else G*G (BLAS 'C' / 'T').
    trans = 0 if g.shape[0] < g.shape[1] else (2 if complex_g else 1)
    if complex_g:
        return sla.blas.zherk(1.0, g, trans=trans, lower=0)
    return sla.blas.dsyrk(1.0, g, trans=trans, lower=0)


#: From this Gram size on, λ_max of the w-channel's Gram matrix comes from Lanczos (ARPACK on
#: the upper triangle, `_lanczos_top`) instead of LAPACK's dsyevr/zheevr, whose Householder
#: tridiagonalization (half of it matrix–vector work) was ~half of a complex gain at n = 2048.
LANCZOS_GRAM_MIN = 512


def _dense_top(gram: np.ndarray, vectors: bool) -> tuple[float, np.ndarray | None]:
    """λ_max of the Hermitian matrix whose upper triangle is ``gram`` (dsyevr/zheevr, one
    eigenpair: LAPACK's relatively robust representations, no full spectrum)."""
    k = gram.shape[0]
    out = sla.eigh(gram, lower=False, eigvals_only=not vectors, subset_by_index=[k - 1, k - 1],
                   driver="evr", check_finite=False)
    if not vectors:
        return float(out[0]), None
    return float(out[0][0]), out[1][:, 0]


def _lanczos_top(gram: np.ndarray) -> tuple[float, np.ndarray] | None:
    """λ_max and a unit eigenvector of the Hermitian matrix whose upper triangle is ``gram``, by
    implicitly restarted Lanczos (ARPACK) with matrix–vector products from that triangle
    (dsymv/zhemv); None where `largest_eigenpair` declines (fewer than 3 rows, no convergence).

    A Ritz value is a Rayleigh quotient, so it never exceeds λ_max: a gain ≥ 1 read from it
    is ≥ 1 for the exact Gram matrix too (the refutations of `smallest_rate` stay valid), and
    an underestimate only makes the search test a rate the Riccati test then refuses.
    """
    hemv = sla.blas.zhemv if np.iscomplexobj(gram) else sla.blas.dsymv
    return largest_eigenpair(lambda x: hemv(1.0, gram, x, lower=0), gram.shape[0],
                             gram.dtype.type, tol=1e-12)


def _top(gram: np.ndarray, vectors: bool) -> tuple[float, np.ndarray | None]:
    """λ_max (and a unit eigenvector if ``vectors``) from the upper triangle ``gram``:
    Lanczos from `LANCZOS_GRAM_MIN` on (dense if it fails), dense below."""
    if gram.shape[0] >= LANCZOS_GRAM_MIN:
        found = _lanczos_top(gram)
        if found is not None:
            return found
    return _dense_top(gram, vectors)


def _largest_gram_eigenvalue(g: np.ndarray) -> float:
    """λ_max(G*G) (= λ_max(GG*)) from the smaller Gram matrix, read from its upper triangle
    (`_top`: Lanczos for large ones, else LAPACK's dsyevr for the one eigenvalue)."""
    return _top(_gram(g), vectors=False)[0]


def _largest_gram_pair(g: np.ndarray) -> tuple[float, np.ndarray]:
    """λ_max of `_gram` (G) and a unit eigenvector (of GG* when G has fewer rows, else G*G)."""
    val, vec = _top(_gram(g), vectors=True)
    assert vec is not None
    return val, vec


#: From this state dimension on, the w-channel gains of a rate search (`SearchBlocks`) use the
#: Hessenberg form of A (`HessenbergReduction`, built once) and a matrix-free λ_max instead of
#: a dense O(n³) evaluation each (n = 2048, CPU s under load ≈ 5: real 1.8–1.9 → 0.7–1.0,
#: complex ≈ 5.5 → 2.0–2.5; the reduction ≈ 4, once). At n = 1024 the benchmark R2DN's search
#: (6 gains, 5 of them real) did not gain (9.8 s CPU with it, 9.3 s without; a dense real gain
#: is cheap there), so the dense path is kept up to 1535 states.
REDUCED_MIN = 1536
#: Residual tolerance of the matrix-free Lanczos (relative to λ): the Ritz value is then within
#: ~tol²·λ/gap of λ_max (σ within ~3e-12 relative of the 1e-8 runs at n = 2048), its vector within
#: ~tol/gap (what the slopes read; nothing is certified from either). 1e-6 took 80 → 64 products
#: a gain on six n = 2048 gains (the search's rtol 1e-4 sits far above either error).
REDUCED_LANCZOS_TOL = 1e-6


@dataclass(eq=False)
class HessenbergReduction:
    r"""A = QHQᵀ (H upper Hessenberg, Q orthogonal) with B̃ = QᵀB₁, C̃ = C₁Q, so that
    ``G(z) = C₁(zI − A)⁻¹B₁ = C̃(zI − H)⁻¹B̃``.

    ``gram`` is C̃ᵀC̃ when Lanczos runs on G*G (n_w ≤ n_v, the side `_gram` takes) and B̃B̃ᵀ
    otherwise; ``starts`` keeps the latest top eigenvector (by dtype) as the next start vector.
    One reduction costs ~10/3·n³ flops plus two n×n products, about one dense complex gain;
    afterwards zI − H is factored in O(n²) (banded LU with one subdiagonal, LAPACK gbtrf) and
    each product with G*G is two O(n²) banded solves and three products with real n×n
    matrices, so a gain costs ~2·(Lanczos steps)·n² instead of ~7n³ complex flops.
    """

    h: np.ndarray
    b: np.ndarray
    c: np.ndarray
    gram: np.ndarray
    w_side: bool
    starts: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, ss: StateSpaceBlocks) -> HessenbergReduction:
        h, q = sla.hessenberg(ss.A, calc_q=True, check_finite=False)
        b, c = q.T @ ss.B1, ss.C1 @ q
        w_side = not c.shape[0] < b.shape[1]  # as `_gram`: GG* when G has fewer rows
        gram = c.T @ c if w_side else b @ b.T
        return cls(np.triu(h, -1), b, c, 0.5 * (gram + gram.T), w_side)


@dataclass(frozen=True, eq=False)
class SearchBlocks(StateSpaceBlocks):
    """The blocks of one rate search, with the Hessenberg reduction its complex gains share
    (built at the first gain from `REDUCED_MIN` states on; `_w_channel_derivative`)."""

    _cache: dict[str, HessenbergReduction] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, ss: StateSpaceBlocks) -> SearchBlocks:
        if isinstance(ss, SearchBlocks):
            return ss
        return cls(ss.A, ss.B1, ss.B2, ss.C1, ss.C2, ss.D11, ss.D12, ss.D21, ss.D22)

    def reduction(self) -> HessenbergReduction:
        """The Hessenberg reduction of these blocks (computed on the first call)."""
        if "hessenberg" not in self._cache:
            self._cache["hessenberg"] = HessenbergReduction.of(self)
        return self._cache["hessenberg"]


def _banded_shift(h: np.ndarray, z: complex | float) -> tuple[np.ndarray, np.ndarray] | None:
    """LU of zI − H (H upper Hessenberg) in LAPACK band storage (kl = 1, ku = n − 1), by
    zgbtrf (dgbtrf for a real ``float`` z; O(n²): one subdiagonal to eliminate); None if
    zI − H is exactly singular.

    Band storage keeps (i, j) at row ``n + i − j`` of column j of an (n + 2) × n Fortran
    array, i.e. at flat offset ``n + i + j(n + 1)``: a strided view writes zI − H in one copy
    (the zeros below the subdiagonal land in rows the factorization does not read)."""
    n = h.shape[0]
    real = isinstance(z, float)
    ab = np.zeros((n + 2) * n, dtype=float if real else complex)
    view = np.lib.stride_tricks.as_strided(ab[n:], shape=(n, n),
                                           strides=(ab.itemsize, ab.itemsize * (n + 1)))
    view[...] = -h
    ab = ab.reshape((n + 2, n), order="F")
    ab[n, :] += z
    gbtrf = sla.lapack.dgbtrf if real else sla.lapack.zgbtrf
    lu, piv, info = gbtrf(ab, 1, n - 1, overwrite_ab=1)
    if info != 0:
        return None
    return lu, piv


def _real_times_vec(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The real matrix m times the vector x; a complex x by two real matrix–vector products
    (dgemv on its real and imaginary parts: at n = 2048 3.3–3.5 ms against 5.8–7.3 ms for one
    product with x as an n × 2 real array, which OpenBLAS runs as a packed dgemm)."""
    if not np.iscomplexobj(x):
        return m @ x
    out = np.empty(m.shape[0], dtype=complex)
    out.real = m @ x.real
    out.imag = m @ x.imag
    return out


def _reduced_w_channel(red: HessenbergReduction, z: complex | float, derivative: bool
                       ) -> tuple[float, complex] | None:
    r"""(σ, c) of `_w_channel_derivative` at z (a ``float``: real arithmetic) from the Hessenberg form
    (`HessenbergReduction`), or None (zI − H singular to working precision, or Lanczos did
    not converge: the caller evaluates densely).

    λ_max of the Gram matrix by `_reduced_top`. Slopes: q̃ = (zI − H)⁻¹B̃v,
    p̃ = (zI − H)⁻*C̃ᵀu, c = −p̃*q̃ (= −p*q of the dense evaluation: Q is orthogonal).
    """
    n = red.h.shape[0]
    factored = _banded_shift(red.h, z)
    if factored is None:
        return None
    lu, piv = factored
    real = isinstance(z, float)
    gbtrs = sla.lapack.dgbtrs if real else sla.lapack.zgbtrs
    adjoint_trans = 1 if real else 2

    def solve(x: np.ndarray, adjoint: bool = False) -> np.ndarray:
        return gbtrs(lu, 1, n - 1, x, piv, trans=adjoint_trans if adjoint else 0)[0]

    top = _reduced_top(red, solve, derivative, real)
    if top is None:
        return None
    sigma, nan = math.sqrt(max(top[0], 0.0)), complex(math.nan, math.nan)
    if not derivative or sigma == 0.0:
        return sigma, (nan if not derivative else complex(0.0))
    if red.w_side:  # the vector is v (G*G); u = Gv/σ
        v = top[1]
        q = solve(_real_times_vec(red.b, v))
        u = _real_times_vec(red.c, q) / sigma
        p = solve(_real_times_vec(red.c.T, u), True)
    else:  # the vector is u (GG*); v = G*u/σ
        u = top[1]
        p = solve(_real_times_vec(red.c.T, u), True)
        v = _real_times_vec(red.b.T, p) / sigma
        q = solve(_real_times_vec(red.b, v))
    return sigma, -complex(np.vdot(p, q))


def _reduced_top(red: HessenbergReduction, solve: Callable[..., np.ndarray], vectors: bool,
                 real: bool = False) -> tuple[float, np.ndarray] | None:
    r"""λ_max (and, with ``vectors``, a unit eigenvector) of the Gram matrix on the side of
    ``red`` (`_gram`'s choice), with ``solve(x, adjoint)`` applying (zI − H)⁻¹ or (zI − H)⁻*
    (``real``: a real z, real arithmetic throughout).

    From `LANCZOS_GRAM_MIN` columns on both sides: matrix-free,
    G*G = B̃ᵀ(zI − H)⁻*(C̃ᵀC̃)(zI − H)⁻¹B̃ (or GG* = C̃(zI − H)⁻¹(B̃B̃ᵀ)(zI − H)⁻*C̃ᵀ) by
    implicitly restarted Lanczos (ARPACK) from the previous gain's top vector (None if it
    does not converge). A Ritz value never exceeds λ_max, so a gain ≥ 1 read from it refutes
    as the dense one does (docs/certificates.md). Otherwise G itself is formed by that many
    O(n²) solves on the smaller side and read by `_top`.
    """
    nv, nw = red.c.shape[0], red.b.shape[1]
    dtype = float if real else complex
    times = np.matmul if real else _real_times
    if min(nv, nw) < LANCZOS_GRAM_MIN:
        if red.w_side:  # G = C̃(zI − H)⁻¹B̃ by n_w solves
            g = times(red.c, solve(red.b.astype(dtype)))
        else:  # G* = B̃ᵀ(zI − H)⁻*C̃ᵀ by n_v solves
            g = times(red.b.T, solve(red.c.T.astype(dtype), True)).conj().T
        if not np.all(np.isfinite(g)):
            return None
        val, vec = _top(_gram(g), vectors)
        return val, (np.empty(0) if vec is None else vec)
    b, c, gram = red.b, red.c, red.gram
    if red.w_side:
        def matvec(x: np.ndarray) -> np.ndarray:
            y = solve(_real_times_vec(b, x))
            return _real_times_vec(b.T, solve(_real_times_vec(gram, y), True))
    else:
        def matvec(x: np.ndarray) -> np.ndarray:
            y = solve(_real_times_vec(c.T, x), True)
            return _real_times_vec(c, solve(_real_times_vec(gram, y)))
    k = nw if red.w_side else nv
    found = lanczos_top(matvec, k, dtype, tol=REDUCED_LANCZOS_TOL,
                        start=red.starts.get(np.dtype(dtype).name))
    if found is None:
        return None
    val, vec = found
    red.starts[np.dtype(dtype).name] = vec
    return val, vec


def _on_ray(r: float, omega: float) -> complex:
    if omega == 0.0:
        return complex(r, 0.0)
    if omega == math.pi:
        return complex(-r, 0.0)
    return r * complex(math.cos(omega), math.sin(omega))


def _log_gain(sigma: float, ds: float) -> tuple[float, float]:
    """(log σ, d log σ/dr) from (σ, dσ/dr): (−inf, nan) for σ ≤ 0, (inf, …) for σ = inf."""
    if not sigma > 0:
        return -math.inf, math.nan
    return math.log(sigma) if math.isfinite(sigma) else math.inf, ds / sigma


#: Most w-channel gain evaluations `radial_root` spends on one ray.
RADIAL_EVALUATIONS = 16


def radial_root(ss: StateSpaceBlocks, omega: float, lo: float, hi: float, rtol: float,
                at_hi: tuple[float, float] | None = None,
                start: tuple[float, float, float] | None = None,
                points: dict[float, CirclePoint] | None = None) -> float | None:
    """Largest r ∈ (lo, hi] found with ``σ_max(C₁(re^{jω}I − A)⁻¹B₁) ≥ 1`` (to ~rtol·r/4).

    Every such r is a rate that no scalar-multiplier certificate reaches (see `smallest_rate`): a
    lower bound on the optimum, equal to it when ω is the peak frequency. None when none of
    the radii tried has gain ≥ 1.

    Safeguarded Newton on f(r) = log σ(r) with the analytic slope of `_w_channel`
    (f' = σ'/σ): from hi (f < 0) the tangent step overshoots below the root where f is
    convex, giving a point with gain ≥ 1; from there Newton climbs to the root from below,
    quadratically. A step that leaves the bracket (a with f ≥ 0, b with f < 0) is replaced
    by regula falsi. It stops when the bracket is narrower than rtol·b/4, or when the Newton
    step from the best point with gain ≥ 1 is below rtol·a/8 (the remaining distance to the
    root, up to a second-order term): typically 3–4 evaluations where regula falsi took 6–8.
    ``at_hi``: (σ, dσ/dr) at hi when the caller has it. ``start``: (r, σ, dσ/dr) at a radius
    r ∈ [lo, hi) with σ ≥ 1 (e.g. the peak of a circle, `peak_angle`): Newton climbs from
    there at once, and hi is not evaluated unless a step needs its value. ``points``: filled
    with (σ, dσ/dr, dσ/dω) (`circle_point`) at every radius evaluated.
    """
    def f(r: float) -> tuple[float, float]:
        sigma, ds, d_omega = circle_point(ss, r, omega)
        if points is not None:
            points[r] = (sigma, ds, d_omega)
        return _log_gain(sigma, ds)

    a: float | None = None  # the best radius with gain ≥ 1, once found
    fa = math.nan
    if start is not None and lo <= start[0] < hi and start[1] >= 1.0:
        b, fb = hi, math.nan  # hi not evaluated: regula falsi falls back to bisection
        a, (fa, da) = start[0], _log_gain(start[1], start[2])
        x, fx, dx = a, fa, da
    else:
        b, (fb, db) = hi, (f(hi) if at_hi is None else _log_gain(*at_hi))
        if fb >= 0:
            return hi
        x, fx, dx = b, fb, db  # the latest point, where the next Newton step starts
    for _ in range(RADIAL_EVALUATIONS):
        left = lo + 1e-3 * (b - lo) if a is None else a
        step = -fx / dx if math.isfinite(dx) and dx != 0.0 and math.isfinite(fx) else math.nan
        r = x + step
        if a is not None and x == a and 0 <= step <= 0.125 * rtol * a:
            return a  # Newton from below has converged
        if not (left < r < b):
            if a is None:
                r = left if math.isfinite(step) and r <= left else 0.5 * (left + b)
            else:  # regula falsi inside the bracket, kept off its ends
                r = b - fb * (b - a) / (fb - fa) if math.isfinite(fa) and math.isfinite(fb) \
                    else 0.5 * (a + b)
                r = min(max(r, a + 0.01 * (b - a)), b - 0.01 * (b - a))
        fr, dr = f(r)
        if fr >= 0:
            a, fa = r, fr
        else:
            if a is None and fr <= fb and r < b:
                return None  # the gain does not grow toward lo on this ray
            b, fb = r, fr
        x, fx, dx = r, fr, dr
        if a is not None and b - a <= 0.25 * rtol * b:
            return a
    return a


#: Angles in [0, π] where `peak_angle` evaluates the w-channel gain before refining.
RAY_GRID = 12
#: Most refinement steps (secant on dσ/dω) `peak_angle` spends after its grid. A sharp
#: resonance far inside a grid cell took 10 (hypothesis draw seed 0, θ = 1.5, pole radius
#: 0.89, circle 0.92: 8 steps stopped 0.28 % below the peak); the stopping rules below end
#: the refinement long before this wherever the peak is smooth.
PEAK_STEPS = 16
#: `peak_angle` stops when the gain still to gain at the peak, predicted from the slope and the
#: secant curvature (s²/(2|σ_ωω|)), is below this fraction of σ: 1e-8 moves the crossing radius
#: by ~1e-8/|d log σ/d log r| relative, far below the rate search's tolerance (1e-4).
PEAK_GAIN_RTOL = 1e-8

#: (σ, dσ/dr, dσ/dω) of the w-channel gain at a point r·e^{jω} (`circle_point`).
CirclePoint = tuple[float, float, float]


def circle_point(ss: StateSpaceBlocks, r: float, omega: float) -> CirclePoint:
    """(σ, dσ/dr, dσ/dω) at z = r·e^{jω} from one gain evaluation (`_w_channel_derivative`):
    dσ/dr = Re(e^{jω}c), dσ/dω = −r·Im(e^{jω}c); on the real axis dσ/dω = 0 (σ is even in ω
    about 0 and π for a real system)."""
    z = _on_ray(r, omega)
    sigma, c = _w_channel_derivative(ss, z)
    turn = complex(math.cos(omega), math.sin(omega)) * c
    d_omega = 0.0 if z.imag == 0.0 else -r * turn.imag
    return sigma, turn.real, d_omega


def _brent_peak(ss: StateSpaceBlocks, radius: float, grid: np.ndarray, i: int,
                seen: dict[float, CirclePoint]) -> tuple[float, CirclePoint, float]:
    """`peak_angle`'s fallback: Brent's method on σ in [grid[i−1], grid[i+1]] (≤ 10 steps)."""
    from scipy.optimize import minimize_scalar

    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])

    def minus(om: float) -> float:
        seen[float(om)] = circle_point(ss, radius, float(om))
        return -seen[float(om)][0]

    minimize_scalar(minus, bounds=(a, b), method="bounded",
                    options={"xatol": 1e-4 * (b - a), "maxiter": 10})
    best = max(seen, key=lambda om: seen[om][0])
    return best, seen[best], math.nan


def peak_angle(ss: StateSpaceBlocks, radius: float,
               known: dict[float, CirclePoint] | None = None
               ) -> tuple[float, CirclePoint, float]:
    """The angle ω ∈ [0, π] of the largest w-channel gain on the circle ``|z| = radius``,
    (σ, dσ/dr, dσ/dω) there and the secant estimate of d²σ/dω² of the last bracket (nan when
    no bracket was refined): a grid of `RAY_GRID` angles (``known``: points already
    evaluated on this circle, reused by angle), then regula falsi (Illinois) on dσ/dω = 0
    between the best grid angle and the neighbour across which dσ/dω changes sign, at most
    `PEAK_STEPS` steps, stopping once a step moves ω by less than 1e-4 of the grid spacing or
    the predicted rest of the peak, s²/(2|σ_ωω|) with σ_ωω the bracket's secant slope of s,
    is below `PEAK_GAIN_RTOL`·σ; without such a sign change (e.g. toward the axis, where
    dσ/dω = 0) Brent's method on σ over the two neighbouring cells (`_brent_peak`). The slope
    comes with each gain at no O(n³) cost (`circle_point`), so this needs about half the
    evaluations of Brent's method on σ alone. The largest gain seen is returned;
    nothing is certified from it (a missed peak only makes the Riccati test fail)."""
    grid = np.linspace(0.0, math.pi, RAY_GRID)
    seen: dict[float, CirclePoint] = dict(known or {})
    for om in grid:
        if float(om) not in seen:
            seen[float(om)] = circle_point(ss, radius, float(om))
    i = int(np.argmax([seen[float(om)][0] for om in grid]))
    best = float(grid[i])
    s_i = seen[best][2]
    j = i + 1 if s_i > 0 else i - 1
    if s_i == 0.0 or not 0 <= j < RAY_GRID or not math.isfinite(s_i) \
            or not seen[float(grid[j])][2] * s_i < 0:
        # No sign change of the slope toward a neighbour (the best or the neighbour is on the
        # axis, where dσ/dω = 0): Brent's method on σ over both neighbouring cells, as before.
        return _brent_peak(ss, radius, grid, i, seen)
    other = float(grid[j])
    (a, sa), (b, sb) = (best, s_i), (other, seen[other][2])
    xtol = 1e-4 * math.pi / (RAY_GRID - 1)
    last, side = best, 0
    for _ in range(PEAK_STEPS):
        om = b - sb * (b - a) / (sb - sa)
        if not min(a, b) < om < max(a, b):
            om = 0.5 * (a + b)
        point = circle_point(ss, radius, om)
        seen[om] = point
        if point[0] > seen[best][0]:
            best = om
        if not math.isfinite(point[2]) or abs(om - last) < xtol:
            break
        curvature = abs((sb - sa) / (b - a))
        if point[2] ** 2 <= 2.0 * PEAK_GAIN_RTOL * point[0] * curvature:
            break  # at most PEAK_GAIN_RTOL·σ left to gain
        last = om
        if point[2] * sa > 0:  # replaces a; Illinois: halve the kept end's slope twice in a row
            a, sa = om, point[2]
            sb, side = (0.5 * sb, -1) if side == -1 else (sb, -1)
        else:
            b, sb = om, point[2]
            sa, side = (0.5 * sa, 1) if side == 1 else (sa, 1)
    return best, seen[best], (sb - sa) / (b - a)


@dataclass
class RateSearch:
    """Bookkeeping of `smallest_rate`: the bracket, the feasible points and the solve count."""

    lo: float  # no certificate at or below lo (ρ(A), a refuted rate or a w-channel peak)
    hi: float = math.inf  # certified by a Riccati solution (inf until one is found)
    best: tuple[np.ndarray, float] | None = None
    solves: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)  # (ᾱ, 1 − |pole|)
    lower_proof: str = "spectral radius of A"
    pole: complex | None = None  # closed-loop pole of the latest solution, not yet used
    # The latest feasible (ᾱ, 𝒫, λ) whose closed-loop pole is not computed yet: only a search
    # that goes on after it reads the pole (`_settle_pole`), so a first test that closes the
    # bracket spends no LU and Arnoldi on it.
    pending: tuple[float, np.ndarray, float] | None = None
    rays: dict[float, float] = field(default_factory=dict)  # searched angle -> lo back then


#: Fraction of the way from the predicted optimum back to the certified rate that a step tests.
PREDICTION_BACKOFF = 0.1


def _predict(points: list[tuple[float, float]]) -> float | None:
    """ᾱ* from the two feasible points nearest the optimum: (1 − r)² is linear in ᾱ there."""
    if len(points) < 2:
        return None
    (a1, g1), (a2, g2) = sorted(points)[:2]
    s1, s2 = g1 * g1, g2 * g2
    if a2 == a1 or s2 <= s1:
        return None
    return a1 - s1 * (a2 - a1) / (s2 - s1)


def _test(ss: StateSpaceBlocks, st: RateSearch, alpha: float, eps: float) -> None:
    """One Riccati test at ᾱ, updating the bracket (the closed-loop data of a feasible one
    follow on demand, `_settle_pole`)."""
    cand = contraction_riccati(ss, alpha, eps, schur_known=True)
    st.solves += 1
    if cand is None:
        if alpha > st.lo:
            st.lo, st.lower_proof = alpha, "failed Riccati test"
        return
    st.hi, st.best = alpha, cand
    st.pending = (alpha, *cand)


def _settle_pole(ss: StateSpaceBlocks, st: RateSearch) -> None:
    """The dominant closed-loop pole of the pending feasible test (`RateSearch.pending`)."""
    if st.pending is None:
        return
    (alpha, metric, lam), st.pending = st.pending, None
    try:
        pole = closed_loop_pole(ss, alpha, metric * alpha**2 / lam)
    except (np.linalg.LinAlgError, ArpackError, ArpackNoConvergence, ValueError):
        return
    if 0 < abs(pole) < 1.0:
        st.points.append((alpha, 1.0 - abs(pole)))
        st.pole = pole


def _raise_lower(ss: StateSpaceBlocks, st: RateSearch, omega: float, rtol: float,
                 top: float, why: str, at_top: tuple[float, float] | None = None,
                 start: tuple[float, float, float] | None = None,
                 points: dict[float, CirclePoint] | None = None) -> float | None:
    """Radial root on the ray at ω (skipped when this ray was searched above st.lo already);
    ``start``: (r, σ, dσ/dr) of a point with σ ≥ 1 on it (`radial_root`)."""
    key = round(omega, 6)
    if st.rays.get(key, -math.inf) >= st.lo:
        return None
    st.rays[key] = st.lo
    low = radial_root(ss, omega, st.lo, top, rtol, at_top, start, points)
    # From a start at st.lo the root may be st.lo itself (the peak already sits on it).
    if low is None or low < st.lo or (low == st.lo and start is None):
        return None
    st.lo, st.lower_proof = low, why
    return low


@blas_threads()
def smallest_rate(ss: StateSpaceBlocks, upper: float = 1.0, rtol: float = 1e-6,
                  eps: float = REGULARIZATION, radius: float | None = None,
                  max_solves: int = 40) -> KypCertificate | None:
    r"""Smallest ᾱ ∈ (ρ(A), upper] with a BRL certificate (None if none at ``upper``).

    Keeps a bracket ``(lo, hi]``: ``hi`` holds a Riccati solution; ``lo`` is a rate shown
    out of reach (ρ(A), a failed Riccati test, or a radius ``r`` with
    ``σ_max(C₁(re^{jω}I − A)⁻¹B₁) ≥ 1``), and stops at ``hi − lo ≤ rtol·hi``.

    1. Candidate: the w-channel gain crosses 1 on the real axis (ω = 0 or π, where the peak
       usually is) at a radius found by safeguarded Newton (`radial_root`, a few O(n³)
       solves); one Riccati test at that radius·(1 + rtol/2), unless one complex gain one
       grid step off the axis on that circle is already ≥ 1 (it refutes the rate). If no test
       held, the peak of the circle |z| = lo (`peak_angle`), its radial crossing, followed
       along r*(ω) (`_climb`), and one test just above it. When a test holds, the search is
       over.
    2. Otherwise, after each feasible test the angle of the Riccati closed loop's dominant
       pole (`closed_loop_pole`), which tends to the peak frequency, gives a new radial
       root; then a safeguarded secant on ``(1 − |pole|)²`` (linear in ᾱ near ᾱ*), kept on
       the feasible side where a test converges fast; bisection when neither applies.

    Typically 1–2 Riccati solves where bisection needs ~log₂(1/rtol), half of them slow
    infeasible tests. The caller validates the returned (𝒫, λ) in float64.

    Why a gain ≥ 1 refutes: if (4a) held at ᾱ with 𝒫 ≻ 0, λ ≥ 0 and ``σ_max(G(z)) ≥ 1`` for
    ``G(z) = C₁(zI − A)⁻¹B₁`` at ``|z| = ᾱ``, take unit singular vectors ``G(z)v = σu`` and the
    complex Δ = v u*/σ (‖Δ‖ ≤ 1): then z is an eigenvalue of A + B₁ΔC₁ with eigenvector
    x = (zI − A)⁻¹B₁v, and ξ = (x, ΔC₁x) (|Δw| ≤ |Δv|) in the Hermitian form of (4a) gives
    ``ᾱ²x*𝒫x ≥ |z|²x*𝒫x + λ(|Δv|² − |Δw|²)``, so a strict certificate would need |z| < ᾱ.
    (The gain is computed in float64: the lower bound is a diagnostic, not a proof; only the
    upper end, the certified rate, is proved.)
    """
    if radius is None:
        radius = float(np.abs(np.linalg.eigvals(ss.A)).max()) if ss.A.size else 0.0
    if radius >= upper:
        return None
    ss = SearchBlocks.of(ss)  # its complex gains share one Hessenberg reduction of A
    st = RateSearch(lo=radius)
    _frequency_candidates(ss, st, upper, rtol, eps)
    if st.best is None:
        _test(ss, st, upper, eps)
        if st.best is None:
            return None
    while st.hi - st.lo > rtol * st.hi and st.solves < max_solves:
        alpha = _next_rate(ss, st, rtol)
        if alpha is None:
            break
        _test(ss, st, alpha, eps)
    assert st.best is not None
    # Report a rate a quarter tolerance above the Riccati solution's: with (𝒫, λ) fixed this
    # adds (ᾱ'² − ᾱ²)𝒫 ≻ 0 to (4a), a margin the strict float64 check sees at once (the
    # Riccati equation alone leaves the LMI singular up to the tiny regularization).
    value = min(upper, st.hi * (1 + rtol / 4)) if st.hi < upper else st.hi
    return KypCertificate(st.best[0], st.best[1], value, st.solves,
                          lower=st.lo, lower_proof=st.lower_proof)


def _frequency_candidates(ss: StateSpaceBlocks, st: RateSearch, upper: float, rtol: float,
                          eps: float) -> None:
    """Step 1 of `smallest_rate`: test just above the real-axis crossing, unless one gain on
    that circle already refutes it; then (if no test held) just above the crossing at the
    peak angle of the circle."""
    radius = st.lo
    if ss.C1.shape[0] == 0 or not ss.B1.any() or not ss.C1.any():
        # No w-channel: a Stein inequality, feasible at every rate above ρ(A).
        if 0 < radius * (1 + rtol / 2) < upper:
            _test(ss, st, radius * (1 + rtol / 2), eps)
        return
    gains = {om: _w_channel(ss, _on_ray(upper, om), slope=True) for om in (0.0, math.pi)}
    omega = max(gains, key=lambda om: gains[om][0])
    low = _raise_lower(ss, st, omega, rtol, upper, "w-channel gain ≥ 1 on the real axis",
                       gains[omega])
    known: dict[float, CirclePoint] = {}
    if low is not None and low * (1 + rtol / 2) < upper:
        alpha = low * (1 + rtol / 2)
        # Probe the circle |z| = ᾱ one grid step off the axis (one complex gain): σ ≥ 1 there
        # refutes ᾱ, so the Riccati test (a solve that would fail) is skipped and the peak
        # search below starts on this circle with the probe reused.
        probe = float(np.linspace(0.0, math.pi, RAY_GRID)[1 if omega == 0.0 else -2])
        known[probe] = circle_point(ss, alpha, probe)
        if known[probe][0] >= 1.0:
            st.lo, st.lower_proof = alpha, "w-channel gain ≥ 1 on the circle of the axis crossing"
        else:
            _test(ss, st, alpha, eps)
            known = {}
    if st.best is None and st.lo < upper:
        # The real-axis crossing was not the peak. On the circle |z| = lo the largest gain is
        # ≥ 1 (the largest gain on |z| = r does not increase with r, and the optimum is > lo).
        peak, (sigma, d_r, _d_omega), curvature = peak_angle(ss, st.lo, known)
        start = (st.lo, sigma, d_r) if sigma >= 1.0 else None
        why = "w-channel gain ≥ 1 at the circle's peak angle"
        points: dict[float, CirclePoint] = {st.lo: (sigma, d_r, _d_omega)}
        low = _raise_lower(ss, st, peak, rtol, upper, why, start=start, points=points)
        if low is not None:
            low = _climb(ss, st, peak, curvature, points.get(low), rtol, upper, why)
        if low is not None and low * (1 + rtol / 2) < upper:
            _test(ss, st, low * (1 + rtol / 2), eps)


#: Most angle corrections `_climb` makes along the gain-1 crossing.
CLIMB_STEPS = 3


def _climb(ss: StateSpaceBlocks, st: RateSearch, omega: float, curvature: float,
           at_lo: CirclePoint | None, rtol: float, upper: float, why: str) -> float:
    r"""Follow the gain-1 crossing r*(ω) to its maximum from the crossing st.lo on the ray ω.

    The peak angle of a circle moves with its radius, so the crossing on the ray of the peak
    of a smaller circle can sit below the optimum by more than the tolerance. At the crossing
    (σ = 1) with slopes σ_r, σ_ω and curvature σ_ωω < 0 (the peak search's secant estimate),
    a Newton step in ω gains about σ_ω²/(2|σ_ωω|) in σ, i.e. raises the crossing by that over
    |σ_r|; when this is below rtol·r/8 the crossing is kept, else the step is taken and the
    radial root climbs from the new point (`radial_root` with ``start``), at most
    `CLIMB_STEPS` times. The first step is always taken (its curvature comes from the smaller
    circle, where a peak is sharper), the later ones use the secant of σ_ω on the latest
    circle. Returns st.lo (raised or not)."""
    point = at_lo
    for k in range(CLIMB_STEPS):
        if point is None or not (math.isfinite(curvature) and curvature < 0):
            break
        sigma, d_r, d_omega = point
        if not (math.isfinite(d_omega) and d_r < 0) or d_omega == 0.0:
            break
        # The first step always goes: the curvature came from a smaller circle, where a peak
        # is sharper; later ones come from a secant on this circle.
        if k and d_omega**2 / (2.0 * -curvature) <= 0.125 * rtol * st.lo * -d_r:
            break  # the crossing is within rtol/8 of the top of r*(ω)
        step = max(-0.5 * math.pi / (RAY_GRID - 1),
                   min(0.5 * math.pi / (RAY_GRID - 1), -d_omega / curvature))
        new = min(max(omega + step, 0.0), math.pi)
        moved = circle_point(ss, st.lo, new)
        if not moved[0] > sigma or new == omega:
            break
        if math.isfinite(moved[2]) and (moved[2] - d_omega) / (new - omega) < 0:
            curvature = (moved[2] - d_omega) / (new - omega)
        omega = new
        points: dict[float, CirclePoint] = {st.lo: moved}
        low = _raise_lower(ss, st, omega, rtol, upper, why,
                           start=(st.lo, moved[0], moved[1]), points=points)
        if low is None:
            break
        point = points.get(low)
    return st.lo


def _next_rate(ss: StateSpaceBlocks, st: RateSearch, rtol: float) -> float | None:
    """Step 2 of `smallest_rate`: the next rate to test (None: the bracket closed)."""
    alpha = None
    _settle_pole(ss, st)
    if st.pole is not None:
        omega, st.pole = abs(math.atan2(st.pole.imag, st.pole.real)), None
        low = _raise_lower(ss, st, omega, rtol, st.hi,
                           "w-channel gain ≥ 1 at the closed-loop pole's angle")
        if st.hi - st.lo <= rtol * st.hi:
            return None
        if low is not None:
            alpha = low * (1 + rtol / 2)
    pred = _predict(st.points)
    if alpha is None and pred is not None and st.lo < pred < st.hi:
        # Safeguarded secant: stay on the feasible side, where a test is cheap.
        alpha = max(pred * (1 + rtol / 4), pred + PREDICTION_BACKOFF * (st.hi - pred))
    if alpha is None or not st.lo < alpha < st.hi:
        alpha = 0.5 * (st.lo + st.hi)
    return min(alpha, st.hi * (1 - rtol / 8))


@blas_threads()
def bisection_rate(ss: StateSpaceBlocks, upper: float = 1.0, rtol: float = 1e-6,
                   eps: float = REGULARIZATION) -> KypCertificate | None:
    """The earlier search: plain bisection on ᾱ ∈ (ρ(A), upper], one Riccati test a step.

    Kept as the reference the tests compare `smallest_rate` with.
    """
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
#: Smallest first proof margin τ of the gain (`margin_riccati`); later ones follow the rounding
#: bound. The float64 rounding bound grows with n: the first τ is `first_margin` (n).
FIRST_MARGIN = 1e-8


def first_margin(n: int) -> float:
    """τ to try first at state dimension n: 2e-8·(n/8)^1.5, the margin that passed on random
    Lipschitz R2DNs (n = 64: 3e-7, 128: 8e-7, 512: 5e-6) times 2, so one solve usually
    suffices; at least `FIRST_MARGIN`."""
    return max(FIRST_MARGIN, 2e-8 * (n / 8) ** 1.5)
#: Largest τ tried on the first candidate, and on the denser grid's retry.
MAX_MARGIN, RETRY_MAX_MARGIN = 1e-5, 1e-2
#: Above this state dimension the first τ grows like (n/`MARGIN_GROWTH_FROM`)² from `MAX_MARGIN`.
MARGIN_GROWTH_FROM = 1024


def start_margin(n: int, max_margin: float = MAX_MARGIN) -> float:
    """The first τ of `_certify_candidate`: ``min(first_margin(n), max(max_margin,
    MAX_MARGIN·(n/1024)²))``.

    Up to n = 1024 this is ``min(first_margin(n), max_margin)``. Above it the float64 check's
    rounding bound outgrows `MAX_MARGIN` (on the benchmark R2DNs it grew like n^2.4 between
    n = 512 and 1024, and at n = 2048 τ = 1e-5 failed the check and cost a second Riccati
    solve, ~30 s): starting at MAX_MARGIN·(n/1024)² (4e-5 at n = 2048) spends one solve, for
    a proved γ about 4·(τ − 1e-5) relative above what the smallest passing τ would give.
    """
    growth = MAX_MARGIN * (n / MARGIN_GROWTH_FROM) ** 2
    return min(first_margin(n), max(max_margin, growth))
#: After the first candidate fails at every τ: how much denser the retry grid is.
RETRY_GRID_FACTOR = 4

#: Validates a candidate certificate in float64 (the caller's `lmi.validate`).
Accept = Callable[[KypCertificate], Validation]


def margin_riccati(ss: StateSpaceBlocks, kappa: float, gamma: float, tau: float,
                   eps: float | None = None) -> np.ndarray | None:
    r"""X of the BRL for the (κ, γ)-scaled system with a margin τ in every direction, or None.

    The inputs are amplified by ``c = 1/√(1 − τ)`` (B̂ → cB̂, D̂ → cD̂) and the regularization
    is ε (default τ). With T = diag(I, I/c) the BRL matrix of the amplified, regularized
    system N_c ⪰ 0 gives ``N(X) = T N_c T + diag(ε s² I, τ I) ⪰ diag(ε s² I, τ I)`` for the
    original one: unlike the plain Riccati *equation*, whose N(X) is singular, this X leaves
    a margin (ε in the state directions, τ in the input directions) that the float64 check
    can see. It needs ``‖[Ĉ; √ε·s·I](zI − Â)⁻¹cB̂ + cD̂‖_∞ < 1``: (κ, γ) a little inside the
    feasible set. The ε rows add ``√ε·s·‖(zI − Â)⁻¹B̂‖`` to the gain, which near a lightly
    damped pole (|λ| → 1) is large; a smaller ε then keeps the test feasible
    (`_certify_candidate`).
    """
    a, b, c, d = _gain_system(ss, kappa, gamma)
    amp = 1.0 / math.sqrt(1.0 - tau)
    return bounded_real_riccati(a, amp * b, c, amp * d, eps=tau if eps is None else eps,
                                schur_known=True)


#: State-direction margins ε/τ of the successive proof ladders (the next only if one fails).
STATE_MARGIN_FRACTIONS = (1.0, 1e-2)


def _certify_candidate(ss: StateSpaceBlocks, kappa: float, gamma: float,
                       mu_at: Callable[[float], float] | None = None,
                       accept: Accept | None = None, max_margin: float = MAX_MARGIN
                       ) -> tuple[KypCertificate | None, int]:
    """Prove (κ, γ) raised by the smallest margin that passes: (certificate, solves).

    For τ = `start_margin` (n), …: one `margin_riccati` solve at ``κ(1 + 4τ)`` and
    ``γ' = max(γ, √μ(κ(1+4τ)))·(1 + 4τ)`` (``mu_at``: the frequency-domain μ*(κ)), then
    ``accept`` (the float64 check). A failed Riccati solve multiplies τ by 10; a failed check
    raises τ to what its rounding bound asks (λ_min ≈ τ/2, the bound shrinking about like
    1/τ): ``max(3τ, 3√(bound·τ))``. The ladder runs with the state-direction margin ε = τ;
    only if it proves nothing is it rerun with the smaller ε = τ·`STATE_MARGIN_FRACTIONS`
    (lightly damped poles, see `margin_riccati`), so wherever ε = τ succeeds the result is
    the same. Without ``accept`` the first Riccati solution is returned.

    The ladder starts at `start_margin` (n, max_margin) and runs up to
    ``max(max_margin, 10·first_margin(n))``: from n ≈ 256 on the rounding bound outgrows
    `MAX_MARGIN`, and one more Riccati solve on the same candidate is far cheaper than the
    4× denser frequency grid of the retry that a stop at `MAX_MARGIN` would trigger (at
    n = 2048 a retry costs ~100 dense complex slices).
    """
    n = ss.A.shape[0]
    solves = 0
    limit = max(max_margin, 10 * first_margin(n))
    for fraction in STATE_MARGIN_FRACTIONS:
        tau = start_margin(n, max_margin)
        while tau <= limit:
            k = kappa * (1 + 4 * tau)
            g = max(gamma, math.sqrt(mu_at(k)) if mu_at is not None else gamma) * (1 + 4 * tau)
            x = margin_riccati(ss, k, g, tau, fraction * tau)
            solves += 1
            if x is None:
                tau *= 10
                continue
            cert = KypCertificate(x / g, k / g, g, solves, margin=tau)
            if accept is None:
                return cert, solves
            proof = accept(cert)
            cert.proof = proof
            if proof.holds:
                return cert, solves
            err = proof.error if math.isfinite(proof.error) else 10 * tau
            tau = max(3 * tau, 3 * math.sqrt(err * tau))
    return None, solves


def frequency_gain(ss: StateSpaceBlocks, grid: int | None = None,
                   accept: Accept | None = None) -> tuple[KypCertificate | None, int, bool]:
    """Candidate (κ*, γ*) from the frequency domain, then one or two Riccati solves.

    `GainSearch` minimizes max_ω μ(κ, ω) (μ = γ²) over κ on a frequency grid with refined
    peaks: a lower estimate of the optimum that costs one eigen-decomposition of A plus one
    O(n³) product/factorization per frequency. The estimate is then *proved*: the Riccati
    solution of `margin_riccati` just inside (κ*, γ*) is an explicit 𝒫, checked in float64 by
    ``accept`` (`_certify_candidate`). If a peak was missed every Riccati test fails; the
    search is rerun on a denser grid with margins up to `RETRY_MAX_MARGIN`.

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
    cert, solves = _certify_candidate(ss, cand.kappa, cand.gamma, search.mu_max, accept)
    if cert is not None:
        return cert, solves, True
    dense = GainSearch(ss, RETRY_GRID_FACTOR * len(cand.omegas))
    cand = dense.run()
    if cand is None:
        return None, solves, dense.blocked
    cert, more = _certify_candidate(ss, cand.kappa, cand.gamma, dense.mu_max, accept,
                                    RETRY_MAX_MARGIN)
    if cert is not None:
        cert.solves = solves + more
    return cert, solves + more, cert is not None


def smallest_gain(ss: StateSpaceBlocks, gamma_hint: float | None = None,
                  kappa_hint: float | None = None, rtol: float = 1e-6,
                  accept: Accept | None = None) -> KypCertificate | None:
    """Smallest certified γ with a scalar multiplier (R2DN, LTI; D₁₁ = 0).

    The frequency-domain candidate plus 1–2 Riccati solves (`frequency_gain`, each
    candidate checked by ``accept``); if that yields nothing, the slower pure-Riccati search
    `bisection_gain` (hints: e.g. the implied certificate γ, κ = λγ). Runs with the BLAS
    threads of the enclosing certificate (one outside one; see `.blas`).
    """
    nu, _, _, ny = ss.sizes
    with blas_threads():
        solves = 0
        if nu and ny:
            cert, solves, settled = frequency_gain(ss, accept=accept)
            if settled:
                return cert
        cert = bisection_gain(ss, gamma_hint, kappa_hint, rtol)
        if cert is not None:
            cert.solves += solves
        return cert
