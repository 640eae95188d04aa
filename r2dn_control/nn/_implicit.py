r"""Implicit-to-explicit algebra shared by the R2DN and REN families (docs/theory.md §2–§3).

Both families build a positive definite matrix H from their direct parameters and read the
implicit model off its blocks:

$$
E = \tfrac12\left(H_{11} + H_{\mathrm{last}}/\bar\alpha^2 + Y - Y^\top\right),\quad
F = H_{\mathrm{last},1},\quad \mathcal P_{\mathrm{impl}} = H_{\mathrm{last}},
$$

then ``A = E⁻¹F`` etc. by one LU solve, and the Lyapunov metric 𝒫 = EᵀP⁻¹E.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._algebra import eye_like, transposed_gram
from .iqc import SupplyRate

#: Long-memory initialisation of both families: A = ᾱ(I − diag(e)), e ~ LONG_MEMORY_SPREAD·U(0,1).
LONG_MEMORY_SPREAD = 0.05


@dataclass(frozen=True)
class IOBlock:
    """The input/output matrices of an R2DN (column convention).

    ``B2_hat`` is implicit (divided by E later); the others are explicit. The REN's block,
    whose D̂₁₂ is implicit too, is `ImplicitIOBlock`.
    """

    B2_hat: Tensor
    C2: Tensor
    D12: Tensor
    D21: Tensor
    D22: Tensor


@dataclass(frozen=True)
class ImplicitIOBlock:
    """The input/output matrices of a REN: ``B2_hat`` and ``D12_hat`` are implicit (divided by
    E and Λ later); ``C2, D21, D22`` are explicit."""

    B2_hat: Tensor
    C2: Tensor
    D12_hat: Tensor
    D21: Tensor
    D22: Tensor


def dissipative_terms(io: IOBlock, C1: Tensor, B1_hat: Tensor, supply: SupplyRate,
                      D11_term: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    r"""The (Q,S,R) terms added to $H_X$ for a model whose nonlinearity is
    1-Lipschitz (scalar multiplier λ = 1).

    $$
    R_1 &= \begin{bmatrix} I + D_{21}^\top Q D_{21} & D_{21}^\top (Q D_{22} + S^\top) \\
           \cdot^\top & R - D_{12}^\top D_{12} + S D_{22} + D_{22}^\top S^\top + D_{22}^\top Q D_{22}
           \end{bmatrix}, \\
    \mathcal N &= \begin{bmatrix} C_2^\top Q D_{21} & -C_1^\top D_{12} + C_2^\top (Q D_{22} + S^\top) \\
                 \hat B_1 & \hat B_2 \end{bmatrix}.
    $$

    Returns ``(top_left, ncal, r1)`` with ``top_left = C₁ᵀC₁ − C₂ᵀQC₂``; the caller adds
    ``blkdiag(top_left, 0) + 𝒩 R₁⁻¹ 𝒩ᵀ``. The REN counterpart is `supply_terms`.
    """
    dt, dev = C1.dtype, C1.device
    q, s, r = (m.to(dtype=dt, device=dev) for m in (supply.Q, supply.S, supply.R))
    d12, d21, d22 = io.D12, io.D21, io.D22
    nv = d21.shape[1]
    q_d22_s = q @ d22 + s.T
    r1 = torch.cat([
        torch.cat([torch.eye(nv, dtype=dt, device=dev) + d21.T @ q @ d21, d21.T @ q_d22_s], 1),
        torch.cat([q_d22_s.T @ d21,
                   r - d12.T @ d12 + s @ d22 + d22.T @ s.T + d22.T @ q @ d22], 1),
    ], 0)
    ncal = torch.cat([
        torch.cat([io.C2.T @ q @ d21, -C1.T @ d12 + io.C2.T @ q_d22_s], 1),
        torch.cat([B1_hat, io.B2_hat], 1),
    ], 0)
    top_left = C1.T @ C1 - io.C2.T @ q @ io.C2
    return top_left, ncal, r1


def supply_terms(io: ImplicitIOBlock, supply: SupplyRate) -> tuple[Tensor, Tensor, Tensor]:
    r"""The (Q,S,R) terms of a REN, ``H = H_X + Γ_R − Γ_Q`` (docs/theory.md §2, [R] Eqs. 28–33).

    The REN counterpart of `dissipative_terms` (diagonal multiplier Λ, implicit
    ``D̂₁₂ = io.D12_hat``):

    $$
    \hat C_2 = (D_{22}^\top Q + S) C_2,\quad
    \hat D_{21} = (D_{22}^\top Q + S) D_{21} - \hat D_{12}^\top,\quad
    R_1 = R + S D_{22} + D_{22}^\top S^\top + D_{22}^\top Q D_{22},

    \Gamma_Q = [C_2, D_{21}, 0]^\top Q [C_2, D_{21}, 0],\qquad
    \Gamma_R = G_R^\top R_1^{-1} G_R,\qquad G_R = [\hat C_2, \hat D_{21}, \hat B_2^\top].
    $$

    Returns ``(top_left, ncal, r1)`` for `add_quadratic`:
    ``top_left = −[C₂, D₂₁]ᵀQ[C₂, D₂₁]`` (size nx+nv) and
    ``ncal = [Ĉ₂ᵀ; D̂₂₁ᵀ; B̂₂]`` (N × nu). R₁ ≻ 0 must hold by construction of D₂₂.
    """
    dt, dev = io.C2.dtype, io.C2.device
    q, s, r = (m.to(dtype=dt, device=dev) for m in (supply.Q, supply.S, supply.R))
    d22 = io.D22
    mix = d22.T @ q + s  # (nu, ny)
    c2_hat = mix @ io.C2
    d21_hat = mix @ io.D21 - io.D12_hat.T
    r1 = r + s @ d22 + d22.T @ s.T + d22.T @ q @ d22
    out = torch.cat([io.C2, io.D21], dim=1)  # [C₂, D₂₁], the columns of Γ_Q without the zero
    top_left = -(out.T @ q @ out)
    ncal = torch.cat([c2_hat.T, d21_hat.T, io.B2_hat], dim=0)
    return top_left, ncal, r1


def add_quadratic(h: Tensor, top_left: Tensor, ncal: Tensor, r1: Tensor | None) -> Tensor:
    r"""$H + \mathrm{blkdiag}(T, 0) + \mathcal N R_1^{-1} \mathcal N^\top$ (``R₁ = I`` if None).

    ``R₁⁻¹`` enters through a Cholesky factor so the result is symmetric to round-off.
    """
    n = top_left.shape[0]
    h = h.clone()
    h[:n, :n] = h[:n, :n] + top_left
    if r1 is None:
        return h + transposed_gram(ncal.T)
    chol = torch.linalg.cholesky(0.5 * (r1 + r1.T))
    z = torch.linalg.solve_triangular(chol, ncal.T, upper=False)
    return h + transposed_gram(z)


def implicit_model(h: Tensor, Y: Tensor, rate: float, nx: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(E, F, P)`` from H: E = ½(H₁₁ + P/ᾱ² + Y − Yᵀ), F = H_{last,1}, P = H_{last,last}."""
    p = h[-nx:, -nx:]
    e = 0.5 * (h[:nx, :nx] + p / rate**2 + Y - Y.T)
    f = h[-nx:, :nx]
    return e, f, p


def lyapunov_metric(e: Tensor, p: Tensor) -> Tensor:
    """𝒫 = Eᵀ P⁻¹ E (symmetrised), the metric the parameterization certifies."""
    chol = torch.linalg.cholesky(p)
    z = torch.linalg.solve_triangular(chol, e, upper=False)
    return transposed_gram(z)


def long_memory_factor(target: Tensor, extra: Tensor, eps: float) -> Tensor:
    r"""An upper factor X with $X^\top X + \epsilon I + K = cH_0$, c ≥ 1 minimal-ish.

    ``target`` is H₀ (positive definite), ``extra`` is K, the part of H that comes from the
    other parameters. Scaling H₀ by c leaves A = E⁻¹F unchanged, so the long-memory
    eigenvalues survive whatever K is.
    """
    chol = torch.linalg.cholesky(target)
    shifted = extra + eps * eye_like(extra, extra.shape[0])
    m = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol, shifted, upper=False).T,
                                      upper=False)
    c = max(1.0, 1.05 * torch.linalg.eigvalsh(0.5 * (m + m.T)).max().item())
    gap = c * target - shifted
    return torch.linalg.cholesky(0.5 * (gap + gap.T)).T
