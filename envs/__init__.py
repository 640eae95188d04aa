"""Gymnasium environments of r2dn-control, installed as ``r2dn_control.envs``.

Importing this package registers the ids, so that, without any other import,

>>> import gymnasium
>>> env = gymnasium.make("r2dn_control.envs:YoulaLinear-v0")

Every environment's dynamics live in one batched, differentiable torch twin
(``Env.torch_twin(dtype=...)``) that the environment itself calls in float64; use the twin
for backpropagation through the simulator. See ``docs/envs.md``.
"""

from gymnasium.envs.registration import register, registry

from ._env import TwinEnv
from ._twin import Controller, Rollout, TorchTwin, as_controller
from .box_fluid import BoxInFluidEnv, BoxInFluidTwin
from .pendulum import PendulumSwingUpEnv, PendulumSwingUpTwin
from .reaction_diffusion import ReactionDiffusionObserverEnv, ReactionDiffusionTwin
from .youla import YoulaLinearEnv, YoulaLinearTwin, youla_matrices

#: Registered id → environment class.
ENVIRONMENTS: dict[str, type[TwinEnv]] = {
    "ReactionDiffusionObserver-v0": ReactionDiffusionObserverEnv,
    "YoulaLinear-v0": YoulaLinearEnv,
    "BoxInFluid-v0": BoxInFluidEnv,
    "PendulumSwingUp-v0": PendulumSwingUpEnv,
}

for _env_id, _env_class in ENVIRONMENTS.items():
    # Guard: re-importing (e.g. importlib.reload) must not re-register and warn.
    if _env_id not in registry:
        register(id=_env_id, entry_point=f"{_env_class.__module__}:{_env_class.__name__}")


def torch_twin(env_id: str, **kwargs) -> TorchTwin:
    """The torch twin of a registered environment, e.g. ``torch_twin("BoxInFluid-v0")``.

    ``kwargs`` go to the twin's constructor (``dtype``, ``device`` and physical parameters).
    """
    name = env_id.split(":")[-1]
    if name not in ENVIRONMENTS:
        raise KeyError(f"unknown environment {env_id!r}; expected one of {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name].torch_twin(**kwargs)


__all__ = [
    "ENVIRONMENTS",
    "BoxInFluidEnv",
    "BoxInFluidTwin",
    "Controller",
    "PendulumSwingUpEnv",
    "PendulumSwingUpTwin",
    "ReactionDiffusionObserverEnv",
    "ReactionDiffusionTwin",
    "Rollout",
    "TorchTwin",
    "TwinEnv",
    "YoulaLinearEnv",
    "YoulaLinearTwin",
    "as_controller",
    "torch_twin",
    "youla_matrices",
]
