r"""The batched, differentiable torch twin shared by every environment.

A task is written once as a `TorchTwin`: a discrete-time system

$$
x_{t+1} = f(x_t, \mathrm{clip}(a_t), w_t), \qquad o_t = h(x_t), \qquad
r_t = \rho(x_t, \mathrm{clip}(a_t)),
$$

with state $x$, action $a$ (clipped to the action box), exogenous random input
$w$ (disturbances, noise; drawn outside the dynamics so that a trajectory is a
deterministic function of ``(x_0, a_{0:T}, w_{0:T})``), observation $o$ and reward
$r$. The gymnasium environment calls the same methods on a batch of one in float64; the
twin is used directly, batched and in any dtype, for backpropagation through the simulator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

#: A closed-loop controller for `TorchTwin.rollout`:
#: ``(observation (B, no), controller_state or None) -> (action (B, na), next_state or None)``.
Controller = Callable[[Tensor, Any], tuple[Tensor, Any]]


@dataclass(frozen=True)
class Rollout:
    """A batch of trajectories of a twin.

    Attributes
    ----------
    states : Tensor
        (B, T + 1, nx): x_0 … x_T.
    observations : Tensor
        (B, T + 1, no): o_t = h(x_t).
    actions : Tensor
        (B, T, na): the actions as given (before clipping).
    rewards : Tensor
        (B, T): r_t = ρ(x_t, clip(a_t)).
    controller_state : Any
        The controller's state after the last step (None for an open-loop rollout).
    """

    states: Tensor
    observations: Tensor
    actions: Tensor
    rewards: Tensor
    controller_state: Any = None


def as_controller(model: nn.Module | Controller) -> Controller:
    """Adapt a model to the `Controller` protocol.

    A recurrent model (anything with ``step(x, u) -> (y, x_next)`` and ``state_size``, such as
    the R2DN family) maps the observation through its state, which starts at zero; a
    feed-forward module (e.g. `LBDN`) is applied to the observation
    and carries no state; any other callable is assumed to follow the protocol already.
    """
    if hasattr(model, "step") and hasattr(model, "state_size"):

        def recurrent(observation: Tensor, state: Any) -> tuple[Tensor, Any]:
            if state is None:
                state = observation.new_zeros(observation.shape[0], model.state_size)
            return model.step(state, observation)

        return recurrent
    if isinstance(model, nn.Module):
        return lambda observation, state: (model(observation), None)
    return model


def _real_batch(owner: str, name: str, value: object, size: int, batch: int | None) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a real floating-point tensor, "
                        f"got dtype {value.dtype}")
    rows = "B" if batch is None else batch
    if value.dim() != 2 or value.shape[1] != size or (batch is not None and value.shape[0] != batch):
        raise ValueError(f"{owner}: {name} must have shape ({rows}, {size}), "
                         f"got {tuple(value.shape)}")
    return value


def _checked(method: Callable, name: str) -> Callable:
    @functools.wraps(method)
    def checked(self: TorchTwin, state: Tensor, action: Tensor, *args: Any, **kw: Any) -> Tensor:
        owner = f"{type(self).__name__}.{name}"
        state = _real_batch(owner, "state", state, self.state_size, None)
        batch = state.shape[0]
        _real_batch(owner, "action", action, self.action_size, batch)
        exogenous = args[0] if args else kw.get("exogenous")
        if exogenous is not None:
            _real_batch(owner, "exogenous", exogenous, self.exogenous_size, batch)
        return method(self, state, action, *args, **kw)

    return checked


class TorchTwin(nn.Module):
    """Base class: batched torch dynamics of one environment.

    Subclasses set the sizes and the action box and implement `step`, `observe`,
    `reward`, `sample_initial_state` and (if ``exogenous_size > 0``)
    `sample_exogenous`. Every method takes and returns batched tensors (leading batch
    dimension B) and is differentiable in the state and the action.

    Parameters
    ----------
    action_low, action_high : sequence of float
        The action box; actions are clipped to it inside `step` and `reward`.
    dtype, device
        dtype and device of the constant buffers (``.to()`` moves them like any module).
    """

    state_size: int
    action_size: int
    observation_size: int
    exogenous_size: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every subclass's step and reward check their arguments first (shapes, batch, dtype),
        # so a batch of 4 actions never broadcasts against 3 states.
        super().__init_subclass__(**kwargs)
        for method in ("step", "reward"):
            if method in cls.__dict__:
                setattr(cls, method, _checked(cls.__dict__[method], method))

    def __init__(
        self,
        action_low: list[float],
        action_high: list[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.register_buffer("action_low", torch.tensor(action_low, dtype=dtype, device=device))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=dtype, device=device))

    # ------------------------------------------------------------------ the task
    def clip_action(self, action: Tensor) -> Tensor:
        """Clip to the action box (gradient zero outside it, as for a saturating actuator)."""
        return torch.clamp(action, self.action_low, self.action_high)

    def step(self, state: Tensor, action: Tensor, exogenous: Tensor | None = None) -> Tensor:
        """x_{t+1} = f(x_t, clip(a_t), w_t) for state (B, nx), action (B, na), w (B, nw)."""
        raise NotImplementedError

    def observe(self, state: Tensor) -> Tensor:
        """o_t = h(x_t), shape (B, no)."""
        raise NotImplementedError

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """r_t = ρ(x_t, clip(a_t)), shape (B,); the task's cost is −r."""
        raise NotImplementedError

    def sample_initial_state(
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """A batch (B, nx) of initial states drawn from the task's reset distribution."""
        raise NotImplementedError

    def sample_exogenous(
        self, batch: int, steps: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exogenous inputs (B, T, nw) for ``steps`` steps (nw = 0 for autonomous tasks)."""
        return self.action_low.new_zeros(batch, steps, 0)

    # ------------------------------------------------------------------ simulation
    def rollout(
        self,
        controller: nn.Module | Controller | Tensor,
        initial_state: Tensor,
        exogenous: Tensor | None = None,
        steps: int | None = None,
        controller_state: Any = None,
    ) -> Rollout:
        """Simulate a batch closed-loop (or open-loop) and keep the graph for backprop.

        Parameters
        ----------
        controller : nn.Module, callable or Tensor
            A model or `Controller` (closed loop, see `as_controller`), or an
            action sequence (B, T, na) (open loop).
        initial_state : Tensor
            x_0, shape (B, nx).
        exogenous : Tensor, optional
            w_{0:T}, shape (B, T, nw); drawn with `sample_exogenous` when None.
        steps : int, optional
            Horizon T (taken from the action or exogenous sequence when omitted).
        controller_state : Any
            The controller's initial state (None: its default, zeros for a recurrent model).
        """
        batch = initial_state.shape[0]
        open_loop = isinstance(controller, Tensor)
        if steps is None:
            if open_loop:
                steps = controller.shape[1]
            elif exogenous is not None:
                steps = exogenous.shape[1]
            else:
                raise ValueError("rollout needs steps when neither actions nor exogenous are given")
        if exogenous is None:
            exogenous = self.sample_exogenous(batch, steps)
        expected = (batch, steps, self.exogenous_size)
        if tuple(exogenous.shape) != expected:
            raise ValueError(f"exogenous must have shape {expected}, got {tuple(exogenous.shape)}")
        if open_loop and tuple(controller.shape) != (batch, steps, self.action_size):
            raise ValueError(
                f"the action sequence must have shape {(batch, steps, self.action_size)}, "
                f"got {tuple(controller.shape)}"
            )
        policy = None if open_loop else as_controller(controller)
        state = initial_state
        states, observations, actions, rewards = [state], [self.observe(state)], [], []
        for t in range(steps):
            if open_loop:
                action = controller[:, t]
            else:
                action, controller_state = policy(observations[-1], controller_state)
            rewards.append(self.reward(state, action))
            state = self.step(state, action, exogenous[:, t])
            actions.append(action)
            states.append(state)
            observations.append(self.observe(state))
        return Rollout(
            torch.stack(states, 1),
            torch.stack(observations, 1),
            torch.stack(actions, 1) if actions else state.new_zeros(batch, 0, self.action_size),
            torch.stack(rewards, 1) if rewards else state.new_zeros(batch, 0),
            None if open_loop else controller_state,
        )
