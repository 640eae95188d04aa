"""Torch core: Lipschitz-bounded networks and directly parameterized recurrent models.

This layer imports torch only (no cvxpy, gymnasium or python-control).
"""

from .activations import ACTIVATIONS
from .base import RecurrentModel
from .checkpoint import CheckpointError, load_model, save_model  # registers the families
from .equilibrium import EquilibriumLayer
from .explicit import ExplicitModel, rollout
from .flax_init import flax_lecun_init_
from .iqc import SupplyRate
from .lbdn import LBDN, ExplicitMLP, SandwichLayer
from .r2dn import ContractingR2DN, GeneralR2DN, LipschitzR2DN, PassiveR2DN
from .registry import register_model, registered_models
from .ren import ContractingREN, GeneralREN, LipschitzREN, PassiveREN

__all__ = [
    "ACTIVATIONS",
    "CheckpointError",
    "LBDN",
    "ContractingR2DN",
    "ExplicitMLP",
    "ExplicitModel",
    "GeneralR2DN",
    "LipschitzR2DN",
    "PassiveR2DN",
    "RecurrentModel",
    "SandwichLayer",
    "load_model",
    "save_model",
    "SupplyRate",
    "flax_lecun_init_",
    "register_model",
    "registered_models",
    "rollout",
    # REN baselines
    "ContractingREN",
    "EquilibriumLayer",
    "GeneralREN",
    "LipschitzREN",
    "PassiveREN",
]
