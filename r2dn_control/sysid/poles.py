r"""The data's slowest pole, from a least-squares ARX fit, and the contraction rate it suggests.

`slowest_pole` fits the multi-output ARX model (docs/theory.md §7)

.. math:: \tilde y_t = \sum_{i=1}^{p} A_i \tilde y_{t-i} + \sum_{i=1}^{p} B_i \tilde u_{t-i} + c

by (minimum-norm) least squares on the normalised training record (every experiment contributes its own
regressor rows, so no row spans two experiments) and returns the largest eigenvalue modulus
|λ|max of the block-companion matrix of (A_1, …, A_p): the slowest decay rate per sample of the
data's linear part. `suggested_contraction_rate` turns it into ᾱ for a contracting model:

.. math:: \bar\alpha = \min\bigl(1, \max(\bar\alpha_{\min}, |\lambda|_{\max}^{1/2})\bigr)

The square root halves the decay rate: with $|\lambda| = e^{-\sigma\,dt}$,
$|\lambda|^{1/2} = e^{-(\sigma/2)\,dt}$, so the model may forget twice as slowly as the
estimate of the data's slowest mode. This margin covers the estimate's bias (least-squares ARX on
noisy outputs misplaces lightly damped poles by a fraction of their decay rate) and keeps ᾱ
strictly below 1 for a stable estimate, so the model cannot fit a drift of its own; validation by
simulation of the held-out tail (``sysid.fit(val=None)``) catches the drift that ᾱ close to 1 still
permits. A contraction rate ᾱ bounds every pole of the model's linear part by ᾱ (docs/theory.md
§3), so ᾱ below the data's slowest pole would make that mode unrepresentable.
"""

from __future__ import annotations

import numpy as np

from .data import Normalization, SequenceData

DEFAULT_ORDER = 8
DEFAULT_MIN_RATE = 0.9
MAX_ROWS = 50_000


def arx_rows(u: np.ndarray, y: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Regressors [y_{t-1} … y_{t-p}, u_{t-1} … u_{t-p}, 1] and targets y_t, t = p … T−1."""
    t = y.shape[0]
    lagged = [y[order - i:t - i] for i in range(1, order + 1)]
    lagged += [u[order - i:t - i] for i in range(1, order + 1)]
    lagged.append(np.ones((t - order, 1)))
    return np.concatenate(lagged, 1), y[order:]


def slowest_pole(data: SequenceData, order: int = DEFAULT_ORDER) -> float:
    r"""|λ|max of a least-squares ARX(``order``) fit to the normalised ``data`` (module docstring).

    Parameters
    ----------
    data : SequenceData
        Training record(s) in physical units (normalised here, per channel, on ``data`` itself).
    order : int
        ARX order p (lags of y and u); the companion matrix has ``order · ny`` eigenvalues.

    Returns
    -------
    float
        The largest eigenvalue modulus (may exceed 1 if the fit is unstable).
    """
    if not isinstance(data, SequenceData):
        raise TypeError(f"data must be a SequenceData, got {type(data).__name__}")
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    norm = Normalization.fit(data).apply(data)
    rows = [arx_rows(u, y, order) for u, y in zip(norm.u, norm.y) if u.shape[0] > 2 * order]
    if not rows:
        raise ValueError(f"an ARX({order}) fit needs an experiment longer than {2 * order} "
                         f"samples, got lengths {data.lengths}")
    phi = np.concatenate([r[0] for r in rows])
    target = np.concatenate([r[1] for r in rows])
    if phi.shape[0] > MAX_ROWS:  # evenly spaced rows: enough for (order · (nu + ny) + 1) unknowns
        keep = np.linspace(0, phi.shape[0] - 1, MAX_ROWS).astype(int)
        phi, target = phi[keep], target[keep]
    # minimum-norm least squares: collinear regressors (an order above the data's) stay solvable
    theta = np.linalg.lstsq(phi, target, rcond=None)[0]  # (regressors, ny)
    ny = data.ny
    a = theta[: order * ny].T  # (ny, order·ny) = [A_1 … A_p]
    companion = np.zeros((order * ny, order * ny))
    companion[:ny] = a
    companion[ny:, :-ny] = np.eye((order - 1) * ny)
    return float(np.abs(np.linalg.eigvals(companion)).max())


def suggested_contraction_rate(data: SequenceData, order: int = DEFAULT_ORDER,
                               min_rate: float = DEFAULT_MIN_RATE) -> float:
    r"""ᾱ = min(1, max(``min_rate``, |λ|max^{1/2})) from `slowest_pole` (module docstring).

    Always in ``[min_rate, 1]`` and at least the estimated slowest pole.
    """
    if not (isinstance(min_rate, (int, float)) and 0 < min_rate <= 1):
        raise ValueError(f"min_rate must be in (0, 1], got {min_rate!r}")
    pole = slowest_pole(data, order)
    return float(min(1.0, max(min_rate, np.sqrt(pole) if pole < 1 else 1.0)))
