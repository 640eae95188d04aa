r"""Data-free stand-ins for classic identification benchmarks (Silverbox, Cascaded tanks, Wiener–Hammerstein).

Neither reproduces the published measurements; they have the same structure, sampling and
excitation, so a recipe that works on real data of that class can be tried without the files.

* **Duffing oscillator** (`duffing_data`, Silverbox-like): the electronic mass–spring–damper
  with a cubic spring of the Silverbox benchmark (Wigren & Schoukens 2013),

  $$ m \ddot y + d \dot y + k y + k_3 y^3 = u, $$

  sampled at 610.35 Hz under random-phase **odd** multisines (every other odd DFT line in
  the band, as the benchmark's excitation) of 8,192 samples; input and output in volts.
* **Cascaded tanks** (`cascaded_tanks_data`, Schoukens & Noël 2016): two tanks in series,

  $$ \dot x_1 = -k_1\sqrt{x_1} + k_4 u, \qquad \dot x_2 = k_2\sqrt{x_1} - k_3\sqrt{x_2}, $$

  levels clipped to [0, 10] (overflow: the excess of the upper tank is lost, part of it
  reaches the lower one), y = x₂ in volts, sampled every 4 s, 1,024 samples per record, driven by
  a low-frequency multisine around 5 V; every record starts from a random unknown level, so the
  initial state dominates the early error.

* **Wiener–Hammerstein** (`wiener_hammerstein_data`, Schoukens, Suykens & Ljung 2009): a
  linear filter G₁, a static nonlinearity f, a second linear filter G₂,

  $$ y = G_2\,f(G_1 u), $$

  sampled at 51.2 kHz as the benchmark's electronic circuit: G₁ a 3rd-order Chebyshev type I
  low-pass (0.5 dB ripple, 4.4 kHz), G₂ a 3rd-order Chebyshev type II (inverse Chebyshev) low-pass
  (40 dB stop band from 5 kHz), f a one-sided diode-like clamp (identity below zero,
  ``s·tanh(z/s)`` above), driven by random-phase multisines in 0–10 kHz; one period of
  8,192 samples is discarded so every record is in steady state.

Duffing and tanks integrate with classical Runge–Kutta 4 under zero-order-hold input, vectorised
over the experiments of one call; the Wiener–Hammerstein system is discrete-time (scipy's
``lfilter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import signal

from .boucwen import multisine
from .data import SequenceData

SILVERBOX_FS = 610.35
WIENER_HAMMERSTEIN_FS = 51_200.0
TANKS_TS = 4.0

Rhs = Callable[[np.ndarray, np.ndarray], np.ndarray]


def rk4_zoh(rhs: Rhs, x0: np.ndarray, u: np.ndarray, h: float, substeps: int,
            clip: tuple[float, float] | None = None) -> np.ndarray:
    """States x₀ … x_{T−1} of ``ẋ = rhs(x, u)`` under zero-order-hold input.

    Parameters
    ----------
    rhs : callable
        ``rhs(x, u)`` with x (batch, n) and u (batch,), returning (batch, n).
    x0 : ndarray
        Initial states (batch, n).
    u : ndarray
        Inputs (batch, T), held over each sample.
    h : float
        Sample period.
    substeps : int
        RK4 steps per sample.
    clip : (low, high), optional
        States are clipped to this interval after every RK4 step (tank overflow).

    Returns
    -------
    ndarray
        (batch, T, n): the state at the start of every sample.
    """
    if not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive int, got {substeps!r}")
    x = np.array(x0, dtype=np.float64)
    step = h / substeps
    out = np.empty((u.shape[0], u.shape[1], x.shape[1]))
    for t in range(u.shape[1]):
        out[:, t] = x
        f = u[:, t]
        for _ in range(substeps):
            k1 = rhs(x, f)
            k2 = rhs(x + 0.5 * step * k1, f)
            k3 = rhs(x + 0.5 * step * k2, f)
            k4 = rhs(x + step * k3, f)
            x = x + step / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            if clip is not None:
                x = np.clip(x, *clip)
    return out


@dataclass(frozen=True)
class Duffing:
    """``m ÿ + d ẏ + k y + k₃ y³ = u``: a 1 kg oscillator at 60 Hz with 5 % damping, whose
    cubic spring force equals the linear one at |y| = (k/k₃)^{1/2} = 0.1 V (defaults).
    """

    m: float = 1.0
    d: float = 2 * 0.05 * 2 * np.pi * 60.0
    k: float = (2 * np.pi * 60.0) ** 2
    k3: float = (2 * np.pi * 60.0) ** 2 / 0.1**2

    def rhs(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``(ẏ, ÿ)`` for states ``x = (y, ẏ)`` (batch, 2)."""
        y, v = x[:, 0], x[:, 1]
        return np.stack([v, (u - self.d * v - self.k * y - self.k3 * y**3) / self.m], 1)


