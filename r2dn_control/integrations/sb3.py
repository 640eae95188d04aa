r"""Stable-baselines3 policies built from Lipschitz-bounded networks (optional extra ``rl``).

Install with ``pip install "r2dn-control[rl]"``.

`LBDNActorCriticPolicy` is an ``ActorCriticPolicy`` (PPO, A2C) whose action mean is an
LBDN of the features, with no linear action head after it:

$$
\mu(o) = \mathrm{LBDN}_\gamma(\phi(o)),\qquad
\|\mu(o) - \mu(o')\|_2 \le \gamma\,L_\phi\,\|o - o'\|_2,
$$

for the features extractor φ with Lipschitz constant L_φ: 1 for the default flatten, γ_R2DN
for `R2DNHistoryExtractor` with a Lipschitz R2DN. The bound holds for every value of the
parameters, so it survives training. The critic is an ordinary MLP (its smoothness does not
affect the deployed policy). The deterministic action ``clip(μ(o))`` has the same bound.

Recurrent option: SB3's PPO has no recurrent rollout buffer, so `R2DNHistoryExtractor`
runs a `LipschitzR2DN` from the zero state over the last k
observations (stack them with ``VecFrameStack(venv, k)``). From a common zero state an R2DN
with incremental ℓ₂ gain γ_R satisfies ‖Δy_{k}‖ ≤ ‖Δy_{1:k}‖ ≤ γ_R ‖Δo_{1:k}‖, so the features
are γ_R-Lipschitz in the observation window. For unbounded memory train the R2DN by
backpropagation through an environment's torch twin and deploy it with
`RecurrentPolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

try:
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "r2dn_control.integrations.sb3 needs stable-baselines3; install it with "
        "pip install 'r2dn-control[rl]'"
    ) from error

from ..nn import LBDN, LipschitzR2DN


class R2DNHistoryExtractor(BaseFeaturesExtractor):
    """Features y_k of a Lipschitz R2DN run from zero over a stacked observation window.

    Parameters
    ----------
    observation_space : gymnasium.spaces.Box
        Flat stacked observations of shape (history · obs_dim,), oldest first, as produced by
        ``VecFrameStack(venv, history)`` for a 1-D Box.
    history : int
        Number of stacked observations k.
    features_dim : int
        Output size of the R2DN.
    state_size, features : int
        nx and nv of the R2DN.
    hidden : sequence of int
        Hidden widths of the R2DN's LBDN nonlinearity.
    gamma : float
        Lipschitz bound γ_R of the R2DN (from the stacked window to the features).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        history: int,
        features_dim: int = 16,
        state_size: int = 8,
        features: int = 16,
        hidden: Sequence[int] = (32,),
        gamma: float = 1.0,
    ) -> None:
        super().__init__(observation_space, features_dim)
        size = int(np.prod(observation_space.shape))
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive int, got {history!r}")
        if size % history:
            raise ValueError(
                f"the observation size {size} is not a multiple of history={history}; stack "
                "1-D observations with VecFrameStack(venv, history)"
            )
        self.history, self.observation_size = history, size // history
        self.model = LipschitzR2DN(
            self.observation_size, state_size, features, features_dim, hidden=hidden, gamma=gamma
        )

    @property
    def lipschitz_bound(self) -> float:
        """γ_R: the features' Lipschitz constant in the (stacked) observation."""
        gamma = self.model.gamma
        if gamma is None:  # a LipschitzR2DN always has one
            raise RuntimeError("the R2DN of this extractor has no Lipschitz bound")
        return gamma

    def forward(self, observations: Tensor) -> Tensor:
        window = observations.reshape(observations.shape[0], self.history, self.observation_size)
        outputs, _ = self.model(window.to(self.model.dtype))
        return outputs[:, -1]


class _LBDNConfig(TypedDict):
    """The `_LBDNExtractor` options that `LBDNActorCriticPolicy` keeps until SB3 builds it."""

    hidden: tuple[int, ...]
    gamma: float
    learn_gamma: bool
    activation: str
    critic_hidden: tuple[int, ...]


