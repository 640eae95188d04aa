"""Adapters to other libraries' APIs (optional dependencies, imported only on use).

* `r2dn_control.integrations.sb3`: Stable-Baselines3 policies and feature extractors
  with a Lipschitz bound (needs the ``rl`` extra).
"""
