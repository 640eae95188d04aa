"""Certificates: the incremental LMIs of math.md §4 checked in float64.

Reads a model's explicit matrices; never trains.
"""

from .lmi import StateSpaceBlocks, dissipation_matrix, min_eigenvalue, relative_margin

__all__ = ["StateSpaceBlocks", "dissipation_matrix", "min_eigenvalue", "relative_margin"]
