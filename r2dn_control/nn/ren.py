r"""REN: Recurrent Equilibrium Networks (Revay, Wang & Manchester, TAC 2023), docs/theory.md §2.

Implicit model (hats mark implicit quantities, Λ ≻ 0 diagonal, D̂₁₁ strictly lower triangular):

$$
E x_{t+1} = F x_t + \hat B_1 w_t + \hat B_2 u_t,\qquad
\Lambda v_t = \hat C_1 x_t + \hat D_{11} w_t + \hat D_{12} u_t,\qquad w_t = \sigma(v_t),

y_t = C_2 x_t + D_{21} w_t + D_{22} u_t,
$$

with biases added in explicit form. Every block comes from one positive definite
``H ∈ ℝ^{N×N}``, ``N = 2nx + nv``, partitioned (nx | nv | nx):

* ``E = ½(H₁₁ + H₃₃/ᾱ² + Y − Yᵀ)``, ``F = H₃₁``, ``P = H₃₃``, ``B̂₁ = H₃₂``, ``Ĉ₁ = −H₂₁``,
* ``Λ = ½diag(H₂₂)``, ``D̂₁₁ = −tril(H₂₂, −1)``,

and the explicit model is ``[A B₁ B₂] = E⁻¹[F B̂₁ B̂₂]``, ``[C₁ D₁₁ D₁₂] = Λ⁻¹[Ĉ₁ D̂₁₁ D̂₁₂]``.

* contracting: ``H = H_X``;
* (Q,S,R)-dissipative: ``H = H_X + Γ_R − Γ_Q`` (`supply_terms`).

The implied certificate (docs/theory.md §4) is 𝒫 = EᵀP⁻¹E with the diagonal multiplier Λ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._algebra import eye_like, gram, lecun_normal_
from ._implicit import (
    LONG_MEMORY_SPREAD,
    ImplicitIOBlock,
    add_quadratic,
    implicit_model,
    long_memory_factor,
    lyapunov_metric,
    supply_terms,
)
from .activations import get_activation
from .base import RecurrentModel
from .equilibrium import EquilibriumLayer
from .explicit import ExplicitModel
from .iqc import SupplyRate
from .parametrizations import ContractionFactor, LipschitzBound, initial_gamma

__all__ = ["ContractingREN", "GeneralREN", "LipschitzREN", "PassiveREN", "supply_terms"]

# Gap added to the equilibrium block at long_memory init: H₂₂ ⪰ 2·_LAMBDA_MARGIN·I (docs/theory.md §2).
_LAMBDA_MARGIN = 1e-4


class _REN(RecurrentModel):
    """Parameters and explicit map shared by every REN family (subclasses add the I/O part).

    Direct parameters: ``X`` (N×N), polar magnitude ``p``, ``Y`` (nx×nx), ``B2_hat`` (nx×nu),
    ``D12_hat`` (nv×nu), ``C2`` (ny×nx), biases; the subclass adds ``D21`` and ``D22``'s.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int,
                 **common) -> None:
        super().__init__(input_size, state_size, features, output_size, **common)
        nx, nv, nu, ny = self.state_size, self.features, self.input_size, self.output_size
        fk = self._factory
        self.activation = get_activation(self.activation_name)
        self._init_shared_parameters(2 * nx + nv)
        self.B2_hat = nn.Parameter(lecun_normal_(torch.empty(nx, nu, **fk)))
        self.D12_hat = nn.Parameter(lecun_normal_(torch.empty(nv, nu, **fk)))
        if self.identity_output:
            self.register_buffer("D21", torch.zeros(ny, nv, **fk))
        else:
            self.D21 = nn.Parameter(lecun_normal_(torch.empty(ny, nv, **fk)))

    # -- subclass hooks -------------------------------------------------------------------
    def _d22(self, dtype: torch.dtype) -> Tensor:
        """The feedthrough D₂₂ (ny×nu) in ``dtype``."""
        raise NotImplementedError

    def _io(self, dtype: torch.dtype) -> ImplicitIOBlock:
        """I/O matrices in ``dtype`` (B̂₂ and D̂₁₂ implicit)."""
        return ImplicitIOBlock(self.B2_hat.to(dtype), self.C2.to(dtype), self.D12_hat.to(dtype),
                       self.D21.to(dtype), self._d22(dtype))

    def _extra_h(self, io: ImplicitIOBlock) -> Tensor:
        """H − H_X as a function of the other parameters (zero for the contracting family)."""
        size = 2 * self.state_size + self.features
        if self._supply is None:
            return io.C2.new_zeros(size, size)
        top_left, ncal, r1 = supply_terms(io, self._supply_on(io.C2.device))
        return add_quadratic(io.C2.new_zeros(size, size), top_left, ncal, r1)

    # -- shared machinery -----------------------------------------------------------------
    def _init_long_memory(self) -> None:
        r"""A = r(I − diag(e)), e ~ 0.05·U(0,1), r = ``init_radius`` ≤ ᾱ, with B̂₁ = Ĉ₁ = 0 and
        Y = I (docs/theory.md §2).

        Target ``H₀ = [[I, 0, A₀ᵀ], [0, 2Λ₀ − D̂₁₁₀ − D̂₁₁₀ᵀ, 0], [A₀, 0, ᾱ²I]]`` with a random
        strictly lower D̂₁₁₀ and ``Λ₀ = (λ_max(D̂₁₁₀ + D̂₁₁₀ᵀ)/2 + 10⁻⁴)I``, which gives
        E = I, P = ᾱ²I, F = A₀. (the REN paper writes E = P = I, F = I − diag(e), i.e. ᾱ = 1; with
        P = ᾱ²I the eigenvalues sit just below r for every r ≤ ᾱ ∈ (0, 1], as for R2DN.)
        H₀ is scaled by c ≥ 1 if the I/O terms need room, which leaves A, D₁₁ unchanged.
        """
        nx, nv, rate = self.state_size, self.features, self.contraction_rate
        f64: dict[str, Any] = {"dtype": torch.float64, "device": self.X.device}
        self.Y.copy_(torch.eye(nx, **f64))
        a0 = self.init_radius * torch.diag(1.0 - LONG_MEMORY_SPREAD * torch.rand(nx, **f64))
        d11_0 = torch.tril(lecun_normal_(torch.empty(nv, nv, **f64)), -1)
        sym = d11_0 + d11_0.T
        lam0 = 0.5 * torch.linalg.eigvalsh(sym).max() + _LAMBDA_MARGIN
        h22 = 2.0 * lam0 * torch.eye(nv, **f64) - sym
        h0 = torch.block_diag(torch.eye(nx, **f64), h22, rate**2 * torch.eye(nx, **f64))
        h0[-nx:, :nx] = a0
        h0[:nx, -nx:] = a0.T
        extra = self._extra_h(self._io(torch.float64))
        self.X.copy_(long_memory_factor(h0, extra, self.eps))

    def _h_matrix(self, dtype: torch.dtype) -> tuple[Tensor, ImplicitIOBlock]:
        polar = None if self.polar_scale is None else self.polar_scale.to(dtype)
        io = self._io(dtype)
        return gram(self.X.to(dtype), polar, self.eps) + self._extra_h(io), io

    def _build_explicit(self, dtype: torch.dtype, certificate: bool = True,
                        network_dtype: torch.dtype | None = None,
                        defer_network: bool = False) -> ExplicitModel:
        # D₁₁ enters the certificate, so the equilibrium layer is always built in ``dtype``
        # (and never deferred: it is only a reference to D₁₁).
        nx, nv, nu = self.state_size, self.features, self.input_size
        h, io = self._h_matrix(dtype)
        e, f, p = implicit_model(h, self.Y.to(dtype), self.contraction_rate, nx)
        eq = slice(nx, nx + nv)
        b1_hat = h[nx + nv:, eq]
        c1_hat = -h[eq, :nx]
        h22 = h[eq, eq]
        lam = 0.5 * torch.diagonal(h22)
        d11_hat = -torch.tril(h22, -1)
        A, B1, B2 = torch.split(torch.linalg.solve(e, torch.cat([f, b1_hat, io.B2_hat], 1)),
                                [nx, nv, nu], dim=1)
        # Λ is diagonal: its inverse is a row scaling.
        C1, D11, D12 = torch.split(torch.cat([c1_hat, d11_hat, io.D12_hat], 1) / lam[:, None],
                                   [nx, nv, nu], dim=1)
        return ExplicitModel(
            A=A, B1=B1, B2=B2, C1=C1, C2=io.C2, D12=D12, D21=io.D21, D22=io.D22,
            bx=self.bx.to(dtype), bv=self.bv.to(dtype), by=self.by.to(dtype),
            network=EquilibriumLayer(D11, self.activation), D11=D11,
            metric=lyapunov_metric(e.detach(), p.detach()).double() if certificate else None,
            multiplier=lam.detach().double() if certificate else None,
        )


