r"""R2DN: an LTI system in feedback with a 1-Lipschitz LBDN (Barbara, Wang & Manchester, 2025).

$$
x_{t+1} = A x_t + B_1 w_t + B_2 u_t + b_x,\quad
v_t = C_1 x_t + D_{12} u_t + b_v,\quad w_t = \phi(v_t),\quad
y_t = C_2 x_t + D_{21} w_t + D_{22} u_t + b_y,
$$

with φ an LBDN of Lipschitz constant 1. The LTI weights come from a positive definite
``H ∈ ℝ^{2nx×2nx}`` (independent of nv and depth, docs/theory.md §3):

* contracting: ``H = H_X + blkdiag(C₁ᵀC₁, B̂₁B̂₁ᵀ)``;
* (Q,S,R)-dissipative: ``H = H_X + blkdiag(C₁ᵀC₁ − C₂ᵀQC₂, 0) + 𝒩R₁⁻¹𝒩ᵀ``
  (see `r2dn_control.nn._implicit.dissipative_terms`),

then ``E = ½(H₁₁ + H₂₂/ᾱ² + Y − Yᵀ)``, ``F = H₂₁``, ``P = H₂₂``, ``A = E⁻¹F``,
``B₁ = E⁻¹B̂₁`` (and ``B₂ = E⁻¹B̂₂`` for the dissipative families). Every parameter value
gives a model that satisfies the contraction LMI of docs/theory.md §4.1 with the implied metric
𝒫 = EᵀP⁻¹E and multiplier λ = 1: with G = [A B₁] and Π = blkdiag(C₁ᵀC₁, −I) on (Δx, Δw) (the
incremental condition ‖Δw‖ ≤ ‖Δv‖ = ‖C₁Δx‖ of a 1-Lipschitz φ),

    ᾱ²·blkdiag(𝒫, 0) − Gᵀ𝒫G − Π ⪰ 0,

so ‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫; the dissipative families satisfy the (Q,S,R) LMI of §4.2 as well
(docs/theory.md §3 derives both from H ≻ 0 by a Schur complement).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import _checks
from ._algebra import eye_like, gram, lecun_normal_
from ._contracting_map import ContractingLTI
from ._implicit import (
    LONG_MEMORY_SPREAD,
    IOBlock,
    add_quadratic,
    dissipative_terms,
    implicit_model,
    long_memory_factor,
    lyapunov_metric,
)
from ._lbdn_map import functorch_active
from .base import RecurrentModel
from .explicit import DeferredNetwork, ExplicitModel, Network
from .iqc import SupplyRate
from .lbdn import LBDN
from .parametrizations import ContractionFactor, LipschitzBound, initial_gamma

__all__ = ["ContractingR2DN", "ContractionFactor", "GeneralR2DN", "LipschitzR2DN", "PassiveR2DN"]


class _R2DN(RecurrentModel):
    """Parameters and explicit map shared by every R2DN family (subclasses add the I/O part)."""

    def __init__(
        self,
        input_size: int,
        state_size: int,
        features: int,
        output_size: int,
        *,
        hidden: Sequence[int] = (32, 32),
        output_layer: str = "linear",
        **common,
    ) -> None:
        super().__init__(input_size, state_size, features, output_size, **common)
        nx, nv = self.state_size, self.features
        fk = self._factory
        self.hidden = _checks.positive_ints("hidden", hidden)
        self._init_shared_parameters(2 * nx)
        self.B1_hat = nn.Parameter(lecun_normal_(torch.empty(nx, nv, **fk)))
        self.C1 = nn.Parameter(lecun_normal_(torch.empty(nv, nx, **fk)))
        self.network = LBDN(nv, nv, self.hidden, gamma=1.0, activation=self.activation_name,
                            output_layer=output_layer, **fk)

    # -- subclass hooks -------------------------------------------------------------------
    def _io(self, dtype: torch.dtype) -> IOBlock:
        raise NotImplementedError

    #: Whether the I/O block enters H (then it is built in the algebra's float64); the
    #: contracting family's B₂, C₂, D₁₂, D₂₁, D₂₂ are free and are cast only to the target dtype.
    _io_enters_h = True

    def _extra_h(self, io: IOBlock, C1: Tensor, B1_hat: Tensor) -> Tensor:
        """H − H_X as a function of the other parameters, in ``C1``'s dtype."""
        raise NotImplementedError

    def _lti_factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(C₁, B̂₁)`` in ``dtype``."""
        return self.C1.to(dtype), self.B1_hat.to(dtype)

    def _contracting_map(self) -> bool:
        """Whether `ContractingLTI` computes this model's LTI part: the contracting family's
        H (``blkdiag(C₁ᵀC₁, B̂₁B̂₁ᵀ)``, factors straight from the parameters), not overridden."""
        cls = type(self)
        return (self._supply is None and cls._extra_h is ContractingR2DN._extra_h
                and cls._lti_factors is _R2DN._lti_factors and self.fused_maps
                and not functorch_active())

    #: Use the fused direct-to-explicit maps (`_contracting_map`, the LBDN's `_lbdn_map`)
    #: in training calls; False: the composed reference algebra.
    fused_maps = True

    # -- shared machinery -----------------------------------------------------------------
    def _init_long_memory(self) -> None:
        """A = r(I − diag(e)), e ~ 0.05·U(0,1), r = ``init_radius`` ≤ ᾱ, with B̂₁ = C₁ = 0 and
        Y = I (docs/theory.md §3); H₀ = [[I, Aᵀ], [A, ᾱ²I]] ⪰ 0 needs only r ≤ ᾱ."""
        nx, rate = self.state_size, self.contraction_rate
        f64: dict[str, Any] = {"dtype": torch.float64, "device": self.X.device}
        self.B1_hat.zero_()
        self.C1.zero_()
        self.Y.copy_(torch.eye(nx, **f64))
        a0 = self.init_radius * torch.diag(1.0 - LONG_MEMORY_SPREAD * torch.rand(nx, **f64))
        eye = torch.eye(nx, **f64)
        h0 = torch.cat([torch.cat([eye, a0.T], 1), torch.cat([a0, rate**2 * eye], 1)], 0)
        extra = self._extra_h(self._io(torch.float64), *self._lti_factors(torch.float64))
        self.X.copy_(long_memory_factor(h0, extra, self.eps))

    def _h_matrix(self, dtype: torch.dtype, free_dtype: torch.dtype
                  ) -> tuple[Tensor, Tensor, Tensor, IOBlock]:
        C1, B1_hat = self._lti_factors(dtype)
        polar = None if self.polar_scale is None else self.polar_scale.to(dtype)
        io = self._io(dtype if self._io_enters_h else free_dtype)
        h = gram(self.X.to(dtype), polar, self.eps) + self._extra_h(io, C1, B1_hat)
        return h, C1, B1_hat, io

    def _network_explicit(self, dtype: torch.dtype, defer: bool) -> Network:
        """The LBDN's explicit weights in ``dtype``, or a `DeferredNetwork` that builds them."""
        if defer:
            return DeferredNetwork(functools.partial(self.network.explicit, dtype,
                                                     fused=self.fused_maps))
        return self.network.explicit(dtype, fused=self.fused_maps)

    def _build_explicit(self, dtype: torch.dtype, certificate: bool = True,
                        network_dtype: torch.dtype | None = None,
                        defer_network: bool = False) -> ExplicitModel:
        # Parameters that do not enter the float64 algebra (the biases, C₁ as an explicit
        # matrix, the contracting family's I/O block) are cast once, straight to the target
        # dtype: the float64 round trip would give the same values at the cost of extra ops.
        nx, nv = self.state_size, self.features
        free = network_dtype or dtype
        if not certificate and self._contracting_map():
            # Training calls of the contracting family: the LTI map in one autograd.Function
            # (`_contracting_map`, the same float64 algebra, A and B₁ returned in ``free``).
            A, B1 = ContractingLTI.apply(self.contraction_rate, self.eps, free, self.X,
                                         self.polar_scale, self.Y, self.C1, self.B1_hat)
            io = self._io(free)
            return ExplicitModel(
                A=A, B1=B1, B2=io.B2_hat, C1=self.C1.to(free), C2=io.C2, D12=io.D12,
                D21=io.D21, D22=io.D22, bx=self.bx.to(free), bv=self.bv.to(free),
                by=self.by.to(free),
                network=self.network.explicit(free, fused=self.fused_maps))
        h, C1, B1_hat, io = self._h_matrix(dtype, free)
        e, f, p = implicit_model(h, self.Y.to(dtype), self.contraction_rate, nx)
        if self._supply is None:  # contracting family: B2 is free (not divided by E)
            A, B1 = torch.split(torch.linalg.solve(e, torch.cat([f, B1_hat], 1)), [nx, nv], dim=1)
            B2 = io.B2_hat
        else:
            A, B1, B2 = torch.split(torch.linalg.solve(e, torch.cat([f, B1_hat, io.B2_hat], 1)),
                                    [nx, nv, self.input_size], dim=1)
        return ExplicitModel(
            A=A, B1=B1, B2=B2, C1=C1 if free == dtype else self.C1.to(free), C2=io.C2,
            D12=io.D12, D21=io.D21, D22=io.D22,
            bx=self.bx.to(free), bv=self.bv.to(free), by=self.by.to(free),
            network=self._network_explicit(free, defer_network),
            metric=lyapunov_metric(e.detach(), p.detach()).double() if certificate else None,
            multiplier=torch.ones((), dtype=torch.float64, device=h.device) if certificate else None,
        )


