r"""Certificates in physical units for a model trained on normalised data (docs/theory.md §7).

A model identified on ``u_n = (u − ū)/σ_u`` and ``y_n = (y − ȳ)/σ_y`` (per channel) maps
physical inputs to physical outputs through

$$
B_2 \leftarrow B_2 S_u^{-1},\quad D_{12} \leftarrow D_{12} S_u^{-1},\quad
C_2 \leftarrow S_y C_2,\quad D_{21} \leftarrow S_y D_{21},\quad
D_{22} \leftarrow S_y D_{22} S_u^{-1},
$$

with ``S_u = diag(σ_u)``, ``S_y = diag(σ_y)``. The state, A, B₁, C₁ and the nonlinearity are
unchanged, so contraction is unit-free; the incremental gain is not: certify γ of the folded
model, or use the simple bound ``γ_n · max(σ_y) / min(σ_u)``. The means only shift biases,
which no incremental property depends on (biases are scaled, not shifted, here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from ..nn.base import RecurrentModel
from ..nn.explicit import ExplicitModel

NORMALIZATION_KEYS = ("u_mean", "u_std", "y_mean", "y_std")


def _scales(values: object, size: int, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of {size} positive numbers, got "
                        f"{values!r}") from err
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) (one entry per channel), got "
                         f"shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and positive, got {arr.tolist()}")
    return arr


def in_physical_units(model: RecurrentModel | ExplicitModel, u_std, y_std) -> ExplicitModel:
    """The float64 explicit model from physical inputs to physical outputs.

    Parameters
    ----------
    model : RecurrentModel or ExplicitModel
        Trained on normalised data.
    u_std, y_std : sequence of float
        Per-channel standard deviations used to normalise the inputs (length nu) and the
        outputs (length ny).

    Returns
    -------
    ExplicitModel
        With ``B₂, D₁₂ ← ·S_u⁻¹``, ``C₂, D₂₁ ← S_y·``, ``D₂₂ ← S_y D₂₂ S_u⁻¹``, ``b_y ← S_y b_y``;
        the implied metric and multiplier are kept (they certify contraction unchanged).
    """
    if isinstance(model, RecurrentModel):
        with torch.no_grad():
            e = model.explicit(torch.float64)
    elif isinstance(model, ExplicitModel):
        e = model
    else:
        raise TypeError(f"in_physical_units expects a RecurrentModel or an ExplicitModel, got "
                        f"{type(model).__name__}")
    e = e.to(dtype=torch.float64)
    e = e.detached()  # no graph to the model
    nu, _, _, ny = e.sizes
    su = torch.as_tensor(_scales(u_std, nu, "u_std"), dtype=torch.float64, device=e.A.device)
    sy = torch.as_tensor(_scales(y_std, ny, "y_std"), dtype=torch.float64, device=e.A.device)
    return replace(e, B2=e.B2 / su, D12=e.D12 / su, C2=sy[:, None] * e.C2,
                   D21=sy[:, None] * e.D21, D22=sy[:, None] * e.D22 / su, by=sy * e.by)


def normalization_scales(metadata: Mapping, nu: int, ny: int
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(u_std, y_std)`` from checkpoint metadata, None when it holds no normalisation.

    The expected entry (what the sysid workflow writes through ``save_model(model, path,
    normalization={...})``) is ``{"u_mean": [...], "u_std": [...], "y_mean": [...],
    "y_std": [...]}`` with one entry per channel. Raises ValueError when malformed.
    """
    norm = metadata.get("normalization") if isinstance(metadata, Mapping) else None
    if norm is None:
        return None
    if not isinstance(norm, Mapping) or not all(k in norm for k in ("u_std", "y_std")):
        raise ValueError("checkpoint metadata 'normalization' must be a dict with keys "
                         f"{NORMALIZATION_KEYS}, got {norm!r}")
    return _scales(norm["u_std"], nu, "normalization u_std"), _scales(norm["y_std"], ny,
                                                                     "normalization y_std")
