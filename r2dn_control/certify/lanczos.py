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
