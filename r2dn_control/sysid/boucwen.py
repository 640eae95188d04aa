r"""A Bouc–Wen hysteretic oscillator: a data-free second benchmark (Noël & Schoukens 2016).

$$
m \ddot y + c \dot y + k y + z = u, \qquad
\dot z = \alpha \dot y - \beta\,(\gamma |\dot y| |z|^{\nu-1} z + \delta \dot y |z|^{\nu})
$$

with the benchmark's parameters m = 2 kg, c = 10 N s/m, k = 5·10⁴ N/m, α = 5·10⁴ N/m,
β = 10³ m⁻¹, γ = 0.8, δ = −1.1, ν = 1; input force u in N, output displacement y in m, sampled at
750 Hz. The benchmark's excitation is a random-phase multisine of 8,192 samples per period,
5–150 Hz, 50 N RMS (`multisine`).

This simulator integrates with classical Runge–Kutta 4 at ``substeps`` × 750 Hz and holds the
input constant over each sample (zero-order hold); the benchmark itself uses a Newmark scheme at
15 kHz. Its data therefore resemble, but do not equal, the published files: RMSE figures on them
are comparable with the benchmark's in order of magnitude only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SequenceData

FS = 750.0


@dataclass(frozen=True)
class BoucWen:
    """Bouc–Wen parameters (defaults: the benchmark's)."""

    m: float = 2.0
    c: float = 10.0
    k: float = 5e4
    alpha: float = 5e4
    beta: float = 1e3
    gamma: float = 0.8
    delta: float = -1.1
    nu: float = 1.0

    def simulate(self, u: np.ndarray, fs: float = FS, substeps: int = 10,
                 state: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """Displacement y (T,) for force samples ``u`` (T,), from ``state`` = (y, ẏ, z)."""
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if not np.isfinite(u).all():
            raise ValueError("u must be finite")
        if not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}")
        m, c, k, a, b, g, d, n = (self.m, self.c, self.k, self.alpha, self.beta, self.gamma,
                                  self.delta, self.nu)
        h = 1.0 / (fs * substeps)

        def rhs(p: float, v: float, z: float, f: float) -> tuple[float, float, float]:
            az = abs(z)
            zn1 = z if n == 1.0 else az ** (n - 1.0) * z
            zn = az if n == 1.0 else az**n
            return v, (f - c * v - k * p - z) / m, a * v - b * (g * abs(v) * zn1 + d * v * zn)

        p, v, z = state
        out = np.empty(u.shape[0])
        for t, f in enumerate(u.tolist()):
            out[t] = p
            for _ in range(substeps):
                k1 = rhs(p, v, z, f)
                k2 = rhs(p + 0.5 * h * k1[0], v + 0.5 * h * k1[1], z + 0.5 * h * k1[2], f)
                k3 = rhs(p + 0.5 * h * k2[0], v + 0.5 * h * k2[1], z + 0.5 * h * k2[2], f)
                k4 = rhs(p + h * k3[0], v + h * k3[1], z + h * k3[2], f)
                p += h / 6.0 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
                v += h / 6.0 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
                z += h / 6.0 * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
        return out


def multisine(periods: int, samples_per_period: int = 8192, band: tuple[float, float] = (5.0, 150.0),
              rms: float = 50.0, fs: float = FS, rng: np.random.Generator | int | None = None,
              *, odd_lines: bool = False) -> np.ndarray:
    """Random-phase multisine: equal amplitudes on every DFT line in ``band``, scaled to ``rms``.

    ``odd_lines=True`` excites only every other odd line (1, 5, 9, …) of the band, the
    Silverbox convention (the even and the other odd lines then reveal nonlinear distortion).
    """
    rng = np.random.default_rng(rng)
    n = samples_per_period
    lines = np.arange(n // 2 + 1)
    freqs = lines * fs / n
    excited = (freqs >= band[0]) & (freqs <= band[1])
    if odd_lines:
        excited &= lines % 4 == 1
    if not excited.any():
        kind = "odd frequency line" if odd_lines else "frequency line"
        raise ValueError(f"no {kind} of {n} samples at {fs} Hz falls in band {band}")
    spectrum = np.zeros(n // 2 + 1, dtype=complex)
    spectrum[excited] = np.exp(2j * np.pi * rng.random(int(excited.sum())))
    period = np.fft.irfft(spectrum, n)
    period *= rms / np.sqrt(np.mean(period**2))
    return np.tile(period, periods)


def bouc_wen_data(experiments: int = 1, periods: int = 2, samples_per_period: int = 8192,
                  transient_periods: int = 1, rms: float = 50.0, noise_std: float = 0.0,
                  seed: int = 0, substeps: int = 10, system: BoucWen | None = None
                  ) -> SequenceData:
    """Simulated Bouc–Wen records, each from a fresh random-phase multisine.

    Each experiment simulates ``transient_periods + periods`` periods from rest and keeps the last
    ``periods`` (so its initial state is not zero); ``noise_std`` (m) adds white measurement noise
    to y. Returns u (T, 1) in N and y (T, 1) in m, ``dt`` = 1/750 s.
    """
    rng = np.random.default_rng(seed)
    system = BoucWen() if system is None else system
    us, ys = [], []
    total = periods + transient_periods
    for _ in range(experiments):
        u = multisine(total, samples_per_period, rms=rms, rng=rng)
        y = system.simulate(u, substeps=substeps)
        keep = slice(transient_periods * samples_per_period, None)
        y_kept = y[keep] + noise_std * rng.standard_normal(y[keep].shape)
        us.append(u[keep, None])
        ys.append(y_kept[:, None])
    return SequenceData(us, ys, dt=1.0 / FS)
