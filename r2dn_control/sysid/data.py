r"""Input–output records for system identification: experiments, normalisation, windows, splits.

A `SequenceData` holds one or several *experiments* (measured records that each start from
their own unknown initial state), possibly of different lengths. Each experiment is a pair of
float64 arrays ``u`` (T, nu) and ``y`` (T, ny).

Normalisation (docs/theory.md §7) is the affine map $\tilde u = (u - \mu_u) / \sigma_u$,
$\tilde y = (y - \mu_y) / \sigma_y$ per channel, with statistics fitted on the *training*
data only (`Normalization.fit`), and stored with the predictor so that predictions come back
in physical units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..train.guard import check_finite

ArrayLike = "np.ndarray | torch.Tensor"


def _as_2d(name: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or torch tensor of shape (time, channels), "
            f"got {type(value).__name__}"
        )
    if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 1:
        raise ValueError(
            f"{name} must have shape (time, channels), got shape {array.shape}; "
            f"for one channel use {name}.reshape(-1, 1)"
        )
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have shape (time, channels) with both > 0, "
                         f"got shape {array.shape}")
    check_finite(name, array)
    return array


class SequenceData:
    """One or several measured experiments ``(u_i, y_i)``, each of shape (T_i, nu) and (T_i, ny).

    Parameters
    ----------
    u, y : array or list of arrays
        Inputs and outputs, numpy arrays or torch tensors of shape (time, channels), or lists of
        such arrays (one per experiment; the lengths may differ, the channel counts may not).
        Stored as float64 copies; NaN or infinite values raise ``ValueError``.
    dt : float, optional
        Sampling period in seconds (metadata only: used in plots and reports).
    names : list of str, optional
        One label per experiment.

    Examples
    --------
    >>> import numpy as np
    >>> data = SequenceData(np.zeros((100, 2)), np.zeros((100, 1)), dt=0.01)
    >>> data.nu, data.ny, data.lengths
    (2, 1, [100])
    """

    def __init__(self, u: object, y: object, dt: float | None = None,
                 names: Sequence[str] | None = None) -> None:
        us = list(u) if isinstance(u, (list, tuple)) else [u]
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        if len(us) != len(ys):
            raise ValueError(f"u and y must list the same number of experiments, got {len(us)} "
                             f"inputs and {len(ys)} outputs")
        if not us:
            raise ValueError("SequenceData needs at least one experiment, got an empty list")
        self.u = [_as_2d(f"u[{i}]", a) for i, a in enumerate(us)]
        self.y = [_as_2d(f"y[{i}]", a) for i, a in enumerate(ys)]
        for i, (ui, yi) in enumerate(zip(self.u, self.y)):
            if ui.shape[0] != yi.shape[0]:
                raise ValueError(f"experiment {i}: u has {ui.shape[0]} samples but y has "
                                 f"{yi.shape[0]}")
            if ui.shape[1] != self.u[0].shape[1] or yi.shape[1] != self.y[0].shape[1]:
                raise ValueError(
                    f"experiment {i} has (nu, ny) = ({ui.shape[1]}, {yi.shape[1]}) but experiment 0 "
                    f"has ({self.u[0].shape[1]}, {self.y[0].shape[1]})"
                )
        if dt is not None and not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        self.dt = None if dt is None else float(dt)
        self.names = ([f"experiment {i}" for i in range(len(self.u))] if names is None
                      else [str(n) for n in names])
        if len(self.names) != len(self.u):
            raise ValueError(f"names must have one entry per experiment ({len(self.u)}), "
                             f"got {len(self.names)}")

    @property
    def nu(self) -> int:
        return self.u[0].shape[1]

    @property
    def ny(self) -> int:
        return self.y[0].shape[1]

    @property
    def lengths(self) -> list[int]:
        return [a.shape[0] for a in self.u]

    def __len__(self) -> int:
        return len(self.u)

    def __repr__(self) -> str:
        return (f"SequenceData({len(self)} experiment(s), lengths={self.lengths}, nu={self.nu}, "
                f"ny={self.ny}, dt={self.dt})")

    def split(self, fraction: float = 0.2) -> tuple[SequenceData, SequenceData]:
        """Cut the last ``fraction`` of every experiment off: ``(head, tail)``.

        The tail of experiment i continues from where its head stops, so a model simulated over
        the whole experiment can be scored on the tail (what `fit`
        does with ``val=None``).
        """
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
        heads, tails = [], []
        for i, length in enumerate(self.lengths):
            cut = int(round(length * (1 - fraction)))
            if cut < 1 or cut >= length:
                raise ValueError(f"experiment {i} ({length} samples) is too short to hold out "
                                 f"{fraction:.0%}")
            heads.append(cut)
            tails.append(length - cut)
        head = SequenceData([u[:c] for u, c in zip(self.u, heads)],
                            [y[:c] for y, c in zip(self.y, heads)], self.dt, self.names)
        tail = SequenceData([u[c:] for u, c in zip(self.u, heads)],
                            [y[c:] for y, c in zip(self.y, heads)], self.dt, self.names)
        return head, tail


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine normalisation ``ũ = (u − u_mean)/u_std``, ``ỹ = (y − y_mean)/y_std``.

    All four vectors are float64 numpy arrays. `as_metadata` gives the checkpoint metadata
    ``{"u_mean": [...], "u_std": [...], "y_mean": [...], "y_std": [...]}`` that the certify CLI
    reads.

    Physical units (docs/theory.md §7): if the normalised model has incremental ℓ₂ gain γ̃, the
    physical model ``y = σ_y ⊙ f(σ_u⁻¹ ⊙ (u − μ_u)) + μ_y`` has gain at most
    ``γ̃ · max(σ_y) / min(σ_u)`` (`physical_gamma`).
    """

    u_mean: np.ndarray
    u_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    def __post_init__(self) -> None:
        for name in ("u_mean", "u_std", "y_mean", "y_std"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            check_finite(name, value)
            object.__setattr__(self, name, value)
        if self.u_mean.shape != self.u_std.shape or self.y_mean.shape != self.y_std.shape:
            raise ValueError("means and standard deviations must have matching lengths, got "
                             f"u {self.u_mean.shape}/{self.u_std.shape}, "
                             f"y {self.y_mean.shape}/{self.y_std.shape}")
        if (self.u_std <= 0).any() or (self.y_std <= 0).any():
            raise ValueError(f"standard deviations must be positive, got u_std={self.u_std}, "
                             f"y_std={self.y_std}")

    @classmethod
    def fit(cls, data: SequenceData) -> Normalization:
        """Mean and standard deviation of every channel over all samples of all experiments.

        A constant channel (std 0) gets std 1, so it is only centred.
        """
        u = np.concatenate(data.u)
        y = np.concatenate(data.y)
        u_std, y_std = u.std(0), y.std(0)
        return cls(u.mean(0), np.where(u_std > 0, u_std, 1.0), y.mean(0),
                   np.where(y_std > 0, y_std, 1.0))

    @classmethod
    def identity(cls, nu: int, ny: int) -> Normalization:
        """No normalisation (means 0, standard deviations 1)."""
        return cls(np.zeros(nu), np.ones(nu), np.zeros(ny), np.ones(ny))

    @classmethod
    def from_metadata(cls, meta: dict) -> Normalization:
        """Inverse of `as_metadata`."""
        try:
            return cls(*(meta[k] for k in ("u_mean", "u_std", "y_mean", "y_std")))
        except KeyError as error:
            raise ValueError(f"normalization metadata lacks {error.args[0]!r}; expected keys "
                             "u_mean, u_std, y_mean, y_std") from None

    def as_metadata(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("u_mean", "u_std", "y_mean", "y_std")}

    def check(self, nu: int, ny: int) -> None:
        if self.u_mean.shape[0] != nu or self.y_mean.shape[0] != ny:
            raise ValueError(f"normalization is for (nu, ny) = ({self.u_mean.shape[0]}, "
                             f"{self.y_mean.shape[0]}), the data have ({nu}, {ny})")

    def normalize_u(self, u: np.ndarray) -> np.ndarray:
        return (u - self.u_mean) / self.u_std

    def normalize_y(self, y: np.ndarray) -> np.ndarray:
        return (y - self.y_mean) / self.y_std

    def denormalize_y(self, y: np.ndarray) -> np.ndarray:
        return y * self.y_std + self.y_mean

    def apply(self, data: SequenceData) -> SequenceData:
        """The normalised copy of ``data``."""
        self.check(data.nu, data.ny)
        return SequenceData([self.normalize_u(u) for u in data.u],
                            [self.normalize_y(y) for y in data.y], data.dt, data.names)

    def physical_gamma(self, gamma: float) -> float:
        """The simple bound ``γ · max(y_std) / min(u_std)`` on the physical-unit gain."""
        return float(gamma) * float(self.y_std.max()) / float(self.u_std.min())


def segments(length: int, segment: int) -> list[tuple[int, int]]:
    """Contiguous, non-overlapping windows ``[start, stop)`` of ``segment`` samples.

    The last window is shorter when ``segment`` does not divide ``length``.
    """
    if not isinstance(segment, int) or isinstance(segment, bool) or segment < 1:
        raise ValueError(f"segment must be a positive int, got {segment!r}")
    return [(s, min(s + segment, length)) for s in range(0, length, segment)]


def stacked_windows(data: SequenceData, segment: int, dtype: torch.dtype,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every full window of ``segment`` samples of every experiment, stacked: (N, segment, ·).

    Used for shuffled-window training; a trailing part shorter than ``segment`` is dropped.
    """
    us, ys = [], []
    for u, y in zip(data.u, data.y):
        for start, stop in segments(u.shape[0], segment):
            if stop - start == segment:
                us.append(u[start:stop])
                ys.append(y[start:stop])
    if not us:
        raise ValueError(f"no experiment is at least segment={segment} samples long "
                         f"(lengths {data.lengths})")
    return (torch.as_tensor(np.stack(us), dtype=dtype, device=device),
            torch.as_tensor(np.stack(ys), dtype=dtype, device=device))
