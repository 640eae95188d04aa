"""Gymnasium environments of r2dn_control.envs: API, determinism, twin equality, task pins."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import r2dn_control.envs as envs
import torch
from gymnasium.utils.env_checker import check_env

from r2dn_control.nn import LBDN

IDS = sorted(envs.ENVIRONMENTS)


def _quiet_check_env(env: gym.Env) -> None:
    # check_env only *recommends* normalised action boxes and finite observation bounds; the
    # physical units (|ũ| <= 5, unbounded positions) are part of the task definitions.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*symmetric and normalized space.*")
        warnings.filterwarnings("ignore", message=".*observation space m.*infinity.*")
        check_env(env)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes_and_make_by_module_string(env_id):
    env = gym.make(f"r2dn_control.envs:{env_id}")
    assert isinstance(env.unwrapped, envs.ENVIRONMENTS[env_id])
    _quiet_check_env(env.unwrapped)
    assert env.observation_space.dtype == np.float64
    assert env.action_space.dtype == np.float64


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_runs_are_identical_and_seeds_matter(env_id):
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = envs.ENVIRONMENTS[env_id](horizon=60)
        observation, _ = env.reset(seed=seed, options={"start": "random"}
                                   if env_id.startswith("Reaction") else None)
        env.action_space.seed(seed)
        observations, rewards = [observation], []
        for _ in range(60):
            observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            observations.append(observation)
            rewards.append(reward)
            assert not terminated
        assert truncated
        return np.array(observations), np.array(rewards)

    first, again, other = run(3), run(3), run(4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def _record(env_id: str, seed: int, steps: int, controller=None):
    """Run the gymnasium env; actions from ``controller`` (float64 torch) or the action space."""
    env = envs.ENVIRONMENTS[env_id](horizon=steps)
    observation, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    x0 = info["state"]
    observations, actions, rewards, exogenous, states = [observation], [], [], [], [x0]
    for _ in range(steps):
        if controller is None:
            # Deliberately beyond the box so that the shared clipping is exercised too.
            action = 1.5 * env.action_space.sample()
        else:
            with torch.no_grad():
                action = controller(torch.as_tensor(observation)[None])[0].numpy()
        observation, reward, _, _, info = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        exogenous.append(info["exogenous"])
        states.append(info["state"])
    return {
        "x0": x0, "observations": np.array(observations), "actions": np.array(actions),
        "rewards": np.array(rewards), "exogenous": np.array(exogenous), "states": np.array(states),
    }


@pytest.mark.parametrize("env_id", IDS)
def test_env_and_torch_twin_trajectories_identical(env_id):
    steps, seeds = 40, (0, 1, 2)
    runs = [_record(env_id, seed, steps) for seed in seeds]
    twin = envs.ENVIRONMENTS[env_id].torch_twin(dtype=torch.float64)
    stack = lambda key: torch.as_tensor(np.stack([run[key] for run in runs]))  # noqa: E731
    rollout = twin.rollout(stack("actions"), stack("x0"), stack("exogenous"))
    # The env calls the twin on a batch of one: same operations, equal to rounding.
    np.testing.assert_allclose(rollout.states.numpy(), stack("states").numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        rollout.observations.numpy(), stack("observations").numpy(), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        rollout.rewards.numpy(), stack("rewards").numpy(), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("env_id", IDS)
def test_closed_loop_twin_matches_env_under_the_same_controller(env_id):
    env_class = envs.ENVIRONMENTS[env_id]
    twin = env_class.torch_twin(dtype=torch.float64)
    torch.manual_seed(0)
    controller = LBDN(twin.observation_size, twin.action_size, (8,), gamma=2.0, dtype=torch.float64)
    run = _record(env_id, seed=5, steps=30, controller=controller)
    x0 = torch.as_tensor(run["x0"])[None]
    rollout = twin.rollout(controller, x0, torch.as_tensor(run["exogenous"])[None])
    states = rollout.states[0].detach().numpy()
    np.testing.assert_allclose(states, run["states"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(rollout.rewards[0].detach().numpy(), run["rewards"], atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("env_id", IDS)
def test_twin_is_batched_and_differentiable_in_float32(env_id):
    twin = envs.torch_twin(env_id)  # float32 by default, as for training
    generator = torch.Generator().manual_seed(0)
    x0 = twin.sample_initial_state(4, generator)
    w = twin.sample_exogenous(4, 25, generator)
    assert x0.shape == (4, twin.state_size) and w.shape == (4, 25, twin.exogenous_size)
    assert x0.dtype == torch.float32
    torch.manual_seed(0)
    controller = LBDN(twin.observation_size, twin.action_size, (8,), gamma=1.0)
    rollout = twin.rollout(controller, x0, w)
    assert rollout.rewards.shape == (4, 25)
    (-rollout.rewards.mean()).backward()
    gradients = [p.grad for p in controller.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    if env_id != "ReactionDiffusionObserver-v0":  # there the action is an estimate: it moves r
        assert any(g.abs().sum() > 0 for g in gradients)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("env_id", IDS)
def test_bad_actions_raise_clear_errors(env_id):
    env = envs.ENVIRONMENTS[env_id]()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    shape = env.action_space.shape
    with pytest.raises(ValueError, match=rf"shape \({shape[0]},\).*got \({shape[0] + 1},\)"):
        env.step(np.zeros(shape[0] + 1))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, *shape)))
    for bad in (np.nan, np.inf):
        action = np.zeros(shape)
        action[-1] = bad
        with pytest.raises(ValueError, match="finite"):
            env.step(action)
    with pytest.raises(TypeError, match="numeric"):
        env.step(["a"] * shape[0])
    with pytest.raises(ValueError, match="options\\['state'\\] must have shape"):
        env.reset(options={"state": np.zeros(env.twin.state_size + 1)})


def test_registered_ids_and_unknown_twin():
    for env_id in IDS:
        assert env_id in gym.registry
    with pytest.raises(KeyError, match="unknown environment"):
        envs.torch_twin("Nope-v0")


# ---------------------------------------------------------------------- task pins
def test_youla_plant_poles_dc_gain_and_clipping():
    twin = envs.YoulaLinearTwin(dtype=torch.float64)
    poles = np.linalg.eigvals(twin.A[:2, :2].numpy())
    np.testing.assert_allclose(sorted(poles.imag), [-0.4702282, 0.4702282], atol=1e-6)
    np.testing.assert_allclose(poles.real, [0.6472136] * 2, atol=1e-6)
    # A unit step of ũ reaches z = DC gain 0.3 / (1 − 1.2944 + 0.64) ≈ 0.868.
    steps = 200
    ones, zeros = torch.ones(1, steps, 1, dtype=torch.float64), torch.zeros(1, steps, 1).double()
    rollout = twin.rollout(ones, torch.zeros(1, 6, dtype=torch.float64), zeros)
    z_final = twin.performance(rollout.states[:, -1])
    assert abs(z_final.item() - 0.3 / (1 - 2 * 0.8 * math.cos(0.2 * math.pi) + 0.64)) < 1e-9
    # |ũ| beyond 5 acts as 5 (actuator limit shared by step and reward).
    big = twin.rollout(100 * ones, torch.zeros(1, 6).double(), zeros)
    five = twin.rollout(5 * ones, torch.zeros(1, 6).double(), zeros)
    torch.testing.assert_close(big.states, five.states)
    torch.testing.assert_close(big.rewards, five.rewards)


def test_youla_disturbances_and_open_loop_cost():
    twin = envs.YoulaLinearTwin(dtype=torch.float64)
    w = twin.sample_exogenous(64, 800, torch.Generator().manual_seed(0))
    assert w.abs().max() <= 10
    blocks = w.reshape(64, 16, 50)
    assert torch.equal(blocks, blocks[:, :, :1].expand_as(blocks))  # held for 50 steps
    cost = -twin.rollout(torch.zeros(64, 800, 1).double(), torch.zeros(64, 6).double(), w).rewards
    # docs/experiments.md, youla: the uncontrolled cost on such disturbances is ≈ 4.4.
    assert 3.9 < cost.mean().item() < 4.9
    env = envs.YoulaLinearEnv(horizon=120)
    env.reset(seed=0)
    levels = [env.step(np.zeros(1))[4]["exogenous"][0] for _ in range(120)]
    assert len(set(levels[:50])) == 1 and len(set(levels[50:100])) == 1
    assert levels[49] != levels[50]


def _reference_pde_step(xi: np.ndarray, b: float) -> np.ndarray:
    """Independent loop implementation of 4 explicit-Euler sub-steps (docs/experiments.md, observer)."""
    dx = 10.0 / 50
    dt = 0.1 * dx * dx
    x = xi.copy()
    for _ in range(4):
        new = x.copy()
        for i in range(1, 50):
            lap = (x[i - 1] - 2 * x[i] + x[i + 1]) / dx**2
            new[i] = x[i] + dt * (lap + 0.5 * x[i] * (1 - x[i]) * (x[i] - 0.5))
        new[0] = new[50] = b
        x = new
    return x


def test_reaction_diffusion_matches_reference_discretisation_and_stays_in_unit_interval():
    env = envs.ReactionDiffusionObserverEnv()
    observation, info = env.reset(seed=2, options={"start": "test"})
    np.testing.assert_array_equal(info["state"], np.r_[np.ones(51), 0.5])
    np.testing.assert_array_equal(observation, [0.5, 1.0])
    rng = np.random.default_rng(0)
    state = np.r_[rng.uniform(size=51), 0.3]
    env.reset(options={"state": state})
    _, reward, _, _, info = env.step(np.full(51, 0.25))
    np.testing.assert_allclose(info["state"][:51], _reference_pde_step(state[:51], 0.3), atol=1e-14)
    assert reward == pytest.approx(-np.mean((0.25 - state[:51]) ** 2))
    assert info["state"][51] == pytest.approx(np.clip(0.3 + 0.05 * info["exogenous"][0], 0, 1))
    for _ in range(300):
        observation, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        env.reset(options={"state": np.full(52, 1.5)})
    with pytest.raises(ValueError, match="start"):
        env.reset(options={"start": "bogus"})


def test_box_equilibrium_and_goal_option():
    env = envs.BoxInFluidEnv()
    observation, info = env.reset(seed=0, options={"goal": 0.4})
    np.testing.assert_array_equal(observation, [0.0, 0.0, 0.4])
    env.reset(options={"state": [0.4, 0.0, 0.4]})
    # At q = q_ref and rest, u_ref = k q_ref holds the box: no motion and zero cost.
    observation, reward, *_ = env.step(np.array([5.0 * 0.4]))
    np.testing.assert_allclose(observation, [0.4, 0.0, 0.4], atol=1e-15)
    assert reward == 0.0
    with pytest.raises(ValueError, match="goal"):
        env.reset(options={"goal": 2.0})


def test_pendulum_upright_is_an_equilibrium_and_torque_is_limited():
    env = envs.PendulumSwingUpEnv()
    env.reset(options={"state": [0.0, 0.0]})
    observation, reward, *_ = env.step(np.zeros(1))
    np.testing.assert_array_equal(observation, [1.0, 0.0, 0.0])
    assert reward == 0.0
    twin = envs.PendulumSwingUpTwin(dtype=torch.float64)
    hanging = torch.tensor([[math.pi, 0.0]], dtype=torch.float64)
    assert torch.equal(twin.step(hanging, torch.tensor([[2.0]]).double()),
                       twin.step(hanging, torch.tensor([[9.0]]).double()))
    with pytest.raises(ValueError, match="speed"):
        env.reset(options={"state": [0.0, 20.0]})


def test_make_in_a_fresh_interpreter_registers_on_import():
    import subprocess
    import sys

    code = ("import gymnasium; env = gymnasium.make('r2dn_control.envs:YoulaLinear-v0'); "
            "print(type(env.unwrapped).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "YoulaLinearEnv"
