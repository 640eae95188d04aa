r"""A recurrent model as a gymnasium policy, with one recurrent state per environment.

For environment i of a (vector) environment the policy is the model's state-space recursion

$$
a^i_t = g(x^i_t, o^i_t),\qquad x^i_{t+1} = f(x^i_t, o^i_t),\qquad x^i_0 = \bar x_0
\ \text{at the first observation of every episode},
$$

with ``model.step(x, o) -> (a, x_next)`` (R2DN/REN families), or $a = \pi(o)$ for a
feed-forward module (e.g. an LBDN), which carries no state.

Episode boundaries depend on the vector environment's autoreset mode (gymnasium ≥ 1.0):

- ``NEXT_STEP`` (default): the step that ends an episode returns its final observation; the
  next ``step`` ignores the action and returns the first observation of the new episode. The
  state is reset on the call after the one that receives ``done``.
- ``SAME_STEP``: the step that ends an episode already returns the new episode's first
  observation (the final one is in ``info["final_obs"]``); the state is reset on that call.
- ``DISABLED``: the user resets finished sub-environments (``reset(options={"reset_mask": done})``)
  before the next call, so the state is reset on the call that receives ``done``, as for
  ``SAME_STEP``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn

try:  # gymnasium >= 1.0
    from gymnasium.vector import AutoresetMode
except ImportError:  # pragma: no cover - gymnasium 0.29 has no autoreset modes
    AutoresetMode = None  # type: ignore[assignment,misc]

_MODES = ("next_step", "same_step", "disabled")


def _mode_name(mode: Any) -> str:
    """Normalise an AutoresetMode, ``"NextStep"`` or ``"next_step"`` to ``"next_step"``."""
    raw = getattr(mode, "value", mode)
    if not isinstance(raw, str):
        raise TypeError(f"autoreset_mode must be a str or gymnasium AutoresetMode, got {mode!r}")
    name = raw.replace("_", "").lower()
    for candidate in _MODES:
        if candidate.replace("_", "") == name:
            return candidate
    raise ValueError(f"autoreset_mode must be one of {_MODES}, got {mode!r}")


class _Stepper(Protocol):
    """What `RecurrentPolicy` uses of a recurrent model (duck-typed, e.g. the R2DN family)."""

    state_size: int

    def step(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]: ...


class RecurrentPolicy:
    """Run a model as a policy for ``num_envs`` environments, each with its own state.

    Parameters
    ----------
    model : nn.Module
        A recurrent model with ``state_size`` and ``step(x, u) -> (y, x_next)`` taking
        ``x`` (B, nx) and ``u`` (B, nu) (the R2DN family), or any feed-forward module mapping
        (B, nu) → (B, ny). The observation is flattened to nu values and y is reshaped to the
        action shape.
    num_envs : int
        Number of parallel environments (1 for a plain ``gymnasium.Env``).
    autoreset_mode : str or gymnasium.vector.AutoresetMode
        ``"next_step"`` (gymnasium's default), ``"same_step"`` or ``"disabled"``.
    action_space : gymnasium.spaces.Box, optional
        If given, actions are reshaped to its shape, cast to its dtype and clipped to its bounds.
    initial_state : Tensor, optional
        x̄₀ (nx,), the state at every episode start (default zeros).

    Use
    ---
    >>> policy = RecurrentPolicy.for_env(envs, model)
    >>> obs, info = envs.reset(seed=0)
    >>> policy.reset()                      # with every envs.reset()
    >>> done = None
    >>> for _ in range(1000):
    ...     action = policy.act(obs, done)
    ...     obs, reward, terminated, truncated, info = envs.step(action)
    ...     done = terminated | truncated

    ``done`` is ``terminated | truncated`` from the previous step; the policy resets the
    affected states itself, at the call the autoreset mode implies. ``done=None`` means no
    episode ended. A new policy starts every environment at x̄₀; call `reset` whenever
    the environments are reset by hand (``envs.reset()``, or a single ``env.reset()``).
    """

    def __init__(
        self,
        model: nn.Module,
        num_envs: int = 1,
        *,
        autoreset_mode: Any = "next_step",
        action_space: Any = None,
        initial_state: Tensor | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.model = model
        self.num_envs = num_envs
        self.autoreset_mode = _mode_name(autoreset_mode)
        self.action_space = action_space
        self.recurrent = hasattr(model, "step") and hasattr(model, "state_size")
        # The hasattr test above is the duck typing; the type system cannot see it.
        self._stepper = cast(_Stepper, model) if self.recurrent else None
        parameter = next(model.parameters(), None)
        self._dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        self._device = parameter.device if parameter is not None else torch.device("cpu")
        size = 0 if self._stepper is None else int(self._stepper.state_size)
        if initial_state is None:
            initial_state = torch.zeros(size, dtype=self._dtype, device=self._device)
        initial_state = torch.as_tensor(initial_state, dtype=self._dtype, device=self._device)
        if tuple(initial_state.shape) != (size,):
            raise ValueError(
                f"initial_state must have shape ({size},), got {tuple(initial_state.shape)}"
            )
        self.initial_state = initial_state
        self.state = initial_state.expand(num_envs, size).clone()
        #: Observations processed in each environment's current episode (0 after a reset).
        self.episode_steps = np.zeros(num_envs, dtype=np.int64)
        self._reset_next = np.zeros(num_envs, dtype=bool)

    @classmethod
    def for_env(cls, env: Any, model: nn.Module, **kwargs: Any) -> RecurrentPolicy:
        """Build for a ``gymnasium.Env`` or ``gymnasium.vector.VectorEnv``.

        Reads ``num_envs``, the autoreset mode (``env.metadata["autoreset_mode"]``) and the
        (single) action space from the environment.
        """
        num_envs = getattr(env, "num_envs", None)
        if num_envs is None:  # a single environment: the caller resets it explicitly
            kwargs.setdefault("action_space", env.action_space)
            return cls(model, 1, autoreset_mode="disabled", **kwargs)
        mode = env.metadata.get("autoreset_mode", "next_step")
        kwargs.setdefault("action_space", getattr(env, "single_action_space", None))
        return cls(model, num_envs, autoreset_mode=mode, **kwargs)

    # ------------------------------------------------------------------ state handling
    def reset(self, mask: Any = None) -> None:
        """Reset the state of the environments in ``mask`` (bool (num_envs,); all if None)."""
        mask = self._mask(mask, "mask")
        index = torch.as_tensor(mask, device=self._device)
        self.state[index] = self.initial_state
        self.episode_steps[mask] = 0
        self._reset_next[mask] = False

    @contextlib.contextmanager
    def frozen(self) -> Iterator[RecurrentPolicy]:
        """Cache the model's explicit weights while acting (``model.frozen()`` if it has one)."""
        frozen = getattr(self.model, "frozen", None)
        with frozen() if frozen is not None else contextlib.nullcontext():
            yield self

    def _mask(self, mask: Any, name: str) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        array = np.asarray(mask)
        if array.shape == () and self.num_envs == 1:
            array = array.reshape(1)
        if array.shape != (self.num_envs,) or array.dtype != np.bool_:
            raise ValueError(
                f"{name} must be a bool array of shape ({self.num_envs},), got "
                f"{array.dtype} array of shape {array.shape}"
            )
        return array

    # ------------------------------------------------------------------ acting
    def act(self, observation: Any, done: Any = None) -> np.ndarray:
        """Actions for a batch of observations (num_envs, ...) (or one unbatched observation).

        Parameters
        ----------
        observation : array_like
            The observations returned by the last ``reset``/``step``.
        done : array_like of bool, optional
            ``terminated | truncated`` from the last ``step`` (None: no episode ended).
        """
        done = np.zeros(self.num_envs, dtype=bool) if done is None else self._mask(done, "done")
        if self.autoreset_mode == "next_step":
            # The final observation is acted on now (the env ignores that action); the new
            # episode's first observation arrives on the next call, so reset then.
            starting = self._reset_next.copy()
            self._reset_next = done.copy()
        else:
            starting = done
        if starting.any():
            self.reset(starting)
        inputs, batched = self._inputs(observation)
        with torch.no_grad():
            if self._stepper is not None:
                output, self.state = self._stepper.step(self.state, inputs)
            else:
                output = self.model(inputs)
        self.episode_steps += 1
        return self._actions(output, batched)

    __call__ = act

    def _inputs(self, observation: Any) -> tuple[Tensor, bool]:
        array = torch.as_tensor(np.asarray(observation), dtype=self._dtype, device=self._device)
        if not torch.isfinite(array).all():
            raise ValueError("observation contains NaN or inf")
        if self.num_envs == 1 and (array.dim() <= 1 or array.shape[0] != 1):
            return array.reshape(1, -1), False
        if array.shape[0] != self.num_envs:
            raise ValueError(
                f"expected observations for {self.num_envs} environments (leading dimension), "
                f"got shape {tuple(array.shape)}"
            )
        return array.reshape(self.num_envs, -1), True

    def _actions(self, output: Tensor, batched: bool) -> np.ndarray:
        actions = output.detach().cpu().numpy()
        space = self.action_space
        if space is not None:
            actions = actions.reshape(self.num_envs, *space.shape).astype(space.dtype)
            actions = np.clip(actions, space.low, space.high)
        return actions if batched else actions[0]
