"""Slope-restricted activations allowed inside certified models.

Every certificate in this package uses only that σ acts elementwise and is
monotone with slope in [0, 1]; an arbitrary callable would void it, so models
take one of these names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

Activation = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


def _leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)


ACTIVATIONS: dict[str, Activation] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": _leaky_relu,
    "identity": _identity,
}


# In-place versions (used by the fused rollout, which writes into preallocated buffers).
INPLACE: dict[str, Callable[[Tensor], object]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "leaky_relu": lambda x: F.leaky_relu_(x, 0.01),
    "identity": lambda x: x,
}

# σ'(z) recovered from the output s = σ(z), so the backward pass needs no pre-activations.
# At a kink the value matches torch's autograd (relu'(0) = 0, leaky_relu'(0) = 0.01).
DERIVATIVE_FROM_OUTPUT: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": lambda s: (s > 0).to(s.dtype),
    "tanh": lambda s: 1 - s * s,
    "sigmoid": lambda s: s * (1 - s),
    "leaky_relu": lambda s: 0.01 + 0.99 * (s > 0).to(s.dtype),
    "identity": lambda s: torch.ones_like(s),
}


def activation_name(activation: object) -> str | None:
    """The name of ``activation`` in `ACTIVATIONS` (by identity), or None."""
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    return None


def get_activation(name: str) -> Activation:
    """Return the activation called ``name``; raise ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} (slope-restricted in [0, 1]), "
            f"got {name!r}"
        )
    return ACTIVATIONS[name]
