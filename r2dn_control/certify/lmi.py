r"""The incremental certificate LMIs of docs/theory.md §4: one builder, checked strictly in float64.

With ξ = (Δx, Δw, Δu), G = [A B₁ B₂], C_v = [C₁ D₁₁ D₁₂] (D₁₁ = 0 for R2DN) and
C_y = [C₂ D₂₁ D₂₂], the dissipation LMI at rate ᾱ is

$$
M = \bar\alpha^2 I_x^\top \mathcal P I_x - G^\top \mathcal P G - \Pi
    + C_y^\top Q C_y + \mathrm{sym}(I_u^\top S C_y) + I_u^\top R I_u \succeq 0,
$$

with the multiplier term $\Pi = \lambda(C_v^\top C_v - I_w^\top I_w)$ (scalar λ, for a
1-Lipschitz φ) or $\Pi = \mathrm{sym}(I_w^\top \Lambda (C_v - I_w))$ (diagonal Λ, for a
slope-restricted σ). Contraction (4a) drops the supply terms and the Δu columns; the γ-form of
the gain LMI replaces the supply by ``μ I_uᵀI_u − C_yᵀC_y`` (μ = γ², 𝒫 and Λ scaled by γ).

`lmi_terms` lists M as a signed sum of products ``Lᵀ·Mid·R``. The same list is assembled
by numpy (the float64 proof, `dissipation_matrix`), by cvxpy (the SDP, `.sdp`) and
with absolute values (the rounding-error bound of `validate`), so the solver and the
re-check can never drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import torch

from ..nn.explicit import ExplicitModel
from .lanczos import largest_eigenpair

#: Unit round-off of float64.
UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2
#: Safety factor on the eigensolver's backward error bound p(n)·u·‖M‖₂ (LAPACK: p(n) = O(n)).
EIGEN_ERROR_FACTOR = 4.0


@dataclass(frozen=True)
class StateSpaceBlocks:
    """Float64 numpy copies of an explicit model's matrices."""

    A: np.ndarray
    B1: np.ndarray
    B2: np.ndarray
    C1: np.ndarray
    C2: np.ndarray
    D11: np.ndarray
    D12: np.ndarray
    D21: np.ndarray
    D22: np.ndarray

    @classmethod
    def from_explicit(cls, model: ExplicitModel, dtype: torch.dtype | None = None
                      ) -> StateSpaceBlocks:
        """The blocks of ``model`` in float64; with ``dtype``, as rounded to that dtype first.

        ``dtype=torch.float32`` gives exactly the matrices a float32 rollout multiplies with
        (docs/theory.md §5): a certificate of those blocks covers the float32 model.
        """
        def np64(t: torch.Tensor) -> np.ndarray:
            t = t.detach().to(device="cpu")
            if dtype is not None:
                t = t.to(dtype)
            return t.to(torch.float64).numpy()

        nv = model.C1.shape[0]
        d11 = np.zeros((nv, nv)) if model.D11 is None else np64(model.D11)
        return cls(np64(model.A), np64(model.B1), np64(model.B2), np64(model.C1), np64(model.C2),
                   d11, np64(model.D12), np64(model.D21), np64(model.D22))

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(nu, nx, nv, ny)``."""
        return self.B2.shape[1], self.A.shape[0], self.C1.shape[0], self.C2.shape[0]

    def is_finite(self) -> bool:
        """True when every entry of every block is finite."""
        return all(np.all(np.isfinite(getattr(self, k))) for k in self.__dataclass_fields__)


# --------------------------------------------------------------------------- the one builder
@dataclass(frozen=True)
class Term:
    """One summand ``sign · Lᵀ · mid · R`` of M (``mid`` None means the identity)."""

    sign: float
    left: np.ndarray
    mid: Any
    right: np.ndarray


def _selector(rows: int, cols: int, start: int) -> np.ndarray:
    sel = np.zeros((rows, cols))
    sel[:, start:start + rows] = np.eye(rows)
    return sel


def lmi_terms(ss: StateSpaceBlocks, metric: Any, multiplier: Any, rate: float = 1.0,
              supply: tuple | None = None, mu: Any = None, xp: Any = np) -> list[Term]:
    r"""M of the module docstring as a list of `Term` (any array backend).

    Parameters
    ----------
    ss : StateSpaceBlocks
    metric : (nx, nx) array or cvxpy expression
        The Lyapunov matrix 𝒫.
    multiplier : scalar, (nv,) array, cvxpy expression or None
        λ (0-dimensional: 1-Lipschitz φ) or the diagonal of Λ (1-dimensional: slope-restricted
        σ); None for no multiplier term (an LTI system).
    rate : float
        Contraction rate ᾱ.
    supply : (Q, S, R) or None
        Supply-rate matrices.
    mu : scalar or cvxpy expression, optional
        γ-form of the gain LMI: adds ``μ I_uᵀI_u − C_yᵀC_y``.
    xp : module
        Array backend providing ``diag`` (``numpy`` or ``cvxpy``).
    """
    nu, nx, nv, _ = ss.sizes
    with_u = supply is not None or mu is not None
    n = nx + nv + (nu if with_u else 0)
    g = np.hstack([ss.A, ss.B1] + ([ss.B2] if with_u else []))
    i_x, i_w = _selector(nx, n, 0), _selector(nv, n, nx)
    terms = [Term(1.0, i_x, rate**2 * metric, i_x), Term(-1.0, g, metric, g)]
    if multiplier is not None and nv:
        c_v = np.hstack([ss.C1, ss.D11] + ([ss.D12] if with_u else []))
        if getattr(multiplier, "ndim", 0) == 0:
            terms += [Term(-1.0, c_v, multiplier, c_v), Term(1.0, i_w, multiplier, i_w)]
        else:
            lam = xp.diag(multiplier)
            terms += [Term(-1.0, i_w, lam, c_v), Term(-1.0, c_v, lam, i_w),
                      Term(2.0, i_w, lam, i_w)]
    if with_u:
        c_y = np.hstack([ss.C2, ss.D21, ss.D22])
        i_u = _selector(nu, n, nx + nv)
        if supply is not None:
            q, s, r = supply
            terms += [Term(1.0, c_y, q, c_y), Term(1.0, i_u, s, c_y), Term(1.0, c_y, s.T, i_u),
                      Term(1.0, i_u, r, i_u)]
        if mu is not None:
            terms += [Term(-1.0, c_y, None, c_y), Term(1.0, i_u, mu, i_u)]
    return terms


def _dense_product(left: np.ndarray, mid: Any, right: np.ndarray) -> Any:
    if mid is None:
        return left.T @ right
    if getattr(mid, "ndim", 0) == 0:
        return mid * (left.T @ right)
    return left.T @ mid @ right


def _support(factor: np.ndarray) -> slice:
    """The smallest column range of ``factor`` outside which every entry is zero."""
    nonzero = np.flatnonzero(np.any(factor != 0, axis=0))
    return slice(int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else slice(0, 0)


def _product(term: Term) -> Any:
    """``Lᵀ·mid·R``; in numpy only the block on the nonzero columns of L and R is multiplied.

    The skipped entries are sums of products with an exact zero factor, hence exactly 0 in
    float64 as well, and the kept ones are the same dot products (same inner dimension k), so
    the bound of `rounding_bound` covers the result as it covers the full product. This is
    what makes the selectors I_x, I_w, I_u and the zero D₁₁ columns of C_v free.
    """
    mid = term.mid
    if not isinstance(mid, (np.ndarray, np.generic, float, int, type(None))):
        return _dense_product(term.left, mid, term.right)  # cvxpy expression: as written
    rows, cols = _support(term.left), _support(term.right)
    out = np.zeros((term.left.shape[1], term.right.shape[1]))
    if rows.stop > rows.start and cols.stop > cols.start:
        left, right = term.left[:, rows], term.right[:, cols]
        if _is_identity(left) and _is_identity(right) and mid is not None \
                and getattr(mid, "ndim", 0) == 2:
            block = np.asarray(mid, dtype=np.float64)  # Iᵀ·mid·I is mid, exactly
        else:
            block = _dense_product(left, mid, right)
        out[rows, cols] = block
    return out


def _is_identity(m: np.ndarray) -> bool:
    return m.shape[0] == m.shape[1] and bool(np.array_equal(m, np.eye(m.shape[0])))


def assemble(terms: list[Term]) -> Any:
    """``sym(Σ sign·Lᵀ·mid·R)`` in whatever backend the terms' ``mid`` use."""
    parts = [_product(t) if t.sign == 1.0 else t.sign * _product(t) for t in terms]
    total = _left_sum(parts)
    return 0.5 * (total + total.T)


