"""RecurrentPolicy: per-environment state, resets exactly at episode boundaries."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import r2dn_control.envs as envs
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from r2dn_control.control.policy import RecurrentPolicy
from r2dn_control.nn import LBDN, ContractingR2DN

HORIZONS = (3, 5, 4)  # unequal, so episode boundaries fall at different steps per env


class EpisodeStep(gym.Wrapper):
    """Ground truth: ``info["episode_step"]`` is 0 on an episode's first observation."""

    def reset(self, **kwargs: Any):
        self.count = 0
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "episode_step": 0}

    def step(self, action: Any):
        self.count += 1
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "episode_step": self.count}


def _model() -> ContractingR2DN:
    torch.manual_seed(0)
    # init="random" so the output depends strongly on the state: a wrong reset shows up.
    return ContractingR2DN(3, 4, 6, 1, hidden=(8,), init="random", dtype=torch.float64)


def _vector_env(mode: AutoresetMode) -> SyncVectorEnv:
    makers = [lambda h=h: EpisodeStep(envs.BoxInFluidEnv(horizon=h)) for h in HORIZONS]
    return SyncVectorEnv(makers, autoreset_mode=mode)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP,
                                  AutoresetMode.DISABLED])
def test_vector_rollout_resets_state_exactly_at_episode_boundaries(mode):
    model = _model()
    vector_env = _vector_env(mode)
    policy = RecurrentPolicy.for_env(vector_env, model)
    names = {AutoresetMode.NEXT_STEP: "next_step", AutoresetMode.SAME_STEP: "same_step",
             AutoresetMode.DISABLED: "disabled"}
    assert policy.autoreset_mode == names[mode]  # read from the vector env's metadata
    observation, info = vector_env.reset(seed=0)
    policy.reset()
    history: list[list[np.ndarray]] = [[] for _ in HORIZONS]
    done = None
    starts_seen = 0
    for _ in range(25):
        # The oracle: the model run from x0 = 0 over this episode's observations so far.
        for i in range(len(HORIZONS)):
            if info["episode_step"][i] == 0:
                history[i] = []
                starts_seen += 1
            history[i].append(observation[i])
        action = policy.act(observation, done)
        with torch.no_grad():
            for i in range(len(HORIZONS)):
                episode = torch.as_tensor(np.array(history[i]))
                expected, _ = model(episode)
                np.testing.assert_allclose(action[i], expected[-1].numpy(), rtol=1e-10, atol=1e-12)
                assert policy.episode_steps[i] == len(history[i])
        observation, _, terminated, truncated, info = vector_env.step(action)
        done = terminated | truncated
        if mode == AutoresetMode.DISABLED and done.any():
            observation, reset_info = vector_env.reset(options={"reset_mask": done})
            info = {"episode_step": np.where(done, 0, info["episode_step"])}
    assert starts_seen >= 3 + 12  # several boundaries per environment were crossed


def test_next_step_without_reset_would_differ():
    """Sanity check of the oracle above: carrying the state across an episode changes actions."""
    model = _model()
    first = torch.randn(3, 3, dtype=torch.float64)
    second = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        fresh, _ = model(second)
        _, carried_state = model(first)
        carried, _ = model(second, x0=carried_state)
    assert not torch.allclose(fresh, carried, atol=1e-6)


def test_single_env_unbatched_and_action_space_clipping():
    env = envs.PendulumSwingUpEnv(horizon=10)
    torch.manual_seed(1)
    model = ContractingR2DN(3, 4, 6, 1, hidden=(8,), init="random", dtype=torch.float64)
    with torch.no_grad():
        model.D22.fill_(100.0)  # huge actions: must be clipped to the torque limit
    policy = RecurrentPolicy.for_env(env, model)
    observation, _ = env.reset(seed=0)
    policy.reset()
    with policy.frozen():
        for _ in range(10):
            action = policy.act(observation)
            assert action.shape == (1,) and env.action_space.contains(action)
            observation, *_ = env.step(action)
    assert policy.episode_steps[0] == 10
    policy.reset()
    assert policy.episode_steps[0] == 0 and torch.count_nonzero(policy.state) == 0


def test_feedforward_model_and_initial_state():
    lbdn = LBDN(2, 51, (8,), dtype=torch.float64)
    policy = RecurrentPolicy(lbdn, num_envs=2)
    assert not policy.recurrent
    action = policy.act(np.zeros((2, 2)))
    assert action.shape == (2, 51)
    model = _model()
    x0 = torch.arange(4, dtype=torch.float64)
    policy = RecurrentPolicy(model, num_envs=2, initial_state=x0)
    policy.act(np.ones((2, 3)))
    policy.reset(np.array([True, False]))
    torch.testing.assert_close(policy.state[0], x0)
    assert not torch.equal(policy.state[1], x0)


def test_bad_arguments_raise():
    model = _model()
    with pytest.raises(ValueError, match="autoreset_mode"):
        RecurrentPolicy(model, 2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="num_envs"):
        RecurrentPolicy(model, 0)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(4,\)"):
        RecurrentPolicy(model, 2, initial_state=torch.zeros(3))
    policy = RecurrentPolicy(model, 2)
    with pytest.raises(ValueError, match=r"done must be a bool array of shape \(2,\)"):
        policy.act(np.zeros((2, 3)), done=np.array([True, False, True]))
    with pytest.raises(ValueError, match="2 environments"):
        policy.act(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        policy.act(np.full((2, 3), np.nan))
    for mode in (AutoresetMode.SAME_STEP, "SameStep", "same_step"):
        assert RecurrentPolicy(model, 2, autoreset_mode=mode).autoreset_mode == "same_step"
