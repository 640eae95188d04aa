"""python-control bridge: torch simulators of LTI plants, export of models as control systems.

* `LTIPlant`: batched, differentiable simulator of a ``control.StateSpace`` /
  ``control.TransferFunction`` (discrete, or discretized with ``control.c2d``).
* `to_nlsys`: a trained recurrent model as a discrete ``control.NonlinearIOSystem``.
"""

from ._convert import discretize
from .export import to_nlsys
from .plant import LTIPlant

__all__ = ["LTIPlant", "discretize", "to_nlsys"]