class ContractingREN(_REN):
    r"""Contracting REN: ``‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫`` for any two trajectories under the same input.

    ``H = H_X``; ``B̂₂, D̂₁₂, C₂, D₂₁, D₂₂`` are free (D₂₂ starts at 0).

    Parameters
    ----------
    input_size, state_size, features, output_size : int
        nu, nx, nv (equilibrium-layer width), ny.
    **common
        See `RecurrentModel` (``activation``, ``init``,
        ``contraction_rate``, ``polar``, ``eps``, ``init_output_zero``, ``identity_output``,
        ``batch_first``, ``dtype``, ``device``).
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int,
                 **kwargs) -> None:
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        shape = (self.output_size, self.input_size)
        if self.identity_output:
            self.register_buffer("D22", torch.zeros(*shape, **self._factory))
        else:
            self.D22 = nn.Parameter(torch.zeros(*shape, **self._factory))
        self._finish_init()

    def _d22(self, dtype: torch.dtype) -> Tensor:
        return self.D22.to(dtype)


class GeneralREN(_REN):
    r"""(Q,S,R)-dissipative REN: ``Σ_t s(Δu_t, Δy_t) ≥ −Δx₀ᵀ𝒫Δx₀`` on any pair of trajectories.

    ``D₂₂ = −Q⁻¹Sᵀ + L_Q⁻¹ N L_R`` with ``N = Cont(X₃, Y₃, Z₃)`` (ny×nu, ‖N‖ < 1) and
    ``H = H_X + Γ_R − Γ_Q`` (`supply_terms`).

    Parameters
    ----------
    Q, S, R : array_like
        Supply rate with Q ≺ 0 and R − SQ⁻¹Sᵀ ≻ 0 (shapes ny×ny, nu×ny, nu×nu).
    full_d22 : bool
        Learn the feedthrough (default, as in the REN paper); if False, D₂₂ stays at the
        centre −Q⁻¹Sᵀ. N starts at 0 either way.
    **kwargs
        See `ContractingREN`.

    Notes
    -----
    With ``identity_output=True``: C₂ = I, D₂₁ = 0 and D₂₂ = −Q⁻¹Sᵀ.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 Q: object, S: object, R: object, full_d22: bool = True, **kwargs) -> None:
        supply = SupplyRate.from_matrices(Q, S, R, input_size, output_size)
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        self._supply = supply
        self.full_d22 = bool(full_d22) and not self.identity_output
        self.N22 = (ContractionFactor(self.output_size, self.input_size, self.eps, zero=True,
                                      **self._factory) if self.full_d22 else None)
        self._finish_init()

    def _d22(self, dtype: torch.dtype) -> Tensor:
        supply = self._supply_on(self.X.device)
        # The contraction builder uses I_d with d = min(ny, nu): no crash when ny > nu (docs/theory.md §2).
        n = None if self.N22 is None else self.N22.matrix(dtype)
        return supply.feedthrough(n, self.X.to(dtype))


