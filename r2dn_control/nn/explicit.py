r"""The explicit form shared by every recurrent model, and its rollout.

$$
x_{t+1} &= A x_t + B_1 w_t + B_2 u_t + b_x \\
v_t &= C_1 x_t + D_{11} w_t + D_{12} u_t + b_v, \qquad w_t = \phi(v_t) \\
y_t &= C_2 x_t + D_{21} w_t + D_{22} u_t + b_y
$$

For an R2DN ``D11`` is absent (``None``) and φ is an LBDN; for a REN φ is the
equilibrium layer ``w = σ(D₁₁ w + b)`` with ``D₁₁`` strictly lower triangular.
Code uses batch rows, e.g. ``x_next = x @ A.T + w @ B1.T + u @ B2.T + bx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from . import cpp, fused_ren
from ._algebra import cast_is_noop
from .equilibrium import EquilibriumLayer
from .fused_rollout import fused_rollout, fused_sequence, input_terms, output_terms
from .lbdn import ExplicitMLP


class Network(Protocol):
    """The explicit nonlinearity ``w = φ(b)``: callable on row batches, castable with ``to``."""

    def __call__(self, b: Tensor, /) -> Tensor: ...

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Network: ...


class DeferredNetwork:
    """A `Network` built by ``build()`` on its first call, then reused.

    For explicit models whose consumer may never evaluate φ: the certificates read only the
    LTI blocks, and an R2DN's LBDN weights cost about as much as those blocks at n = 2048.
    The build runs in the autograd mode that was active when the deferral was made (a model
    made under ``torch.no_grad()`` gets weights without a graph, as if built at once); it
    reads the parameters as they are at the first call. ``to`` defers the cast as well.
    """

    def __init__(self, build: Callable[[], Network]) -> None:
        if not callable(build):
            raise TypeError(f"build must be callable, got {type(build).__name__}")
        self._build: Callable[[], Network] | None = build
        self._grad = torch.is_grad_enabled()
        self._network: Network | None = None

    def built(self) -> Network:
        """The network (building it now if it was not built yet)."""
        if self._network is None:
            assert self._build is not None
            with torch.set_grad_enabled(self._grad):
                self._network = self._build()
            self._build = None
        return self._network

    def __call__(self, b: Tensor, /) -> Tensor:
        return self.built()(b)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None
           ) -> DeferredNetwork:
        if dtype is None and device is None:
            return self
        return DeferredNetwork(lambda: self.built().to(dtype=dtype, device=device))


@dataclass(frozen=True)
class ExplicitModel:
    """Explicit matrices of a recurrent model (column convention, as in the math).

    Attributes
    ----------
    A, B1, B2, C1, C2, D12, D21, D22 : Tensor
        State-space matrices; shapes nx×nx, nx×nv, nx×nu, nv×nx, ny×nx, nv×nu, ny×nv, ny×nu.
    bx, bv, by : Tensor
        Bias vectors of sizes nx, nv, ny.
    network : callable
        ``w = network(b)`` maps the nonlinearity's input (without the ``D11 w`` term) to its
        output, batched over rows: the LBDN for R2DN, the equilibrium layer for REN.
    D11 : Tensor or None
        Strictly lower-triangular nv×nv feedthrough of a REN; None for R2DN.
    metric : Tensor or None
        The Lyapunov metric 𝒫 = EᵀP⁻¹E implied by the parameterization (float64), if known.
    multiplier : Tensor or None
        The IQC multiplier implied by the parameterization: a scalar λ (R2DN) or the diagonal
        of Λ (REN).
    """

    A: Tensor
    B1: Tensor
    B2: Tensor
    C1: Tensor
    C2: Tensor
    D12: Tensor
    D21: Tensor
    D22: Tensor
    bx: Tensor
    bv: Tensor
    by: Tensor
    network: Network
    D11: Tensor | None = None
    metric: Tensor | None = None
    multiplier: Tensor | None = None

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(nu, nx, nv, ny)``."""
        return self.B2.shape[1], self.A.shape[0], self.C1.shape[0], self.C2.shape[0]

    def matrices(self) -> dict[str, Tensor]:
        """The tensor fields (matrices and biases) by name, ``D11`` included when present."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("network", "metric", "multiplier") and getattr(self, f.name) is not None
        }

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> ExplicitModel:
        """Cast/move the matrices and the network (certificate fields stay float64)."""
        moved = {k: v.to(dtype=dtype, device=device) for k, v in self.matrices().items()
                 if not cast_is_noop(v, dtype, device)}
        network = self.network.to(dtype=dtype, device=device)
        if not moved and network is self.network:  # nothing to cast (e.g. a training call)
            return self
        return replace(self, network=network, **moved)

    def detached(self) -> ExplicitModel:
        """The same model with every matrix detached from the autograd graph."""
        return replace(self, network=self.network,
                       **{k: v.detach() for k, v in self.matrices().items()})


RecurrentPart = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class RolloutBackend:
    """One way to run the recurrent part of `rollout`.

    Attributes
    ----------
    name : str
        The ``method`` that selects it.
    applies : callable
        ``applies(model, u, x0) -> bool``: whether ``run`` can handle these arguments. Must be
        cheap and side-effect free except that a C++ backend may load its kernels.
    run : callable
        ``run(model, x0, drive_x, drive_v) -> (xs, ws, x_T)`` with time-major
        ``drive_x = B₂u + bₓ`` (T, B, nx), ``drive_v = D₁₂u + b_v`` (T, B, nv); returns the
        states x₀ … x_{T−1} (T, B, nx), the features w₀ … w_{T−1} (T, B, nv) and x_T (B, nx).
    fused : bool
        A hand-written-adjoint backend (selected by ``method="fused"``).
    sequence : callable or None
        ``sequence(model, u, x0) -> (y, x_T)``: the whole of `rollout` (input terms, loop,
        outputs) in one piece, when the backend has one; `rollout` then calls it instead of
        ``run`` (the same values and gradients, fewer autograd nodes).
    """

    name: str
    applies: Callable[[ExplicitModel, Tensor, Tensor], bool]
    run: Callable[[ExplicitModel, Tensor, Tensor, Tensor], RecurrentPart]
    fused: bool = True
    sequence: Callable[[ExplicitModel, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


def reference_loop(model: ExplicitModel, x0: Tensor, drive_x: Tensor, drive_v: Tensor
                   ) -> RecurrentPart:
    """The reference time loop (autograd differentiates it); time-major outputs.

    Every other backend computes exactly this (to round-off)::

        x = x0
        for t in range(T):
            w = network(x @ C1.T + drive_v[t])
            x = x @ A.T + w @ B1.T + drive_x[t]
    """
    a_t, b1_t, c1_t = model.A.T, model.B1.T, model.C1.T
    network = model.network
    states, features = [], []
    x = x0
    for t in range(drive_x.shape[0]):
        states.append(x)
        w = network(torch.addmm(drive_v[t], x, c1_t))
        features.append(w)
        x = torch.addmm(torch.addmm(drive_x[t], x, a_t), w, b1_t)
    return torch.stack(states), torch.stack(features), x


_Net = TypeVar("_Net")


def _network_as(model: ExplicitModel, kind: type[_Net], backend: str) -> _Net:
    """``model.network``, checked to be the ``kind`` that ``backend`` runs."""
    if not isinstance(model.network, kind):
        raise TypeError(f"the {backend} rollout needs a network of type {kind.__name__}, got "
                        f"{type(model.network).__name__}")
    return model.network


def _r2dn_applies(model: ExplicitModel, u: Tensor, x0: Tensor) -> bool:
    return model.D11 is None and isinstance(model.network, ExplicitMLP)


def _r2dn_run(model: ExplicitModel, x0: Tensor, drive_x: Tensor, drive_v: Tensor
              ) -> RecurrentPart:
    return fused_rollout(_network_as(model, ExplicitMLP, "fused R2DN"), x0, drive_x, drive_v,
                         model.A, model.B1, model.C1)


def _r2dn_sequence(model: ExplicitModel, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    return fused_sequence(_network_as(model, ExplicitMLP, "fused R2DN"), x0, u, model.A,
                          model.B1, model.C1, model.B2, model.D12, model.C2, model.D21,
                          model.D22, model.bx, model.bv, model.by)


def _ren_applies(model: ExplicitModel, u: Tensor, x0: Tensor) -> bool:
    # The REN kernel is CPU-only: other devices and dtypes take the reference loop.
    return fused_ren.can_fuse(model.network, u, x0, model.A, model.B1, model.C1)


def _ren_run(model: ExplicitModel, x0: Tensor, drive_x: Tensor, drive_v: Tensor
             ) -> RecurrentPart:
    return fused_ren.fused_ren_rollout(_network_as(model, EquilibriumLayer, "fused REN"), x0,
                                       drive_x, drive_v, model.A, model.B1, model.C1)


#: The rollout backends in order of preference; ``method="auto"`` takes the first that applies.
#: ``"reference"`` applies to everything and comes last.
BACKENDS: dict[str, RolloutBackend] = {
    backend.name: backend for backend in (
        RolloutBackend("fused_r2dn", _r2dn_applies, _r2dn_run, sequence=_r2dn_sequence),
        RolloutBackend("fused_ren", _ren_applies, _ren_run),
        RolloutBackend("reference", lambda model, u, x0: True, reference_loop, fused=False),
    )
}
METHODS = ("auto", "fused", *BACKENDS)


def select_backend(model: ExplicitModel, u: Tensor, x0: Tensor, method: str = "auto"
                   ) -> RolloutBackend:
    """The backend `rollout` uses for ``method`` (see there); raises ``ValueError`` if
    the requested one does not apply."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method in BACKENDS:
        backend = BACKENDS[method]
        if not backend.applies(model, u, x0):
            raise ValueError(f"rollout backend {method!r} does not apply to this model/input")
        return backend
    for backend in BACKENDS.values():
        if (method == "auto" or backend.fused) and backend.applies(model, u, x0):
            return backend
    raise ValueError("the fused rollout needs an R2DN (no D11) with an LBDN network, or a "
                     "REN on CPU float32/float64 tensors with the C++ kernels built "
                     f"(r2dn_control.nn.cpp: {cpp.status()})")


