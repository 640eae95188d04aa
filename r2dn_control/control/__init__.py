"""Control designs with provably stable recurrent models.

* `YoulaController`: observer-based base controller + contracting Youla parameter Q;
  stable in closed loop with a linear plant for every Q.
* `Observer`: contracting state estimator ``x̂⁺ = f(x̂, y, u)`` trained on the one-step
  correctness loss.
* `train_policy_gradient` / `fit_observer`: training loops.
* `RecurrentPolicy`: any recurrent model as a gymnasium (vector-env) policy with
  per-environment state, reset at episode boundaries.
"""

from .design import ObserverBasedController
from .observer import Observer
from .policy import RecurrentPolicy
from .training import PolicyGradientHistory, fit_observer, step_disturbances, train_policy_gradient
from .youla import (
    ClosedLoopState,
    ClosedLoopTrajectory,
    YoulaController,
    YoulaState,
    simulate_closed_loop,
)

__all__ = [
    "ClosedLoopState",
    "ClosedLoopTrajectory",
    "Observer",
    "ObserverBasedController",
    "PolicyGradientHistory",
    "RecurrentPolicy",
    "YoulaController",
    "YoulaState",
    "fit_observer",
    "simulate_closed_loop",
    "step_disturbances",
    "train_policy_gradient",
]
