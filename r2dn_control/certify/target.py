r"""What a certificate is checked on: the LTI blocks, the nonlinearity's IQC, and a simulator.

Every accepted object (a recurrent model, an explicit model, a discrete ``control.StateSpace``,
anything with a ``to_target()`` method such as
`ClosedLoop`) is converted to a `Target`:

$$
x^+ = A x + B_1 w + B_2 u,\quad v = C_1 x + D_{11} w + D_{12} u,\quad
y = C_2 x + D_{21} w + D_{22} u,\quad w = \phi(v),
$$

with the IQC of φ: ``"lipschitz"`` (φ is 1-Lipschitz, scalar multiplier λ, the R2DN case),
``"slope"`` (φ is an elementwise slope-[0,1] map possibly behind a strictly lower triangular
D₁₁, diagonal multiplier Λ, the REN case) or ``"none"`` (nv = 0, an LTI system).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..nn.base import RecurrentModel
from ..nn.explicit import ExplicitModel
from .lmi import StateSpaceBlocks

NONLINEARITIES = ("lipschitz", "slope", "none")

#: ``simulate(u, x0) -> (y, states)`` with u (B, T, nu), x0 (B, nx) float64 tensors; returns
#: y (B, T, ny) and the states x₀ … x_T (B, T+1, nx). Differentiable in u and x0.
Simulator = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class Target:
    """A system to certify.

    Attributes
    ----------
    blocks : StateSpaceBlocks
        Float64 LTI blocks.
    nonlinearity : {"lipschitz", "slope", "none"}
        Which IQC multiplier applies (scalar λ, diagonal Λ, none).
    name : str
        Shown in reports.
    metric, multiplier : ndarray or None
        The certificate implied by the parameterization, if any.
    rate : float or None
        The contraction rate the parameterization guarantees, if any.
    supply : (Q, S, R) or None
        The supply rate the parameterization guarantees, if any.
    gamma : float or None
        The Lipschitz bound the parameterization guarantees, if any.
    simulate : Simulator or None
        For empirical lower bounds.
    cascade : certify.cascade.Cascade or None
        The cascade structure of the state (a model between LTI parts that do not feed back,
        e.g. a Youla loop; set by `ClosedLoop`), used by the ``"cascade"`` tier.
    """

    blocks: StateSpaceBlocks
    nonlinearity: str
    name: str = "system"
    metric: np.ndarray | None = None
    multiplier: np.ndarray | float | None = None
    rate: float | None = None
    supply: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    gamma: float | None = None
    simulate: Simulator | None = None
    cascade: Any = None

    def __post_init__(self) -> None:
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {self.nonlinearity!r}")
        self._radius: tuple[object, float] | None = None

    @property
    def spectral_radius(self) -> float:
        """ρ(A) in float64 (cached per ``blocks`` object; ``inf`` if A is not finite)."""
        if self._radius is None or self._radius[0] is not self.blocks:
            a = self.blocks.A
            if not a.size:
                value = 0.0
            elif not np.all(np.isfinite(a)):
                value = math.inf
            else:
                value = float(np.abs(np.linalg.eigvals(a)).max())
            self._radius = (self.blocks, value)
        return self._radius[1]

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(nu, nx, nv, ny)``."""
        return self.blocks.sizes

    @property
    def has_feedthrough_loop(self) -> bool:
        """True when D₁₁ ≠ 0 (REN, or a closed loop with an algebraic path through φ)."""
        return bool(np.any(self.blocks.D11 != 0))

    def zero_multiplier(self) -> np.ndarray | float:
        """A multiplier of the right kind with value 0 (what an LTI system uses)."""
        nv = self.blocks.C1.shape[0]
        return np.zeros(nv) if self.nonlinearity == "slope" else 0.0

    @classmethod
    def from_blocks(cls, blocks: StateSpaceBlocks, nonlinearity: str = "slope",
                    network: Callable[[Tensor], Tensor] | None = None, name: str = "system") -> Target:
        """A target from raw blocks and, optionally, the torch nonlinearity ``w = φ(v)``.

        With ``D11 ≠ 0`` the network must already solve ``w = σ(D₁₁w + b)`` given ``b``.
        """
        sim = None if network is None else _blocks_simulator(blocks, network)
        return cls(blocks, nonlinearity, name=name, simulate=sim)


