# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lipschitz-bounded policies: analytic gradients and PPO
#
# Task: `BoxInFluid-v0`, a box on a spring with quadratic drag, m q̈ = u − 5q − 0.5q̇|q̇|,
# to be moved to a random goal q_ref ∈ [−1, 1] within 4 s (|u| ≤ 50 N).
#
# The policy is an LBDN with Lipschitz bound γ = 20 (docs/theory.md §1): for every weight
# value, ‖μ(o) − μ(o′)‖ ≤ 20‖o − o′‖, so a small observation error can never cause a large
# change of force. We train it two ways:
#
# 1. **analytic policy gradients** through the environment's differentiable torch twin;
# 2. **PPO** from Stable-Baselines3 with `LBDNActorCriticPolicy` (extra `rl`).
#
# Set `QUICK=1` for a sub-minute run.

# %%
import os

import gymnasium
import matplotlib.pyplot as plt
import numpy as np
import torch
from r2dn_control.envs import BoxInFluidEnv

from r2dn_control import certify
from r2dn_control.nn import LBDN

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")
torch.manual_seed(0)
torch.set_num_threads(1)


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"rl_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


# %% [markdown]
# ## 1. Backpropagation through the simulator
#
# The twin is the batched torch version of the environment's dynamics (the environment itself
# calls it in float64). The LBDN's explicit weights are built once per rollout.

# %%
twin = BoxInFluidEnv.torch_twin(dtype=torch.float32)
policy = LBDN(3, 1, (32, 32), gamma=20.0)
optimizer = torch.optim.Adam(policy.parameters(), 1e-3 if not QUICK else 3e-3)
gen = torch.Generator().manual_seed(0)
returns = []
for _epoch in range(40 if QUICK else 250):
    x0 = twin.sample_initial_state(80, generator=gen)      # at rest, random goals
    mlp = policy.explicit()
    rollout = twin.rollout(lambda obs, state, mlp=mlp: (mlp(obs), None), x0, steps=200)
    loss = -rollout.rewards.sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    returns.append(-loss.item())
print(f"return per episode: {returns[0]:.1f} -> {returns[-1]:.1f}")
print(certify.lipschitz(policy))


# %%
def evaluate(act, seeds):
    """Run the gymnasium environment with a deterministic policy; return the trajectories."""
    env = gymnasium.make("r2dn_control.envs:BoxInFluid-v0")
    runs = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        obs_log, act_log, total, done = [obs], [], 0.0, False
        while not done:
            a = act(obs)
            obs, r, terminated, truncated, _ = env.step(a)
            obs_log.append(obs)
            act_log.append(a)
            total += r
            done = terminated or truncated
        runs.append((np.array(obs_log), np.array(act_log), total))
    return runs


def lbdn_action(obs):
    with torch.no_grad():
        return policy(torch.as_tensor(obs, dtype=torch.float32)).numpy()


apg_runs = evaluate(lbdn_action, range(5))
t = np.arange(apg_runs[0][0].shape[0]) * twin.dt

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].plot(returns)
axes[0].set(xlabel="epoch", ylabel="mean return", title="analytic policy gradient")
for k, (obs, act, _) in enumerate(apg_runs):
    axes[1].plot(t, obs[:, 0], color=f"C{k}")
    axes[1].axhline(obs[0, 2], color=f"C{k}", ls=":", lw=1)
    axes[2].plot(t[:-1], act[:, 0], color=f"C{k}")
axes[1].set(xlabel="time [s]", ylabel="position q", title="gymnasium episodes (dotted: goal)")
axes[2].set(xlabel="time [s]", ylabel="force u [N]", title="actions")
fig.tight_layout()
show(fig, "apg")

# %% [markdown]
# ## 2. PPO with Stable-Baselines3
#
# `LBDNActorCriticPolicy` makes the action mean an LBDN of the observation with no linear
# head after it, so `lipschitz_bound()` holds throughout training. PPO needs far more samples
# than the analytic gradient; the quick run only shows the mechanics.

# %%
from stable_baselines3 import PPO  # noqa: E402

from r2dn_control.sb3 import LBDNActorCriticPolicy  # noqa: E402

env = gymnasium.make("r2dn_control.envs:BoxInFluid-v0")
ppo = PPO(LBDNActorCriticPolicy, env, policy_kwargs={"gamma": 20.0, "hidden": (32, 32)},
          n_steps=1024 if QUICK else 2048, seed=0, verbose=0)
ppo.learn(1024 if QUICK else 200_000)
print("Lipschitz bound of the PPO action mean:", ppo.policy.lipschitz_bound())
ppo_runs = evaluate(lambda obs: ppo.predict(obs, deterministic=True)[0], range(5))

# %%
apg_returns = [r for _, _, r in apg_runs]
ppo_returns = [r for _, _, r in ppo_runs]
fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.boxplot([apg_returns, ppo_returns])
ax.set_xticks([1, 2], ["analytic gradient", f"PPO ({ppo.num_timesteps} steps)"])
ax.set(ylabel="episode return (5 seeds)", title="both policies are 20-Lipschitz")
show(fig, "compare")
print(f"mean return: analytic gradient {np.mean(apg_returns):.1f}, PPO {np.mean(ppo_returns):.1f}")
