r"""The REN equilibrium layer ``w = σ(D₁₁ w + b)`` for a strictly lower-triangular ``D₁₁``.

Math contract: ``equilibrium.md`` beside this file.

Forward (exact, nv sequential steps vectorised over the batch; row ``i`` only needs
``w_1 … w_{i−1}`` because ``D₁₁`` is strictly lower triangular):

$$
w_i = \sigma\Big(b_i + \sum_{j<i} (D_{11})_{ij} w_j\Big), \qquad i = 1, \dots, n_v.
$$

Backward by the implicit function theorem, per sample, with ``J = diag(σ'(v))``,
``v = D₁₁w + b`` and the incoming gradient ``g = ∂L/∂w``:

$$
(I - J D_{11})^\top \mu = g, \qquad
\frac{\partial L}{\partial b} = J\mu, \qquad
\frac{\partial L}{\partial D_{11}}
    = \mathrm{tril}\Big(\sum_{\text{batch}} J\mu\, w^\top, -1\Big).
$$

``(I − JD₁₁)ᵀ`` is unit upper triangular, so the adjoint is one batched triangular solve per
call, instead of autograd storing and replaying the nv-step loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from . import cpp
from .activations import Activation, activation_name


def solve_equilibrium(D11: Tensor, b: Tensor, activation: Activation) -> Tensor:
    r"""The exact solution of ``w = σ(D₁₁w + b)`` for row batches ``b`` of shape (batch, nv).

    Only the strictly lower triangle of ``D11`` is read. Runs nv steps; each step is one
    matrix-vector product over the whole batch. Differentiable by plain autograd (the
    reference path the implicit backward is tested against).
    """
    nv = D11.shape[0]
    columns: list[Tensor] = []
    # Each new column depends on the previous ones only: w_i = σ(b_i + w_{<i} · D11[i, <i]).
    for i in range(nv):
        if i == 0:
            v_i = b[:, 0]
        else:
            v_i = torch.addmv(b[:, i], torch.stack(columns, dim=1), D11[i, :i])
        columns.append(activation(v_i))
    return torch.stack(columns, dim=1)


def _kernel_activation(activation: Activation, *tensors: Tensor) -> str | None:
    """The activation's name when the C++ kernels apply to ``tensors`` (CPU, float32/64)."""
    name = activation_name(activation)
    return name if name is not None and cpp.usable(*tensors) else None


def _solve_inplace(D11: Tensor, b: Tensor, activation: Activation) -> Tensor:
    """`solve_equilibrium` without autograd: the C++ kernel where it applies, else one
    preallocated buffer filled column by column."""
    name = _kernel_activation(activation, b, D11)
    if name is not None:
        return cpp.ops().equilibrium_forward(D11, b, name)
    w = torch.empty_like(b)
    for i in range(D11.shape[0]):
        w[:, i] = activation(torch.addmv(b[:, i], w[:, :i], D11[i, :i]))
    return w


