"""Small matrix algebra shared by every directly parameterized model.

Everything here works on tensors of any float dtype; callers run it in float64
(see `r2dn_control.nn.base.RecurrentModel.explicit`) because the
certificates are lost to float32 round-off when a contraction nears norm 1
(docs/theory.md §6).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor


def default_eps(dtype: torch.dtype) -> float:
    """Positive-definiteness margin ε for a model stored in ``dtype``.

    ``max(finfo(dtype).eps, 1e-12)``: 1.19e-7 for float32 (the JAX reference
    code's choice) and 1e-12 for float64 (RobustNeuralNetworks.jl's choice).
    """
    return max(torch.finfo(dtype).eps, 1e-12)


def frobenius(x: Tensor, eps: float) -> Tensor:
    r"""Differentiable Frobenius norm $\mathrm{nrm}(X) = (\sum X_{ij}^2 + \epsilon)^{1/2}$."""
    return torch.sqrt(torch.sum(x * x) + eps)


def eye_like(x: Tensor, n: int) -> Tensor:
    """Identity of size ``n`` with ``x``'s dtype and device."""
    return torch.eye(n, dtype=x.dtype, device=x.device)


#: From this many columns on, `transposed_gram` outside autograd forms XᵀX from its block
#: upper triangle (smaller products, the training path and the tests' sizes, stay one matmul;
#: at 1024–2047 columns, the certificates' model at n = 512–1023, 2–4 blocks of 512 were no
#: faster than the one product).
BLOCKED_GRAM_MIN = 2048
#: Columns per block of `transposed_gram`'s blocked form.
GRAM_BLOCK = 512


#: numpy arrays or torch tensors (`fill_symmetric_product` runs on either).
Matrix = TypeVar("Matrix", np.ndarray, Tensor)


def fill_symmetric_product(x: Matrix, y: Matrix, out: Matrix, block: int) -> Matrix:
    r"""``out`` (n × n) ← ``x @ y`` for a product known to be symmetric, from its block upper
    triangle: row block i is ``x[i] @ y[:, i:]`` (one matrix product), the strict lower triangle
    its mirror, the diagonal blocks symmetrized. With k blocks this costs (k + 1)/(2k) of the
    full product; the result is exactly symmetric and differs from ``0.5(P + Pᵀ)`` of the full
    product by rounding. Shared by `transposed_gram` (torch) and the certificates' Riccati
    doubling (`r2dn_control.certify.kyp.symmetric_product`, numpy)."""
    n = out.shape[0]
    for i in range(0, n, block):
        j = min(i + block, n)
        out[i:j, i:] = x[i:j] @ y[:, i:]
        diag = out[i:j, i:j]
        out[i:j, i:j] = 0.5 * (diag + diag.T)
        out[j:, i:j] = out[i:j, j:].T
    return out


def transposed_gram(x: Tensor) -> Tensor:
    r"""$X^\top X$; without a graph to record and from `BLOCKED_GRAM_MIN` columns on, from the
    block upper triangle (`fill_symmetric_product` with blocks of `GRAM_BLOCK` columns):
    (k + 1)/(2k) of the product's flops for k blocks (9/16 for the 4096-wide H of an R2DN with
    2048 states, the certificates' explicit model), exactly symmetric; it differs from the one
    product by rounding."""
    n = x.shape[1]
    if n < BLOCKED_GRAM_MIN or (torch.is_grad_enabled() and x.requires_grad):
        return x.T @ x
    return fill_symmetric_product(x.T, x, x.new_empty((n, n)), GRAM_BLOCK)


def gram(x: Tensor, polar: Tensor | None, eps: float) -> Tensor:
    r"""Positive definite factor $H_X$.

    $$
    H_X = \frac{p^2}{\mathrm{nrm}(X)^2} X^\top X + \epsilon I  \quad\text{(polar)},
    \qquad H_X = X^\top X + \epsilon I \quad\text{(polar is None)}.
    $$
    """
    h = transposed_gram(x)
    if polar is not None:
        h = (polar * polar / (torch.sum(x * x) + eps)) * h
    return h + eps * eye_like(x, x.shape[1])