def duffing_data(experiments: int = 2, samples: int = 8192, transient: int = 1024,
                 rms: float | None = None, band: tuple[float, float] = (1.0, 200.0),
                 noise_std: float = 0.0, seed: int = 0, substeps: int = 4,
                 system: Duffing | None = None) -> SequenceData:
    """Silverbox-like records of a Duffing oscillator under random-phase odd multisines.

    Parameters
    ----------
    experiments, samples : int
        Number of records and samples kept per record (after ``transient`` samples from rest).
    rms : float, optional
        Input RMS in V; default ``0.01 k`` (output RMS about 0.02 V, a fifth of the cubic
        spring's knee at 0.1 V: mildly nonlinear like the Silverbox; a linear ARX(8) model
        simulates a fresh record with NRMSE ≈ 0.24. Three times more makes the oscillator
        strongly nonlinear: ARX NRMSE ≈ 0.69).
    band : (low, high)
        Excited band in Hz (odd lines only, every other one, as the Silverbox excitation).
    noise_std : float
        White measurement noise on y (V).
    seed : int
    substeps : int
        RK4 steps per sample.
    system : Duffing, optional

    Returns
    -------
    SequenceData
        u, y (T, 1) in V, ``dt = 1/610.35`` s.
    """
    system = Duffing() if system is None else system
    rms = 0.1 * system.k * 0.1 if rms is None else rms
    rng = np.random.default_rng(seed)
    total = samples + transient
    u = np.stack([multisine(1, total, band, rms, SILVERBOX_FS, rng, odd_lines=True)
                  for _ in range(experiments)])
    x = rk4_zoh(system.rhs, np.zeros((experiments, 2)), u, 1.0 / SILVERBOX_FS, substeps)
    y = x[:, transient:, 0] + noise_std * rng.standard_normal((experiments, samples))
    return SequenceData([ui[transient:, None] for ui in u], [yi[:, None] for yi in y],
                        dt=1.0 / SILVERBOX_FS)


