"""Compatibility path: the Stable-Baselines3 adapters live in `r2dn_control.integrations.sb3`.

(A package rather than ``sb3.py`` so that version control sees ``sb3.py`` as renamed.)
"""

from ..integrations.sb3 import LBDNActorCriticPolicy, R2DNHistoryExtractor

__all__ = ["LBDNActorCriticPolicy", "R2DNHistoryExtractor"]