def _left_sum(parts: list[Any]) -> Any:
    """``((p₀ + p₁) + p₂) + …`` (the float64 check and the rounding bound sum in this order)."""
    if not parts:
        raise ValueError("an LMI needs at least one term, got none")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def magnitude(terms: list[Term]) -> np.ndarray:
    """``Σ |L|ᵀ·|mid|·|R|`` (numpy terms): bounds each entry's float64 rounding error."""
    parts = []
    for t in terms:
        mid = None if t.mid is None else np.abs(np.asarray(t.mid, dtype=np.float64))
        parts.append(abs(t.sign) * _product(Term(1.0, np.abs(t.left), mid, np.abs(t.right))))
    return np.asarray(_left_sum(parts))


def _abs_apply(factor: np.ndarray, mid: Any, vec: np.ndarray) -> np.ndarray:
    """``|mid|·(|factor|·vec)`` for a nonnegative vector (``mid`` None, scalar or matrix)."""
    out = np.abs(factor) @ vec
    if mid is None:
        return out
    mid = np.abs(np.asarray(mid, dtype=np.float64))
    return mid * out if mid.ndim == 0 else mid @ out


def magnitude_row_sums(terms: list[Term]) -> np.ndarray:
    """Row sums of ``½(|M|_abs + |M|_absᵀ)``, |M|_abs = `magnitude` (terms), in O(N²).

    ``|M|_abs·1 = Σ |sign|·|L|ᵀ(|mid|(|R|·1))`` and ``|M|_absᵀ·1 = Σ |sign|·|R|ᵀ(|mid|ᵀ(|L|·1))``:
    matrix–vector products instead of the N×N magnitude matrix (whose products cost as much
    as forming M). All summands are nonnegative, so these sums carry a relative rounding
    error ≤ γ_N ≪ 10⁻⁶, which the factor (1 + 10⁻⁶) of `rounding_bound` covers.
    """
    if not terms:
        return np.zeros(0)
    size = terms[0].left.shape[1]
    ones = np.ones(size)
    rows = np.zeros(size)
    cols = np.zeros(size)
    for t in terms:
        mid_t = t.mid.T if getattr(t.mid, "ndim", 0) == 2 else t.mid
        rows = rows + abs(t.sign) * (np.abs(t.left).T @ _abs_apply(t.right, t.mid, ones))
        cols = cols + abs(t.sign) * (np.abs(t.right).T @ _abs_apply(t.left, mid_t, ones))
    return 0.5 * (rows + cols)


