"""The identified model in physical units: normalisation + model (+ initial-state estimator)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .data import Normalization, _as_2d
from .estimators import LearnedInitialStates, StateEncoder


class Predictor(nn.Module):
    r"""Simulate an identified model on measured inputs, in physical units.

    ``ŷ = σ_y ⊙ f_θ((u − μ_u)/σ_u; x̂₀) + μ_y`` where ``f_θ`` is the recurrent model run on
    normalised data and x̂₀ the initial state (zero, a learned state of a training experiment, or
    the encoder's estimate from the first ``washout`` samples of measured ``(u, y)``).

    Parameters
    ----------
    model : nn.Module
        Called as ``model(u, x0) -> (y, x_T)`` on (batch, time, ·) tensors, with attribute
        ``state_size`` (every R2DN/REN and `RecurrentBaseline`).
    normalization : Normalization
    estimator : LearnedInitialStates or StateEncoder, optional
    """

    def __init__(self, model: nn.Module, normalization: Normalization,
                 estimator: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.normalization = normalization
        self.estimator = estimator

    @property
    def x0_kind(self) -> str:
        if isinstance(self.estimator, StateEncoder):
            return "encoder"
        return "learn" if isinstance(self.estimator, LearnedInitialStates) else "zero"

    @property
    def washout(self) -> int:
        """Samples the estimator reads (0 without an encoder)."""
        return self.estimator.window if isinstance(self.estimator, StateEncoder) else 0

    def _tensor(self, array: np.ndarray) -> Tensor:
        p = next(self.model.parameters())
        return torch.as_tensor(array, dtype=p.dtype, device=p.device).unsqueeze(0)

    def initial_state(self, u_n: Tensor, y_n: Tensor | None, experiment: int | None) -> Tensor | None:
        """x̂₀ (1, nx) from normalised (1, T, ·) tensors, or None for the zero state."""
        if isinstance(self.estimator, StateEncoder) and y_n is not None \
                and u_n.shape[1] >= self.estimator.window:
            return self.estimator(u_n, y_n)
        if isinstance(self.estimator, LearnedInitialStates) and experiment is not None:
            return self.estimator([experiment])
        return None

    @torch.no_grad()
    def predict(self, u: object, y: object | None = None, experiment: int | None = None
                ) -> np.ndarray:
        """Simulated output (T, ny) in physical units, as a float64 numpy array.

        Parameters
        ----------
        u : array (T, nu)
            Measured input, physical units.
        y : array (T, ny), optional
            Measured output; with an encoder its first ``washout`` samples give x̂₀.
        experiment : int, optional
            With ``x0="learn"``: the index of the training experiment whose learned state to use.
        """
        u_a = _as_2d("u", u)
        norm = self.normalization
        norm.check(u_a.shape[1], norm.y_mean.shape[0])
        u_n = self._tensor(norm.normalize_u(u_a))
        y_n = None
        if y is not None:
            y_a = _as_2d("y", y)
            if y_a.shape != (u_a.shape[0], norm.y_mean.shape[0]):
                raise ValueError(f"y must have shape {(u_a.shape[0], norm.y_mean.shape[0])}, "
                                 f"got {y_a.shape}")
            y_n = self._tensor(norm.normalize_y(y_a))
        x0 = self.initial_state(u_n, y_n, experiment)
        frozen = getattr(self.model, "frozen", None)
        if frozen is not None:
            with frozen():
                out, _ = self.model(u_n, x0)
        else:
            out, _ = self.model(u_n, x0)
        return norm.denormalize_y(out[0].double().cpu().numpy())

    def physical_gamma(self, gamma: float) -> float:
        """Simple physical-unit bound ``γ · max(y_std)/min(u_std)`` for a normalised gain γ."""
        return self.normalization.physical_gamma(gamma)
