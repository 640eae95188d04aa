"""Error metrics for identification and estimation."""

from __future__ import annotations

import torch
from torch import Tensor


def nrmse(prediction: Tensor, target: Tensor, washout: int = 0) -> float:
    r"""Normalised RMS error, the system-identification benchmarks' convention.

    Per output channel c, over the scored samples (every batch element, time steps from
    ``washout`` on):

    $$
    \mathrm{NRMSE}_c = \frac{\sqrt{\mathrm{mean}_{b,t}(\hat y_{b,t,c} - y_{b,t,c})^2}}
                            {\mathrm{std}_{b,t}(y_{b,t,c})},
    $$

    the standard deviation (not the RMS) of the measured channel, so that predicting the mean
    scores 1; the result is the mean over channels. Both tensors have shape
    (batch, time, channels). Same definition as `r2dn_control.sysid.evaluate`.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    if target.dim() != 3:
        raise ValueError(f"prediction and target must have shape (batch, time, channels), got "
                         f"{tuple(target.shape)}")
    if not 0 <= washout < target.shape[1]:
        raise ValueError(f"washout must be in [0, {target.shape[1]}), got {washout}")
    p = prediction[:, washout:].reshape(-1, target.shape[-1]).double()
    t = target[:, washout:].reshape(-1, target.shape[-1]).double()
    rmse = torch.sqrt(((p - t) ** 2).mean(0))
    std = t.std(0, unbiased=False)
    if bool((std == 0).any()):
        raise ValueError("a target channel is constant over the scored samples: its NRMSE "
                         "(RMSE / standard deviation) is undefined")
    return (rmse / std).mean().item()