def activation_slope(activation: Activation, v: Tensor) -> Tensor:
    """Elementwise derivative σ'(v), by autograd on a detached copy (any elementwise σ)."""
    with torch.enable_grad():
        leaf = v.detach().requires_grad_(True)
        out = activation(leaf)
        if out is leaf:  # the identity returns its input: slope 1 everywhere
            return torch.ones_like(v)
        (slope,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
    return slope


class _Equilibrium(torch.autograd.Function):
    """``w = σ(D₁₁w + b)`` with the implicit-function-theorem backward (see module docstring)."""

    @staticmethod
    def forward(ctx: FunctionCtx, b: Tensor, D11: Tensor, activation: Activation) -> Tensor:
        w = _solve_inplace(D11, b, activation)
        ctx.save_for_backward(b, D11, w)
        ctx.activation = activation  # type: ignore[attr-defined]
        return w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        b, D11, w = ctx.saved_tensors
        lower = torch.tril(D11, -1)
        name = _kernel_activation(ctx.activation, w, D11, grad_w)
        if name is not None:  # the same adjoint solve, in C++ (σ' from the output w)
            grad_b = cpp.ops().equilibrium_adjoint(D11, w, grad_w.contiguous(), name)
            grad_d11 = torch.tril(grad_b.T @ w, -1) if ctx.needs_input_grad[1] else None
            return (grad_b if ctx.needs_input_grad[0] else None), grad_d11, None
        # v is recomputed here (one matmul) so the forward stores nothing beyond w.
        slope = activation_slope(ctx.activation, torch.addmm(b, w, lower.T))  # (batch, nv)
        # Per sample: (I − J D11)ᵀ = I − D11ᵀ J, unit upper triangular. With
        # unitriangular=True the solver never reads the diagonal, so only the strict upper
        # part −D11ᵀJ is formed (no identity, no extra pass over the B×nv×nv tensor).
        system = (-lower.T).unsqueeze(0) * slope.unsqueeze(1)
        mu = torch.linalg.solve_triangular(system, grad_w.unsqueeze(-1), upper=True,
                                           unitriangular=True).squeeze(-1)
        grad_b = slope * mu
        grad_d11 = None
        if ctx.needs_input_grad[1]:
            grad_d11 = torch.tril(grad_b.T @ w, -1)
        return (grad_b if ctx.needs_input_grad[0] else None), grad_d11, None


@dataclass(frozen=True)
class EquilibriumLayer:
    """The explicit nonlinearity of a REN: ``b ↦ w`` with ``w = σ(D₁₁w + b)``.

    Satisfies the `Network` protocol.

    Attributes
    ----------
    D11 : Tensor
        Strictly lower-triangular nv×nv matrix (only its strict lower triangle is read).
    activation : callable
        Elementwise activation with slope in [0, 1] (one of
        `ACTIVATIONS`).
    implicit_backward : bool
        Differentiate by the implicit function theorem (default) or, if False, by plain
        autograd through the nv-step loop (the reference path).
    """

    D11: Tensor
    activation: Activation
    implicit_backward: bool = True

    def __post_init__(self) -> None:
        if self.D11.dim() != 2 or self.D11.shape[0] != self.D11.shape[1]:
            raise ValueError(f"D11 must be a square matrix, got shape {tuple(self.D11.shape)}")

    @property
    def features(self) -> int:
        """nv, the width of the layer."""
        return self.D11.shape[0]

    def __call__(self, b: Tensor) -> Tensor:
        """Solve for ``w`` given ``b`` of shape (..., nv); returns the same shape."""
        nv = self.features
        if b.shape[-1] != nv:
            raise ValueError(
                f"equilibrium layer expected input with last dimension {nv}, got shape "
                f"{tuple(b.shape)}"
            )
        if b.dtype != self.D11.dtype or b.device != self.D11.device:
            raise TypeError(
                f"input has dtype {b.dtype} on {b.device} but D11 has dtype {self.D11.dtype} "
                f"on {self.D11.device}"
            )
        rows = b if b.dim() == 2 else b.reshape(-1, nv)
        needs_grad = torch.is_grad_enabled() and (rows.requires_grad or self.D11.requires_grad)
        if not needs_grad:
            w = _solve_inplace(self.D11, rows, self.activation)
        elif self.implicit_backward:
            w = _Equilibrium.apply(rows, self.D11, self.activation)
        else:
            w = solve_equilibrium(self.D11, rows, self.activation)
        return w if b.dim() == 2 else w.reshape(b.shape)

    def residual(self, b: Tensor, w: Tensor) -> Tensor:
        """``w − σ(D₁₁w + b)`` with the strictly lower triangle of D₁₁ (zero at the solution)."""
        return w - self.activation(b + w @ torch.tril(self.D11, -1).T)

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> EquilibriumLayer:
        """Cast/move ``D11``."""
        return EquilibriumLayer(self.D11.to(dtype=dtype, device=device), self.activation,
                                self.implicit_backward)
