r"""Fused REN rollout: the whole time loop in C++ with a hand-written adjoint through time.

The forward runs ``x_{t+1} = A x_t + B₁ w_t + dx_t`` with ``w_t = σ(C₁x_t + D₁₁w_t + dv_t)``
(the equilibrium solved row by row) for all steps inside one C++ call, parallel over batch
blocks. The backward runs the sequential adjoint chain in one C++ call (one triangular adjoint
solve per step) and then forms every matrix gradient as one matmul over all (time × batch)
samples. Equations: ``fused_ren.md`` beside this file. ``tests/test_cpp_kernels.py`` holds it
equal to the pure-torch reference loop (autograd) to 1e-10 in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import cpp
from .activations import ACTIVATIONS, activation_name
from .equilibrium import EquilibriumLayer

__all__ = ["activation_name", "can_fuse", "fused_ren_rollout"]


def can_fuse(network: object, *tensors: Tensor) -> bool:
    """Whether `fused_ren_rollout` applies: an implicit-backward equilibrium layer with a
    known activation, CPU float32/float64 tensors, and the C++ kernels loaded."""
    return (isinstance(network, EquilibriumLayer) and network.implicit_backward
            and activation_name(network.activation) is not None
            and cpp.usable(network.D11, *tensors))


class _FusedRENRollout(torch.autograd.Function):
    """Inputs: x0 (B,nx), drive_x (T,B,nx), drive_v (T,B,nv), A, B1, C1, D11, activation name.

    Outputs: states x_0..x_{T-1} (T,B,nx), features w_0..w_{T-1} (T,B,nv), x_T (B,nx).
    """

    @staticmethod
    def forward(ctx: Any, x0: Tensor, drive_x: Tensor, drive_v: Tensor, A: Tensor, B1: Tensor,
                C1: Tensor, D11: Tensor, activation: str) -> tuple[Tensor, Tensor, Tensor]:
        xs, ws, x_final = cpp.ops().ren_forward(x0, drive_x, drive_v, A, B1, C1, D11, activation)
        ctx.activation = activation
        ctx.save_for_backward(xs, ws, A, B1, C1, D11)
        return xs, ws, x_final

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_xs: Tensor | None, g_ws: Tensor | None, g_final: Tensor | None):
        xs, ws, A, B1, C1, D11 = ctx.saved_tensors
        g_xs = torch.zeros_like(xs) if g_xs is None else g_xs.contiguous()
        g_ws = torch.zeros_like(ws) if g_ws is None else g_ws.contiguous()
        g_final = xs.new_zeros(xs.shape[1:]) if g_final is None else g_final.contiguous()
        lam_next, g_v, lam0 = cpp.ops().ren_adjoint(g_xs, g_ws, g_final, ws, A, B1, C1, D11,
                                                    ctx.activation)
        need = ctx.needs_input_grad

        def flat(x: Tensor) -> Tensor:
            return x.reshape(-1, x.shape[-1])

        # Each matrix gradient is one matmul over all T·B samples (fused_ren.md, "Gradients").
        g_a = flat(lam_next).t() @ flat(xs) if need[3] else None
        g_b1 = flat(lam_next).t() @ flat(ws) if need[4] else None
        g_c1 = flat(g_v).t() @ flat(xs) if need[5] else None
        g_d11 = torch.tril(flat(g_v).t() @ flat(ws), -1) if need[6] else None
        return lam0, lam_next, g_v, g_a, g_b1, g_c1, g_d11, None


def fused_ren_rollout(network: EquilibriumLayer, x0: Tensor, drive_x: Tensor, drive_v: Tensor,
                      A: Tensor, B1: Tensor, C1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Run the recurrent part of a REN in the C++ kernel (check `can_fuse` first).

    Parameters
    ----------
    network : EquilibriumLayer
        Its ``D11`` (strict lower triangle) and activation are used.
    x0 : Tensor (B, nx)
    drive_x, drive_v : Tensor (T, B, nx), (T, B, nv)
        Precomputed input terms ``B₂u_t + b_x`` and ``D₁₂u_t + b_v`` (time-major).
    A, B1, C1 : Tensor

    Returns
    -------
    xs : Tensor (T, B, nx)
        States x₀ … x_{T−1}.
    ws : Tensor (T, B, nv)
        Equilibrium outputs w₀ … w_{T−1}.
    x_T : Tensor (B, nx)
    """
    name = activation_name(network.activation)
    if name is None:
        raise ValueError("the fused REN rollout needs an activation from "
                         f"{sorted(ACTIVATIONS)}, got {network.activation!r}")
    return _FusedRENRollout.apply(x0, drive_x.contiguous(), drive_v.contiguous(), A, B1, C1,
                                  network.D11, name)
