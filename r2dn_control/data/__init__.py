"""Datasets: simulated benchmark systems (and, later, loaders for measured data)."""

from .simulated import DuffingOscillator, multisine

__all__ = ["DuffingOscillator", "multisine"]
