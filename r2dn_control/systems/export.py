r"""Export a trained recurrent model as a discrete-time ``control.NonlinearIOSystem``.

The exported system evaluates the model's float64 explicit form

$$
x_{k+1} = A x_k + B_1 w_k + B_2 u_k + b_x,\quad
w_k = \phi(C_1 x_k + D_{12} u_k + b_v),\quad
y_k = C_2 x_k + D_{21} w_k + D_{22} u_k + b_y,
$$

so python-control's ``interconnect``, ``feedback`` and ``input_output_response`` can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import control
import numpy as np
import torch

from ..nn.base import RecurrentModel
from ..nn.explicit import ExplicitModel, rollout


def _labels(kind: str, given: Sequence[str] | str | None, size: int, prefix: str) -> list[str]:
    if given is None:
        return [f"{prefix}[{i}]" for i in range(size)]
    if isinstance(given, str):
        # python-control's own shorthand: "u" → u[0], u[1], ...
        return [f"{given}[{i}]" for i in range(size)]
    labels = list(given)
    if len(labels) != size:
        raise ValueError(f"{kind} must name {size} signals, got {len(labels)}: {labels}")
    return labels


class _ExplicitStep:
    """The explicit model as numpy-in/numpy-out update and output functions (float64)."""

    def __init__(self, model: ExplicitModel) -> None:
        self.model = model
        self.nu, self.nx = model.B2.shape[1], model.A.shape[0]

    def _evaluate(self, x: np.ndarray, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.model.A.device
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, self.nx), device=device)
        ut = torch.as_tensor(np.asarray(u, dtype=np.float64).reshape(1, 1, self.nu), device=device)
        with torch.no_grad():
            y, x_next = rollout(self.model, ut, xt)  # the same rollout the models use
        return y[0, 0], x_next[0]

    def update(self, t: float, x: np.ndarray, u: np.ndarray, params: dict | None) -> np.ndarray:
        return self._evaluate(x, u)[1].cpu().numpy()

    def output(self, t: float, x: np.ndarray, u: np.ndarray, params: dict | None) -> np.ndarray:
        return self._evaluate(x, u)[0].cpu().numpy()


def to_nlsys(model: RecurrentModel, dt: float | bool = 1.0, name: str | None = None, *,
             inputs: Sequence[str] | str | None = None, outputs: Sequence[str] | str | None = None,
             states: Sequence[str] | str | None = None) -> control.NonlinearIOSystem:
    """A discrete-time ``control.NonlinearIOSystem`` that simulates ``model``.

    The explicit matrices are computed once, in float64, when this is called; later training
    of ``model`` does not change the exported system.

    Parameters
    ----------
    model : RecurrentModel
        Any recurrent model with ``explicit(dtype)`` (R2DN and REN families).
    dt : float or True
        Sampling time of the exported system (``True``: discrete, unspecified).
    name : str, optional
        System name (used by ``control.interconnect``).
    inputs, outputs, states : list of str or str, optional
        Signal names; a string ``"s"`` means ``s[0], s[1], ...``. Defaults ``u[i]``, ``y[i]``,
        ``x[i]``.

    Returns
    -------
    control.NonlinearIOSystem
        ``sys.updfcn(t, x, u, params)`` returns x_{k+1} and ``sys.outfcn`` returns y_k.

    Examples
    --------
    >>> sys = to_nlsys(model, dt=0.01, name="r2dn", inputs=["e"], outputs=["u"])
    >>> resp = control.input_output_response(sys, np.arange(100) * 0.01, u_seq)
    """
    if not hasattr(model, "explicit"):
        raise TypeError(f"model must be a recurrent model with .explicit(), got "
                        f"{type(model).__name__}")
    if dt is True:
        pass
    elif isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"dt must be a positive sampling time or True (discrete), got {dt!r}")
    explicit = model.explicit(torch.float64)
    nu, nx, _, ny = explicit.sizes
    step = _ExplicitStep(explicit)
    return control.nlsys(
        step.update, step.output, name=name, dt=dt,
        inputs=_labels("inputs", inputs, nu, "u"),
        outputs=_labels("outputs", outputs, ny, "y"),
        states=_labels("states", states, nx, "x"),
    )
