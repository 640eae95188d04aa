r"""Contracting recurrent observers (docs/experiments.md, observer).

The observer is a contracting model f_θ with identity output, so its state is the estimate:

$$
\hat x_{t+1} = f_\theta(\hat x_t, y_t, u_t), \qquad \text{output } \hat x_t .
$$

Training enforces the *correctness* condition on true trajectories (teacher forcing),

$$
\ell(\theta) = \frac{1}{N}\sum_{i} \big\| x_{i+1} - f_\theta(x_i, y_i, u_i) \big\|^2 ,
$$

so the true state is (approximately) a trajectory of the observer; contraction of f_θ in x̂
then makes every other trajectory, i.e. the estimate from any wrong x̂₀, converge to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.base import RecurrentModel


class Observer(nn.Module):
    """State estimator ``x̂⁺ = f(x̂, y, u)`` built on a contracting model with identity output.

    Parameters
    ----------
    model : RecurrentModel
        Contracting model (any R2DN/REN family) built with ``identity_output=True``; its input
        is the stacked ``(y, u)``, so ``model.input_size = measurement_size + input_size``.
    input_size : int
        Number of known plant inputs u (0 if the plant is autonomous or u is not used).

    Raises
    ------
    ValueError
        The model is not built with identity output, or its input size leaves no measurement.
    """

    def __init__(self, model: RecurrentModel, input_size: int = 0) -> None:
        super().__init__()
        if not getattr(model, "identity_output", False):
            raise ValueError("the observer model must be built with identity_output=True "
                             "(its state is the estimate x̂ and its output is x̂)")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 0:
            raise ValueError(f"input_size must be a non-negative int, got {input_size!r}")
        if model.input_size <= input_size:
            raise ValueError(
                f"model.input_size = {model.input_size} must be measurement_size + input_size "
                f"with at least one measurement; got input_size = {input_size}"
            )
        self.model = model
        self.input_size = input_size
        self.measurement_size = model.input_size - input_size

    @property
    def state_size(self) -> int:
        return self.model.state_size

    def _stack(self, y: Tensor, u: Tensor | None) -> Tensor:
        for name, value in (("y", y), ("u", u)):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if y is None or y.dim() == 0 or y.shape[-1] != self.measurement_size:
            y_shape = None if y is None else tuple(y.shape)
            raise ValueError(f"y must have shape (..., {self.measurement_size}), got {y_shape}")
        if self.input_size == 0:
            if u is not None and (u.dim() == 0 or u.shape[-1] != 0):
                raise ValueError("this observer was built with input_size=0; do not pass u")
            return y
        if u is None or u.dim() == 0 or u.shape[-1] != self.input_size \
                or u.shape[:-1] != y.shape[:-1]:
            u_shape = None if u is None else tuple(u.shape)
            raise ValueError(f"u must have shape {(*y.shape[:-1], self.input_size)}, "
                             f"got {u_shape}")
        if u.dtype != y.dtype:
            raise TypeError(f"u must have the dtype of y ({y.dtype}), got {u.dtype}")
        return torch.cat([y, u], -1)

    def step(self, x_hat: Tensor, y: Tensor, u: Tensor | None = None) -> Tensor:
        """``x̂⁺ = f(x̂, y, u)`` for row batches (batch, ·) or single rows."""
        _, x_next = self.model.step(x_hat, self._stack(y, u))
        return x_next

    def forward(self, y: Tensor, u: Tensor | None = None, x0: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Run on sequences ``y`` (batch, time, ny) and ``u``; returns ``(x̂₀…x̂_{T−1}, x̂_T)``."""
        return self.model(self._stack(y, u), x0)

    def loss(self, x: Tensor, x_next: Tensor, y: Tensor, u: Tensor | None = None) -> Tensor:
        """One-step correctness loss ``mean_i ‖x_{i+1} − f(x_i, y_i, u_i)‖²`` over rows.

        All arguments are row batches (N, ·) of true states, next states, measurements and
        inputs (leading dimensions are flattened).
        """
        nx = self.state_size
        if x.shape[-1] != nx or x_next.shape != x.shape:
            raise ValueError(f"x and x_next must have the same shape (…, {nx}), got "
                             f"{tuple(x.shape)} and {tuple(x_next.shape)}")
        rows = x.reshape(-1, nx)
        inputs = self._stack(y, u).reshape(rows.shape[0], -1)
        prediction = self.model.step(rows, inputs)[1]
        return (x_next.reshape(-1, nx) - prediction).pow(2).sum(-1).mean()
