r"""The incremental certificate LMIs of math.md §4, assembled in float64 numpy.

With ξ = (Δx, Δw, Δu), G = [A B₁ B₂], C_v = [C₁ D₁₁ D₁₂] (D₁₁ = 0 for R2DN) and
C_y = [C₂ D₂₁ D₂₂], the dissipation LMI at rate ᾱ is

.. math::
    M = \bar\alpha^2 I_x^\top \mathcal P I_x - G^\top \mathcal P G - \Pi
        + C_y^\top Q C_y + \mathrm{sym}(I_u^\top S C_y) + I_u^\top R I_u \succeq 0,

with the multiplier term :math:`\Pi = \lambda(C_v^\top C_v - I_w^\top I_w)` (scalar λ, for a
1-Lipschitz φ) or :math:`\Pi = \mathrm{sym}(I_w^\top \Lambda (C_v - I_w))` (diagonal Λ, for a
slope-restricted σ). Contraction (4a) drops the supply terms and the Δu columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..nn.explicit import ExplicitModel


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
    def from_explicit(cls, model: ExplicitModel) -> StateSpaceBlocks:
        def np64(t: torch.Tensor) -> np.ndarray:
            return t.detach().to(device="cpu", dtype=torch.float64).numpy()

        nv = model.C1.shape[0]
        d11 = np.zeros((nv, nv)) if model.D11 is None else np64(model.D11)
        return cls(np64(model.A), np64(model.B1), np64(model.B2), np64(model.C1), np64(model.C2),
                   d11, np64(model.D12), np64(model.D21), np64(model.D22))

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(nu, nx, nv, ny)``."""
        return self.B2.shape[1], self.A.shape[0], self.C1.shape[0], self.C2.shape[0]


def _multiplier_term(ss: StateSpaceBlocks, multiplier: np.ndarray | float, with_u: bool) -> np.ndarray:
    nu, nx, nv, _ = ss.sizes
    cols = [ss.C1, ss.D11] + ([ss.D12] if with_u else [])
    c_v = np.hstack(cols)
    n = c_v.shape[1]
    i_w = np.zeros((nv, n))
    i_w[:, nx:nx + nv] = np.eye(nv)
    mult = np.asarray(multiplier, dtype=np.float64)
    if mult.ndim == 0:
        return float(mult) * (c_v.T @ c_v - i_w.T @ i_w)
    lam = np.diag(mult)
    half = i_w.T @ lam @ (c_v - i_w)
    return half + half.T


def dissipation_matrix(
    ss: StateSpaceBlocks,
    metric: np.ndarray,
    multiplier: np.ndarray | float,
    rate: float = 1.0,
    supply: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The symmetric LMI matrix M (contraction if ``supply`` is None, else (Q,S,R)).

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
    nu, nx, nv, ny = ss.sizes
    with_u = supply is not None
    g = np.hstack([ss.A, ss.B1] + ([ss.B2] if with_u else []))
    n = g.shape[1]
    i_x = np.zeros((nx, n))
    i_x[:, :nx] = np.eye(nx)
    m = rate**2 * i_x.T @ metric @ i_x - g.T @ metric @ g - _multiplier_term(ss, multiplier, with_u)
    if with_u:
        q, s, r = (np.asarray(a, dtype=np.float64) for a in supply)
        c_y = np.hstack([ss.C2, ss.D21, ss.D22])
        i_u = np.zeros((nu, n))
        i_u[:, nx + nv:] = np.eye(nu)
        cross = i_u.T @ s @ c_y
        m = m + c_y.T @ q @ c_y + cross + cross.T + i_u.T @ r @ i_u
    return 0.5 * (m + m.T)


def min_eigenvalue(matrix: np.ndarray) -> float:
    """Smallest eigenvalue of a symmetric matrix (float64)."""
    return float(np.linalg.eigvalsh(matrix)[0])


def relative_margin(ss: StateSpaceBlocks, metric: np.ndarray, multiplier: np.ndarray | float,
                    rate: float = 1.0, supply: tuple | None = None) -> float:
    """``λ_min(M) / max(1, max|𝒫_ij|)``: the LMI holds when this is ≥ −tolerance."""
    m = dissipation_matrix(ss, metric, multiplier, rate, supply)
    return min_eigenvalue(m) / max(1.0, float(np.abs(metric).max()))


# ---------------------------------------------------------------------------------------------
# Helpers shared by the certificate tiers (implied, KYP, SDP).

#: Default re-validation tolerance on ``λ_min(M) / max(1, max|𝒫_ij|)`` (float64 round-off of
#: the assembled LMI is ~1e-14 relative; 1e-9 leaves room for ill-conditioned metrics).
VALIDATION_TOL = 1e-9


def lipschitz_supply(gamma: float, nu: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Q, S, R) = (−I/γ, 0, γI)``: incremental ℓ₂ gain at most γ."""
    return -np.eye(ny) / gamma, np.zeros((nu, ny)), gamma * np.eye(nu)


def transform_state(ss: StateSpaceBlocks, t: np.ndarray) -> StateSpaceBlocks:
    """The blocks in coordinates ``x̃ = T x``: ``(TAT⁻¹, TB₁, TB₂, C₁T⁻¹, C₂T⁻¹)``.

    A metric 𝒫̃ certified for the transformed blocks is ``𝒫 = Tᵀ𝒫̃T`` for the original ones
    (the LMI is congruent under ``blkdiag(T, I, I)``).
    """
    t_inv = np.linalg.inv(t)
    return StateSpaceBlocks(t @ ss.A @ t_inv, t @ ss.B1, t @ ss.B2, ss.C1 @ t_inv,
                            ss.C2 @ t_inv, ss.D11, ss.D12, ss.D21, ss.D22)


def validate(ss: StateSpaceBlocks, metric: np.ndarray, multiplier: np.ndarray | float,
             rate: float = 1.0, supply: tuple | None = None,
             tol: float = VALIDATION_TOL) -> tuple[bool, float]:
    """Re-validate a candidate certificate in float64: ``(holds, relative margin)``.

    The certificate holds when 𝒫 is symmetric positive semidefinite (positive definite for
    contraction, which needs a metric), the multiplier is non-negative and the relative margin
    ``λ_min(M)/max(1, max|𝒫|)`` is at least ``−tol``.
    """
    metric = np.asarray(metric, dtype=np.float64)
    mult = np.asarray(multiplier, dtype=np.float64)
    if not (np.all(np.isfinite(metric)) and np.all(np.isfinite(mult))):
        return False, float("nan")
    if np.any(mult < 0):
        return False, float(mult.min())
    metric = 0.5 * (metric + metric.T)
    if metric.size:
        p_min = min_eigenvalue(metric) / max(float(np.abs(metric).max()), 1e-300)
        needed = tol if supply is None else -tol  # contraction needs 𝒫 ≻ 0 for a distance
        if p_min < needed:
            return False, p_min
    margin = relative_margin(ss, metric, mult, rate, supply)
    return bool(margin >= -tol), margin
