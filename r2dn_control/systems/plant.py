r"""A batched, differentiable torch simulator of a python-control LTI plant.

$$
x_{t+1} = A x_t + B\,\mathrm{sat}(u_t) + w_t, \qquad
y_t = C x_t + D\,\mathrm{sat}(u_t) + v_t,
$$

with ``sat`` an optional symmetric input saturation ``clip(u, −u_max, u_max)`` and
``w_t ~ N(0, diag(σ_w²))``, ``v_t ~ N(0, diag(σ_v²))`` optional process and measurement noise.
Shapes follow the recurrent models: ``y, x_T = plant(u, x0)`` with ``u`` of shape
(batch, time, nu) or (time, nu), and ``y_t`` uses ``x_t`` (the state before the update).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._convert import discrete_matrices


def _per_signal(name: str, value: object, size: int, allow_inf: bool = False) -> Tensor | None:
    """A non-negative scalar or length-``size`` vector as a float64 tensor (None passes through)."""
    if value is None:
        return None
    vec = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if vec.numel() == 1:
        vec = vec.expand(size).clone()
    if vec.numel() != size:
        raise ValueError(f"{name} must be a scalar or have {size} entries, got {vec.numel()}")
    if not bool(torch.all(vec >= 0)):  # NaN fails this too; inf means "no limit"
        raise ValueError(f"{name} must be non-negative, got {vec.tolist()}")
    if not allow_inf and not bool(torch.all(torch.isfinite(vec))):
        raise ValueError(f"{name} must be finite, got {vec.tolist()}")
    return vec


def _real_matrix(name: str, value: object, factory: dict[str, Any]) -> Tensor:
    """``value`` as a finite real 2-D tensor; complex, non-numeric or non-finite input raises."""
    try:
        array = value if isinstance(value, Tensor) else np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise TypeError(f"{name} must be a real matrix, got a ragged {type(value).__name__}"
                        ) from err
    if array.is_complex() if isinstance(array, Tensor) else np.iscomplexobj(array):
        raise TypeError(f"{name} must be a real matrix, got a complex one")
    try:
        matrix = torch.as_tensor(array, **factory)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a real matrix, got {type(value).__name__}") from err
    if matrix.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} must be finite, got {matrix.tolist()}")
    return matrix


class LTIPlant(nn.Module):
    r"""Discrete-time LTI plant simulated in torch (batched, differentiable in ``u`` and ``x0``).

    Build it with `from_control`. The matrices are buffers, so ``plant.to(device)`` and
    ``plant.double()`` work like for any module; the plant has no trainable parameters.

    Parameters
    ----------
    A, B, C, D : array_like
        Discrete-time state-space matrices (nx×nx, nx×nu, ny×nx, ny×nu).
    dt : float or bool
        Sampling time (``True`` if unspecified), kept for export and display.
    input_limit : float or array_like, optional
        Symmetric saturation ``|u_i| ≤ input_limit_i`` applied before the plant (``inf`` for
        an input that is not limited, e.g. a disturbance).
    process_noise, measurement_noise : float or array_like, optional
        Standard deviations σ_w (per state) and σ_v (per output) of Gaussian noise.
    generator : torch.Generator or int, optional
        Random source for the noise: a generator, or a seed (a generator is then made on the
        plant's device). Default: torch's global generator.
    dtype, device
        Dtype and device of the matrices (default: torch's default dtype, CPU).
    """

    # Buffers (registered in __init__), declared for type checkers.
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    input_limit: Tensor | None
    process_noise: Tensor | None
    measurement_noise: Tensor | None


    def __init__(self, A: object, B: object, C: object, D: object, *, dt: float | bool = True,
                 input_limit: object = None, process_noise: object = None,
                 measurement_noise: object = None, generator: torch.Generator | int | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 input_labels: list[str] | None = None,
                 output_labels: list[str] | None = None) -> None:
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a real floating torch.dtype, got {dtype!r}")
        fk: dict[str, Any] = {"dtype": dtype, "device": device}
        a, b, c, d = (_real_matrix(name, m, fk) for name, m in zip("ABCD", (A, B, C, D)))
        nx = a.shape[0]
        if a.dim() != 2 or a.shape != (nx, nx):
            raise ValueError(f"A must be square, got shape {tuple(a.shape)}")
        nu, ny = b.shape[-1], c.shape[0]
        for name, m, shape in (("B", b, (nx, nu)), ("C", c, (ny, nx)), ("D", d, (ny, nu))):
            if tuple(m.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(m.shape)}")
        for name, m in (("A", a), ("B", b), ("C", c), ("D", d)):
            self.register_buffer(name, m)
        self.dt = dt
        self.input_labels = input_labels or [f"u[{i}]" for i in range(nu)]
        self.output_labels = output_labels or [f"y[{i}]" for i in range(ny)]
        for name, value, size in (("input_limit", input_limit, nu),
                                  ("process_noise", process_noise, nx),
                                  ("measurement_noise", measurement_noise, ny)):
            vec = _per_signal(name, value, size, allow_inf=name == "input_limit")
            self.register_buffer(name, None if vec is None else vec.to(**fk))
        limit = self.input_limit
        if limit is not None and not bool(torch.all(limit > 0)):
            raise ValueError(f"input_limit must be positive, got {limit.tolist()}")
        if generator is not None and not isinstance(generator, (torch.Generator, int)):
            raise TypeError(f"generator must be a torch.Generator or an int seed, "
                            f"got {type(generator).__name__}")
        self._generator = generator
        self._seeded: dict[torch.device, torch.Generator] = {}

    @classmethod
    def from_control(cls, sys: object, dt: float | None = None, method: str = "zoh",
                     **kwargs) -> LTIPlant:
        """Simulator of a python-control ``StateSpace`` or ``TransferFunction``.

        Parameters
        ----------
        sys : control.StateSpace or control.TransferFunction
            Discrete systems are used as they are; continuous ones are discretized with
            ``control.c2d(sys, dt, method)`` (``dt`` is then required).
        dt : float, optional
            Sampling time for a continuous ``sys``.
        method : str
            Discretization method passed to ``control.c2d``.
        **kwargs
            ``input_limit``, ``process_noise``, ``measurement_noise``, ``generator``, ``dtype``,
            ``device`` (see `LTIPlant`).

        Examples
        --------
        >>> plant = LTIPlant.from_control(control.tf([1], [1, 1, 5]), dt=0.02)
        >>> y, x_T = plant(torch.randn(8, 100, 1))
        """
        m = discrete_matrices(sys, dt, method)
        return cls(m.A, m.B, m.C, m.D, dt=m.dt, input_labels=m.input_labels,
                   output_labels=m.output_labels, **kwargs)

    # ------------------------------------------------------------------ sizes
    @property
    def input_size(self) -> int:
        return self.B.shape[1]

    @property
    def state_size(self) -> int:
        return self.A.shape[0]

    @property
    def output_size(self) -> int:
        return self.C.shape[0]

    # ------------------------------------------------------------------ simulation
    def saturate(self, u: Tensor) -> Tensor:
        """``clip(u, −u_max, u_max)`` if an input limit is set, else ``u``."""
        if self.input_limit is None:
            return u
        return torch.maximum(torch.minimum(u, self.input_limit), -self.input_limit)

    def draw_process_noise(self, like: Tensor) -> Tensor | None:
        """Process noise ``w ~ N(0, diag(σ_w²))`` shaped like ``like[..., :nx]`` (None if unset)."""
        return self._noise(self.process_noise, (*like.shape[:-1], self.state_size), like)

    def draw_measurement_noise(self, like: Tensor) -> Tensor | None:
        """Measurement noise ``v ~ N(0, diag(σ_v²))``, shape ``(*like.shape[:-1], ny)``."""
        return self._noise(self.measurement_noise, (*like.shape[:-1], self.output_size), like)

    def output(self, x: Tensor, u: Tensor, noise: bool = True) -> Tensor:
        """``y_t = C x_t + D sat(u_t) (+ v_t)`` for row batches ``x`` (…, nx), ``u`` (…, nu)."""
        y = x @ self.C.T + self.saturate(u) @ self.D.T
        v = self.draw_measurement_noise(y) if noise else None
        return y if v is None else y + v

    def update(self, x: Tensor, u: Tensor, noise: bool = True) -> Tensor:
        """``x_{t+1} = A x_t + B sat(u_t) (+ w_t)`` for row batches ``x`` (…, nx), ``u`` (…, nu)."""
        x_next = x @ self.A.T + self.saturate(u) @ self.B.T
        w = self.draw_process_noise(x_next) if noise else None
        return x_next if w is None else x_next + w

    def _noise(self, std: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
        if std is None:
            return None
        generator = self._generator
        if isinstance(generator, int):
            # One seeded generator per device, so the plant stays device-agnostic.
            if like.device not in self._seeded:
                seeded = torch.Generator(device=like.device).manual_seed(generator)
                self._seeded[like.device] = seeded
            generator = self._seeded[like.device]
        draw = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        return draw * std

    def _check(self, name: str, value: object, size: int) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype != self.A.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but the plant has dtype "
                            f"{self.A.dtype}; convert one of them")
        if value.dim() == 0 or value.shape[-1] != size:
            raise ValueError(f"{name} must have last dimension {size}, got shape "
                             f"{tuple(value.shape)}")
        return value

    def forward(self, u: Tensor, x0: Tensor | None = None, noise: bool = True
                ) -> tuple[Tensor, Tensor]:
        """Simulate from ``x0`` (zeros if None).

        Parameters
        ----------
        u : Tensor
            Inputs, shape (batch, time, nu) or (time, nu).
        x0 : Tensor, optional
            Initial state, shape (batch, nx) or (nx,).
        noise : bool
            Draw process/measurement noise (if configured).

        Returns
        -------
        y : Tensor
            Outputs y₀ … y_{T−1}, shape (batch, time, ny) (or (time, ny)).
        x_T : Tensor
            Final state, shape (batch, nx) (or (nx,)).
        """
        u = self._check("u", u, self.input_size)
        if u.dim() not in (2, 3):
            raise ValueError(f"u must have shape (batch, time, {self.input_size}) or "
                             f"(time, {self.input_size}), got {tuple(u.shape)}")
        batched = u.dim() == 3
        u_b = u if batched else u.unsqueeze(0)
        steps = u_b.shape[1]
        if steps == 0:
            raise ValueError(f"u must contain at least one time step, got shape {tuple(u.shape)}")
        x = self._initial(x0, u_b.shape[0], batched, u_b)
        u_b = self.saturate(u_b)
        drive = u_b @ self.B.T  # all input terms in one matmul; the loop is only recurrent
        w = self.draw_process_noise(drive) if noise else None
        if w is not None:
            drive = drive + w
        a_t = self.A.T
        states = []
        for t in range(steps):
            states.append(x)
            x = torch.addmm(drive[:, t], x, a_t)
        y = torch.stack(states, 1) @ self.C.T + u_b @ self.D.T
        v = self.draw_measurement_noise(y) if noise else None
        if v is not None:
            y = y + v
        return (y, x) if batched else (y[0], x[0])

    rollout = forward

    def step(self, x: Tensor | None, u: Tensor, noise: bool = True) -> tuple[Tensor, Tensor]:
        """One step ``(y_t, x_{t+1})``; ``x`` (batch, nx) or (nx,), ``u`` (batch, nu) or (nu,)."""
        u = self._check("u", u, self.input_size)
        if u.dim() not in (1, 2):
            raise ValueError(f"u must have shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(u.shape)}")
        y, x_next = self.forward(u.unsqueeze(-2), x, noise)
        return y[..., 0, :], x_next

    def _initial(self, x0: Tensor | None, batch: int, batched: bool, like: Tensor) -> Tensor:
        if x0 is None:
            return like.new_zeros(batch, self.state_size)
        x0 = self._check("x0", x0, self.state_size)
        expected = (batch, self.state_size) if batched else (self.state_size,)
        if tuple(x0.shape) != expected:
            raise ValueError(f"x0 must have shape {expected}, got {tuple(x0.shape)}")
        return x0 if batched else x0.unsqueeze(0)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, state_size={self.state_size}, "
                f"output_size={self.output_size}, dt={self.dt}")
