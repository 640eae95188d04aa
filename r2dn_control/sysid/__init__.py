"""System identification with certified recurrent models: data, training, evaluation, benchmarks.

Examples
--------
>>> from r2dn_control import sysid
>>> train = sysid.SequenceData(u, y, dt=0.0025)                     # doctest: +SKIP
>>> res = sysid.fit(model, train, epochs=70, x0="encoder")          # doctest: +SKIP
>>> rep = sysid.evaluate(res.predictor, test, washout=100)          # doctest: +SKIP

See docs/sysid.md for the how-to guide and docs/theory.md §7 for normalisation, physical-unit
bounds and initial-state estimation.
"""

from .baselines import RecurrentBaseline, hidden_size_for, matched_baseline, parameter_count
from .boucwen import BoucWen, bouc_wen_data, multisine
from .data import Normalization, SequenceData
from .defaults import default_model
from .estimators import LearnedInitialStates, StateEncoder
from .evaluate import Report, evaluate
from .f16 import F16Data, load_f16
from .fit import FitResult, fit
from .poles import slowest_pole, suggested_contraction_rate
from .predictor import Predictor
from .simulated import (
    CascadedTanks,
    Duffing,
    WienerHammerstein,
    cascaded_tanks_data,
    duffing_data,
    wiener_hammerstein_data,
)

__all__ = [
    "BoucWen",
    "CascadedTanks",
    "Duffing",
    "F16Data",
    "FitResult",
    "LearnedInitialStates",
    "Normalization",
    "Predictor",
    "RecurrentBaseline",
    "Report",
    "SequenceData",
    "StateEncoder",
    "WienerHammerstein",
    "bouc_wen_data",
    "cascaded_tanks_data",
    "default_model",
    "duffing_data",
    "evaluate",
    "fit",
    "hidden_size_for",
    "load_f16",
    "matched_baseline",
    "multisine",
    "parameter_count",
    "slowest_pole",
    "suggested_contraction_rate",
    "wiener_hammerstein_data",
]
