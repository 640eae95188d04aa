r"""Simulation-error metrics of an identified model on measured experiments.

Definitions (all in the data's physical units, over the *scored* samples: every sample after
the first ``washout`` of each experiment, pooled over experiments):

* per channel c: $\mathrm{RMSE}_c = \sqrt{\mathrm{mean}_t (\hat y_{t,c} - y_{t,c})^2}$;
* per channel: $\mathrm{NRMSE}_c = \mathrm{RMSE}_c / \mathrm{std}_t(y_{t,c})$, the standard
  deviation (not the RMS) of the measured channel over the scored samples, the benchmarks'
  convention; a model predicting the channel's mean scores 1;
* overall ``rmse``: $\sqrt{\mathrm{mean}_c \mathrm{RMSE}_c^2}$ (RMS over channels);
* overall ``nrmse``: $\mathrm{mean}_c \mathrm{NRMSE}_c$;
* ``fit`` = 100·(1 − nrmse) %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SequenceData
from .predictor import Predictor


@dataclass(frozen=True)
class Report:
    """Scores of `evaluate` (see the module docstring for the definitions).

    Attributes
    ----------
    rmse, nrmse, fit : float
        Over all channels.
    per_channel : dict
        ``{"rmse": array (ny,), "nrmse": array (ny,), "fit": array (ny,)}``.
    y_hat : list of arrays
        The simulated output (T_i, ny) of every experiment, all samples (washout included).
    washout : int
    """

    rmse: float
    nrmse: float
    fit: float
    per_channel: dict
    y_hat: list
    washout: int

    def __str__(self) -> str:
        return (f"RMSE {self.rmse:.4g}, NRMSE {self.nrmse:.4f} (fit {self.fit:.1f} %), "
                f"washout {self.washout}")


def scores(y_hat: list[np.ndarray], y: list[np.ndarray], washout: int) -> dict[str, np.ndarray]:
    """Per-channel RMSE and NRMSE of predictions against measurements after ``washout``."""
    err = np.concatenate([(p - m)[washout:] for p, m in zip(y_hat, y)])
    meas = np.concatenate([m[washout:] for m in y])
    rmse = np.sqrt(np.mean(err**2, axis=0))
    std = meas.std(axis=0)
    nrmse = np.divide(rmse, std, out=np.full_like(rmse, np.inf), where=std > 0)
    return {"rmse": rmse, "nrmse": nrmse, "fit": 100.0 * (1.0 - nrmse)}


def evaluate(predictor: Predictor, data: SequenceData, washout: int = 100,
             experiments: list[int] | None = None) -> Report:
    """Simulate ``predictor`` on every experiment of ``data`` and score it after ``washout``.

    With an encoder the first ``predictor.washout`` samples of measured ``(u, y)`` estimate the
    initial state (``washout`` must be at least that, so no scored sample was seen by the
    estimator); otherwise the simulation starts from zero (or, with ``x0="learn"`` and
    ``experiments`` giving training-experiment indices, from their learned states).
    """
    if not isinstance(data, SequenceData):
        raise TypeError(f"data must be a SequenceData, got {type(data).__name__}")
    if not isinstance(washout, int) or washout < 0:
        raise ValueError(f"washout must be a non-negative int, got {washout!r}")
    if washout < predictor.washout:
        raise ValueError(f"washout={washout} is shorter than the {predictor.washout} samples the "
                         "state encoder reads; scored samples would be seen by the estimator")
    if min(data.lengths) <= washout:
        raise ValueError(f"every experiment must be longer than washout={washout}, got lengths "
                         f"{data.lengths}")
    if experiments is not None and len(experiments) != len(data):
        raise ValueError(f"experiments must give one index per experiment ({len(data)}), "
                         f"got {len(experiments)}")
    y_hat = [predictor.predict(u, y, None if experiments is None else experiments[i])
             for i, (u, y) in enumerate(zip(data.u, data.y))]
    s = scores(y_hat, data.y, washout)
    rmse = float(np.sqrt(np.mean(s["rmse"] ** 2)))
    nrmse = float(np.mean(s["nrmse"]))
    return Report(rmse=rmse, nrmse=nrmse, fit=100.0 * (1.0 - nrmse), per_channel=s,
                  y_hat=y_hat, washout=washout)
