r"""The constraints every family composes, as small modules (docs/theory.md §1–§3).

Each module owns the direct (free) parameters of one constrained quantity and maps them to it;
every parameter value gives a quantity that satisfies the constraint, so gradient descent
never leaves the certified set:

* `ContractionFactor`: a matrix N with ‖N‖ < 1 (the feedthrough contractions of the
  (Q,S,R) families; `contraction`).
* `LipschitzBound`: the prescribed Lipschitz bound γ > 0 of the Lipschitz families,
  fixed, or learned as γ = exp(ρ) of a scalar parameter ρ (``gamma="learn"``).

The positive definite factor ``H_X = XᵀX + εI`` (`gram`) and
the LBDN's Cayley transform (`cayley`) stay functions of
parameters held by the model itself, so that checkpoints keep their state-dict keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _checks
from ._algebra import contraction, contraction_size, lecun_normal_, zero_contraction_params
from .iqc import SupplyRate

LEARN = "learn"


class ContractionFactor(nn.Module):
    """Direct parameters ``(X, Y, Z)`` of a matrix N (rows×cols) with ‖N‖ < 1.

    See `r2dn_control.nn._algebra.contraction` (docs/theory.md §3).
    """

    def __init__(self, rows: int, cols: int, eps: float, zero: bool = False, **factory) -> None:
        super().__init__()
        self.rows, self.cols, self.eps = rows, cols, eps
        (d, _), z_shape = contraction_size(rows, cols)
        self.X = nn.Parameter(lecun_normal_(torch.empty(d, d, **factory)))
        self.Y = nn.Parameter(lecun_normal_(torch.empty(d, d, **factory)))
        self.Z = nn.Parameter(lecun_normal_(torch.empty(*z_shape, **factory), fan_in=d))
        if zero:
            self.set_zero()

    def set_zero(self) -> None:
        """Make N = 0 exactly."""
        with torch.no_grad():
            self.X.copy_(zero_contraction_params(self.X.shape[0], self.eps, self.X.dtype))
            self.Y.zero_()
            self.Z.zero_()

    def matrix(self, dtype: torch.dtype) -> Tensor:
        """N in ``dtype``."""
        return contraction(self.X.to(dtype), self.Y.to(dtype), self.Z.to(dtype),
                           self.rows, self.cols, self.eps)


def initial_gamma(gamma: object, gamma_init: object) -> float:
    """The starting value of γ: ``gamma`` itself, or ``gamma_init`` when ``gamma="learn"``.

    Raises ``TypeError``/``ValueError`` naming the expected values.
    """
    if isinstance(gamma, str):
        if gamma != LEARN:
            raise TypeError(f"gamma must be a float > 0 or {LEARN!r}, got {gamma!r}")
        return _checks.positive_float("gamma_init", gamma_init)
    return _checks.positive_float("gamma", gamma)


class LipschitzBound(nn.Module):
    r"""The prescribed Lipschitz bound γ > 0 of a Lipschitz family (docs/theory.md §0, §3).

    ``gamma`` a float: γ is that constant (no parameter). ``gamma="learn"``: γ = exp(ρ) with
    one scalar parameter ``log_gamma`` = ρ, initialised to log(``gamma_init``); exp is taken in
    float64 whatever the parameter dtype, so γ > 0 for every finite ρ and the supply rate
    ``Q = −I/γ, S = 0, R = γI`` built from it is valid for every parameter value. The
    certificate holds for the γ that `value` returns.
    """

    def __init__(self, gamma: float | str = 1.0, gamma_init: float = 1.0, *,
                 dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        start = initial_gamma(gamma, gamma_init)
        self.learns = isinstance(gamma, str)
        self.log_gamma: nn.Parameter | None
        if self.learns:
            self.log_gamma = nn.Parameter(torch.tensor(math.log(start), dtype=dtype,
                                                       device=device))
        else:
            self.log_gamma = None
        # A fixed γ stays a Python float (exact whatever the model's dtype; not in the state
        # dict: the constructor arguments hold it).
        self.fixed = None if self.learns else start

    def value(self, device: torch.device | str | None = None) -> Tensor:
        """γ as a 0-d float64 tensor (differentiable in ``log_gamma`` when learned)."""
        if self.log_gamma is None:
            return torch.tensor(self.fixed, dtype=torch.float64, device=device)
        return torch.exp(self.log_gamma.to(dtype=torch.float64, device=device))

    def supply(self, input_size: int, output_size: int,
               device: torch.device | str | None = None) -> SupplyRate:
        """The supply rate ``Q = −I/γ, S = 0, R = γI`` at the current γ (differentiable)."""
        return SupplyRate.lipschitz_tensor(self.value(device), input_size, output_size)

    def extra_repr(self) -> str:
        now = f"{self.value().item():.6g}"
        return f"gamma={LEARN!r}, now={now}" if self.learns else f"gamma={now}"
