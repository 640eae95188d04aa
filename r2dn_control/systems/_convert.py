"""Conversions from python-control LTI objects to discrete float64 state-space matrices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import control
import numpy as np

Signals = Sequence[int | str] | None


@dataclass(frozen=True)
class DiscreteMatrices:
    """Float64 matrices of a discrete-time LTI system ``x⁺ = Ax + Bu, y = Cx + Du``.

    ``dt`` is the sampling time (``True`` when python-control leaves it unspecified).
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    dt: float | bool
    input_labels: list[str]
    output_labels: list[str]
    state_labels: list[str]


def discretize(sys: object, dt: float | None = None, method: str = "zoh") -> control.StateSpace:
    """A discrete-time ``control.StateSpace`` for ``sys``.

    Parameters
    ----------
    sys : control.StateSpace or control.TransferFunction
        Discrete systems are used as they are; continuous ones are discretized with
        ``control.c2d(sys, dt, method)``.
    dt : float, optional
        Sampling time; required for a continuous ``sys``. For a discrete ``sys`` it must be
        omitted or equal ``sys.dt``.
    method : str
        ``control.c2d`` method (``"zoh"``, ``"foh"``, ``"tustin"``, ...).

    Raises
    ------
    TypeError
        If ``sys`` is not a StateSpace or TransferFunction.
    ValueError
        If ``sys`` is continuous and ``dt`` is missing, or ``dt`` contradicts a discrete ``sys``.
    """
    if not isinstance(sys, (control.StateSpace, control.TransferFunction)):
        raise TypeError(
            "expected a control.StateSpace or control.TransferFunction, "
            f"got {type(sys).__name__}"
        )
    if sys.dt is None:
        # python-control's "unspecified timebase": treat as discrete only if the user says so.
        raise ValueError("sys has an unspecified timebase (dt=None); give it dt=0 or dt>0")
    if control.isctime(sys, strict=True):
        if dt is None:
            raise ValueError(
                "sys is continuous-time (dt=0): pass a sampling time, e.g. "
                "LTIPlant.from_control(sys, dt=0.01), to discretize it with control.c2d"
            )
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt!r}")
        return control.ss(control.c2d(sys, dt, method=method))
    if dt is not None and sys.dt is not True and not np.isclose(dt, sys.dt):
        raise ValueError(f"sys is already discrete with dt={sys.dt}, but dt={dt} was given")
    return control.ss(sys)


def discrete_matrices(sys: object, dt: float | None = None,
                      method: str = "zoh") -> DiscreteMatrices:
    """Float64 ``(A, B, C, D)`` and signal names of ``discretize(sys, dt, method)``."""
    ss = discretize(sys, dt, method)
    as64 = [np.array(m, dtype=np.float64, ndmin=2) for m in (ss.A, ss.B, ss.C, ss.D)]
    a, b, c, d = as64
    # python-control stores empty matrices with odd shapes for static gains; pin them.
    nx, nu, ny = ss.nstates, ss.ninputs, ss.noutputs
    a, b, c = a.reshape(nx, nx), b.reshape(nx, nu), c.reshape(ny, nx)
    return DiscreteMatrices(a, b, c, d.reshape(ny, nu), ss.dt, list(ss.input_labels),
                            list(ss.output_labels), list(ss.state_labels))


def signal_indices(kind: str, selection: Signals, labels: list[str]) -> list[int]:
    """Indices of ``selection`` (names or integer positions) among ``labels``; all if None."""
    if selection is None:
        return list(range(len(labels)))
    indices = []
    for item in selection:
        if isinstance(item, str):
            if item not in labels:
                raise ValueError(f"unknown {kind} {item!r}; the system's {kind}s are {labels}")
            indices.append(labels.index(item))
        elif isinstance(item, (int, np.integer)) and 0 <= int(item) < len(labels):
            indices.append(int(item))
        else:
            raise ValueError(f"{kind} index {item!r} out of range for {len(labels)} {kind}s")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{kind}s {list(selection)} select the same signal twice")
    return indices
