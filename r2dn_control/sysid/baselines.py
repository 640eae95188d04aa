"""Plain (unconstrained) torch GRU/LSTM baselines with the recurrent models' calling convention.

``y, x_T = baseline(u, x0)`` with ``u`` (batch, time, nu) and the state flattened to
(batch, state_size), so `fit`, the initial-state estimators and
`evaluate` treat a baseline exactly like an R2DN or REN. A baseline has
no stability guarantee: it is what a user compares the certified models against.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

CELLS = ("gru", "lstm")


class RecurrentBaseline(nn.Module):
    """One-layer GRU or LSTM followed by a linear read-out ``y_t = W h_t + b``.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        nu, the number of hidden units and ny.
    cell : {"gru", "lstm"}
    dtype, device
        Parameter dtype and device.

    Attributes
    ----------
    state_size : int
        ``hidden_size`` for a GRU, ``2 * hidden_size`` for an LSTM (h and c stacked).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, cell: str = "gru",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("output_size", output_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.cell, self.input_size, self.output_size = cell, input_size, output_size
        self.hidden_size = hidden_size
        self.state_size = hidden_size * (2 if cell == "lstm" else 1)
        kind = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = kind(input_size, hidden_size, batch_first=True, dtype=dtype, device=device)
        self.readout = nn.Linear(hidden_size, output_size, dtype=dtype, device=device)
        self.init_kwargs = {"input_size": input_size, "hidden_size": hidden_size,
                            "output_size": output_size, "cell": cell}

    def forward(self, u: Tensor, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Simulate from ``x0`` (zeros if None); returns ``(y, x_T)``."""
        if not isinstance(u, Tensor) or u.dim() not in (2, 3) or u.shape[-1] != self.input_size:
            raise ValueError(f"u must be a tensor of shape (batch, time, {self.input_size}) or "
                             f"(time, {self.input_size}), got "
                             f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
        batched = u.dim() == 3
        u_b = u if batched else u.unsqueeze(0)
        hx = None
        if x0 is not None:
            x_b = x0 if batched else x0.unsqueeze(0)
            if tuple(x_b.shape) != (u_b.shape[0], self.state_size):
                raise ValueError(f"x0 must have shape {(u_b.shape[0], self.state_size)}, "
                                 f"got {tuple(x_b.shape)}")
            h = x_b[:, : self.hidden_size].unsqueeze(0).contiguous()
            hx = (h, x_b[:, self.hidden_size:].unsqueeze(0).contiguous()) if self.cell == "lstm" \
                else h
        out, final = self.rnn(u_b, hx)
        x_t = torch.cat([final[0][0], final[1][0]], -1) if self.cell == "lstm" else final[0]
        y = self.readout(out)
        return (y, x_t) if batched else (y[0], x_t[0])


def parameter_count(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def hidden_size_for(parameters: int, input_size: int, output_size: int, cell: str = "gru") -> int:
    """The hidden size whose baseline has the parameter count closest to ``parameters``.

    A one-layer GRU has ``3(h·nu + h² + 2h) + ny·h + ny`` parameters (4 gates for an LSTM).
    """
    gates = {"gru": 3, "lstm": 4}[cell]
    a, b, c = gates, gates * (input_size + 2) + output_size, output_size - parameters
    root = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    best = max(1, int(root))
    candidates = (best, best + 1)
    return min(candidates, key=lambda h: abs(gates * (h * input_size + h * h + 2 * h)
                                             + output_size * h + output_size - parameters))


def matched_baseline(model: nn.Module, cell: str = "gru", **factory) -> RecurrentBaseline:
    """A GRU/LSTM baseline with (about) the same number of parameters as ``model``."""
    nu, ny = cast(int, model.input_size), cast(int, model.output_size)
    hidden = hidden_size_for(parameter_count(model), nu, ny, cell)
    return RecurrentBaseline(nu, hidden, ny, cell=cell, **factory)
