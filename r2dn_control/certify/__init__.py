"""Certificates: the incremental LMIs of docs/theory.md §4 checked in float64.

Reads a model's explicit matrices; never trains. Entry points: `contraction`,
`lipschitz`, `dissipativity` (see ``docs/certificates.md``).
"""

from .api import contraction, dissipativity, lipschitz
from .closed_loop import ClosedLoop
from .empirical import contraction_lower_bound, lipschitz_lower_bound
from .lmi import (
    StateSpaceBlocks,
    Validation,
    dissipation_matrix,
    min_eigenvalue,
    relative_margin,
    validate,
)
from .physical import in_physical_units
from .result import CERTIFIED, INCONCLUSIVE, NOT_CERTIFIED, CertificateResult
from .target import Target, as_target

__all__ = [
    "CERTIFIED",
    "INCONCLUSIVE",
    "NOT_CERTIFIED",
    "CertificateResult",
    "ClosedLoop",
    "StateSpaceBlocks",
    "Target",
    "Validation",
    "as_target",
    "contraction",
    "contraction_lower_bound",
    "dissipation_matrix",
    "dissipativity",
    "in_physical_units",
    "lipschitz",
    "lipschitz_lower_bound",
    "min_eigenvalue",
    "relative_margin",
    "validate",
]
