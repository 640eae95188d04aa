"""Argument validation with errors that name what was expected and what was given."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int`` (bools rejected), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    """Return a tuple of positive ints (possibly empty) from a sequence."""
    if isinstance(values, (int, str)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {values!r}")
    return tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def positive_float(name: str, value: object) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0, got {value}")
    return float(value)


def rate(name: str, value: object) -> float:
    """Return a contraction rate bound in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1], got {type(value).__name__} {value!r}")
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def choice(name: str, value: object, options: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


#: dtypes the models support: the direct-to-explicit algebra needs LAPACK (no half types).
MODEL_DTYPES = (torch.float32, torch.float64)


def model_dtype(value: object) -> torch.dtype:
    """Return ``value`` if it is ``torch.float32`` or ``torch.float64``, else raise ``TypeError``."""
    if value not in MODEL_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {value!r}")
    return value


def non_negative_float(name: str, value: object) -> float:
    """Return ``float(value)`` if it is a finite number ≥ 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float >= 0, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return float(value)


def supply_scale_limit(dtype: torch.dtype) -> float:
    """Largest norm of Q, S, R a model of ``dtype`` accepts: ``finfo(dtype).max ** (1/4)``.

    Outputs scale like ‖R‖ (and the LBDN like √γ), so this keeps products with inputs of size
    up to ``finfo.max ** (3/4)`` finite (docs/theory.md §6).
    """
    return float(torch.finfo(dtype).max) ** 0.25


#: ‖Q‖ above 1/√ε₆₄ ≈ 6.7e7 swamps the ε-margin of H in the float64 algebra (γ < 1.5e-8).
Q_NORM_LIMIT = 1.0 / math.sqrt(float(torch.finfo(torch.float64).eps))


def supply_in_range(supply: object, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` if a (Q, S, R) supply rate is too large or small for ``dtype``.

    Needs ``‖Q‖, ‖S‖, ‖R‖ ≤ finfo(dtype).max^(1/4)`` and ``‖Q‖ ≤ 1/√ε₆₄``; for a Lipschitz
    bound γ (Q = −I/γ, R = γI) this is ``1.5e-8 ≤ γ ≤ 1.4e9`` (float32) or ``1.2e77`` (float64).
    """
    if supply is None:
        return
    limit = supply_scale_limit(dtype)
    for name in ("Q", "S", "R"):
        matrix = getattr(supply, name)
        norm = float(torch.linalg.matrix_norm(matrix, ord=2)) if matrix.numel() else 0.0
        cap = min(limit, Q_NORM_LIMIT) if name == "Q" else limit
        if norm > cap:
            raise ValueError(
                f"the supply rate's {name} has norm {norm:.3g}, above the limit {cap:.3g} for "
                f"{dtype} (a Lipschitz bound gamma must lie in [{1 / min(limit, Q_NORM_LIMIT):.3g}"
                f", {limit:.3g}], an input passivity index below {limit / 2:.3g})"
            )


def scale_in_range(name: str, value: float, dtype: torch.dtype) -> float:
    """Return ``value`` if ``1/limit ≤ value ≤ limit`` with ``limit = finfo(dtype).max^(1/4)``."""
    limit = supply_scale_limit(dtype)
    if not (1.0 / limit <= value <= limit):
        raise ValueError(f"{name} must lie in [{1 / limit:.3g}, {limit:.3g}] for {dtype}, "
                         f"got {value:.3g}")
    return value


def same_device(name: str, value: torch.Tensor, device: torch.device) -> None:
    """Raise ``ValueError`` if tensor ``value`` is not on ``device``."""
    if value.device != device:
        raise ValueError(f"{name} is on device {value.device} but the model is on {device}; "
                         f"move one of them (e.g. {name}.to({str(device)!r}))")


def feature_tensor(name: str, value: object, features: int, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """Check a network input: a real tensor of ``dtype`` on ``device`` with shape (..., features)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the network's), got {value.dtype}")
    if value.dim() == 0 or value.shape[-1] != features:
        raise ValueError(f"{name} must have shape (..., {features}) (last dimension {features}), "
                         f"got {tuple(value.shape)}")
    same_device(name, value, device)
    return value