@dataclass(frozen=True)
class CascadedTanks:
    """Two tanks in series with overflow at level 10 (V); flows ``k·√level`` (Torricelli).

    ``overflow_share`` of the upper tank's overflow reaches the lower tank (modelled as an
    extra inflow ``overflow_share · k₄ · max(0, u − u_eq(10))`` while the upper tank is full).
    """

    k1: float = 0.05
    k2: float = 0.05
    k3: float = 0.06
    k4: float = 0.03
    overflow_share: float = 0.5
    height: float = 10.0

    def rhs(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``(ẋ₁, ẋ₂)`` for levels ``x`` (batch, 2) and pump voltage ``u`` (batch,)."""
        r1 = np.sqrt(np.maximum(x[:, 0], 0.0))
        r2 = np.sqrt(np.maximum(x[:, 1], 0.0))
        inflow = self.k4 * u - self.k1 * r1
        spill = np.where(x[:, 0] >= self.height, np.maximum(inflow, 0.0), 0.0)
        return np.stack([inflow - spill,
                         self.k2 * r1 - self.k3 * r2 + self.overflow_share * spill], 1)


def cascaded_tanks_data(experiments: int = 1, samples: int = 1024, mean: float = 5.5,
                        amplitude: float = 3.0, band: tuple[float, float] = (0.0, 0.0144),
                        noise_std: float = 0.02, seed: int = 0, substeps: int = 4,
                        system: CascadedTanks | None = None) -> SequenceData:
    """Cascaded-tanks-like records: 1,024 samples at Ts = 4 s from a random initial level.

    Parameters
    ----------
    experiments, samples : int
    mean, amplitude : float
        Pump voltage ``u = mean + amplitude · s / max|s|`` with s a random-phase multisine on
        ``band`` (Hz; the benchmark's 0–0.0144 Hz), clipped to [0, 10] V.
    noise_std : float
        White measurement noise on y (V).
    seed : int
    substeps : int
    system : CascadedTanks, optional

    Returns
    -------
    SequenceData
        u, y = x₂ (T, 1) in V, ``dt = 4`` s. Each record starts at levels drawn uniformly in
        [1, 9] V (unknown to the model).
    """
    system = CascadedTanks() if system is None else system
    rng = np.random.default_rng(seed)
    us = []
    for _ in range(experiments):
        s = multisine(1, samples, band=(max(band[0], 1e-12), band[1]), rms=1.0,
                      fs=1.0 / TANKS_TS, rng=rng)
        us.append(np.clip(mean + amplitude * s / np.max(np.abs(s)), 0.0, 10.0))
    u = np.stack(us)
    x0 = rng.uniform(1.0, 9.0, size=(experiments, 2))
    x = rk4_zoh(system.rhs, x0, u, TANKS_TS, substeps, clip=(0.0, system.height))
    y = x[:, :, 1] + noise_std * rng.standard_normal((experiments, samples))
    return SequenceData([ui[:, None] for ui in u], [yi[:, None] for yi in y], dt=TANKS_TS)


@dataclass(frozen=True)
class WienerHammerstein:
    """``y = G₂ f(G₁ u)`` with the benchmark's filter types (module docstring).

    ``saturation`` is the clamp level s of ``f(z) = z (z < 0), s·tanh(z/s) (z ≥ 0)``: f is
    continuous with slope 1 at 0 on both sides and saturates at s for large positive z.
    """

    saturation: float = 0.3
    fs: float = WIENER_HAMMERSTEIN_FS
    g1_cutoff: float = 4_400.0
    g2_cutoff: float = 5_000.0

    def filters(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``((b₁, a₁), (b₂, a₂))``: transfer-function coefficients of G₁ and G₂ (unit DC gain)."""
        b1, a1 = signal.cheby1(3, 0.5, self.g1_cutoff, fs=self.fs)
        b2, a2 = signal.cheby2(3, 40.0, self.g2_cutoff, fs=self.fs)
        # Chebyshev I of odd order has unit DC gain; normalise both so that f sees u's scale
        return (b1 / (b1.sum() / a1.sum()), a1), (b2 / (b2.sum() / a2.sum()), a2)

    def nonlinearity(self, z: np.ndarray) -> np.ndarray:
        """The static clamp f."""
        s = self.saturation
        return np.where(z < 0.0, z, s * np.tanh(np.maximum(z, 0.0) / s))

    def simulate(self, u: np.ndarray) -> np.ndarray:
        """y (…, T) for inputs u (…, T) from rest (filters along the last axis)."""
        (b1, a1), (b2, a2) = self.filters()
        return signal.lfilter(b2, a2, self.nonlinearity(signal.lfilter(b1, a1, u, axis=-1)),
                              axis=-1)


def wiener_hammerstein_data(experiments: int = 2, samples: int = 8192, rms: float = 0.5,
                            band: tuple[float, float] = (1.0, 10_000.0), noise_std: float = 0.0,
                            seed: int = 0, system: WienerHammerstein | None = None
                            ) -> SequenceData:
    """Wiener–Hammerstein-like records: random-phase multisines through ``G₂ f(G₁ u)``.

    Parameters
    ----------
    experiments, samples : int
        Number of records and samples per record (one period of the multisine; a first period
        is simulated and discarded, so the record is in steady state).
    rms : float
        Input RMS in V. With the default clamp at 0.3 V the positive half-waves above the clamp
        are compressed: a linear ARX(8) model simulates a fresh record with NRMSE ≈ 0.24
        (docs/results.md has the measured level).
    band : (low, high)
        Excited band in Hz.
    noise_std : float
        White measurement noise on y (V).
    seed : int
    system : WienerHammerstein, optional

    Returns
    -------
    SequenceData
        u, y (T, 1) in V, ``dt = 1/51,200`` s.
    """
    system = WienerHammerstein() if system is None else system
    rng = np.random.default_rng(seed)
    u = np.stack([multisine(2, samples, band, rms, system.fs, rng) for _ in range(experiments)])
    y = system.simulate(u)[:, samples:] + noise_std * rng.standard_normal((experiments, samples))
    return SequenceData([ui[samples:, None] for ui in u], [yi[:, None] for yi in y],
                        dt=1.0 / system.fs)
