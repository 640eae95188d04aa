r"""The LBDN's whole direct-to-explicit weight map as one ``torch.autograd.Function``.

`LBDN.explicit` folds every sandwich layer's scalings into one right-multiplied weight per
layer (docs/theory.md §1). Per layer ``(W = [U; V], a, d)``:

$$
\bar W = \frac{a}{\mathrm{nrm}(W)} W,\quad Z = \bar U - \bar U^\top + \bar V^\top \bar V,\quad
\begin{bmatrix}\tilde A \\ B^\top\end{bmatrix} = \begin{bmatrix} I - Z \\ -2\bar V\end{bmatrix}
(I + Z)^{-1},
$$

``pre = √2 Bᵀ Ψ⁻¹``, ``post = √2 Ψ Ãᵀ`` with ``Ψ = diag(exp(clip(d, ±20)))`` (a linear
output layer: ``pre = Bᵀ``, no ``post``), and the explicit weights are
``W₀ = √γ pre₀``, ``W_k = post_{k−1} pre_k``, the last one (or the sandwich output layer's
``post``) times ``√γ``.

Composed from torch ops this map is ~100 tiny ops forward and ~1,000 autograd nodes backward at
the paper's sizes, and the per-op cost dominates. Here the forward runs the same algebra with
autograd off, group-wise over identically shaped layers (one stacked normalisation, one
batched inverse of ``I + Z`` and one ``bmm`` per group), and the backward is written by hand
(``I + Z`` is inverted explicitly: its symmetric part is ``I + V̄ᵀV̄ ⪰ I``, so
``‖(I+Z)⁻¹‖ ≤ 1`` and the inverse is as accurate as a solve, and the backward reuses it):

* ``O = R M⁻¹`` with ``R = [I − Z; −2V̄]``, ``M = I + Z``: ``ḡ_R = G M⁻ᵀ``,
  ``ḡ_M = −Oᵀ ḡ_R``, so ``ḡ_Z = ḡ_M − ḡ_R[:n]``;
* ``Z = Ū − Ūᵀ + V̄ᵀV̄``: ``ḡ_Ū = ḡ_Z − ḡ_Zᵀ``, ``ḡ_V̄ = −2ḡ_R[n:] + V̄(ḡ_Z + ḡ_Zᵀ)``;
* ``W̄ = sW``, ``s = a/nrm(W)``: ``ḡ_W = s(ḡ_W̄ − ⟨ḡ_W̄, W⟩ W / nrm²)``,
  ``ḡ_a = ⟨ḡ_W̄, W⟩ / nrm``;
* ``ψ = exp(clip(d))``: ``ḡ_d = ψ ḡ_ψ`` inside the clip range, 0 outside.

The composed implementation (`LBDN.explicit` with ``fused=False``) stays the reference; the
tests check values and gradients against it and against finite differences in float64.
Only first derivatives are provided (no double backward, no forward-mode AD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Group:
    """Identically shaped layers (``members``: layer indices) with ``out_features`` n and
    ``in_features`` m; ``linear`` for the linear output layer (no ``d``)."""

    members: tuple[int, ...]
    n: int
    m: int
    linear: bool


@dataclass(frozen=True)
class Plan:
    """The static structure of one LBDN: its layer groups and how the parameters are packed.

    ``params`` passed to `ExplicitWeights` are, per layer in order, ``weight, scale`` and
    (hidden layers) ``log_psi``. ``sandwich_output``: the last layer is a hidden sandwich
    layer whose ``post`` becomes an extra final weight. ``eps`` is the norm's margin,
    ``log_scale_clip`` the clip of ``d``.
    """

    groups: tuple[Group, ...]
    layers: int
    sandwich_output: bool
    eps: float
    log_scale_clip: float

    def offsets(self) -> list[int]:
        """Index in ``params`` of every layer's ``weight``."""
        linear_last = not self.sandwich_output
        out, at = [], 0
        for k in range(self.layers):
            out.append(at)
            at += 2 if (linear_last and k == self.layers - 1) else 3
        return out


def _locate(plan: Plan) -> dict[int, tuple[int, int]]:
    """Layer index → (group index, position in the group)."""
    return {k: (g, i) for g, group in enumerate(plan.groups) for i, k in enumerate(group.members)}


