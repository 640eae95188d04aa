r"""A model in feedback with a discrete LTI plant, as one system to certify.

A contracting controller alone does not make a stable closed loop. With the plant
``x_p⁺ = A_p x_p + B_p u_p, y_p = C_p x_p + D_p u_p`` and the model (input u, output y),
the interconnection is

$$
u = y_p + r,\qquad u_p = y + d,
$$

with external inputs (r, d) and outputs (y, y_p). Solving the loop for u (needs
``I − D_p D₂₂`` invertible), ``u = K(C_p x_p + D_p C₂ x + D_p D₂₁ w + D_p d + r)`` with
``K = (I − D_pD₂₂)⁻¹``; the closed loop is again "LTI in feedback with φ" on the state
(x, x_p), with ``D₁₁ = D₁₁ + D₁₂KD_pD₂₁`` (an algebraic path through φ when D_p ≠ 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .cascade import Cascade, plant_split
from .lmi import StateSpaceBlocks
from .target import Target, as_target


class ClosedLoop:
    """``model`` (R2DN/REN/ExplicitModel/Target) in feedback with a discrete ``plant``.

    Parameters
    ----------
    model : object accepted by `certify.target.as_target`
    plant : control.StateSpace
        Discrete-time, with as many inputs as the model has outputs and as many outputs as the
        model has inputs.
    """

    def __init__(self, model: object, plant) -> None:
        import control

        if not isinstance(plant, control.StateSpace) or not control.isdtime(plant, strict=True):
            raise TypeError(f"plant must be a discrete-time control.StateSpace, got {plant!r}")
        self.model = as_target(model)
        nu, _, _, ny = self.model.sizes
        if plant.ninputs != ny or plant.noutputs != nu:
            raise ValueError(
                f"plant must have {ny} inputs (model outputs) and {nu} outputs (model inputs), "
                f"got {plant.ninputs} inputs and {plant.noutputs} outputs"
            )
        self.plant = plant

    def blocks(self) -> StateSpaceBlocks:
        """Closed-loop blocks on state (x, x_p), input (r, d), output (y, y_p)."""
        m = self.model.blocks
        ap, bp, cp_, dp = (np.asarray(a, dtype=np.float64)
                           for a in (self.plant.A, self.plant.B, self.plant.C, self.plant.D))
        nu, nx, nv, ny = m.sizes
        npx = ap.shape[0]
        loop = np.eye(nu) - dp @ m.D22
        if np.linalg.cond(loop) > 1e12:
            raise ValueError("the loop is ill-posed: I - D_plant @ D22 is singular")
        k = np.linalg.inv(loop)
        # Each signal as a row block over the stacked vector (x, x_p, w, r, d).
        z = lambda r, c: np.zeros((r, c))  # noqa: E731
        u_row = np.hstack([k @ dp @ m.C2, k @ cp_, k @ dp @ m.D21, k, k @ dp])
        y_row = np.hstack([m.C2, z(ny, npx), m.D21, z(ny, nu), z(ny, ny)]) + m.D22 @ u_row
        up_row = y_row + np.hstack([z(ny, nx + npx + nv + nu), np.eye(ny)])
        x_row = np.hstack([m.A, z(nx, npx), m.B1, z(nx, nu + ny)]) + m.B2 @ u_row
        xp_row = np.hstack([z(npx, nx), ap, z(npx, nv + nu + ny)]) + bp @ up_row
        v_row = np.hstack([m.C1, z(nv, npx), m.D11, z(nv, nu + ny)]) + m.D12 @ u_row
        yp_row = np.hstack([z(nu, nx), cp_, z(nu, nv + nu + ny)]) + dp @ up_row
        s, w, e = slice(0, nx + npx), slice(nx + npx, nx + npx + nv), slice(nx + npx + nv, None)
        state, out = np.vstack([x_row, xp_row]), np.vstack([y_row, yp_row])
        return StateSpaceBlocks(state[:, s], state[:, w], state[:, e], v_row[:, s], out[:, s],
                                v_row[:, w], v_row[:, e], out[:, w], out[:, e])

    def to_target(self) -> Target:
        """The closed loop as a `Target` (with a simulator when D_p = 0, and its `cascade`
        structure when the plant's input-to-output transfer is zero)."""
        blocks = self.blocks()
        kind = self.model.nonlinearity
        sim = None
        if self.model.simulate is not None and not np.any(np.asarray(self.plant.D)):
            sim = self._simulator()
        return Target(blocks, kind, name=f"ClosedLoop({self.model.name})", simulate=sim,
                      cascade=self.cascade())

    def cascade(self) -> Cascade | None:
        """The loop as a cascade upstream → model → downstream (`certify.cascade`), or None.

        It is one when the plant's transfer from u_p to y_p is zero (D_p = 0, C_pA_p^kB_p = 0
        to `cascade.STRUCTURE_RTOL`, e.g. the nominal Youla system ũ → ỹ): the model's
        state is kept, the plant's is split into its unobservable part (downstream) and the
        orthogonal complement (upstream, autonomous).
        """
        split = plant_split(self.plant.A, self.plant.B, self.plant.C, self.plant.D)
        if split is None:
            return None
        u1, u3, transfer = split
        nx = self.model.sizes[1]
        t = np.zeros((nx + u1.shape[0],) * 2)
        t[:nx, :nx] = np.eye(nx)
        t[nx:, nx:] = np.vstack([u1.T, u3.T])
        return Cascade(t, nx, u1.shape[1], self.model, transfer)

    def _simulator(self):
        ap, bp, cp_ = (torch.as_tensor(np.asarray(a, dtype=np.float64))
                       for a in (self.plant.A, self.plant.B, self.plant.C))
        nu, nx, _, ny = self.model.sizes
        model_sim = self.model.simulate

        def simulate(e: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
            # Strictly proper plant: y_p depends on x_p only, so the loop steps explicitly.
            x, xp = x0[:, :nx], x0[:, nx:]
            r, d = e[..., :nu], e[..., nu:]
            ys, states = [], [x0]
            for t in range(e.shape[1]):
                yp = xp @ cp_.T
                u = yp + r[:, t]
                y, xs = model_sim(u[:, None], x)
                y = y[:, 0]
                x = xs[:, 1]
                xp = xp @ ap.T + (y + d[:, t]) @ bp.T
                ys.append(torch.cat([y, yp], -1))
                states.append(torch.cat([x, xp], -1))
            return torch.stack(ys, 1), torch.stack(states, 1)

        return simulate