def rollout(model: ExplicitModel, u: Tensor, x0: Tensor, method: str = "auto"
            ) -> tuple[Tensor, Tensor]:
    """Simulate the explicit model on a batch of input sequences.

    The input terms ``B₂u + bₓ``, ``D₁₂u + b_v`` and ``D₂₂u + b_y`` are computed for all time
    steps in one matmul each; the time loop (one of `BACKENDS`, all equal to
    `reference_loop`) holds only the recurrent part; the outputs are computed after the
    loop in one matmul. A backend with a ``sequence`` (the fused R2DN) does all of this in one
    autograd node.

    Parameters
    ----------
    model : ExplicitModel
    u : Tensor
        Inputs, shape (batch, time, nu).
    x0 : Tensor
        Initial states, shape (batch, nx).
    method : {"auto", "fused", "fused_r2dn", "fused_ren", "reference"}
        ``"fused_r2dn"``: the hand-written adjoint of `r2dn_control.nn.fused_rollout`
        (R2DN with an LBDN network); ``"fused_ren"``: the C++ time loop of
        `r2dn_control.nn.fused_ren` (REN, CPU float32/float64, kernels built);
        ``"reference"``: `reference_loop`, differentiated by autograd; ``"fused"``: the
        fused backend that applies (error if none); ``"auto"``: the first backend that applies.

    Returns
    -------
    y : Tensor
        Outputs y₀ … y_{T−1}, shape (batch, time, ny); ``y_t`` uses ``x_t`` (before the update).
    x_T : Tensor
        Final state, shape (batch, nx).
    """
    backend = select_backend(model, u, x0, method)
    if backend.sequence is not None:
        return backend.sequence(model, u, x0)
    u_flat, drive_x, drive_v = input_terms(u, model.B2, model.D12, model.bx, model.bv)
    xs, ws, x = backend.run(model, x0, drive_x, drive_v)
    return output_terms(u_flat, xs, ws, model.C2, model.D21, model.D22, model.by), x


def reference_rollout(model: ExplicitModel, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """`rollout` with ``method="reference"`` (the plain loop autograd differentiates)."""
    return rollout(model, u, x0, "reference")