class LipschitzREN(GeneralREN):
    r"""REN with incremental ℓ₂ gain at most γ: ``‖Δy‖₂ ≤ γ‖Δu‖₂ + (γΔx₀ᵀ𝒫Δx₀)^{1/2}``.

    The (Q,S,R) REN with ``Q = −I/γ, S = 0, R = γI``: ``D₂₂ = γN`` and
    ``H = H_X + Γ_R + [C₂, D₂₁, 0]ᵀ[C₂, D₂₁, 0]/γ`` with ``R₁ = γI − D₂₂ᵀD₂₂/γ``
    (docs/theory.md §2).

    Parameters
    ----------
    gamma, gamma_init : float or "learn", float
        The prescribed bound γ > 0, or ``"learn"`` from ``gamma_init``
        (`LipschitzBound`; current value
        `gamma_bound`).
    full_d22 : bool
        Learn the feedthrough D₂₂ = γN (default); if False, D₂₂ = 0.
    **kwargs
        See `ContractingREN`.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 gamma: float | str = 1.0, gamma_init: float = 1.0, full_d22: bool = True,
                 **kwargs) -> None:
        supply = SupplyRate.lipschitz(initial_gamma(gamma, gamma_init), input_size, output_size)
        super().__init__(input_size, state_size, features, output_size,
                         Q=supply.Q, S=supply.S, R=supply.R, full_d22=full_d22, **kwargs)
        self.lipschitz_bound = LipschitzBound(gamma, gamma_init, **self._factory)


class PassiveREN(_REN):
    r"""Incrementally input-passive REN: ``Σ_t (2Δu_tᵀΔy_t − 2ν‖Δu_t‖²) ≥ −Δx₀ᵀ𝒫Δx₀``.

    Supply ``Q = 0, S = I, R = −2νI`` (needs ``input_size == output_size``), as in
    RobustNeuralNetworks.jl with ρ = 0: ``D₂₂ = νI + X₃ᵀX₃ + Y₃ − Y₃ᵀ + εI`` so that
    ``R₁ = D₂₂ + D₂₂ᵀ − 2νI = 2(X₃ᵀX₃ + εI) ≻ 0``; ``Γ_Q = 0``, ``Ĉ₂ = C₂``,
    ``D̂₂₁ = D₂₁ − D̂₁₂ᵀ`` (`supply_terms` with Q = 0, S = I).

    Parameters
    ----------
    input_passivity : float
        Input passivity index ν ≥ 0.
    **kwargs
        See `ContractingREN`.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 input_passivity: float = 0.0, **kwargs) -> None:
        supply = self._passive_supply("PassiveREN", input_size, output_size, input_passivity)
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        self._add_passivity_parameters(supply, input_passivity)
        self._finish_init()

    def _d22(self, dtype: torch.dtype) -> Tensor:
        x3, y3 = self.X3.to(dtype), self.Y3.to(dtype)
        eye = eye_like(x3, self.input_size)
        return (self.input_passivity + self.eps) * eye + x3.T @ x3 + y3 - y3.T

    def extra_repr(self) -> str:
        return super().extra_repr() + f", input_passivity={self.input_passivity}"