def dissipation_matrix(
    ss: StateSpaceBlocks,
    metric: np.ndarray,
    multiplier: np.ndarray | float | None,
    rate: float = 1.0,
    supply: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The symmetric LMI matrix M in float64 (contraction if ``supply`` is None, else (Q,S,R)).

    Parameters
    ----------
    ss : StateSpaceBlocks
    metric : ndarray (nx, nx)
        Candidate Lyapunov matrix 𝒫.
    multiplier : float or ndarray (nv,)
        Scalar λ (1-Lipschitz nonlinearity) or diagonal of Λ (slope-restricted σ).
    rate : float
        Contraction rate ᾱ.
    supply : (Q, S, R) or None
        Supply rate; None gives the contraction LMI (4a) on (Δx, Δw).
    """
    metric, mult, sup = _as_float64(metric, multiplier, supply)
    return assemble(lmi_terms(ss, metric, mult, rate=rate, supply=sup))


def _as_float64(metric, multiplier, supply):
    metric = np.asarray(metric, dtype=np.float64)
    mult = None if multiplier is None else np.asarray(multiplier, dtype=np.float64)
    sup = None if supply is None else tuple(np.asarray(a, dtype=np.float64) for a in supply)
    return metric, mult, sup


def min_eigenvalue(matrix: np.ndarray) -> float:
    """Smallest eigenvalue of a symmetric matrix (float64)."""
    return float(np.linalg.eigvalsh(matrix)[0]) if matrix.size else math.inf


def relative_margin(ss: StateSpaceBlocks, metric: np.ndarray, multiplier: np.ndarray | float,
                    rate: float = 1.0, supply: tuple | None = None) -> float:
    """``λ_min(M) / max(1, max|𝒫_ij|)`` (a diagnostic; `validate` is the strict test)."""
    m = dissipation_matrix(ss, metric, multiplier, rate, supply)
    return min_eigenvalue(m) / max(1.0, float(np.abs(metric).max()) if metric.size else 1.0)


# --------------------------------------------------------------------------- strict check
def lipschitz_supply(gamma: float, nu: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Q, S, R) = (−I/γ, 0, γI)``: incremental ℓ₂ gain at most γ."""
    return -np.eye(ny) / gamma, np.zeros((nu, ny)), gamma * np.eye(nu)


def rounding_bound(terms: list[Term], size: int, norm: float) -> float:
    r"""An upper bound on ``|λ_min(fl(M)) − λ_min(M)|`` plus the eigensolver's error.

    Each entry of a product ``Lᵀ·mid·R`` with inner dimensions k is computed with error at
    most ``γ_k (|L|ᵀ|mid||R|)_ij`` (γ_k = ku/(1 − ku)); the sum of the terms and the
    symmetrization add a few more roundings. With ``|E| ≤ γ·|M|_abs`` entrywise (|M|_abs
    symmetrized), ‖E‖₂ ≤ γ‖|M|_abs‖₂ ≤ γ·(max row sum of |M|_abs). The symmetric eigensolver
    is backward stable: its λ_min is exact for ``fl(M) + F`` with ‖F‖₂ ≤ p(n)·u·‖fl(M)‖₂,
    taken here as ``4n·u·norm`` with ``norm`` ≥ ‖fl(M)‖₂ (the largest computed |λ|, inflated).
    """
    if not terms:
        return 0.0
    eig = EIGEN_ERROR_FACTOR * size * UNIT_ROUNDOFF * norm
    return formation_bound(terms) + eig * (1 + 1e-6)


def formation_bound(terms: list[Term]) -> float:
    r"""An upper bound on ``‖fl(M) − M‖₂`` for M = `assemble` (terms) (see `rounding_bound`).

    ``γ_k·(max row sum of ½(|M|_abs + |M|_absᵀ))·(1 + 10⁻⁶)``, k the longest inner dimension
    plus the number of terms plus 4 (the sums and the symmetrization).
    """
    if not terms:
        return 0.0
    inner = max((t.left.shape[0] + (0 if t.mid is None or getattr(t.mid, "ndim", 0) == 0
                                    else t.right.shape[0]) for t in terms), default=0)
    k = inner + len(terms) + 4
    gamma_k = k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)
    sums = magnitude_row_sums(terms)
    row_sums = float(sums.max()) if sums.size else 0.0
    return gamma_k * row_sums * (1 + 1e-6)


