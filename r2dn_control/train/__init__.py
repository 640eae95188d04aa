"""Training loops, losses and metrics."""

from .metrics import nrmse
from .sysid import FitResult, fit_sequences

__all__ = ["FitResult", "fit_sequences", "nrmse"]
