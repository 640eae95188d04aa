"""The largest eigenpair of a Hermitian operator by implicitly restarted Lanczos (ARPACK).

One place for what the certificates' matrix-free eigenvalue reads share: the w-channel
gains' λ_max (`kyp`, from a Gram triangle or matrix-free through a Hessenberg form) and the
report's λ_min of a Cholesky proof (`lmi.estimate_min_eigenvalue`, from the inverse). A Ritz
value is a Rayleigh quotient, so it never exceeds the largest eigenvalue (docs/certificates.md):
what a caller refutes or bounds from it stays valid; none of these is the proof itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

#: Lanczos vectors kept between restarts (at most the operator's size).
NCV = 32


def largest_eigenpair(matvec: Callable[[np.ndarray], np.ndarray], size: int, dtype: type,
                      tol: float, maxiter: int = 2000, start: np.ndarray | None = None
                      ) -> tuple[float, np.ndarray] | None:
    """λ_max and a unit eigenvector of the Hermitian ``size`` × ``size`` operator ``matvec``
    (ARPACK ``eigsh``, ``which="LA"``, relative tolerance ``tol``, from ``start`` or the ones
    vector), or None: fewer than 3 rows (ARPACK's complex path needs 2 < ncv ≤ n and
    1 < n − 1), no convergence within ``maxiter`` restarts, or a non-finite result."""
    if size < 3:
        return None
    op = LinearOperator((size, size), matvec=lambda x: matvec(np.ravel(x)), dtype=dtype)
    try:
        val, vec = eigsh(op, k=1, which="LA", ncv=min(size, NCV), tol=tol, maxiter=maxiter,
                         v0=np.ones(size, dtype) if start is None else start)
    except (ArpackError, ArpackNoConvergence):
        return None
    if not (val.size and np.isfinite(val[0]) and np.all(np.isfinite(vec))):
        return None
    return float(val[0]), vec[:, 0] / np.linalg.norm(vec[:, 0])


#: Lanczos vectors `lanczos_top` keeps before an explicit restart from its Ritz vector.
BASIS = 96


def lanczos_top(matvec: Callable[[np.ndarray], np.ndarray], size: int, dtype: type, tol: float,
                start: np.ndarray | None = None, basis: int = BASIS, restarts: int = 20
                ) -> tuple[float, np.ndarray] | None:
    r"""λ_max and a unit eigenvector of the Hermitian ``size`` × ``size`` operator ``matvec`` by
    Lanczos with full reorthogonalization, stopped at the first step whose Ritz pair (θ, y)
    has the residual bound ``β_k·|s_k| ≤ tol·|θ|`` (ARPACK's criterion, checked every step
    instead of once per implicit restart); None as `largest_eigenpair` does.

    The basis Q (orthonormal to rounding: every new vector is orthogonalized twice against
    all earlier ones) gives T = Q*MQ tridiagonal, and θ = λ_max(T) is the Rayleigh quotient
    y*My of y = Qs, so θ ≤ λ_max(M) (docs/certificates.md): what a caller refutes from it
    stays valid. When ``basis`` vectors do not suffice, Lanczos restarts from y (at most
    ``restarts`` times). Where matrix–vector products are expensive (the rate search's
    matrix-free gains, `kyp._reduced_top`) this spends fewer of them than ARPACK, which
    tests convergence only after a full restart cycle.
    """
    from scipy.linalg import eigh_tridiagonal

    if size < 3:
        return None
    basis = min(basis, size)
    q: np.ndarray = np.ones(size, dtype) if start is None else np.array(start, dtype=dtype)
    norm = np.linalg.norm(q)
    if not (norm > 0 and np.isfinite(norm)):
        return None
    q = q / norm
    vectors: np.ndarray = np.empty((basis, size), dtype)
    for _ in range(restarts + 1):
        vectors[0] = q
        alphas: list[float] = []
        betas: list[float] = []
        for j in range(basis):
            w: np.ndarray = np.asarray(matvec(vectors[j]), dtype=dtype).ravel()
            if not np.all(np.isfinite(w)):
                return None
            alphas.append(float(np.real(np.vdot(vectors[j], w))))
            kept = vectors[:j + 1]
            for _twice in range(2):
                w = w - kept.T @ (kept.conj() @ w)
            beta = float(np.linalg.norm(w))
            if j == 0:
                theta, s = alphas[0], np.ones(1)
            else:
                vals, vecs = eigh_tridiagonal(np.array(alphas), np.array(betas),
                                              select="i", select_range=(j, j))
                theta, s = float(vals[0]), vecs[:, 0]
            scale = max(abs(theta), 1e-300)
            if beta * abs(s[-1]) <= tol * scale or beta <= 1e-14 * scale or j + 1 == size:
                y = s @ kept
                return theta, y / np.linalg.norm(y)
            if j + 1 < basis:
                betas.append(beta)
                vectors[j + 1] = w / beta
        y = s @ vectors
        q = y / np.linalg.norm(y)
    return None