@dataclass(frozen=True)
class Validation:
    """Outcome of the strict float64 check of one candidate certificate.

    Attributes
    ----------
    holds : bool
        True only when ``λ_min(M) > error`` (and 𝒫 ≻ 0 beyond its own rounding bound for
        contraction, 𝒫 ⪰ 0 for dissipation; multiplier ≥ 0; everything finite).
    margin : float
        ``λ_min(M) / max(1, max|𝒫|)`` (relative, for reports).
    min_eigenvalue, error : float
        The computed λ_min(M) and the rounding/eigensolver bound it must exceed.
    reason : str
        Why it failed (empty when it holds).
    """

    holds: bool
    margin: float
    min_eigenvalue: float = math.nan
    error: float = math.nan
    reason: str = ""

    def __iter__(self):
        """``holds, margin = validate(...)`` (the earlier tuple form) still unpacks."""
        return iter((self.holds, self.margin))


#: From this matrix size on, `validate` first tries the shifted-Cholesky proof
#: (`cholesky_proof`, N³/3 flops) and uses the eigenvalue decomposition only if it fails.
CHOLESKY_MIN_SIZE = 384


@dataclass(frozen=True)
class CholeskyProof:
    """Outcome of `cholesky_proof`.

    ``holds``: the exact matrix is positive definite. ``shift`` s: the Cholesky factorization
    of ``fl(M) − sI`` was attempted (and ran to completion when ``holds``). ``lower``: a value
    λ_min(fl(M)) is proved to exceed (s minus the shift and factorization errors); the exact
    λ_min(M) exceeds ``lower − formation_error`` > 0. ``error``: the bound s had to exceed.
    """

    holds: bool
    shift: float
    error: float
    lower: float = math.nan
    factor: np.ndarray | None = None


