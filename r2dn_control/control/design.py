r"""Observer-based base controllers (the stabilizing controller a Youla design starts from).

For the discrete plant ``x⁺ = Ax + B_w w + B u``, ``y = Cx + D_w w`` (``u`` the control
inputs, ``y`` the measurements, ``w`` every other input) the base controller is

$$
\hat x_{t+1} = A\hat x_t + B u_t + L\tilde y_t,\qquad
\tilde y_t = y_t - C\hat x_t,\qquad u_t = -K\hat x_t + \tilde u_t,
$$

stabilizing iff both ``A − BK`` and ``A − LC`` are Schur (spectral radius < 1): the
closed loop has the separation structure ``x⁺ = (A − BK)x + BKe + …``, ``e⁺ = (A − LC)e + …``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import control
import numpy as np

from ..systems._convert import Signals, discrete_matrices, signal_indices

# Spectral radii this close to 1 count as unstable: float64 round-off cannot certify them.
_SCHUR_TOLERANCE = 1e-9


def spectral_radius(matrix: np.ndarray) -> float:
    """Largest eigenvalue modulus (0 for an empty matrix)."""
    return float(np.max(np.abs(np.linalg.eigvals(matrix)))) if matrix.size else 0.0


def _gain(name: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    gain = np.array(value, dtype=np.float64, ndmin=2)
    if gain.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {gain.shape}")
    if not np.all(np.isfinite(gain)):
        raise ValueError(f"{name} must be finite")
    return gain


def _weight(name: str, value: object, size: int) -> np.ndarray:
    if value is None:
        return np.eye(size)
    weight = np.array(value, dtype=np.float64, ndmin=2)
    if weight.shape == (1, 1):
        weight = weight[0, 0] * np.eye(size)
    if weight.shape != (size, size):
        raise ValueError(
            f"{name} must be a scalar or have shape {(size, size)}, got {weight.shape}")
    return weight


@dataclass(frozen=True)
class ObserverBasedController:
    """A stabilizing observer-based controller for a discrete LTI plant (float64).

    Attributes
    ----------
    A, B, C : np.ndarray
        The plant model seen by the controller: dynamics, control-input and measurement
        matrices (nx×nx, nx×nu, ny×nx).
    K, L : np.ndarray
        State-feedback gain (nu×nx) and observer (predictor) gain (nx×ny).
    dt : float or bool
        Sampling time.
    control_inputs, measurements : list of int
        Positions of ``u`` among the plant inputs and of ``y`` among the plant outputs.
    plant_inputs, plant_outputs : int
        Total numbers of plant inputs and outputs.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    K: np.ndarray
    L: np.ndarray
    dt: float | bool
    control_inputs: list[int]
    measurements: list[int]
    plant_inputs: int
    plant_outputs: int

    def __post_init__(self) -> None:
        nx, nu, ny = self.A.shape[0], self.B.shape[1], self.C.shape[0]
        _gain("K", self.K, (nu, nx))
        _gain("L", self.L, (nx, ny))
        for label, matrix in (("A - B K (state feedback)", self.A - self.B @ self.K),
                              ("A - L C (observer)", self.A - self.L @ self.C)):
            radius = spectral_radius(matrix)
            if not radius < 1.0 - _SCHUR_TOLERANCE:
                raise ValueError(
                    f"the base controller is not stabilizing: {label} has spectral radius "
                    f"{radius:.6g}, expected < 1; choose other gains (e.g. K='lqr', L='kalman')"
                )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(nu, nx, ny)``: control inputs, plant states, measurements."""
        return self.B.shape[1], self.A.shape[0], self.C.shape[0]

    @classmethod
    def design(cls, plant: object, K: object = "lqr", L: object = "kalman", *,
               dt: float | None = None, method: str = "zoh",
               control_inputs: Signals = None, measurements: Signals = None,
               state_weight: object = None, input_weight: object = None,
               process_covariance: object = None, measurement_covariance: object = None,
               controller_poles: Sequence[complex] | None = None,
               observer_poles: Sequence[complex] | None = None) -> ObserverBasedController:
        """Design the gains for a python-control plant.

        Parameters
        ----------
        plant : control.StateSpace or control.TransferFunction
            Discrete, or continuous with ``dt`` (discretized with ``control.c2d``).
        K : {"lqr", "place"} or array_like
            ``"lqr"``: ``control.dlqr(A, B, state_weight, input_weight)``; ``"place"``:
            ``control.place(A, B, controller_poles)``; or a user-given nu×nx gain.
        L : {"kalman", "place"} or array_like
            ``"kalman"``: ``control.dlqe(A, I, C, process_covariance, measurement_covariance)``
            (predictor form, ``A − LC`` Schur); ``"place"``: poles of ``A − LC`` at
            ``observer_poles``; or a user-given nx×ny gain.
        control_inputs, measurements : sequence of int or str, optional
            Which plant inputs are controls ``u`` and which outputs are measured ``y``
            (default all); the other inputs are disturbances ``w``.
        state_weight, input_weight, process_covariance, measurement_covariance : array_like
            Weights / covariances (scalar or square matrix); identity by default.

        Raises
        ------
        ValueError
            Continuous plant without dt; feedthrough from ``u`` to ``y``; a gain of the wrong
            shape; gains that do not stabilize (``A − BK`` or ``A − LC`` not Schur).
        """
        m = discrete_matrices(plant, dt, method)
        u_idx = signal_indices("input", control_inputs, m.input_labels)
        y_idx = signal_indices("output", measurements, m.output_labels)
        a, b, c = m.A, m.B[:, u_idx], m.C[y_idx]
        feedthrough = m.D[np.ix_(y_idx, u_idx)]
        if np.any(feedthrough != 0):
            # u_t = Q(y_t − C x̂_t) with y_t depending on u_t would be an algebraic loop.
            raise ValueError(
                "the plant has direct feedthrough from the control inputs to the measurements "
                f"(D_yu = {feedthrough.tolist()}); the Youla controller needs D_yu = 0"
            )
        nx, nu, ny = a.shape[0], b.shape[1], c.shape[0]
        gain_k = cls._state_feedback(K, a, b, state_weight, input_weight, controller_poles)
        gain_l = cls._observer(L, a, c, process_covariance, measurement_covariance, observer_poles)
        return cls(a, b, c, _gain("K", gain_k, (nu, nx)), _gain("L", gain_l, (nx, ny)), m.dt,
                   u_idx, y_idx, m.B.shape[1], m.C.shape[0])

    @staticmethod
    def _state_feedback(K: object, a: np.ndarray, b: np.ndarray, q: object, r: object,
                        poles: Sequence[complex] | None) -> object:
        if isinstance(K, str):
            if K == "lqr":
                gain, _, _ = control.dlqr(a, b, _weight("state_weight", q, a.shape[0]),
                                          _weight("input_weight", r, b.shape[1]))
                return gain
            if K == "place":
                if poles is None:
                    raise ValueError("K='place' needs controller_poles")
                return control.place(a, b, poles)
            raise ValueError(f"K must be 'lqr', 'place' or a matrix, got {K!r}")
        return K

    @staticmethod
    def _observer(L: object, a: np.ndarray, c: np.ndarray, w: object, v: object,
                  poles: Sequence[complex] | None) -> object:
        if isinstance(L, str):
            if L == "kalman":
                nx = a.shape[0]
                gain, _, _ = control.dlqe(a, np.eye(nx), c, _weight("process_covariance", w, nx),
                                          _weight("measurement_covariance", v, c.shape[0]))
                return gain
            if L == "place":
                if poles is None:
                    raise ValueError("L='place' needs observer_poles")
                return control.place(a.T, c.T, poles).T  # duality: eig(A − LC) = eig(Aᵀ − CᵀLᵀ)
            raise ValueError(f"L must be 'kalman', 'place' or a matrix, got {L!r}")
        return L

    def youla_system(self) -> control.StateSpace:
        r"""The LTI system the Youla parameter Q is in feedback with.

        The nominal closed loop of the plant model with the base controller, inputs
        ``(ũ)`` and outputs ``(ỹ, u)``, states ``(x, x̂)``:

        $$
        \begin{bmatrix} x \\ \hat x \end{bmatrix}^+ =
        \begin{bmatrix} A & -BK \\ LC & A - BK - LC \end{bmatrix}
        \begin{bmatrix} x \\ \hat x \end{bmatrix}
        + \begin{bmatrix} B \\ B \end{bmatrix}\tilde u,
        \qquad \tilde y = C(x - \hat x).
        $$

        The map ũ → ỹ is identically zero (the Youla property), so Q in feedback with it is
        stable whenever Q is: the certify package can check this loop once it provides
        closed-loop certificates.
        """
        a, b, c, k, lg = self.A, self.B, self.C, self.K, self.L
        nu, nx, ny = self.sizes
        big_a = np.block([[a, -b @ k], [lg @ c, a - b @ k - lg @ c]])
        big_b = np.vstack([b, b])
        big_c = np.vstack([np.hstack([c, -c]), np.hstack([np.zeros((nu, nx)), -k])])
        big_d = np.vstack([np.zeros((ny, nu)), np.eye(nu)])
        return control.ss(big_a, big_b, big_c, big_d, self.dt,
                          inputs=[f"u_tilde[{i}]" for i in range(nu)],
                          outputs=[f"y_tilde[{i}]" for i in range(ny)]
                          + [f"u[{i}]" for i in range(nu)])
