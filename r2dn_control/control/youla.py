r"""Youla-parameterized controllers: an observer-based base controller plus a contracting Q.

With the base controller of `ObserverBasedController`
(gains K, L) the Youla controller is

$$
\tilde y_t = y_t - C\hat x_t,\qquad
\tilde u_t = Q(\tilde y_t),\qquad
u_t = \mathrm{sat}(-K\hat x_t + \tilde u_t),\qquad
\hat x_{t+1} = A\hat x_t + B u_t + L\tilde y_t .
$$

For a linear plant the innovation obeys ``e⁺ = (A − LC)e + (disturbance terms)``,
``ỹ = Ce + (disturbance terms)`` with ``e = x − x̂``: it does not depend on ũ. Q therefore
only sees a signal produced by a stable system, and the plant state obeys
``x⁺ = (A − BK)x + BKe + Bũ + …``. Any contracting Q (every R2DN/REN family) keeps the
closed loop stable; training Q changes the performance, never the stability
(docs/experiments.md, youla: the plant there is stable and K = L = 0 gives exactly its T₀/T₁/T₂ form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nn.base import RecurrentModel
from ..nn.explicit import ExplicitModel, rollout
from ..systems.plant import LTIPlant
from .design import ObserverBasedController


@dataclass
class YoulaState:
    """Controller state: the plant-state estimate x̂ (batch, nx) and Q's state q (batch, nq)."""

    estimate: Tensor
    q: Tensor

    def detach(self) -> YoulaState:
        """Cut the graph (truncated BPTT keeps the values, drops the history)."""
        return YoulaState(self.estimate.detach(), self.q.detach())


@dataclass
class ClosedLoopState:
    """State of plant plus controller."""

    plant: Tensor
    controller: YoulaState

    def detach(self) -> ClosedLoopState:
        return ClosedLoopState(self.plant.detach(), self.controller.detach())


@dataclass
class ClosedLoopTrajectory:
    """A closed-loop simulation; every sequence has shape (batch, time, ·).

    Attributes
    ----------
    outputs : Tensor
        All plant outputs (performance and measured), ny_plant wide.
    inputs : Tensor
        Control inputs u applied to the plant.
    u_tilde, y_tilde : Tensor
        Q's output ũ and input ỹ (the innovation).
    states : Tensor
        Plant states x₀ … x_{T−1}.
    final : ClosedLoopState
        State after the last step (carry it into the next segment).
    """

    outputs: Tensor
    inputs: Tensor
    u_tilde: Tensor
    y_tilde: Tensor
    states: Tensor
    final: ClosedLoopState


