"""Round 6 of the certificate speed-up (issue 16): complex w-channel gains from one Hessenberg
reduction of A (`kyp.HessenbergReduction`, `kyp.SearchBlocks`).

Float64 properties over random draws, near-resonant ones included: the reduced gain and its
slopes (complex z, and real z in real arithmetic) equal the dense evaluation (σ to 1e-10
relative, never above it beyond rounding, the slopes to the Lanczos tolerance), on both Gram
sides and through both the formed-G and the matrix-free Lanczos branches; a rate search that
uses the reduction proves the same rate as the dense search (to the tolerance) and its
certificate passes the float64 check. The threshold `kyp.REDUCED_MIN` (1536 states) is lowered
here so that small systems take the path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st
from test_certify_off_axis import _resonant as off_axis_resonant

from r2dn_control.certify import kyp
from r2dn_control.certify.lmi import StateSpaceBlocks, validate

RTOL = 1e-4  # certify.contraction's default


def _blocks(a: np.ndarray, b1: np.ndarray, c1: np.ndarray) -> StateSpaceBlocks:
    n, nw = b1.shape
    nv = c1.shape[0]
    zero = np.zeros
    return StateSpaceBlocks(a, b1, zero((n, 1)), c1, zero((1, n)), zero((nv, nv)),
                            zero((nv, 1)), zero((1, nw)), zero((1, 1)))


def _system(seed: int, n: int, nv: int, nw: int, pole: float, theta: float
            ) -> StateSpaceBlocks:
    """Random A (spectral radius 0.6) with a lightly damped pair pole·e^{±jθ} in a random
    orthogonal basis, Gaussian B₁ (n × nw) and C₁ (nv × n)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a *= 0.6 / np.abs(np.linalg.eigvals(a)).max()
    if n >= 2:
        a[:2, :2] = pole * np.array([[math.cos(theta), -math.sin(theta)],
                                     [math.sin(theta), math.cos(theta)]])
        a[2:, :2] = 0.0  # block upper triangular: the pair stays an eigenvalue pair
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return _blocks(q @ a @ q.T, rng.normal(size=(n, nw)), rng.normal(size=(nv, n)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(3, 30), nv=st.integers(1, 12),
       nw=st.integers(1, 12), pole=st.floats(0.5, 0.995), theta=st.floats(0.05, 3.09),
       dr=st.floats(0.002, 0.3), dtheta=st.floats(-0.05, 0.05),
       lanczos=st.booleans(), axis=st.sampled_from([None, 0.0, math.pi]))
def test_reduced_gain_equals_the_dense_gain(seed, n, nv, nw, pole, theta, dr, dtheta,
                                            lanczos, axis) -> None:
    """At z = (pole + dr)·e^{j(θ + dθ)}, next to the resonance for small dr, dθ (``axis``:
    on the real axis instead, real arithmetic)."""
    ss = _system(seed, n, nv, nw, pole, theta)
    r, omega = pole + dr, min(max(theta + dtheta, 0.01), math.pi - 0.01)
    if axis is not None:
        omega = axis
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kyp, "REDUCED_MIN", 1)
        mp.setattr(kyp, "LANCZOS_GRAM_MIN", 3 if lanczos else 512)
        dense = kyp.circle_point(ss, r, omega)
        reduced = kyp.circle_point(kyp.SearchBlocks.of(ss), r, omega)
        plain = kyp._w_channel_derivative(kyp.SearchBlocks.of(ss), kyp._on_ray(r, omega),
                                          derivative=False)
    sigma = dense[0]
    assert reduced[0] == pytest.approx(sigma, rel=1e-10)
    assert plain[0] == pytest.approx(sigma, rel=1e-10)
    assert reduced[0] <= sigma * (1 + 1e-12)  # a Ritz value: never above λ_max (rounding)
    # Slopes: the top singular vectors to the Lanczos tolerance over the singular gap (the
    # dense path has the same kind of error), so compare on the scale of the slope vector.
    scale = max(abs(dense[1]), abs(dense[2]), sigma)
    gaps = np.linalg.svd(ss.C1 @ np.linalg.solve(kyp._on_ray(r, omega) * np.eye(n) - ss.A,
                                                 ss.B1), compute_uv=False)
    gap = (gaps[0] - gaps[1]) / gaps[0] if gaps.size > 1 else 1.0
    if gap > 1e-3:  # σ simple: the slopes are defined (and only then read)
        tol = 1e-7 + 1e-3 * kyp.REDUCED_LANCZOS_TOL / gap
        assert abs(reduced[1] - dense[1]) <= tol * scale
        assert abs(reduced[2] - dense[2]) <= tol * scale


def test_reduction_is_built_once_and_shared() -> None:
    ss = kyp.SearchBlocks.of(_system(3, 20, 6, 6, 0.9, 1.0))
    red = ss.reduction()
    assert ss.reduction() is red and kyp.SearchBlocks.of(ss) is ss
    h = red.h
    assert np.all(np.tril(h, -2) == 0.0)
    # G(z) from the reduction equals the original transfer matrix.
    z = kyp._on_ray(0.95, 0.8)
    n = ss.A.shape[0]
    g = ss.C1 @ np.linalg.solve(z * np.eye(n) - ss.A, ss.B1)
    g_red = red.c @ np.linalg.solve(z * np.eye(n) - h, red.b)
    assert np.abs(g_red - g).max() <= 1e-12 * np.abs(g).max()


def test_banded_shift_factors_the_shifted_hessenberg_matrix() -> None:
    rng = np.random.default_rng(1)
    n = 17
    h = np.triu(rng.normal(size=(n, n)), -1)
    z = 0.3 + 0.7j
    lu, piv = kyp._banded_shift(h, z)
    x = rng.normal(size=n) + 1j * rng.normal(size=n)
    got = sla.lapack.zgbtrs(lu, 1, n - 1, x, piv)[0]
    want = np.linalg.solve(z * np.eye(n) - h, x)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    # z an exact eigenvalue of a triangular H (a zero first column of zI − H): none.
    assert kyp._banded_shift(np.triu(h), complex(h[0, 0])) is None


def _resonant(seed: int) -> StateSpaceBlocks:
    """test_certify_off_axis's system (w-channel gain peaking near ω = 2.75, off the real
    axis) with 14 states."""
    return off_axis_resonant(seed, n=14)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("lanczos", [False, True])
def test_rate_search_with_the_reduction_proves_the_same_rate(seed, lanczos) -> None:
    ss = _resonant(seed)
    dense = kyp.smallest_rate(ss, 1.0, RTOL)
    calls: list[bool] = []
    inner = kyp._reduced_w_channel

    def counted(red, z, derivative):
        calls.append(True)
        return inner(red, z, derivative)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kyp, "REDUCED_MIN", 1)
        mp.setattr(kyp, "LANCZOS_GRAM_MIN", 3 if lanczos else 512)
        mp.setattr(kyp, "_reduced_w_channel", counted)
        reduced = kyp.smallest_rate(ss, 1.0, RTOL)
    assert calls  # the complex gains went through the reduction
    assert dense is not None and reduced is not None
    assert reduced.solves == dense.solves == 1
    assert reduced.value == pytest.approx(dense.value, rel=RTOL)
    assert validate(ss, reduced.metric, reduced.multiplier, reduced.value).holds
