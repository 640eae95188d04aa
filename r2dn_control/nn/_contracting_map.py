r"""The contracting R2DN's LTI map ``(X, p, Y, C₁, B̂₁) → (A, B₁)`` as one autograd.Function.

docs/theory.md §3, contracting family, computed in float64 whatever the parameters' dtype:

$$
H = c\,X^\top X + \epsilon I + \mathrm{blkdiag}(C_1^\top C_1,\ \hat B_1 \hat B_1^\top),\quad
c = \frac{p^2}{\sum X_{ij}^2 + \epsilon}\ (c = 1\text{ without polar}),
$$

``E = ½(H₁₁ + H₂₂/ᾱ² + Y − Yᵀ)``, ``F = H₂₁``, ``[A  B₁] = E⁻¹[F  B̂₁]``.

This is what every training call of a `ContractingR2DN` differentiates when no certificate is
asked for; composed from torch ops it is ~40 small ops and as many autograd nodes. The
backward, by hand (``G = [ḡ_A  ḡ_B₁]``):

* ``ḡ_rhs = E⁻ᵀG``, ``ḡ_E = −ḡ_rhs [A  B₁]ᵀ``, ``ḡ_F = ḡ_rhs[:, :nx]``, ``ḡ_B̂₁ = ḡ_rhs[:, nx:]``;
* ``ḡ_H₁₁ = ½ḡ_E``, ``ḡ_H₂₂ = ḡ_E/(2ᾱ²)``, ``ḡ_H₂₁ = ḡ_F``, ``ḡ_Y = ½(ḡ_E − ḡ_Eᵀ)``;
* ``ḡ_X = c X(ḡ_H + ḡ_Hᵀ) + 2ḡ_q X`` with ``ḡ_c = ⟨ḡ_H, XᵀX⟩``, ``ḡ_q = −c ḡ_c / q``,
  ``ḡ_p = 2p ḡ_c / q``; ``ḡ_C₁ = C₁(ḡ_H₁₁ + ḡ_H₁₁ᵀ)``, ``ḡ_B̂₁ += (ḡ_H₂₂ + ḡ_H₂₂ᵀ)B̂₁``.

On the CPU (C++ kernels loaded) forward and backward are one C++ call each
(``contracting_lti_forward`` / ``_backward`` in ``cpp/explicit_map_kernels.cpp``: the same
float64 algebra, E inverted by Gauss–Jordan elimination with partial pivoting up to 64 rows,
by LAPACK beyond; E's symmetric part is ⪰ εI, so the inverse is as accurate as the solve);
elsewhere the torch ops below. The composed path
(`r2dn_control.nn.r2dn._R2DN._build_explicit`) stays the reference and is used whenever the
certificate (metric) is built; tests hold all three equal in float64.
First derivatives only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import cpp

F64 = torch.float64


class ContractingLTI(torch.autograd.Function):
    """``(rate, eps, dtype, X, polar or None, Y, C1, B1_hat) → (A, B1)`` in ``dtype``."""

    @staticmethod
    def forward(ctx: Any, rate: float, eps: float, dtype: torch.dtype, X: Tensor,
                polar: Tensor | None, Y: Tensor, C1: Tensor, B1_hat: Tensor
                ) -> tuple[Tensor, Tensor]:
        ctx.use_cpp = (dtype in (torch.float32, torch.float64)
                       and X.device.type == "cpu" and cpp.maps_usable())
        if ctx.use_cpp:  # the same algebra in one C++ call (float64 inside)
            a, b, saved = cpp.ops().contracting_lti_forward(X, polar, Y, C1, B1_hat, rate, eps,
                                                            dtype)
            ctx.rate = rate
            ctx.saved = (saved, X, polar, Y, C1, B1_hat)
            return a, b
        x, y, c1, b1 = X.to(F64), Y.to(F64), C1.to(F64), B1_hat.to(F64)
        nx = y.shape[0]
        xtx = x.T @ x
        q = torch.sum(x * x) + eps
        p = None if polar is None else polar.to(F64)
        c = (p * p / q) if p is not None else torch.ones((), dtype=F64, device=x.device)
        h = c * xtx
        h11 = h[:nx, :nx] + c1.T @ c1
        h22 = h[nx:, nx:] + b1 @ b1.T
        eye = torch.eye(nx, dtype=F64, device=x.device)
        e = 0.5 * (h11 + h22 / rate**2 + (1.0 + 1.0 / rate**2) * eps * eye + y - y.T)
        lu, pivots, _ = torch.linalg.lu_factor_ex(e)
        ab = torch.linalg.lu_solve(lu, pivots, torch.cat([h[nx:, :nx], b1], dim=1))
        ctx.rate, ctx.dtype = rate, dtype
        ctx.dtypes = (X.dtype, None if polar is None else polar.dtype, Y.dtype, C1.dtype,
                      B1_hat.dtype)
        ctx.saved = (x, xtx, q, p, c, c1, b1, lu, pivots, ab)
        return ab[:, :nx].to(dtype), ab[:, nx:].to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_a: Tensor, g_b1: Tensor) -> tuple[Tensor | None, ...]:
        needs = ctx.needs_input_grad
        if ctx.use_cpp:
            grads = cpp.ops().contracting_lti_backward(g_a, g_b1, *ctx.saved, ctx.rate)
            return (None, None, None,
                    *(gr if needs[3 + k] else None for k, gr in enumerate(grads)))
        x, xtx, q, p, c, c1, b1, lu, pivots, ab = ctx.saved
        nx = c1.shape[1]
        rate = ctx.rate
        g = torch.cat([g_a.to(F64), g_b1.to(F64)], dim=1)
        g_rhs = torch.linalg.lu_solve(lu, pivots, g, adjoint=True)
        g_e = -(g_rhs @ ab.T)
        g_b1 = g_rhs[:, nx:]
        g_h11 = 0.5 * g_e
        g_h22 = g_e / (2.0 * rate**2)
        g_h = torch.cat([torch.cat([g_h11, torch.zeros_like(g_h11)], dim=1),
                         torch.cat([g_rhs[:, :nx], g_h22], dim=1)], dim=0)
        g_c = torch.sum(g_h * xtx)
        g_x = c * (x @ (g_h + g_h.T))
        g_p = None
        if p is not None:
            g_x = g_x - (2.0 * c * g_c / q) * x
            g_p = 2.0 * p * g_c / q
        g_c1 = c1 @ (g_h11 + g_h11.T)
        g_b1 = g_b1 + (g_h22 + g_h22.T) @ b1
        g_y = 0.5 * (g_e - g_e.T)
        grads = (g_x, g_p, g_y, g_c1, g_b1)
        out = tuple(None if (gr is None or not needs[3 + k]) else gr.to(ctx.dtypes[k])
                    for k, gr in enumerate(grads))
        return (None, None, None, *out)
