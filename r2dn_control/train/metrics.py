"""Error metrics for identification and estimation."""

from __future__ import annotations

import torch
from torch import Tensor


def nrmse(prediction: Tensor, target: Tensor, washout: int = 0) -> float:
    r"""Normalised RMS error :math:`\sqrt{\mathrm{mean}((\hat y - y)^2) / \mathrm{mean}(y^2)}`.

    Both tensors have shape (batch, time, channels); the first ``washout`` steps are ignored.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    if not 0 <= washout < target.shape[1]:
        raise ValueError(f"washout must be in [0, {target.shape[1]}), got {washout}")
    p, t = prediction[:, washout:], target[:, washout:]
    return torch.sqrt(((p - t) ** 2).mean() / (t**2).mean()).item()