def cayley(w: Tensor, n: int) -> tuple[Tensor, Tensor]:
    r"""Cayley transform of the stacked ``W = [U; V]`` (``U`` is n×n, ``V`` is m×n).

    With $Z = U - U^\top + V^\top V$ returns
    $\tilde A = (I+Z)^{-1}(I-Z)$ (n×n) and $B = -2 (I+Z)^{-\top} V^\top$ (n×m),
    which satisfy $\tilde A^\top \tilde A + B B^\top = I_n$ (docs/theory.md §1).

    ``I+Z`` and ``I−Z`` are polynomials in ``Z``, so they commute and
    $\tilde A = (I-Z)(I+Z)^{-1}$; with $B^\top = -2V(I+Z)^{-1}$ both factors come
    from one right division, $[\tilde A;\ B^\top] = [I-Z;\ -2V]\,(I+Z)^{-1}$ (one
    LU, one solve, and a single solve in the backward pass). The symmetric part of ``I+Z`` is
    ``I + VᵀV`` ≻ 0, so it is always invertible. Leading batch dimensions are allowed
    (identically shaped layers are transformed together).
    """
    u, v = w[..., :n, :], w[..., n:, :]
    z = u - u.mT + v.mT @ v
    eye = eye_like(w, n)
    out = torch.linalg.solve(eye + z, torch.cat([eye - z, -2.0 * v], dim=-2), left=False)
    return out[..., :n, :], out[..., n:, :].mT


def contraction_size(rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shapes of the ``(X, Y)`` and ``Z`` parameters of `contraction` for an r×c result."""
    d = min(rows, cols)
    return (d, d), (abs(rows - cols), d)


def contraction(x: Tensor, y: Tensor, z: Tensor, rows: int, cols: int, eps: float) -> Tensor:
    r"""Matrix $N \in \mathbb{R}^{r\times c}$ with spectral norm $\|N\| < 1$.

    With $M = X^\top X + Y - Y^\top + Z^\top Z + \epsilon I_d$:
    tall (r ≥ c): $N = [(I-M)(I+M)^{-1};\ -2Z(I+M)^{-1}]$;
    wide: $N = [(I+M)^{-1}(I-M),\ -2(I+M)^{-1}Z^\top]$.
    Then $I - N^\top N = 4(I+M)^{-\top}(X^\top X+\epsilon I)(I+M)^{-1} \succ 0$ (tall case).
    """
    d = min(rows, cols)
    eye = eye_like(x, d)
    m = x.T @ x + y - y.T + z.T @ z + eps * eye
    if rows >= cols:
        # (I - M)(I + M)^{-1} and Z (I + M)^{-1}: right division = solve with the transpose.
        stacked = torch.cat([eye - m, -2.0 * z], dim=0)
        return torch.linalg.solve(eye + m, stacked, left=False)
    stacked = torch.cat([eye - m, -2.0 * z.T], dim=1)
    return torch.linalg.solve(eye + m, stacked)


def zero_contraction_params(d: int, eps: float, dtype: torch.dtype) -> Tensor:
    r"""The ``X`` of `contraction` that gives ``N = 0`` exactly (``M = I``) when Y = Z = 0."""
    return math.sqrt(1.0 - eps) * torch.eye(d, dtype=dtype)


def lecun_normal_(t: Tensor, fan_in: int | None = None) -> Tensor:
    """Fill ``t`` from N(0, 1/fan_in); fan_in defaults to the number of columns."""
    fan = t.shape[-1] if fan_in is None else fan_in
    with torch.no_grad():
        return t.normal_(0.0, 1.0 / math.sqrt(max(fan, 1)))


@contextlib.contextmanager
def full_precision_matmul(device: torch.device | str | None = None) -> Iterator[None]:
    """Disable TF32 / reduced-precision float32 matmuls inside the block, then restore.

    The direct-to-explicit map runs in float64 (unaffected by TF32), but any float32 matmul in
    it would lose ~10 bits on Ampere+ GPUs with TF32 on, and the certificate with them.

    torch's switches are process-wide, not thread-local, so the block writes them only when one
    is not already at full precision: the float32 matmul precision (CPU backends may use bf16
    below "highest"), and on a CUDA ``device`` (or ``None``: unknown) the TF32 flags too. In
    the default configuration on the CPU it changes nothing.
    """
    precision = torch.get_float32_matmul_precision()
    cuda = device is None or torch.device(device).type == "cuda"
    if not cuda and precision == "highest":  # the CPU default: read nothing more, write nothing
        yield
        return
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    if precision == "highest" and not (cuda and (cuda_tf32 or cudnn_tf32)):
        yield
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(precision)


def cast_is_noop(t: Tensor, dtype: torch.dtype | None,
                 device: torch.device | str | None = None) -> bool:
    """Whether ``t.to(dtype=dtype, device=device)`` would return ``t`` itself."""
    return ((dtype is None or t.dtype == dtype)
            and (device is None or t.device == torch.device(device)))
