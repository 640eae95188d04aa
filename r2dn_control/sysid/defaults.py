"""Recommended starting models for identification (:func:`default_model`).

Defaults (docs/sysid.md, "Defaults that generalise", gives the study behind them):

* ``init="long_memory"`` with contraction rate ᾱ = :data:`DEFAULT_CONTRACTION_RATE` (< 1). The
  constructors' own default ᾱ = 1 lets the slowest pole drift to |λ| → 1, where a model can fit a
  training record with a slow drift instead of the system; ᾱ < 1 bounds every pole's modulus by ᾱ
  (docs/theory.md §3), so it must stay above the data's slowest true pole (e.g. a mode of
  damping ratio ζ and natural frequency ω_n, sampled at dt, has |λ| = exp(−ζ ω_n dt)).
* Sizes: ``"small"`` (nx = 16, nv = 32, LBDN 2×32) trains in minutes on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import ContractingR2DN, ContractingREN, LipschitzR2DN, LipschitzREN
from .baselines import matched_baseline

DEFAULT_CONTRACTION_RATE = 0.995
SIZES = {"small": (16, 32, (32, 32)), "medium": (32, 64, (64, 64)), "large": (75, 75, (87, 87, 87))}
KINDS = ("r2dn", "ren", "gru", "lstm")


def default_model(input_size: int, output_size: int, kind: str = "r2dn", size: str = "small", *,
                  contraction_rate: float = DEFAULT_CONTRACTION_RATE, gamma: float | str | None = None,
                  seed: int | None = None, **kwargs) -> nn.Module:
    """A model with the identification defaults above.

    Parameters
    ----------
    input_size, output_size : int
        nu and ny.
    kind : {"r2dn", "ren", "gru", "lstm"}
        R2DN or REN (contracting, or Lipschitz when ``gamma`` is given); ``"gru"``/``"lstm"``: the
        unconstrained baseline with the same parameter count as the R2DN of this size.
    size : {"small", "medium", "large"}
        (nx, nv, LBDN hidden widths); "large" is the F-16 paper's R2DN.
    contraction_rate : float
        ᾱ (see the module docstring).
    gamma : float or "learn", optional
        Lipschitz bound γ of the normalised model (``"learn"``: a learned bound, where the
        family supports it).
    seed : int, optional
        ``torch.manual_seed(seed)`` before building.
    **kwargs
        Passed to the constructor (override any default).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    if seed is not None:
        torch.manual_seed(seed)
    nx, nv, hidden = SIZES[size]
    if kind in ("gru", "lstm"):
        reference = default_model(input_size, output_size, "r2dn", size)
        return matched_baseline(reference, cell=kind)
    options = {"init": "long_memory", "contraction_rate": contraction_rate, **kwargs}
    if gamma is not None:
        options["gamma"] = gamma
    if kind == "r2dn":
        cls = ContractingR2DN if gamma is None else LipschitzR2DN
        options.setdefault("hidden", hidden)
        return cls(input_size, nx, nv, output_size, **options)
    cls = ContractingREN if gamma is None else LipschitzREN
    return cls(input_size, nx, nv, output_size, **options)
