r"""Incremental (Q, S, R) supply rates and their validation.

$$
s(\Delta u, \Delta y) = \Delta y^\top Q \Delta y + 2\Delta u^\top S \Delta y + \Delta u^\top R \Delta u,
$$

with Q ∈ ℝ^{ny×ny}, S ∈ ℝ^{nu×ny}, R ∈ ℝ^{nu×nu}. A model is (Q,S,R)-dissipative if
``Σ_t s(Δu_t, Δy_t) ≥ −V(Δx₀)`` along every pair of trajectories.

Special cases: Lipschitz γ is ``Q = −I/γ, S = 0, R = γI``; input passivity ν is
``Q = 0, S = I, R = −2νI``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _checks


def _as_matrix(name: str, value: object, shape: tuple[int, int]) -> Tensor:
    if isinstance(value, Tensor):
        real = value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)
        if value.dtype.is_complex or not real:
            raise TypeError(f"{name} must be a real matrix, got dtype {value.dtype}")
        t = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        if np.iscomplexobj(value):  # type: ignore[arg-type]  # numpy's stubs: array-likes only
            raise TypeError(f"{name} must be a real matrix, got a complex array")
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a real matrix, got {type(value).__name__}") from err
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


@dataclass(frozen=True)
class SupplyRate:
    """A validated incremental (Q, S, R) supply rate, stored in float64 on the CPU.

    Parameters
    ----------
    Q : array_like, (ny, ny)
        Symmetric; negative definite unless ``allow_singular_q`` (passivity uses Q = 0).
    S : array_like, (nu, ny)
    R : array_like, (nu, nu)
        Symmetric with ``R − S Q⁻¹ Sᵀ ≻ 0`` (when Q is negative definite).

    Attributes
    ----------
    L_Q, L_R : Tensor or None
        Upper-triangular Cholesky factors, ``L_Qᵀ L_Q = −Q`` and ``L_Rᵀ L_R = R − S Q⁻¹ Sᵀ``
        (None when Q is singular).
    """

    Q: Tensor
    S: Tensor
    R: Tensor
    L_Q: Tensor | None = field(default=None, repr=False)
    L_R: Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_matrices(cls, Q: object, S: object, R: object, input_size: int, output_size: int,
                      *, allow_singular_q: bool = False) -> SupplyRate:
        """Validate (Q, S, R) for ``input_size`` inputs and ``output_size`` outputs."""
        nu, ny = input_size, output_size
        q = _as_matrix("Q", Q, (ny, ny))
        s = _as_matrix("S", S, (nu, ny))
        r = _as_matrix("R", R, (nu, nu))
        for name, m in (("Q", q), ("R", r)):
            if not torch.allclose(m, m.T, rtol=1e-10, atol=1e-12):
                raise ValueError(f"{name} must be symmetric")
        q, r = 0.5 * (q + q.T), 0.5 * (r + r.T)
        if allow_singular_q and torch.count_nonzero(q) == 0:
            return cls(q, s, r)
        q_eigs = torch.linalg.eigvalsh(q)
        if q_eigs.max() >= 0:
            raise ValueError(
                f"Q must be negative definite, got eigenvalues with maximum {q_eigs.max().item():.3g}"
            )
        l_q = torch.linalg.cholesky(-q).T  # upper: L_Qᵀ L_Q = −Q
        schur = r - s @ torch.linalg.solve(q, s.T)
        schur = 0.5 * (schur + schur.T)
        schur_min = torch.linalg.eigvalsh(schur).min()
        if schur_min <= 0:
            raise ValueError(
                "R - S Q^-1 S^T must be positive definite, got minimum eigenvalue "
                f"{schur_min.item():.3g}"
            )
        l_r = torch.linalg.cholesky(schur).T
        return cls(q, s, r, l_q, l_r)

    @classmethod
    def lipschitz(cls, gamma: float, input_size: int, output_size: int) -> SupplyRate:
        """``Q = −I/γ, S = 0, R = γI``: incremental ℓ₂ gain at most γ."""
        gamma = _checks.positive_float("gamma", gamma)
        nu = _checks.positive_int("input_size", input_size)
        ny = _checks.positive_int("output_size", output_size)
        return cls.from_matrices(-torch.eye(ny, dtype=torch.float64) / gamma,
                                 torch.zeros(nu, ny, dtype=torch.float64),
                                 gamma * torch.eye(nu, dtype=torch.float64), nu, ny)

    @classmethod
    def lipschitz_tensor(cls, gamma: Tensor, input_size: int, output_size: int) -> SupplyRate:
        """``Q = −I/γ, S = 0, R = γI`` from a positive 0-d float64 tensor γ, differentiable in γ.

        Not validated (no eigen-decompositions): γ > 0 is the caller's construction, e.g.
        γ = exp(ρ) in `LipschitzBound`. The Cholesky
        factors are closed-form: ``L_Q = I/√γ``, ``L_R = √γ I``.
        """
        if not isinstance(gamma, Tensor) or gamma.dim() != 0 or gamma.dtype != torch.float64:
            raise TypeError(f"gamma must be a 0-d float64 tensor, got {gamma!r}")
        f64: dict[str, Any] = {"dtype": torch.float64, "device": gamma.device}
        eye_u, eye_y = torch.eye(input_size, **f64), torch.eye(output_size, **f64)
        root = torch.sqrt(gamma)
        return cls(-eye_y / gamma, torch.zeros(input_size, output_size, **f64), gamma * eye_u,
                   eye_y / root, root * eye_u)

    @classmethod
    def passive(cls, input_passivity: float, size: int) -> SupplyRate:
        """``Q = 0, S = I, R = −2νI``: incrementally input-passive with index ν ≥ 0."""
        input_passivity = _checks.non_negative_float("input_passivity", input_passivity)
        eye = torch.eye(size, dtype=torch.float64)
        return cls.from_matrices(0 * eye, eye, -2.0 * float(input_passivity) * eye, size, size,
                                 allow_singular_q=True)

    def to(self, device: torch.device | str) -> SupplyRate:
        """A copy on ``device`` (always float64)."""
        move: dict[str, Any] = {"device": device, "dtype": torch.float64}
        return SupplyRate(self.Q.to(**move), self.S.to(**move), self.R.to(**move),
                          None if self.L_Q is None else self.L_Q.to(**move),
                          None if self.L_R is None else self.L_R.to(**move))

    def factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(L_Q, L_R)`` cast to ``dtype``; a ``ValueError`` when Q is singular (no factors)."""
        if self.L_Q is None or self.L_R is None:
            raise ValueError("this supply rate has a singular Q (e.g. passivity): it has no "
                             "Cholesky factors L_Q, L_R")
        return self.L_Q.to(dtype), self.L_R.to(dtype)

    def feedthrough(self, n22: Tensor | None, like: Tensor) -> Tensor:
        r"""``D₂₂ = −Q⁻¹Sᵀ + L_Q⁻¹ N₂₂ L_R`` (the centre −Q⁻¹Sᵀ when ``n22`` is None).

        Every ‖N₂₂‖ < 1 gives ``R + SD₂₂ + D₂₂ᵀSᵀ + D₂₂ᵀQD₂₂ ≻ 0``. Computed in ``like``'s
        dtype and device (the supply rate should already be on that device, see ``to``).
        """
        q, s = self.Q.to(like.dtype), self.S.to(like.dtype)
        centre = -torch.linalg.solve(q, s.T)
        if n22 is None:
            return centre
        l_q, l_r = self.factors(like.dtype)
        return centre + torch.linalg.solve_triangular(l_q, n22 @ l_r, upper=True)

    def evaluate(self, du: Tensor, dy: Tensor) -> Tensor:
        """``s(Δu, Δy)`` for row-batched increments; returns shape ``du.shape[:-1]``."""
        q, s, r = (m.to(dtype=du.dtype, device=du.device) for m in (self.Q, self.S, self.R))
        return ((dy @ q) * dy).sum(-1) + 2 * ((du @ s) * dy).sum(-1) + ((du @ r) * du).sum(-1)

    def as_lists(self) -> dict[str, list]:
        """JSON-friendly ``{"Q": …, "S": …, "R": …}``."""
        return {"Q": self.Q.tolist(), "S": self.S.tolist(), "R": self.R.tolist()}