class _LBDNExtractor(nn.Module):
    """SB3 "mlp_extractor": the actor is an LBDN straight to the action mean, the critic an MLP."""

    def __init__(
        self,
        features_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        gamma: float,
        learn_gamma: bool,
        activation: str,
        critic_hidden: Sequence[int],
    ) -> None:
        super().__init__()
        self.actor = LBDN(
            features_dim, action_dim, hidden, gamma=gamma, learn_gamma=learn_gamma,
            activation=activation,
        )
        layers: list[nn.Module] = []
        width = features_dim
        for size in critic_hidden:
            layers += [nn.Linear(width, size), nn.Tanh()]
            width = size
        self.critic = nn.Sequential(*layers)
        self.latent_dim_pi, self.latent_dim_vf = action_dim, width

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: Tensor) -> Tensor:
        return self.actor(features)

    def forward_critic(self, features: Tensor) -> Tensor:
        return self.critic(features)


class LBDNActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy with a γ-Lipschitz LBDN actor, for PPO/A2C on Box action spaces.

    Use as ``PPO(LBDNActorCriticPolicy, env, policy_kwargs={"gamma": 5.0})``.

    Parameters
    ----------
    gamma : float
        Lipschitz bound of the LBDN actor (features → action mean).
    hidden : sequence of int
        Hidden widths of the LBDN actor.
    learn_gamma : bool
        Learn log γ (the bound then holds for the current γ, see `lipschitz_bound`).
    activation : str
        LBDN activation (``"relu"``, ``"tanh"``, ...).
    critic_hidden : sequence of int
        Hidden widths of the (unconstrained) value MLP.
    **kwargs
        Passed to ``ActorCriticPolicy`` (``log_std_init``, ``features_extractor_class``, ...);
        ``net_arch`` is not used.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        *,
        gamma: float = 1.0,
        hidden: Sequence[int] = (64, 64),
        learn_gamma: bool = False,
        activation: str = "relu",
        critic_hidden: Sequence[int] = (64, 64),
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Box):
            raise TypeError(
                f"LBDNActorCriticPolicy needs a Box action space, got {type(action_space).__name__}"
            )
        if kwargs.get("use_sde"):
            raise ValueError("LBDNActorCriticPolicy does not support use_sde=True")
        self._lbdn_config: _LBDNConfig = {
            "hidden": tuple(hidden), "gamma": float(gamma), "learn_gamma": bool(learn_gamma),
            "activation": activation, "critic_hidden": tuple(critic_hidden),
        }
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        shape = self.action_space.shape
        if shape is None:
            raise TypeError(f"the action space {self.action_space} has no shape")
        action_dim = int(np.prod(shape))
        # SB3 declares mlp_extractor as MlpExtractor; its docs allow any module with
        # latent_dim_pi/latent_dim_vf and forward_actor/forward_critic (as this one).
        self.mlp_extractor = _LBDNExtractor(  # type: ignore[assignment]
            self.features_dim, action_dim, **self._lbdn_config)

    @property
    def lbdn_extractor(self) -> _LBDNExtractor:
        """The LBDN actor and MLP critic (``mlp_extractor`` as what it is)."""
        extractor = self.mlp_extractor
        if not isinstance(extractor, _LBDNExtractor):
            raise TypeError(f"mlp_extractor was replaced by a {type(extractor).__name__}")
        return extractor

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # No linear head after the LBDN: it would break the Lipschitz bound. Rebuild the
        # optimizer so it does not hold the discarded head's parameters.
        self.action_net = nn.Identity()
        # SB3 types optimizer_class as the Optimizer base, whose __init__ takes no lr.
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def action_mean(self, observation: Tensor) -> Tensor:
        """μ(o): the deterministic action before clipping, differentiable in ``observation``."""
        features = self.extract_features(observation, self.pi_features_extractor)
        if not isinstance(features, Tensor):  # a tuple only without an extractor argument
            raise TypeError(f"expected one feature tensor, got {type(features).__name__}")
        return self.lbdn_extractor.forward_actor(features)

    def lipschitz_bound(self) -> float:
        """Certified Lipschitz constant γ·L_φ of o ↦ μ(o) in the 2-norm.

        Raises TypeError for a features extractor whose constant is unknown.
        """
        extractor = self.pi_features_extractor
        known = getattr(extractor, "lipschitz_bound", None)
        if isinstance(extractor, FlattenExtractor):
            extractor_bound = 1.0
        elif known is not None:
            extractor_bound = float(known)
        else:
            raise TypeError(
                f"no Lipschitz bound is known for the features extractor {type(extractor).__name__}"
            )
        with torch.no_grad():
            return float(self.lbdn_extractor.actor.gamma) * extractor_bound