def simulate_explicit(model: ExplicitModel, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Roll out an explicit model returning every state (float64, differentiable)."""
    xs, ys = [x0], []
    x = x0
    for t in range(u.shape[1]):
        ut = u[:, t]
        w = model.network(x @ model.C1.T + ut @ model.D12.T + model.bv)
        ys.append(x @ model.C2.T + w @ model.D21.T + ut @ model.D22.T + model.by)
        x = x @ model.A.T + w @ model.B1.T + ut @ model.B2.T + model.bx
        xs.append(x)
    return torch.stack(ys, 1), torch.stack(xs, 1)


def _blocks_simulator(ss: StateSpaceBlocks, network: Callable[[Tensor], Tensor] | None) -> Simulator:
    mats = {k: torch.as_tensor(getattr(ss, k), dtype=torch.float64)
            for k in ("A", "B1", "B2", "C1", "C2", "D12", "D21", "D22")}

    def simulate(u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        xs, ys = [x0], []
        x = x0
        for t in range(u.shape[1]):
            ut = u[:, t]
            v = x @ mats["C1"].T + ut @ mats["D12"].T
            w = network(v) if network is not None else v[:, :0]
            ys.append(x @ mats["C2"].T + w @ mats["D21"].T + ut @ mats["D22"].T)
            x = x @ mats["A"].T + w @ mats["B1"].T + ut @ mats["B2"].T
            xs.append(x)
        return torch.stack(ys, 1), torch.stack(xs, 1)

    return simulate


def _from_recurrent(model: RecurrentModel) -> Target:
    # The direct-to-explicit algebra runs in float64 whatever the parameter dtype (docs/theory.md §6):
    # a float32 model is verified through its exact float64 explicit model.
    # The LBDN's weights are built only if something calls the network (the empirical lower
    # bounds); the certificates read the LTI blocks alone (docs/performance.md).
    with torch.no_grad():
        e = model.explicit(torch.float64, defer_network=True)
    e = e.to(device=torch.device("cpu"))
    # Parameters used as-is (e.g. C₁) still require grad: detach, so that the adversarial
    # lower bounds never write gradients into the model.
    e = e.detached()
    blocks = StateSpaceBlocks.from_explicit(e)
    supply = None
    if model.supply is not None:
        s = model.supply
        supply = (s.Q.cpu().numpy(), s.S.cpu().numpy(), s.R.cpu().numpy())
    gamma = getattr(model, "gamma", None)
    return Target(
        blocks=blocks,
        nonlinearity="lipschitz" if e.D11 is None else "slope",
        name=type(model).__name__,
        metric=None if e.metric is None else e.metric.cpu().numpy(),
        multiplier=None if e.multiplier is None else e.multiplier.cpu().numpy(),
        rate=float(model.contraction_rate),
        supply=supply,
        gamma=None if gamma is None else float(gamma),
        simulate=lambda u, x0: simulate_explicit(e, u, x0),
    )


def _from_statespace(sys) -> Target:
    import control

    if not control.isdtime(sys, strict=True):
        raise ValueError(
            "certify expects a discrete-time control.StateSpace (dt > 0 or dt=True), got "
            f"dt={sys.dt!r}; discretize it first, e.g. control.c2d(sys, Ts)"
        )
    a, b, c, d = (np.asarray(m, dtype=np.float64) for m in (sys.A, sys.B, sys.C, sys.D))
    nx, nu, ny = a.shape[0], b.shape[1], c.shape[0]
    blocks = StateSpaceBlocks(a, np.zeros((nx, 0)), b, np.zeros((0, nx)), c, np.zeros((0, 0)),
                              np.zeros((0, nu)), np.zeros((ny, 0)), d)
    return Target(blocks, "none", name="StateSpace", simulate=_blocks_simulator(blocks, None))


def rounded_blocks(ss: StateSpaceBlocks, dtype: torch.dtype) -> StateSpaceBlocks:
    """The blocks rounded to ``dtype`` (and back to float64, exactly)."""
    def cast(a: np.ndarray) -> np.ndarray:
        return torch.as_tensor(a).to(dtype).to(torch.float64).numpy()

    return StateSpaceBlocks(**{k: cast(getattr(ss, k)) for k in ss.__dataclass_fields__})


def as_target(obj: object, dtype: torch.dtype | None = None) -> Target:
    """Convert a supported object to a `Target` (see the module docstring).

    With ``dtype`` (e.g. ``torch.float32``) the LTI blocks are the float64 explicit matrices
    rounded to that dtype: what a rollout in that dtype multiplies with (docs/theory.md §5).
    """
    target = _convert(obj)
    if dtype is not None and dtype != torch.float64:
        target = replace(target, blocks=rounded_blocks(target.blocks, dtype),
                         name=f"{target.name}[{str(dtype).removeprefix('torch.')}]")
    return target


def _convert(obj: object) -> Target:
    """Objects with a ``to_target()`` method (e.g. `ClosedLoop`) convert
    themselves, so this module needs no import of theirs."""
    if isinstance(obj, Target):
        return obj
    if isinstance(obj, RecurrentModel):
        return _from_recurrent(obj)
    to_target = getattr(obj, "to_target", None)
    if callable(to_target):
        return to_target()
    if isinstance(obj, ExplicitModel):
        e = obj.to(dtype=torch.float64, device=torch.device("cpu"))
        return Target(StateSpaceBlocks.from_explicit(e),
                      "lipschitz" if e.D11 is None else "slope", name="ExplicitModel",
                      metric=None if e.metric is None else e.metric.cpu().numpy(),
                      multiplier=None if e.multiplier is None else e.multiplier.cpu().numpy(),
                      simulate=lambda u, x0: simulate_explicit(e, u, x0))
    try:
        import control
    except ImportError:  # pragma: no cover - control is a dependency
        control = None
    if control is not None and isinstance(obj, control.StateSpace):
        return _from_statespace(obj)
    raise TypeError(
        "certify accepts a RecurrentModel (R2DN/REN), an ExplicitModel, an LBDN, a discrete "
        f"control.StateSpace, a ClosedLoop or a Target; got {type(obj).__name__}"
    )