def cholesky_proof(matrix: np.ndarray, formation_error: float = 0.0) -> CholeskyProof:
    r"""Prove ``M ≻ 0`` for the exact M with ``‖fl(M) − M‖₂ ≤ formation_error`` by one Cholesky
    factorization of the shifted computed matrix (docs/theory.md §4, §6).

    With u the unit round-off, N the size and γ = (N+1)u/(1 − (N+1)u): if the floating-point
    Cholesky factorization of ``A = fl(fl(M) − sI)`` runs to completion with factor R̂, then
    ``R̂ᵀR̂ = A + ΔA`` with ``|ΔA| ≤ γ|R̂ᵀ||R̂|`` (Higham, *Accuracy and Stability of Numerical
    Algorithms*, Thm. 10.3; any order of the inner products, hence blocked LAPACK with
    conventional level-3 BLAS), so ``‖ΔA‖₂ ≤ γ‖R̂‖_F² = γ·tr(A + ΔA)`` and
    ``‖ΔA‖₂ ≤ γ/(1 − γ)·tr(A)``. Subtracting s rounds each diagonal entry by at most
    ``u·|m_ii − s|``. Hence ``λ_min(M) ≥ s − formation_error − u(max|m_ii| + s) −
    γ/(1−γ)·tr(A) − N(N+4)·realmin`` (the last term covers underflow), and s is chosen as 1.01
    times what makes this positive. The proof is rigorous whenever the factorization
    succeeds; a failure proves nothing (the caller falls back to an eigenvalue bound).
    Cost N³/3 flops, against ~4N³/3 and more for a symmetric eigenvalue decomposition.
    """
    n = matrix.shape[0]
    if not n:
        return CholeskyProof(True, 0.0, 0.0, math.inf)
    u = UNIT_ROUNDOFF
    g = (n + 1) * u / (1 - (n + 1) * u)
    c = g / (1 - g) * (1 + (n + 2) * u) * (1 + 1e-6)  # on Σ|a_ii| (summation error included)
    diag = np.diag(matrix)
    if not np.all(np.isfinite(diag)) or diag.min() <= 0:
        return CholeskyProof(False, math.nan, math.inf)
    underflow = n * (n + 4) * float(np.finfo(np.float64).tiny)
    dmax, trace = float(np.abs(diag).max()), float(np.abs(diag).sum())
    # s ≥ e_form + u(dmax + s) + c(trace + n·s) + underflow, solved for s (c·n ≪ 1).
    need = (formation_error + u * dmax + c * trace + underflow) / (1 - u - c * n)
    shift = 1.01 * need
    shifted = matrix.copy()
    shifted[np.diag_indices(n)] = diag - shift
    try:
        factor = sla.cholesky(shifted, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return CholeskyProof(False, shift, need)
    if not np.all(np.isfinite(factor)):
        return CholeskyProof(False, shift, need)
    lower = shift - (u * (dmax + shift) + c * (trace + n * shift) + underflow)
    return CholeskyProof(bool(lower > formation_error), shift, need, lower, factor)


#: Up to this many rows the report's λ_min is read from R̂ᵀR̂ densely (`estimate_min_eigenvalue`).
ESTIMATE_DENSE_MAX = 64
#: Relative residual tolerance of the Lanczos estimate above that size.
ESTIMATE_RTOL = 1e-4


def estimate_min_eigenvalue(proof: CholeskyProof) -> float:
    """λ_min(fl(M)) from the factor of a successful `cholesky_proof`, for reports only.

    fl(M) − sI = R̂ᵀR̂ (s the proof's shift), so λ_min(fl(M)) ≈ s + 1/θ with θ the largest
    eigenvalue of (R̂ᵀR̂)⁻¹: up to `ESTIMATE_DENSE_MAX` rows from the eigenvalues of R̂ᵀR̂
    (dense), beyond by Lanczos on (R̂ᵀR̂)⁻¹ (two triangular solves, O(N²), per step; ARPACK to
    `ESTIMATE_RTOL`). A Ritz value θ never exceeds the largest eigenvalue, so ``s + 1/θ``
    estimates from above. (Inverse iteration stopped on a small change between steps read
    2.5× λ_min where the two smallest eigenvalues were close.) Not part of the proof (that is
    ``proof.lower``).
    """
    r = proof.factor
    if r is None or not r.size:
        return proof.lower
    n = r.shape[0]
    if n <= ESTIMATE_DENSE_MAX:
        lam = float(np.linalg.eigvalsh(r.T @ r)[0])
        return proof.shift + lam if lam > 0 else proof.lower

    def inverse(v: np.ndarray) -> np.ndarray:  # (R̂ᵀR̂)⁻¹v
        return sla.solve_triangular(r, sla.solve_triangular(r, v, trans="T", check_finite=False),
                                    check_finite=False)

    found = largest_eigenpair(inverse, n, float, tol=ESTIMATE_RTOL, maxiter=1000)
    if found is None or not found[0] > 0:
        return proof.lower
    return proof.shift + 1.0 / found[0]


def _metric_check(metric: np.ndarray, strict: bool) -> str:
    if not metric.size:
        return ""
    if metric.shape[0] >= CHOLESKY_MIN_SIZE and cholesky_proof(metric).holds:
        return ""  # 𝒫 ≻ 0 proved (the metric is exact data: no formation error)
    eigs = np.linalg.eigvalsh(metric)
    lam = float(eigs[0])
    err = EIGEN_ERROR_FACTOR * metric.shape[0] * UNIT_ROUNDOFF * float(np.abs(eigs).max()) * 1.01
    if strict and not lam > err:
        return f"metric not positive definite (λ_min(𝒫) = {lam:.3e}, rounding bound {err:.1e})"
    if not strict and lam < -err:
        return f"metric not positive semidefinite (λ_min(𝒫) = {lam:.3e})"
    return ""


def validate(ss: StateSpaceBlocks, metric: np.ndarray, multiplier: np.ndarray | float | None,
             rate: float = 1.0, supply: tuple | None = None,
             proof: str = "auto") -> Validation:
    """Check a candidate certificate in float64 with a strictly positive margin.

    The certificate holds when everything is finite, the multiplier is non-negative, 𝒫 is
    positive definite (contraction, which needs a distance) or semidefinite (dissipation),
    and the exact M of these float64 matrices is proved positive definite, whatever the
    rounding in forming and factoring it: by `cholesky_proof` (``proof="cholesky"``; with
    ``"auto"`` first from size `CHOLESKY_MIN_SIZE` on) or by the computed ``λ_min(M)``
    exceeding `rounding_bound` (``proof="eigen"``, and whenever the Cholesky proof fails).
    On the Cholesky path ``min_eigenvalue`` is the inverse-iteration estimate of
    `estimate_min_eigenvalue` (a report; the proof is the factorization) and ``error`` the
    formation bound that the proved lower bound exceeds.
    """
    if proof not in ("auto", "eigen", "cholesky"):
        raise ValueError(f"proof must be 'auto', 'eigen' or 'cholesky', got {proof!r}")
    metric, mult, sup = _as_float64(metric, multiplier, supply)
    parts = [metric] + ([] if mult is None else [mult]) + ([] if sup is None else list(sup))
    if not all(np.all(np.isfinite(p)) for p in parts) or not ss.is_finite():
        return Validation(False, math.nan, reason="non-finite certificate or system matrices")
    if mult is not None and np.any(mult < 0):
        return Validation(False, float(mult.min()), reason="negative multiplier")
    metric = 0.5 * (metric + metric.T)
    reason = _metric_check(metric, strict=supply is None)
    terms = lmi_terms(ss, metric, mult, rate=rate, supply=sup)
    m = assemble(terms)
    scale = max(1.0, float(np.abs(metric).max()) if metric.size else 1.0)
    if not reason and m.size and (proof == "cholesky" or
                                  (proof == "auto" and m.shape[0] >= CHOLESKY_MIN_SIZE)):
        form = formation_bound(terms)
        chol = cholesky_proof(m, form)
        if chol.holds:
            lam = max(estimate_min_eigenvalue(chol), chol.lower)
            return Validation(True, lam / scale, lam, form, "")
    eigs = np.linalg.eigvalsh(m) if m.size else np.array([math.inf])
    lam = float(eigs[0])
    norm = float(np.abs(eigs[[0, -1]]).max()) * (1 + 1e-6) if m.size else 0.0
    err = rounding_bound(terms, m.shape[0], norm)
    margin = lam / scale
    if not reason and not lam > err:
        reason = f"λ_min(M) = {lam:.3e} does not exceed the float64 rounding bound {err:.1e}"
    return Validation(not reason, margin, lam, err, reason)


def transform_state(ss: StateSpaceBlocks, t: np.ndarray) -> StateSpaceBlocks:
    """The blocks in coordinates ``x̃ = T x``: ``(TAT⁻¹, TB₁, TB₂, C₁T⁻¹, C₂T⁻¹)``.

    A metric 𝒫̃ certified for the transformed blocks is ``𝒫 = Tᵀ𝒫̃T`` for the original ones
    (the LMI is congruent under ``blkdiag(T, I, I)``).
    """
    t_inv = np.linalg.inv(t)
    return StateSpaceBlocks(t @ ss.A @ t_inv, t @ ss.B1, t @ ss.B2, ss.C1 @ t_inv,
                            ss.C2 @ t_inv, ss.D11, ss.D12, ss.D21, ss.D22)