class ContractingR2DN(_R2DN):
    r"""Contracting R2DN: ``‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫`` for any two trajectories under the same input.

    ``H = H_X + blkdiag(C₁ᵀC₁, B̂₁B̂₁ᵀ)``; ``B₂, D₁₂, C₂, D₂₁, D₂₂`` are free.

    Parameters
    ----------
    input_size, state_size, features, output_size : int
        nu, nx, nv, ny.
    hidden : sequence of int
        Hidden widths of the LBDN φ: ℝ^nv → ℝ^nv.
    output_layer : {"linear", "sandwich"}
        Last LBDN layer (see `LBDN`).
    **common
        See `RecurrentModel`.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int,
                 **kwargs) -> None:
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        nx, nv, nu, ny = self.state_size, self.features, self.input_size, self.output_size
        fk = self._factory
        # Input weights with fan-in = rows (std 1/√nx, 1/√nv), the reference flax code's
        # lecun_normal convention, not 1/√nu: with few inputs 1/√nu ≈ 1 made the input term
        # dominate v = C₁x + D₁₂u and x⁺ at initialisation (observer loss 19 vs 0.30), and
        # identification from short records was slower to leave the linear level (docs/sysid.md).
        self.B2 = nn.Parameter(lecun_normal_(torch.empty(nx, nu, **fk), fan_in=nx))
        self.D12 = nn.Parameter(lecun_normal_(torch.empty(nv, nu, **fk), fan_in=nv))
        if self.identity_output:
            self.register_buffer("D21", torch.zeros(ny, nv, **fk))
            self.register_buffer("D22", torch.zeros(ny, nu, **fk))
        else:
            self.D21 = nn.Parameter(lecun_normal_(torch.empty(ny, nv, **fk)))
            self.D22 = nn.Parameter(torch.zeros(ny, nu, **fk))
        self._finish_init()

    def _io(self, dtype: torch.dtype) -> IOBlock:
        return IOBlock(self.B2.to(dtype), self.C2.to(dtype), self.D12.to(dtype),
                       self.D21.to(dtype), self.D22.to(dtype))

    _io_enters_h = False

    def _extra_h(self, io: IOBlock, C1: Tensor, B1_hat: Tensor) -> Tensor:
        """``blkdiag(C₁ᵀC₁, B̂₁B̂₁ᵀ)`` (`add_quadratic` with 𝒩 = [0; B̂₁], R₁ = I)."""
        return torch.block_diag(C1.T @ C1, B1_hat @ B1_hat.T)


class _DissipativeR2DN(_R2DN):
    """Shared (Q,S,R) machinery: the supply rate on the right device and the H terms."""

    def _extra_h(self, io: IOBlock, C1: Tensor, B1_hat: Tensor) -> Tensor:
        nx = self.state_size
        top_left, ncal, r1 = dissipative_terms(io, C1, B1_hat, self._supply_on(C1.device))
        return add_quadratic(C1.new_zeros(2 * nx, 2 * nx), top_left, ncal, r1)


class GeneralR2DN(_DissipativeR2DN):
    r"""(Q,S,R)-dissipative R2DN: ``Σ_t s(Δu_t, Δy_t) ≥ −Δx₀ᵀ𝒫Δx₀`` on any pair of trajectories.

    The feedthrough is parameterized through contractions N₁₂ (nv×nu), N₂₁ (ny×nv) and
    optionally N₂₂ = F₂₁ K F₁₂ (``full_d22=True``) so that ‖[[0, N₁₂],[N₂₁, N₂₂]]‖ < 1:

    ``D₁₂ = N₁₂L_R``, ``D₂₁ = L_Q⁻¹N₂₁``, ``D₂₂ = −Q⁻¹Sᵀ + L_Q⁻¹N₂₂L_R``.

    Parameters
    ----------
    Q, S, R : array_like
        Supply rate with Q ≺ 0 and R − SQ⁻¹Sᵀ ≻ 0 (shapes ny×ny, nu×ny, nu×nu).
    full_d22 : bool
        Learn the full feedthrough D₂₂ (otherwise D₂₂ sits at the centre −Q⁻¹Sᵀ).
    **kwargs
        See `ContractingR2DN`.

    Notes
    -----
    With ``identity_output=True``: C₂ = I, D₂₁ = 0 and D₂₂ = −Q⁻¹Sᵀ.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 Q: object, S: object, R: object, full_d22: bool = False, **kwargs) -> None:
        supply = SupplyRate.from_matrices(Q, S, R, input_size, output_size)
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        self._supply = supply
        self.full_d22 = bool(full_d22) and not self.identity_output
        nx, nv, nu, ny = self.state_size, self.features, self.input_size, self.output_size
        fk = self._factory
        self.B2_hat = nn.Parameter(lecun_normal_(torch.empty(nx, nu, **fk)))
        self.N12 = ContractionFactor(nv, nu, self.eps, **fk)
        self.N21 = None if self.identity_output else ContractionFactor(
            ny, nv, self.eps, zero=self.init_output_zero, **fk)
        self.K22 = ContractionFactor(ny, nu, self.eps, zero=True, **fk) if self.full_d22 else None
        self._finish_init()

    def contractions(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(N₁₂, N₂₁, N₂₂)`` in ``dtype``; zeros where fixed."""
        ny, nv, nu = self.output_size, self.features, self.input_size
        n12 = self.N12.matrix(dtype)
        n21 = n12.new_zeros(ny, nv) if self.N21 is None else self.N21.matrix(dtype)
        if self.K22 is None:
            return n12, n21, n12.new_zeros(ny, nu)
        # Parrott / Davis–Kahan–Weinberger completion: N22 = F21 K F12.
        f21 = torch.linalg.cholesky(eye_like(n21, ny) - n21 @ n21.T)
        f12 = torch.linalg.cholesky(eye_like(n12, nu) - n12.T @ n12).T
        return n12, n21, f21 @ self.K22.matrix(dtype) @ f12

    def _io(self, dtype: torch.dtype) -> IOBlock:
        supply = self._supply_on(self.X.device)
        l_q, l_r = supply.factors(dtype)
        n12, n21, n22 = self.contractions(dtype)
        d12 = n12 @ l_r
        d21 = torch.linalg.solve_triangular(l_q, n21, upper=True)
        d22 = supply.feedthrough(None if self.K22 is None else n22, n12)
        return IOBlock(self.B2_hat.to(dtype), self.C2.to(dtype), d12, d21, d22)


class LipschitzR2DN(GeneralR2DN):
    r"""R2DN with incremental ℓ₂ gain at most γ:
    ``‖Δy‖₂ ≤ γ‖Δu‖₂ + (γΔx₀ᵀ𝒫Δx₀)^{1/2}``.

    The (Q,S,R) R2DN with ``Q = −I/γ, S = 0, R = γI``: ``D₁₂ = √γN₁₂``, ``D₂₁ = √γN₂₁``,
    ``D₂₂ = γN₂₂`` (0 unless ``full_d22``), docs/theory.md §3.

    Parameters
    ----------
    gamma, gamma_init : float or "learn", float
        The prescribed bound γ > 0, or ``"learn"`` from ``gamma_init``
        (`LipschitzBound`; current value
        `gamma_bound`).
    full_d22 : bool
        Learn a feedthrough D₂₂ (extension of the paper's D₂₂ = 0).
    **kwargs
        See `ContractingR2DN`.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 gamma: float | str = 1.0, gamma_init: float = 1.0, full_d22: bool = False,
                 **kwargs) -> None:
        supply = SupplyRate.lipschitz(initial_gamma(gamma, gamma_init), input_size, output_size)
        super().__init__(input_size, state_size, features, output_size,
                         Q=supply.Q, S=supply.S, R=supply.R, full_d22=full_d22, **kwargs)
        self.lipschitz_bound = LipschitzBound(gamma, gamma_init, **self._factory)


class PassiveR2DN(_DissipativeR2DN):
    r"""Incrementally input-passive R2DN: ``Σ_t (2Δu_tᵀΔy_t − 2ν‖Δu_t‖²) ≥ −Δx₀ᵀ𝒫Δx₀``.

    Supply ``Q = 0, S = I, R = −2νI`` (needs ``input_size == output_size``).
    ``D₁₂, D₂₁`` are free and ``D₂₂ = νI + ½(D₁₂ᵀD₁₂ + D₂₁D₂₁ᵀ + X₃ᵀX₃ + εI) + Y₃ − Y₃ᵀ``,
    which makes ``R₁ ≻ 0``.

    Parameters
    ----------
    input_passivity : float
        Input passivity index ν ≥ 0.
    **kwargs
        See `ContractingR2DN`.
    """

    def __init__(self, input_size: int, state_size: int, features: int, output_size: int, *,
                 input_passivity: float = 0.0, **kwargs) -> None:
        supply = self._passive_supply("PassiveR2DN", input_size, output_size, input_passivity)
        super().__init__(input_size, state_size, features, output_size, **kwargs)
        nx, nv, nu, ny = self.state_size, self.features, self.input_size, self.output_size
        fk = self._factory
        self.B2_hat = nn.Parameter(lecun_normal_(torch.empty(nx, nu, **fk)))
        self.D12 = nn.Parameter(lecun_normal_(torch.empty(nv, nu, **fk)))
        if self.identity_output:
            self.register_buffer("D21", torch.zeros(ny, nv, **fk))
        else:
            self.D21 = nn.Parameter(lecun_normal_(torch.empty(ny, nv, **fk)))
        self._add_passivity_parameters(supply, input_passivity)
        self._finish_init()

    def _io(self, dtype: torch.dtype) -> IOBlock:
        d12, d21 = self.D12.to(dtype), self.D21.to(dtype)
        x3, y3 = self.X3.to(dtype), self.Y3.to(dtype)
        eye = eye_like(x3, self.input_size)
        d22 = (self.input_passivity * eye
               + 0.5 * (d12.T @ d12 + d21 @ d21.T + x3.T @ x3 + self.eps * eye) + y3 - y3.T)
        return IOBlock(self.B2_hat.to(dtype), self.C2.to(dtype), d12, d21, d22)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", input_passivity={self.input_passivity}"
