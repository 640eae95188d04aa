"""An unconstrained model with exactly the R2DN's explicit structure (diagnosis control).

``x⁺ = A x + B₁ w + B₂ u + bₓ, v = C₁ x + D₁₂ u + b_v, w = MLP(v), y = C₂ x + D₂₁ w + D₂₂ u + b_y``
with free matrices and a plain relu MLP, run by the same `rollout` (fused C++ path) as the
R2DN. No stability guarantee: it tells whether the structure and the training loop can fit a
benchmark when the contraction parameterisation is taken away (docs/results.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from r2dn_control.nn.activations import get_activation
from r2dn_control.nn.explicit import ExplicitModel, rollout
from r2dn_control.nn.lbdn import ExplicitMLP


def _normal(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class FreeR2DN(nn.Module):
    """Free-parameter R2DN structure; ``A`` starts diagonal near ``rate``, ``B₁`` small."""

    def __init__(self, nu: int, nx: int, nv: int, ny: int, hidden: tuple[int, ...] = (32, 32),
                 rate: float = 0.99, activation: str = "relu", b1_std: float = 0.02) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = nu, nx, ny
        self.A = nn.Parameter(torch.diag(rate * (1 - 0.05 * torch.rand(nx))))
        self.B1 = _normal(nx, nv, std=b1_std / math.sqrt(nv))
        self.B2, self.C1 = _normal(nx, nu, std=1 / math.sqrt(nu)), _normal(nv, nx, std=1 / math.sqrt(nx))
        self.C2, self.D12 = _normal(ny, nx, std=1 / math.sqrt(nx)), _normal(nv, nu, std=1 / math.sqrt(nu))
        self.D21 = _normal(ny, nv, std=1 / math.sqrt(nv))
        self.D22 = nn.Parameter(torch.zeros(ny, nu))
        self.bx, self.bv, self.by = (nn.Parameter(torch.zeros(n)) for n in (nx, nv, ny))
        widths = (nv, *hidden, nv)
        self.W = nn.ParameterList([_normal(widths[k], widths[k + 1], std=1 / math.sqrt(widths[k]))
                                   for k in range(len(widths) - 1)])
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(widths[k + 1]))
                                   for k in range(len(widths) - 1)])
        self.act = activation

    def explicit(self) -> ExplicitModel:
        """The model's explicit form (what `rollout` simulates)."""
        net = ExplicitMLP(tuple(self.W), tuple(self.b), get_activation(self.act), self.act)
        return ExplicitModel(A=self.A, B1=self.B1, B2=self.B2, C1=self.C1, C2=self.C2,
                             D12=self.D12, D21=self.D21, D22=self.D22, bx=self.bx, bv=self.bv,
                             by=self.by, network=net)

    def forward(self, u: Tensor, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batched = u.dim() == 3
        ub = u if batched else u[None]
        if x0 is None:
            x = ub.new_zeros(ub.shape[0], self.state_size)
        else:
            x = x0 if batched else x0[None]
        y, x_t = rollout(self.explicit(), ub, x)
        return (y, x_t) if batched else (y[0], x_t[0])
