"""Stable-baselines3 integration (optional extra ``rl``): PPO trains; the Lipschitz bound holds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

import r2dn_control.envs  # noqa: E402,F401  (registers the ids)
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecFrameStack  # noqa: E402

from r2dn_control.sb3 import LBDNActorCriticPolicy, R2DNHistoryExtractor  # noqa: E402


def _empirical_lipschitz(policy: LBDNActorCriticPolicy, dim: int, scale: float) -> float:
    """Largest of (i) Jacobian spectral norms at random points and (ii) difference quotients."""
    generator = torch.Generator().manual_seed(0)
    points = scale * torch.randn(64, dim, generator=generator)
    # A loop, not vmap: the R2DN's custom autograd.Function does not support functorch.
    jacobians = torch.stack([
        torch.autograd.functional.jacobian(lambda o: policy.action_mean(o[None])[0], point)
        for point in points
    ])
    spectral = torch.linalg.matrix_norm(jacobians, ord=2).max()
    other = points + 0.3 * scale * torch.randn(64, dim, generator=generator)
    with torch.no_grad():
        ratio = ((policy.action_mean(points) - policy.action_mean(other)).norm(dim=1)
                 / (points - other).norm(dim=1)).max()
    return float(max(spectral, ratio))


def test_ppo_with_lbdn_actor_trains_and_keeps_its_lipschitz_bound():
    env = gym.make("r2dn_control.envs:BoxInFluid-v0")
    gamma = 5.0
    model = PPO(
        LBDNActorCriticPolicy, env, n_steps=128, batch_size=64, n_epochs=2, seed=0,
        device="cpu", learning_rate=3e-3,
        policy_kwargs={"gamma": gamma, "hidden": (16, 16), "critic_hidden": (16,)},
    )
    before = [p.detach().clone() for p in model.policy.mlp_extractor.actor.parameters()]
    model.learn(total_timesteps=384)
    after = list(model.policy.mlp_extractor.actor.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "the actor did not train"
    policy = model.policy
    assert isinstance(policy.action_net, torch.nn.Identity)  # no unbounded head after the LBDN
    assert policy.lipschitz_bound() == pytest.approx(gamma)
    empirical = _empirical_lipschitz(policy, 3, scale=2.0)
    assert empirical <= gamma * (1 + 1e-4)
    assert empirical > 0.2 * gamma  # the check is not vacuous (a zero actor would pass)
    action, _ = model.predict(np.zeros(3), deterministic=True)
    assert env.action_space.contains(action.astype(np.float64))


def test_ppo_with_recurrent_r2dn_history_features_keeps_the_composed_bound():
    history = 3
    venv = VecFrameStack(make_vec_env("r2dn_control.envs:PendulumSwingUp-v0", n_envs=2, seed=0,
                                       env_kwargs={"render_mode": None}),
                         history)
    extractor = {"history": history, "gamma": 2.0, "features_dim": 8, "state_size": 4,
                 "features": 8, "hidden": (16,)}
    model = PPO(
        LBDNActorCriticPolicy, venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu",
        policy_kwargs={"gamma": 1.5, "hidden": (16,), "critic_hidden": (16,),
                       "features_extractor_class": R2DNHistoryExtractor,
                       "features_extractor_kwargs": extractor},
    )
    model.learn(total_timesteps=256)
    policy = model.policy
    assert policy.lipschitz_bound() == pytest.approx(2.0 * 1.5)
    assert _empirical_lipschitz(policy, 3 * history, scale=1.0) <= 3.0 * (1 + 1e-4)


def test_policy_rejects_unsupported_spaces_and_extractors():
    with pytest.raises(TypeError, match="Box action space"):
        PPO(LBDNActorCriticPolicy, gym.make("CartPole-v1"), device="cpu")
    with pytest.raises(ValueError, match="multiple of history"):
        R2DNHistoryExtractor(gym.spaces.Box(-1, 1, (5,)), history=2)
