r"""The data's slowest pole, from a least-squares ARX fit, and the contraction rate it suggests.

`slowest_pole` fits the multi-output ARX model (docs/theory.md §7)

.. math:: \tilde y_t = \sum_{i=1}^{p} A_i \tilde y_{t-i} + \sum_{i=1}^{p} B_i \tilde u_{t-i} + c

by (minimum-norm) least squares on the normalised training record (every experiment contributes its own
regressor rows, so no row spans two experiments) and returns the largest eigenvalue modulus
|λ|max of the block-companion matrix of (A_1, …, A_p): the slowest decay rate per sample of the
data's linear part. `suggested_contraction_rate` turns it into ᾱ for a contracting model:

.. math:: \bar\alpha = \min\bigl(1, \max(\bar\alpha_{\min}, |\lambda|_{\max}^{\kappa})\bigr),
   \qquad \kappa = 1/4 \text{ (``decay_share``)}

With $|\lambda| = e^{-\sigma\,dt}$, $|\lambda|^{\kappa} = e^{-\kappa\sigma\,dt}$: the
certificate guarantees that the model forgets at least at κ times the estimated decay rate of
the data's slowest mode, strictly below 1 for a stable estimate (so the model cannot fit a drift
of its own; validation by simulation of the held-out tail, ``sysid.fit(val=None)``, catches
what is left), and above the estimate, which least-squares ARX on nonlinear or noisy data places
on the fast side (the distortion looks like extra damping).

**Why κ = 1/4 and not more.** ᾱ is not only a bound on the model's poles; the contraction LMI
(docs/theory.md §3) charges the nonlinear channel to the gap between ᾱ and the poles. For every
eigenpair A ξ = λ ξ and left eigenvector η* A = λ η* of a contracting R2DN with metric 𝒫,

.. math:: \|C_1 \xi\|^2 \le (\bar\alpha^2 - |\lambda|^2)\, \xi^* \mathcal P \xi, \qquad
   \|B_1^* \eta\|^2 \le (1 - |\lambda|^2/\bar\alpha^2)\, \eta^* \mathcal P^{-1} \eta

(the LMI's x-block, and its dual), so a mode with |λ| close to ᾱ can neither drive the LBDN nor
be driven by it. For the slowest mode each factor is about $2(1-\kappa)\,\sigma\,dt$: the loop
gain the nonlinearity can have through it scales as $4(1-\kappa)^2$, 1 at the former κ = 1/2
and 2.25 at κ = 1/4 (4 at ᾱ = 1). A lightly damped oscillator whose stiffness or damping depends
on the amplitude (Silverbox-like Duffing, Bouc–Wen) needs exactly that gain through its
resonance: at κ = 1/2 the trained R2DN's LMI was active (smallest eigenvalue 1e-5 of its scale)
and its error sat at the resonance; docs/sysid.md ("Contraction rate from the data") has the
measurements, including why not ᾱ = 1.
"""

from __future__ import annotations

import numpy as np

from .data import Normalization, SequenceData

DEFAULT_ORDER = 8
DEFAULT_MIN_RATE = 0.9
#: κ of ᾱ = |λ|max^κ (module docstring): the share of the data's slowest decay rate the
#: certificate guarantees.
DEFAULT_DECAY_SHARE = 0.25
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
                               min_rate: float = DEFAULT_MIN_RATE,
                               decay_share: float = DEFAULT_DECAY_SHARE) -> float:
    r"""ᾱ = min(1, max(``min_rate``, |λ|max^κ)) from `slowest_pole`, κ = ``decay_share``
    (module docstring).

    Parameters
    ----------
    data : SequenceData
    order : int
        ARX order of `slowest_pole`.
    min_rate : float in (0, 1]
        Lower bound ᾱ_min.
    decay_share : float in (0, 1]
        κ: the model is certified to forget at κ times the estimated slowest decay rate; the
        nonlinear channel's loop gain through that mode may grow as (1 − κ)² (module docstring).
        1 puts ᾱ at the estimate itself, ½ was the former default.

    Returns
    -------
    float
        Always in ``[min_rate, 1]`` and at least the estimated slowest pole.
    """
    if not (isinstance(min_rate, (int, float)) and 0 < min_rate <= 1):
        raise ValueError(f"min_rate must be in (0, 1], got {min_rate!r}")
    if (not isinstance(decay_share, (int, float)) or isinstance(decay_share, bool)
            or not 0 < decay_share <= 1):
        raise ValueError(f"decay_share must be in (0, 1], got {decay_share!r}")
    pole = slowest_pole(data, order)
    return float(min(1.0, max(min_rate, pole**decay_share if pole < 1 else 1.0)))
