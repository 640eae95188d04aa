"""The gymnasium side of a task: a float64, unbatched view of its `TorchTwin`.

The environment owns no dynamics of its own: ``step`` draws the exogenous input with the
environment's seeded ``np_random`` and then calls the twin's ``reward``, ``step`` and
``observe`` on a batch of one, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ._twin import TorchTwin


class TwinEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class of the environments of `r2dn_control.envs`.

    Episodes never terminate (these are regulation/estimation tasks without failure states);
    they are truncated after ``horizon`` steps. Actions outside the action box are clipped
    (an actuator limit, as in the Youla-REN paper); actions of the wrong shape or with NaN/inf
    entries raise ``ValueError``.

    Parameters
    ----------
    horizon : int, optional
        Episode length in steps (each task has a default from its reference setup).
    render_mode : str, optional
        Accepted for API compatibility; no rendering is provided (``render()`` returns None).
    **twin_kwargs
        Physical parameters forwarded to the task's `TorchTwin`.

    Reset options
    -------------
    ``options={"state": x0}`` starts from the given full state (see ``info["state"]``);
    tasks document further options.

    ``info`` always carries ``"state"`` (the true state x_t after the step, float64) and, after
    a step, ``"exogenous"`` (the w_t used in that step) so that the torch twin can replay the
    trajectory exactly.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    twin_class: ClassVar[type[TorchTwin]]
    default_horizon: ClassVar[int]

    def __init__(
        self, horizon: int | None = None, render_mode: str | None = None, **twin_kwargs: Any
    ) -> None:
        # No rendering; a requested mode is recorded but ignored rather than refused, because
        # tools such as SB3's make_vec_env ask for "rgb_array" by default.
        self.render_mode = render_mode
        horizon = self.default_horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        self.horizon = horizon
        self.twin = self.torch_twin(dtype=torch.float64, **twin_kwargs)
        self.action_space = spaces.Box(
            self.twin.action_low.numpy(), self.twin.action_high.numpy(), dtype=np.float64
        )
        low, high = self._observation_bounds()
        self.observation_space = spaces.Box(
            np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64), dtype=np.float64
        )
        self._state: torch.Tensor | None = None
        self._t = 0

    @classmethod
    def torch_twin(
        cls, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> TorchTwin:
        """The batched, differentiable torch twin of this environment (for backprop training)."""
        return cls.twin_class(dtype=dtype, device=device, **kwargs)

    # ------------------------------------------------------------------ task hooks
    def _observation_bounds(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _sample_initial_state(self, options: dict[str, Any]) -> np.ndarray:
        """Draw x_0 with ``self.np_random`` (called by reset unless ``options["state"]``)."""
        raise NotImplementedError

    def _check_state(self, state: np.ndarray) -> None:
        """Raise ValueError if a user-given x_0 is outside the task's state set."""

    def _draw_exogenous(self) -> np.ndarray:
        """w_t for the step about to be taken, drawn with ``self.np_random``."""
        return np.zeros(0)

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        self._t = 0
        self._on_reset(options)
        if "state" in options:
            state = self._given_state(options.pop("state"))
        else:
            state = np.asarray(self._sample_initial_state(options), dtype=np.float64)
        self._state = torch.as_tensor(state, dtype=torch.float64).reshape(1, -1).clone()
        return self._observation(), self._info()

    def _on_reset(self, options: dict[str, Any]) -> None:
        """Reset any episode bookkeeping other than the state (e.g. disturbance holds)."""

    def step(
        self, action: Any
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        action_t = torch.as_tensor(self._checked_action(action)).reshape(1, -1)
        exogenous = np.asarray(self._draw_exogenous(), dtype=np.float64)
        with torch.no_grad():
            reward = float(self.twin.reward(self._state, action_t)[0])
            self._state = self.twin.step(
                self._state, action_t, torch.as_tensor(exogenous).reshape(1, -1)
            )
        self._t += 1
        info = self._info()
        info["exogenous"] = exogenous
        return self._observation(), reward, False, self._t >= self.horizon, info

    # ------------------------------------------------------------------ helpers
    @property
    def state(self) -> np.ndarray:
        """The true state x_t (a copy), float64."""
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() first")
        return self._state[0].numpy().copy()

    def _observation(self) -> np.ndarray:
        with torch.no_grad():
            return self.twin.observe(self._state)[0].numpy().copy()

    def _info(self) -> dict[str, Any]:
        return {"state": self.state, **self._extra_info()}

    def _checked_action(self, action: Any) -> np.ndarray:
        expected = self.action_space.shape
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        if np.iscomplexobj(action):
            raise TypeError(f"{type(self).__name__}: action must be real, got a complex value")
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{type(self).__name__}: action must be a numeric array of shape {expected}, "
                f"got {type(action).__name__}"
            ) from error
        if array.shape != expected:
            raise ValueError(
                f"{type(self).__name__}: action must have shape {expected}, got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(
                f"{type(self).__name__}: action must be finite (no NaN/inf), got {array}"
            )
        return array

    def _given_state(self, state: Any) -> np.ndarray:
        if np.iscomplexobj(state):
            raise TypeError(f"{type(self).__name__}: options['state'] must be real, got complex")
        array = np.asarray(state, dtype=np.float64)
        expected = (self.twin.state_size,)
        if array.shape != expected:
            raise ValueError(
                f"{type(self).__name__}: options['state'] must have shape {expected}, "
                f"got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{type(self).__name__}: options['state'] must be finite")
        self._check_state(array)
        return array
