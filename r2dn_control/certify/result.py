"""The result object every certificate returns.

A result never says more than was proved: ``status == "certified"`` only after the returned
(𝒫, multiplier) passed the float64 re-validation of the LMI (`lmi.validate`).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CERTIFIED = "certified"
NOT_CERTIFIED = "not certified"
INCONCLUSIVE = "inconclusive"
STATUSES = (CERTIFIED, NOT_CERTIFIED, INCONCLUSIVE)


@dataclass
class CertificateResult:
    """Outcome of one certificate check.

    Attributes
    ----------
    property : str
        ``"contraction"``, ``"lipschitz"`` or ``"dissipativity"``.
    status : str
        ``"certified"`` (an LMI certificate was found and re-validated in float64),
        ``"not certified"`` (the check ran cleanly and the property could not be proved: the
        LMI is infeasible for the requested bound, or no certificate exists within the search),
        or ``"inconclusive"`` (solver error, inaccurate solver status, or failed re-validation).
    bound : float or None
        The certified contraction rate ᾱ or incremental ℓ₂ gain γ (None for a (Q,S,R) check
        or when nothing was certified).
    margin : float or None
        Relative LMI margin ``λ_min(M)/max(1, max|𝒫|)`` of the returned certificate (≥ −tol).
    P : ndarray or None
        The Lyapunov metric 𝒫 (original coordinates, float64).
    multiplier : float, ndarray or None
        The IQC multiplier λ (scalar, 1-Lipschitz φ) or diag Λ (slope-restricted σ).
    solver : str
        ``"implied"``, ``"kyp"``, ``"CLARABEL"``, ``"SCS"``, ``"MOSEK"``, ``"sandwich"``, ...
    seconds : float
        Wall time of the check.
    requested : float or None
        The rate/γ that was asked for, if any.
    lower_bound : float or None
        An empirical lower bound on the true value (adversarial search), if computed.
    message : str
        Why the status is what it is (human readable).
    details : dict
        Anything else worth recording (supply rate, solver status, iterations, ...).
    """

    property: str
    status: str
    bound: float | None = None
    margin: float | None = None
    P: np.ndarray | None = field(default=None, repr=False)
    multiplier: Any = field(default=None, repr=False)
    solver: str = ""
    seconds: float = 0.0
    requested: float | None = None
    lower_bound: float | None = None
    message: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    # ``builtins.property``: the ``property`` field above shadows the name in this class body.
    @builtins.property
    def certified(self) -> bool:
        """True only for a re-validated certificate."""
        return self.status == CERTIFIED

    def __bool__(self) -> bool:
        return self.certified

    def __repr__(self) -> str:
        parts = [f"{self.property}: {self.status}"]
        if self.bound is not None:
            parts.append(f"bound={self.bound:.6g}")
        if self.requested is not None:
            parts.append(f"requested={self.requested:.6g}")
        if self.lower_bound is not None:
            parts.append(f"lower_bound={self.lower_bound:.6g}")
        if self.margin is not None:
            parts.append(f"margin={self.margin:.3g}")
        parts.append(f"solver={self.solver}")
        parts.append(f"{self.seconds:.3g}s")
        text = "CertificateResult(" + ", ".join(parts) + ")"
        return text + (f"\n  {self.message}" if self.message else "")

    def to_dict(self, include_matrices: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (matrices as nested lists unless ``include_matrices=False``)."""
        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, (np.floating, np.integer)):
                return value.item()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        out = {
            "property": self.property, "status": self.status, "bound": self.bound,
            "margin": self.margin, "solver": self.solver, "seconds": self.seconds,
            "requested": self.requested, "lower_bound": self.lower_bound,
            "message": self.message, "details": plain(self.details),
        }
        if include_matrices:
            out["P"] = plain(self.P)
            out["multiplier"] = plain(self.multiplier)
        return out

    def to_json(self, include_matrices: bool = True, **kwargs: Any) -> str:
        """``json.dumps(self.to_dict(...))``."""
        return json.dumps(self.to_dict(include_matrices), **kwargs)