def _gather(stacks: list[Tensor], where: dict[int, tuple[int, int]], layers: list[int]) -> Tensor:
    """The stacked factors of ``layers``: a slice of one group's stack when they are
    consecutive members of one group, else a new stack."""
    g0, i0 = where[layers[0]]
    if all(where[k] == (g0, i0 + j) for j, k in enumerate(layers)):
        return stacks[g0][i0:i0 + len(layers)]
    return torch.stack([stacks[where[k][0]][where[k][1]] for k in layers])


def _product_groups(plan: Plan, pre_shape: dict[int, tuple[int, int]],
                    post_shape: dict[int, tuple[int, int]]) -> list[list[int]]:
    """Layers k ≥ 1 whose products ``post_{k−1} pre_k`` have equal shapes, grouped."""
    groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
    for k in range(1, plan.layers):
        groups.setdefault((post_shape[k - 1], pre_shape[k]), []).append(k)
    return list(groups.values())


class ExplicitWeights(torch.autograd.Function):
    """``(plan, dtype, log_gamma, *params) → explicit weights`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, plan: Plan, dtype: torch.dtype, log_gamma: Tensor,
                *params: Tensor) -> tuple[Tensor, ...]:
        offsets = plan.offsets()
        root_gamma = torch.exp(0.5 * log_gamma.to(dtype))
        saved: list[tuple[Tensor, ...]] = []
        pres: list[Tensor] = []
        posts: list[Tensor] = []
        for group in plan.groups:
            n = group.n
            w = torch.stack([params[offsets[k]] for k in group.members]).to(dtype)
            a = torch.stack([params[offsets[k] + 1] for k in group.members]).to(dtype)
            sq = torch.sum(w * w, dim=(-2, -1)) + plan.eps
            nrm = torch.sqrt(sq)
            s = a / nrm
            wb = s[:, None, None] * w
            u, v = wb[:, :n], wb[:, n:]
            eye = torch.eye(n, dtype=dtype, device=w.device)
            m_inv = torch.linalg.inv_ex(torch.baddbmm(u - u.mT + eye, v.mT, v))[0]
            # (I − Z)(I + Z)⁻¹ = 2(I + Z)⁻¹ − I, so Ã = 2M⁻¹ − I and Bᵀ = −2V̄M⁻¹.
            out = torch.cat([2.0 * m_inv - eye, torch.bmm(v, m_inv).mul_(-2.0)], dim=1)
            if group.linear:
                pres.append(out[:, n:])
                posts.append(out.new_empty(0))
                saved.append((w, sq, nrm, s, v, m_inv, out, None, None))
                continue
            d = torch.stack([params[offsets[k] + 2] for k in group.members]).to(dtype)
            psi = torch.exp(torch.clamp(d, -plan.log_scale_clip, plan.log_scale_clip))
            pre = out[:, n:] * (_SQRT2 / psi)[:, None, :]
            post = (_SQRT2 * psi)[:, :, None] * out[:, :n].mT
            pres.append(pre)
            posts.append(post)
            saved.append((w, sq, nrm, s, v, m_inv, out, d, psi))
        where = _locate(plan)
        pre_shape = {k: tuple(pres[g].shape[1:]) for k, (g, _) in where.items()}
        post_shape = {k: tuple(posts[g].shape[1:]) for k, (g, _) in where.items()}
        products = _product_groups(plan, pre_shape, post_shape)
        weights: list[Tensor | None] = [None] * plan.layers
        g0, i0 = where[0]
        weights[0] = root_gamma * pres[g0][i0]
        for members in products:
            left = _gather(posts, where, [k - 1 for k in members])
            right = _gather(pres, where, members)
            for k, weight in zip(members, torch.bmm(left, right).unbind(0)):
                weights[k] = weight
        last = plan.layers - 1
        unscaled_last = weights[last]
        if plan.sandwich_output:
            g, i = where[last]
            extra = [posts[g][i] * root_gamma]
        else:
            extra = []
            weights[last] = unscaled_last * root_gamma  # type: ignore[operator]
        ctx.plan, ctx.dtype = plan, dtype
        ctx.param_dtypes = [p.dtype for p in params]
        ctx.log_gamma_dtype = log_gamma.dtype
        ctx.saved = saved
        ctx.pres, ctx.posts, ctx.products = pres, posts, products
        ctx.root_gamma, ctx.unscaled_last = root_gamma, unscaled_last
        return (*weights, *extra)  # type: ignore[return-value]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        plan: Plan = ctx.plan
        pres, posts, root_gamma = ctx.pres, ctx.posts, ctx.root_gamma
        where = _locate(plan)
        last = plan.layers - 1
        grads = tuple(g.to(ctx.dtype) for g in grads)
        g_weights = list(grads[:plan.layers])
        # Every layer's pre gets exactly one gradient term (from W_k) and every hidden
        # layer's post one (from W_{k+1} or the extra output weight): no accumulation.
        g_pre: dict[int, Tensor] = {}
        g_post: dict[int, Tensor] = {}
        # Undo the √γ of the last weight (linear output) or of the extra one (sandwich output).
        if plan.sandwich_output:
            g_extra = grads[plan.layers]
            g, i = where[last]
            g_root = torch.sum(g_extra * posts[g][i])
            g_post[last] = root_gamma * g_extra
        else:
            g_root = torch.sum(g_weights[last] * ctx.unscaled_last)
            g_weights[last] = g_weights[last] * root_gamma
        g, i = where[0]
        g_root = g_root + torch.sum(g_weights[0] * pres[g][i])
        g_pre[0] = root_gamma * g_weights[0]
        for members in ctx.products:
            left = _gather(posts, where, [k - 1 for k in members])
            right = _gather(pres, where, members)
            gw = torch.stack([g_weights[k] for k in members])
            g_post.update(zip([k - 1 for k in members], torch.bmm(gw, right.mT).unbind(0)))
            g_pre.update(zip(members, torch.bmm(left.mT, gw).unbind(0)))
        offsets = plan.offsets()
        out_grads: list[Tensor | None] = [None] * len(ctx.param_dtypes)
        for gi, group in enumerate(plan.groups):
            n = group.n
            w, sq, nrm, s, v, m_inv, out, d, psi = ctx.saved[gi]
            gp = torch.stack([g_pre[k] for k in group.members])
            if group.linear:
                g_out = torch.cat([torch.zeros_like(out[:, :n]), gp], dim=1)
            else:
                gq = torch.stack([g_post[k] for k in group.members])
                g_psi = (torch.sum(gq * posts[gi], dim=2) - torch.sum(gp * pres[gi], dim=1)) / psi
                g_d = torch.where(d.abs() <= plan.log_scale_clip, g_psi * psi,
                                  torch.zeros_like(psi))
                g_out = torch.cat([(_SQRT2 * psi)[:, None, :] * gq.mT,
                                   gp * (_SQRT2 / psi)[:, None, :]], dim=1)
                for i, k in enumerate(group.members):
                    out_grads[offsets[k] + 2] = g_d[i]
            # O = R M⁻¹: ḡ_R = G M⁻ᵀ, ḡ_Z = −Oᵀḡ_R − ḡ_R[:n] (from M = I + Z and R's I − Z).
            g_r = torch.bmm(g_out, m_inv.mT)
            g_z = torch.baddbmm(g_r[:, :n], out.mT, g_r).neg_()
            g_wb = torch.cat([g_z - g_z.mT, torch.baddbmm(g_r[:, n:], v, g_z + g_z.mT,
                                                          beta=-2.0)], dim=1)
            inner = torch.sum(g_wb * w, dim=(-2, -1))
            g_a = inner / nrm
            g_w = s[:, None, None] * (g_wb - (inner / sq)[:, None, None] * w)
            for i, k in enumerate(group.members):
                out_grads[offsets[k]] = g_w[i]
                out_grads[offsets[k] + 1] = g_a[i]
        needs = ctx.needs_input_grad
        params_grads = tuple(
            None if (g is None or not needs[3 + j]) else g.to(ctx.param_dtypes[j])
            for j, g in enumerate(out_grads))
        g_log_gamma = (0.5 * root_gamma * g_root).to(ctx.log_gamma_dtype) if needs[2] else None
        return (None, None, g_log_gamma, *params_grads)
