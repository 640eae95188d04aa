"""Every recurrent model family, registered once, so one property suite tests them all.

A new family (e.g. the REN baselines) adds a :class:`Family` entry to ``FAMILIES``; the
certificate and trajectory properties in ``test_certificates_property.py`` then cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from r2dn_control.nn import (
    ContractingR2DN,
    ContractingREN,
    GeneralR2DN,
    GeneralREN,
    LipschitzR2DN,
    LipschitzREN,
    PassiveR2DN,
    PassiveREN,
    RecurrentModel,
)


@dataclass(frozen=True)
class Sizes:
    nu: int
    nx: int
    nv: int
    ny: int
    hidden: tuple[int, ...]


Builder = Callable[[Sizes, np.random.Generator, dict], RecurrentModel]


@dataclass(frozen=True)
class Family:
    """``build(sizes, rng, common_kwargs)`` makes a model; ``square_io`` needs nu == ny."""

    name: str
    build: Builder
    square_io: bool = False


def random_supply(nu: int, ny: int, rng: np.random.Generator):
    """A random valid (Q, S, R): Q ≺ 0 and R − SQ⁻¹Sᵀ ≻ 0."""
    lq = rng.normal(size=(ny, ny))
    q = -(lq @ lq.T + 0.1 * np.eye(ny))
    s = rng.normal(size=(nu, ny))
    lr = rng.normal(size=(nu, nu))
    r = s @ np.linalg.solve(q, s.T) + lr @ lr.T + 0.1 * np.eye(nu)
    return q, s, 0.5 * (r + r.T)


def _lipschitz_kwargs(kw: dict, rng: np.random.Generator) -> None:
    """A drawn γ, or for ``gamma="learn"`` a drawn initial γ (the suite then perturbs ρ = log γ
    with the other parameters, so the guarantee is checked at the model's current γ)."""
    drawn = float(rng.choice([0.1, 1.0, 5.0]))
    if kw.get("gamma") == "learn":
        kw.setdefault("gamma_init", drawn)
    else:
        kw.setdefault("gamma", drawn)


def _r2dn(cls, **extra) -> Builder:
    def build(sz: Sizes, rng: np.random.Generator, common: dict) -> RecurrentModel:
        kw = dict(extra)
        if cls is GeneralR2DN:
            q, s, r = random_supply(sz.nu, sz.ny, rng)
            kw.update(Q=q, S=s, R=r)
        if cls is LipschitzR2DN:
            _lipschitz_kwargs(kw, rng)
        return cls(sz.nu, sz.nx, sz.nv, sz.ny, hidden=sz.hidden, **kw, **common)

    return build


FAMILIES: list[Family] = [
    Family("ContractingR2DN", _r2dn(ContractingR2DN)),
    Family("LipschitzR2DN", _r2dn(LipschitzR2DN)),
    Family("LipschitzR2DN-fullD22", _r2dn(LipschitzR2DN, full_d22=True)),
    Family("LipschitzR2DN-learnedγ", _r2dn(LipschitzR2DN, gamma="learn", full_d22=True)),
    Family("GeneralR2DN", _r2dn(GeneralR2DN)),
    Family("GeneralR2DN-fullD22", _r2dn(GeneralR2DN, full_d22=True)),
    Family("PassiveR2DN", _r2dn(PassiveR2DN, input_passivity=0.3), square_io=True),
]


def _ren(cls, **extra) -> Builder:
    """REN builders: same supply draws as R2DN; ``sizes.hidden`` does not apply."""

    def build(sz: Sizes, rng: np.random.Generator, common: dict) -> RecurrentModel:
        kw = dict(extra)
        if cls is GeneralREN:
            q, s, r = random_supply(sz.nu, sz.ny, rng)
            kw.update(Q=q, S=s, R=r)
        if cls is LipschitzREN:
            _lipschitz_kwargs(kw, rng)
        return cls(sz.nu, sz.nx, sz.nv, sz.ny, **kw, **common)

    return build


FAMILIES += [
    Family("ContractingREN", _ren(ContractingREN)),
    Family("LipschitzREN", _ren(LipschitzREN)),
    Family("LipschitzREN-zeroD22", _ren(LipschitzREN, full_d22=False)),
    Family("LipschitzREN-learnedγ", _ren(LipschitzREN, gamma="learn")),
    Family("GeneralREN", _ren(GeneralREN)),
    Family("PassiveREN", _ren(PassiveREN, input_passivity=0.3), square_io=True),
]