class YoulaController(nn.Module):
    """Youla-parameterized controller ``u = sat(−Kx̂ + Q(y − Cx̂))`` with a contracting model Q.

    Parameters
    ----------
    plant : control.StateSpace, control.TransferFunction or ObserverBasedController
        The plant model (python-control, discrete or continuous with ``dt``) from which the
        base controller is designed, or an already designed base controller.
    Q : RecurrentModel
        Contracting model (any R2DN/REN family) with ``input_size`` = number of measurements
        and ``output_size`` = number of control inputs. Its parameters are the controller's.
    K, L : str or array_like
        Gains, see `ObserverBasedController.design` (``"lqr"``/``"place"``/matrix and
        ``"kalman"``/``"place"``/matrix).
    input_limit : float or array_like, optional
        Symmetric saturation of the applied u (the observer uses the saturated u, so ỹ stays
        independent of ũ when the plant saturates at the same level).
    **design
        Other keywords of `ObserverBasedController.design` (``dt``, ``control_inputs``,
        ``measurements``, weights, covariances, poles).

    Raises
    ------
    ValueError
        Q's sizes do not match the plant's measurements/control inputs, or the base
        controller is not stabilizing.
    """

    # Buffers (registered in __init__), declared for type checkers.
    A: Tensor
    B: Tensor
    C: Tensor
    K: Tensor
    L: Tensor
    input_limit: Tensor | None
    _assemble: Tensor
    _measure: Tensor


    def __init__(self, plant: object, Q: RecurrentModel, K: object = "lqr", L: object = "kalman",
                 *, input_limit: object = None, **design: Any) -> None:
        super().__init__()
        if isinstance(plant, ObserverBasedController):
            if design or not (isinstance(K, str) and isinstance(L, str)):
                raise ValueError("give gains and design options either to "
                                 "ObserverBasedController.design or here, not both")
            base = plant
        else:
            base = ObserverBasedController.design(plant, K, L, **design)
        nu, nx, ny = base.sizes
        for attr in ("input_size", "output_size", "state_size", "explicit"):
            if not hasattr(Q, attr):
                raise TypeError(f"Q must be a recurrent model (R2DN/REN), got {type(Q).__name__}")
        if Q.input_size != ny or Q.output_size != nu:
            raise ValueError(
                f"Q must map the {ny} measurement(s) to the {nu} control input(s): expected "
                f"input_size={ny}, output_size={nu}, got input_size={Q.input_size}, "
                f"output_size={Q.output_size}"
            )
        self.base = base
        self.Q = Q
        fk: dict[str, Any] = {"dtype": Q.dtype, "device": Q.device}
        for name in ("A", "B", "C", "K", "L"):
            self.register_buffer(name, torch.as_tensor(getattr(base, name), **fk))
        limit = None if input_limit is None else torch.as_tensor(input_limit, **fk).reshape(-1)
        if limit is not None and (limit.numel() not in (1, nu) or not bool(torch.all(limit > 0))):
            raise ValueError(f"input_limit must be positive, scalar or of size {nu}, "
                             f"got {limit.tolist()}")
        self.register_buffer("input_limit", limit)
        # Where u sits among the plant inputs and y among its outputs (disturbances elsewhere).
        self.control_inputs = list(base.control_inputs)
        self.measurements = list(base.measurements)
        self.disturbance_inputs = [i for i in range(base.plant_inputs)
                                   if i not in self.control_inputs]
        order = self.disturbance_inputs + self.control_inputs
        self.register_buffer("_assemble", torch.argsort(torch.tensor(order)).to(fk["device"]),
                             persistent=False)
        self.register_buffer("_measure", torch.tensor(self.measurements, device=fk["device"]),
                             persistent=False)

    # ------------------------------------------------------------------ sizes and state
    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(nu, nx, ny)`` of the plant model."""
        return self.base.sizes

    def initial_state(self, batch: int, estimate: Tensor | None = None,
                      q: Tensor | None = None) -> YoulaState:
        """Zero state (or the given parts) for ``batch`` parallel loops."""
        zeros = self.A.new_zeros
        return YoulaState(zeros(batch, self.A.shape[0]) if estimate is None else estimate,
                          zeros(batch, self.Q.state_size) if q is None else q)

    def _saturate(self, u: Tensor) -> Tensor:
        if self.input_limit is None:
            return u
        return torch.maximum(torch.minimum(u, self.input_limit), -self.input_limit)

    # ------------------------------------------------------------------ control law
    def step(self, state: YoulaState, y: Tensor, q_model: ExplicitModel | None = None
             ) -> tuple[Tensor, Tensor, Tensor, YoulaState]:
        """One control step from the measurement ``y`` (batch, ny).

        ``q_model`` is Q's explicit model; pass it to reuse one build over many steps.

        Returns
        -------
        u, u_tilde, y_tilde : Tensor
            Applied control (batch, nu), Q's output and the innovation.
        next_state : YoulaState
        """
        q_model = self.Q.explicit() if q_model is None else q_model
        x_hat = state.estimate
        y_tilde = y - x_hat @ self.C.T
        u_tilde, q_next = rollout(q_model, y_tilde.unsqueeze(1), state.q)
        u_tilde = u_tilde[:, 0]
        u = self._saturate(u_tilde - x_hat @ self.K.T)
        x_hat_next = x_hat @ self.A.T + u @ self.B.T + y_tilde @ self.L.T
        return u, u_tilde, y_tilde, YoulaState(x_hat_next, q_next)

    def forward(self, y: Tensor, state: YoulaState | None = None) -> tuple[Tensor, YoulaState]:
        """Run on a measurement sequence ``y`` (batch, time, ny); returns ``(u, state)``."""
        if y.dim() != 3 or y.shape[-1] != self.C.shape[0]:
            raise ValueError(f"y must have shape (batch, time, {self.C.shape[0]}), "
                             f"got {tuple(y.shape)}")
        state = self.initial_state(y.shape[0]) if state is None else state
        q_model = self.Q.explicit()
        inputs = []
        for t in range(y.shape[1]):
            u, _, _, state = self.step(state, y[:, t], q_model)
            inputs.append(u)
        return torch.stack(inputs, 1), state


def _check_loop(plant: LTIPlant, controller: YoulaController) -> None:
    """Raise unless ``plant`` can be closed with ``controller``: matching inputs/outputs,
    dtype and device, and no feedthrough from u to the measurements."""
    nu = controller.sizes[0]
    nw = len(controller.disturbance_inputs)
    if plant.input_size != nu + nw or plant.output_size != controller.base.plant_outputs:
        raise ValueError(
            f"the plant has {plant.input_size} inputs and {plant.output_size} outputs, but the "
            f"controller was designed for {nu + nw} inputs and {controller.base.plant_outputs} "
            "outputs"
        )
    if plant.A.dtype != controller.A.dtype or plant.A.device != controller.A.device:
        raise TypeError(f"plant ({plant.A.dtype}, {plant.A.device}) and controller "
                        f"({controller.A.dtype}, {controller.A.device}) must share dtype and "
                        "device")
    feedthrough = plant.D[controller._measure][:, controller.control_inputs]
    if bool(torch.any(feedthrough != 0)):
        raise ValueError("the simulated plant has feedthrough from u to the measurements "
                         "(D_yu ≠ 0)")


def simulate_closed_loop(plant: LTIPlant, controller: YoulaController,
                         disturbance: Tensor | None = None, *, steps: int | None = None,
                         state: ClosedLoopState | None = None, batch: int | None = None,
                         noise: bool = True) -> ClosedLoopTrajectory:
    r"""Simulate ``plant`` in feedback with ``controller`` (differentiable, batched).

    The plant's inputs are the disturbances ``w`` (every input that is not a control input)
    and the controls ``u``; at each step

    $$
    y_t = \text{measured outputs of } (x_t, w_t) + v_t,\quad
    u_t = \text{controller}(y_t),\quad x_{t+1} = \text{plant update}(x_t, w_t, u_t).
    $$

    Parameters
    ----------
    plant : LTIPlant
        The simulated plant (it may differ from the controller's design model, but its inputs
        and outputs must be laid out the same way, with no feedthrough from u to y).
    controller : YoulaController
    disturbance : Tensor, optional
        ``w``, shape (batch, time, nw); may be omitted when the plant has no disturbance
        inputs (then give ``steps`` and ``batch`` or ``state``).
    state : ClosedLoopState, optional
        Initial state (zeros if None).
    noise : bool
        Draw the plant's process and measurement noise (if configured).

    Returns
    -------
    ClosedLoopTrajectory
    """
    _check_loop(plant, controller)
    nu = controller.sizes[0]
    nw = len(controller.disturbance_inputs)
    if disturbance is not None:
        if not isinstance(disturbance, Tensor):
            raise TypeError(f"disturbance must be a torch.Tensor, got {type(disturbance).__name__}")
        if disturbance.dtype != plant.A.dtype or disturbance.device != plant.A.device:
            raise TypeError(f"disturbance must have the plant's dtype {plant.A.dtype} on "
                            f"{plant.A.device}, got {disturbance.dtype} on {disturbance.device}")
        if disturbance.dim() != 3 or disturbance.shape[-1] != nw or 0 in disturbance.shape[:2]:
            raise ValueError(f"disturbance must have shape (batch, time, {nw}) with batch, "
                             f"time >= 1, got {tuple(disturbance.shape)}")
        batch, steps = disturbance.shape[:2]
    elif nw:
        raise ValueError(f"disturbance must be given, shape (batch, time, {nw}): the plant has "
                         f"{nw} disturbance input(s), got None")
    else:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int when there is no disturbance, "
                             f"got {steps!r}")
        batch = batch if state is None else state.plant.shape[0]
        if batch is None:
            raise ValueError("pass batch or state when there is no disturbance")
    if state is None:
        state = ClosedLoopState(plant.A.new_zeros(batch, plant.state_size),
                                controller.initial_state(batch))
    x, ctrl = state.plant, state.controller
    q_model = controller.Q.explicit()  # one direct-to-explicit build for the whole horizon
    zero_u = x.new_zeros(batch, nu)
    record: dict[str, list[Tensor]] = {k: [] for k in ("y", "u", "ut", "yt", "x")}
    for t in range(steps):
        w = x.new_zeros(batch, 0) if disturbance is None else disturbance[:, t]
        v = plant.draw_measurement_noise(x) if noise else None
        # With D_yu = 0 the measurement does not depend on u_t, so u_t = 0 gives it exactly.
        y_free = plant.output(x, torch.cat([w, zero_u], -1)[:, controller._assemble], noise=False)
        y_meas = (y_free if v is None else y_free + v)[:, controller._measure]
        u, u_tilde, y_tilde, ctrl = controller.step(ctrl, y_meas, q_model)
        full = torch.cat([w, u], -1)[:, controller._assemble]
        y = plant.output(x, full, noise=False)
        record["x"].append(x)
        record["y"].append(y if v is None else y + v)
        record["u"].append(u)
        record["ut"].append(u_tilde)
        record["yt"].append(y_tilde)
        x = plant.update(x, full, noise=noise)
    seq = {k: torch.stack(v, 1) for k, v in record.items()}
    return ClosedLoopTrajectory(seq["y"], seq["u"], seq["ut"], seq["yt"], seq["x"],
                                ClosedLoopState(x, ctrl))
