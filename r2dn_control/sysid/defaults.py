"""Recommended starting models for identification (`default_model`).

Defaults (docs/sysid.md, "Defaults that generalise", gives the study behind them):

* ``init="long_memory"`` with a contraction rate ᾱ **estimated from the training data** when
  ``default_model(train)`` is given a `SequenceData`: ᾱ = min(1, max(0.9, |λ|max^{1/4}))
  where |λ|max is the slowest pole of a least-squares ARX fit (`.poles`). ᾱ bounds every
  pole's modulus (docs/theory.md §3), so a fixed default is wrong in both directions: below the
  data's slowest pole (a mode of damping ζ and natural frequency ω_n sampled at dt has
  |λ| = exp(−ζ ω_n dt)) that mode cannot be represented; at ᾱ = 1 nothing bounds how slowly
  the model forgets its initial state. Between the two, the certificate charges the nonlinear
  channel's gain through a mode to the gap ᾱ − |λ|: the exponent 1/4 (the model is certified to
  forget at a quarter of the data's slowest decay rate) leaves 2.25 times the gain the former
  1/2 left, which lightly damped nonlinear oscillators need (`.poles`, docs/sysid.md). With the
  old signature ``default_model(nu, ny)`` there is no data to estimate from and
  ᾱ = `DEFAULT_CONTRACTION_RATE`.
* Sizes: ``"small"`` (nx = 16, nv = 32, one hidden LBDN layer of 32; about 6.6k parameters for
  one input and one output) trains in minutes on a CPU. One hidden layer, not two: see `SIZES`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nn import ContractingR2DN, ContractingREN, LipschitzR2DN, LipschitzREN
from ..nn.base import RecurrentModel
from .baselines import matched_baseline
from .data import SequenceData
from .poles import DEFAULT_ORDER, suggested_contraction_rate

DEFAULT_CONTRACTION_RATE = 0.995
#: (nx, nv, LBDN hidden widths) per size. One hidden LBDN layer for "small"/"medium": every
#: 1-Lipschitz sandwich layer passes only about 60 % of its input's energy-RMS at initialisation
#: (its relu halves the active directions), so two hidden layers transmit about a quarter of the
#: gain the contraction certificate pays for, and the trained R2DN did not use its nonlinearity
#: (docs/sysid.md, "Defaults that generalise"). "large" is the F-16 paper's R2DN.
SIZES = {"small": (16, 32, (32,)), "medium": (32, 64, (64,)), "large": (75, 75, (87, 87, 87))}
KINDS = ("r2dn", "ren", "gru", "lstm")


def default_model(data_or_nu: SequenceData | int, output_size: int | None = None,
                  kind: str = "r2dn", size: str = "small", *,
                  contraction_rate: float | str = "auto", gamma: float | str | None = None,
                  seed: int | None = None, arx_order: int = DEFAULT_ORDER,
                  **kwargs) -> nn.Module:
    """A model with the identification defaults above.

    Parameters
    ----------
    data_or_nu : SequenceData or int
        The training data (nu and ny are read from it, and ᾱ is estimated from it), or nu.
    output_size : int, optional
        ny; required with an int ``data_or_nu``, not allowed with data.
    kind : {"r2dn", "ren", "gru", "lstm"}
        R2DN or REN (contracting, or Lipschitz when ``gamma`` is given); ``"gru"``/``"lstm"``: the
        unconstrained baseline with the same parameter count as the R2DN of this size.
    size : {"small", "medium", "large"}
        (nx, nv, LBDN hidden widths) of `SIZES`; "large" is the F-16 paper's R2DN.
    contraction_rate : float or "auto"
        ᾱ. ``"auto"``: `suggested_contraction_rate` of the data
        (ARX order ``arx_order``), or `DEFAULT_CONTRACTION_RATE` without data. The chosen
        value is the model's ``contraction_rate`` attribute.
    gamma : float or "learn", optional
        Lipschitz bound γ of the normalised model (``"learn"``: a learned bound, where the
        family supports it).
    seed : int, optional
        ``torch.manual_seed(seed)`` before building.
    arx_order : int
        ARX order of the pole estimate.
    **kwargs
        Passed to the constructor (override any default, e.g. ``hidden=(32, 32)``).
    """
    input_size, ny = io_sizes(data_or_nu, output_size)
    rate = resolve_contraction_rate(data_or_nu, contraction_rate, arx_order)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    if seed is not None:
        torch.manual_seed(seed)
    if kind in ("gru", "lstm"):
        reference = default_model(input_size, ny, "r2dn", size, contraction_rate=0.995)
        return matched_baseline(reference, cell=kind)
    return _certified_model(kind, size, input_size, ny, rate, gamma, kwargs)


def io_sizes(data_or_nu: SequenceData | int, output_size: int | None) -> tuple[int, int]:
    """``(nu, ny)`` from the training data, or from the two ints of the old signature.

    Raises
    ------
    TypeError
        For data together with ``output_size``, an int without an int ``output_size``, or
        anything else.
    """
    if isinstance(data_or_nu, SequenceData):
        if output_size is not None:
            raise TypeError("default_model(data) reads ny from the data; got output_size="
                            f"{output_size!r} as well")
        return data_or_nu.nu, data_or_nu.ny
    if isinstance(data_or_nu, int) and not isinstance(data_or_nu, bool):
        if not (isinstance(output_size, int) and not isinstance(output_size, bool)):
            raise TypeError("default_model(nu, ny) needs an int output_size, got "
                            f"{output_size!r}")
        return data_or_nu, output_size
    raise TypeError("default_model expects the training SequenceData or (nu, ny) ints, got "
                    f"{type(data_or_nu).__name__}")


def resolve_contraction_rate(data_or_nu: SequenceData | int, contraction_rate: float | str,
                             arx_order: int = DEFAULT_ORDER) -> float:
    """ᾱ for `default_model`: a given number, or for ``"auto"`` the data's
    `suggested_contraction_rate` (`DEFAULT_CONTRACTION_RATE` without data)."""
    if contraction_rate == "auto":
        if isinstance(data_or_nu, SequenceData):
            return suggested_contraction_rate(data_or_nu, arx_order)
        return DEFAULT_CONTRACTION_RATE
    if isinstance(contraction_rate, str):
        raise ValueError(f"contraction_rate must be a number or 'auto', got {contraction_rate!r}")
    return float(contraction_rate)


def _certified_model(kind: str, size: str, input_size: int, output_size: int, rate: float,
                     gamma: float | str | None, kwargs: dict[str, Any]) -> RecurrentModel:
    """The R2DN/REN of ``size``: contracting, or Lipschitz when ``gamma`` is given."""
    nx, nv, hidden = SIZES[size]
    options: dict[str, Any] = {"init": "long_memory", "contraction_rate": rate, **kwargs}
    if gamma is not None:
        options["gamma"] = gamma
    if kind == "r2dn":
        options.setdefault("hidden", hidden)
        r2dn = ContractingR2DN if gamma is None else LipschitzR2DN
        return r2dn(input_size, nx, nv, output_size, **options)
    ren = ContractingREN if gamma is None else LipschitzREN
    return ren(input_size, nx, nv, output_size, **options)
