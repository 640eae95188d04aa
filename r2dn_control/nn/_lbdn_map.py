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

Composed from torch ops this map is ~150 tiny ops forward and as many autograd nodes
backward at the paper's sizes, and the per-op cost dominates. Here every layer is embedded in
one common size S = the widest layer (``U ↦ blkdiag(U, 0)``, ``V ↦ [[V, 0], [0, 0]]``,
``d ↦ (d, 0)``: then ``Z ↦ blkdiag(Z, 0)``, ``(I+Z)⁻¹ ↦ blkdiag((I+Z)⁻¹, I)`` and the real blocks
of every result are exact), all parameters are gathered into the padded batch by one index
(and the results read out by another), and the algebra runs once for all layers with autograd
off: one normalisation, one batched inverse of ``I + Z``, one ``bmm`` for all products
``post_{k−1} pre_k``. The backward is written by hand (``I + Z`` is inverted explicitly: its
symmetric part is ``I + V̄ᵀV̄ ⪰ I``, so ``‖(I+Z)⁻¹‖ ≤ 1`` and the inverse is as accurate as a
solve, and the backward reuses it), with
``Ã = 2(I+Z)⁻¹ − I`` (``I − Z = 2I − (I + Z)``):

* ``O = R M⁻¹`` with ``R = [I − Z; −2V̄]``, ``M = I + Z``: ``ḡ_R = G M⁻ᵀ``,
  ``ḡ_M = −Oᵀ ḡ_R``, so ``ḡ_Z = ḡ_M − ḡ_R[:n]``;
* ``Z = Ū − Ūᵀ + V̄ᵀV̄``: ``ḡ_Ū = ḡ_Z − ḡ_Zᵀ``, ``ḡ_V̄ = −2ḡ_R[n:] + V̄(ḡ_Z + ḡ_Zᵀ)``;
* ``W̄ = sW``, ``s = a/nrm(W)``: ``ḡ_W = s(ḡ_W̄ − ⟨ḡ_W̄, W⟩ W / nrm²)``,
  ``ḡ_a = ⟨ḡ_W̄, W⟩ / nrm``;
* ``ψ = exp(clip(d))``: ``ḡ_d = ψ ḡ_ψ`` inside the clip range, 0 outside.

On the CPU (float32/float64 algebra, C++ kernels loaded, setting ``nn.cpp.maps`` of
`r2dn_control.config` on) forward and backward are one C++ call each
(``lbdn_map_forward`` / ``lbdn_map_backward`` in ``cpp/explicit_map_kernels.cpp``): the same
equations, every layer at its own size instead of padded, products as plain loops up to 16³
multiply-adds and BLAS beyond, ``I + Z`` inverted by Gauss–Jordan elimination with partial
pivoting up to 64 rows and by one batched LAPACK call per size beyond. Elsewhere (CUDA, other
dtypes, kernels off) the padded-batch torch implementation below runs.

The composed implementation (`LBDN.explicit` with ``fused=False``) stays the reference; the
tests check values and gradients of both paths against it and against finite differences in
float64 (``tests/test_lbdn_map.py``, ``tests/test_explicit_map_kernels.py``).
Only first derivatives are provided (no double backward, no forward-mode AD); inside
``torch.func`` transforms (`functorch_active`) the callers use the composed path instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import cpp

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Plan:
    """The static structure of one LBDN and the index maps of its padded batch.

    ``shapes`` holds every layer's ``(n, m)`` (out, in features); ``sandwich_output``: the last
    layer is a hidden sandwich layer whose ``post`` becomes an extra final weight (else it is
    the linear output layer, without ``d``). ``eps`` is the norm's margin, ``log_scale_clip``
    the clip of ``d``. `ExplicitWeights` takes the parameters as, per layer in order,
    ``weight, scale`` and (hidden layers) ``log_psi``.
    """

    shapes: tuple[tuple[int, int], ...]
    sandwich_output: bool
    eps: float
    log_scale_clip: float
    _device_maps: dict[Any, dict[str, Tensor]] = field(default_factory=dict, compare=False,
                                                       repr=False)

    @property
    def layers(self) -> int:
        return len(self.shapes)

    @cached_property
    def size(self) -> int:
        """S: every layer is padded to S×S blocks."""
        return max(max(n, m) for n, m in self.shapes)

    @cached_property
    def weight_slots(self) -> tuple[int, ...]:
        """Index in `ExplicitWeights`' ``params`` of every layer's ``weight``."""
        out, at = [], 0
        for k in range(self.layers):
            out.append(at)
            at += 3 if self.hidden(k) else 2
        return tuple(out)

    def hidden(self, k: int) -> bool:
        return self.sandwich_output or k < self.layers - 1

    @cached_property
    def out_shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes of the explicit weights: ``W₀`` m₀×n₀, ``W_k`` n_{k−1}×n_k, and the
        sandwich output layer's post n×n."""
        (n0, m0), rest = self.shapes[0], self.shapes[1:]
        out = [(m0, n0)] + [(m, n) for n, m in rest]
        if self.sandwich_output:
            out.append((self.shapes[-1][0], self.shapes[-1][0]))
        return tuple(out)

    def maps(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The index tensors (and the float constants in ``dtype``) on ``device``, built once."""
        key = (device, dtype)
        if key not in self._device_maps:
            self._device_maps[key] = {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                for k, v in self._build_maps().items()}
        return self._device_maps[key]

    def _build_maps(self) -> dict[str, Tensor]:
        size, layers = self.size, self.layers
        # Weights: the flat concatenation of every (n+m)×n weight, then one zero (the pad).
        w_sizes = [(n + m) * n for n, m in self.shapes]
        w_total = sum(w_sizes)
        w_index = torch.full((layers, 2 * size, size), w_total, dtype=torch.long)
        at = 0
        for k, (n, m) in enumerate(self.shapes):
            block = torch.arange(at, at + (n + m) * n).view(n + m, n)
            w_index[k, :n, :n] = block[:n]
            w_index[k, size:size + m, :n] = block[n:]
            at += w_sizes[k]
        w_real = w_index.flatten() < w_total
        # log ψ of the hidden layers, then one zero (ψ = 1 in the padding and the linear layer).
        d_sizes = [n if self.hidden(k) else 0 for k, (n, _) in enumerate(self.shapes)]
        d_total = sum(d_sizes)
        d_index = torch.full((layers, size), d_total, dtype=torch.long)
        at = 0
        for k, (n, _) in enumerate(self.shapes):
            if d_sizes[k]:
                d_index[k, :n] = torch.arange(at, at + n)
                at += n
        d_real = d_index.flatten() < d_total
        # Outputs: the real blocks of [pre₀, products, (post_last)], flattened in order.
        out_index = torch.cat([
            (k * size * size + torch.arange(r)[:, None] * size + torch.arange(c)).flatten()
            for k, (r, c) in enumerate(self.out_shapes)])
        powers = torch.zeros(len(self.out_shapes), dtype=torch.float64)
        powers[0] += 1.0
        powers[-1] += 1.0  # √γ on the input and on the output
        factor = torch.tensor([_SQRT2 if self.hidden(k) else 1.0 for k in range(layers)],
                              dtype=torch.float64)
        return {
            "w_index": w_index.flatten(),
            "w_inverse": _inverse(w_index.flatten(), w_real),
            "d_index": d_index.flatten(),
            "d_inverse": _inverse(d_index.flatten(), d_real),
            "out_index": out_index,
            "powers": powers,
            "factor": factor,
        }


class ExplicitWeights(torch.autograd.Function):
    """``(plan, dtype, log_gamma, *params) → explicit weights`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, plan: Plan, dtype: torch.dtype, log_gamma: Tensor,
                *params: Tensor) -> tuple[Tensor, ...]:
        ctx.plan, ctx.dtype = plan, dtype
        ctx.param_dtypes = [p.dtype for p in params]
        ctx.log_gamma_dtype = log_gamma.dtype
        ctx.use_cpp = _cpp_applies(dtype, log_gamma, params)
        if ctx.use_cpp:
            return _forward_cpp(ctx, plan, dtype, log_gamma, params)
        return _forward_torch(ctx, plan, dtype, log_gamma, params)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.use_cpp:
            return _backward_cpp(ctx, grads)
        return _backward_torch(ctx, grads)


def _cpp_applies(dtype: torch.dtype, log_gamma: Tensor, params: tuple[Tensor, ...]) -> bool:
    """Whether the C++ map runs: CPU tensors, float32/float64 algebra, kernels loaded."""
    return (dtype in (torch.float32, torch.float64) and log_gamma.device.type == "cpu"
            and all(p.device.type == "cpu" for p in params) and cpp.maps_usable())


def _split_params(plan: Plan, params: tuple[Tensor, ...], dtype: torch.dtype | None = None
                  ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """``(weights, scales, log_psis)`` (log ψ of the hidden layers only), cast to ``dtype``
    when given."""
    slots = plan.weight_slots

    def take(j: int) -> Tensor:
        return params[j] if dtype is None else cast_to(params[j], dtype)

    weights = [take(j) for j in slots]
    scales = [take(j + 1) for j in slots]
    log_psis = [take(j + 2) for k, j in enumerate(slots) if plan.hidden(k)]
    return weights, scales, log_psis


def _forward_cpp(ctx: Any, plan: Plan, dtype: torch.dtype, log_gamma: Tensor,
                 params: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The map in one C++ call (``lbdn_map_forward``); every layer at its own size."""
    weights, scales, log_psis = _split_params(plan, params, dtype)
    results, saved = cpp.ops().lbdn_map_forward(weights, scales, log_psis,
                                                cast_to(log_gamma, dtype), plan.eps,
                                                plan.log_scale_clip)
    ctx.saved = (weights, saved, len(log_psis))
    return tuple(results)


def _backward_cpp(ctx: Any, grads: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """The hand-written backward of `_forward_cpp` in one C++ call (``lbdn_map_backward``)."""
    plan: Plan = ctx.plan
    weights, saved, hidden_count = ctx.saved
    g_weights, g_scales, g_psis, g_log_gamma = cpp.ops().lbdn_map_backward(
        [cast_to(g, ctx.dtype) for g in grads], weights, saved, hidden_count,
        plan.log_scale_clip)
    return (None, None,
            cast_to(g_log_gamma, ctx.log_gamma_dtype) if ctx.needs_input_grad[2] else None,
            *_param_grads(ctx, g_weights, g_scales, g_psis))


def _param_grads(ctx: Any, g_weights: list[Tensor], g_scales: list[Tensor],
                 g_psis: list[Tensor]) -> tuple[Tensor | None, ...]:
    """The per-layer gradients in the order of `ExplicitWeights`' ``params`` (None where no
    gradient is needed), each in its parameter's dtype."""
    plan: Plan = ctx.plan
    needs = ctx.needs_input_grad
    result: list[Tensor | None] = [None] * len(ctx.param_dtypes)
    d_parts = iter(g_psis)
    for k, j in enumerate(plan.weight_slots):
        result[j] = g_weights[k]
        result[j + 1] = g_scales[k]
        if plan.hidden(k):
            result[j + 2] = next(d_parts)
    return tuple(None if (g is None or not needs[3 + j]) else cast_to(g, ctx.param_dtypes[j])
                 for j, g in enumerate(result))


def _forward_torch(ctx: Any, plan: Plan, dtype: torch.dtype, log_gamma: Tensor,
                   params: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The padded-batch torch implementation (reference, and the path off the CPU)."""
    size, layers = plan.size, plan.layers
    first = params[0]
    maps = plan.maps(first.device, dtype)
    weights, scales, log_psis = _split_params(plan, params)
    pad = first.new_zeros(1)
    w_flat = cast_to(torch.cat([*(w.reshape(-1) for w in weights), pad]), dtype)
    w = w_flat[maps["w_index"]].view(layers, 2 * size, size)
    a = cast_to(torch.stack(scales), dtype)
    d = cast_to(torch.cat([*log_psis, pad]), dtype)[maps["d_index"]].view(layers, size)
    factor = maps["factor"]
    sq = torch.sum(w * w, dim=(-2, -1)) + plan.eps
    nrm = torch.sqrt(sq)
    s = a / nrm
    wb = w * s[:, None, None]
    u, v = wb[:, :size], wb[:, size:]
    eye = torch.eye(size, dtype=dtype, device=w.device)
    m_inv = torch.linalg.inv_ex(torch.baddbmm(u - u.mT + eye, v.mT, v))[0]
    # (I − Z)(I + Z)⁻¹ = 2(I + Z)⁻¹ − I, so Ã = 2M⁻¹ − I and Bᵀ = −2V̄M⁻¹.
    out = torch.cat([2.0 * m_inv - eye, torch.bmm(v, m_inv).mul_(-2.0)], dim=1)
    psi = torch.exp(torch.clamp(d, -plan.log_scale_clip, plan.log_scale_clip))
    pre = out[:, size:] * (factor[:, None] / psi)[:, None, :]
    post = (_SQRT2 * psi)[:, :, None] * out[:, :size].mT
    parts = [pre[:1], torch.bmm(post[:-1], pre[1:])]
    if plan.sandwich_output:
        parts.append(post[-1:])
    unscaled = torch.cat(parts)
    powers = maps["powers"]
    root_powers = torch.exp((0.5 * cast_to(log_gamma, dtype)) * powers)
    scaled = unscaled * root_powers[:, None, None]
    flat = scaled.reshape(-1)[maps["out_index"]]
    shapes = plan.out_shapes
    results = [t.view(shape) for t, shape in
               zip(flat.split([r * c for r, c in shapes]), shapes)]
    ctx.saved = (w, sq, nrm, s, v, m_inv, out, d, psi, pre, post, scaled, root_powers,
                 powers, factor)
    return tuple(results)


def _backward_torch(ctx: Any, grads: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """The hand-written backward of `_forward_torch`."""
    plan: Plan = ctx.plan
    size, layers = plan.size, plan.layers
    (w, sq, nrm, s, v, m_inv, out, d, psi, pre, post, scaled, root_powers, powers,
     factor) = ctx.saved
    maps = plan.maps(w.device, ctx.dtype)
    g_flat = cast_to(torch.cat([g.reshape(-1) for g in grads]), ctx.dtype)
    g_scaled = scaled.new_zeros(scaled.numel()).index_copy_(0, maps["out_index"], g_flat)
    g_scaled = g_scaled.view_as(scaled)
    needs = ctx.needs_input_grad
    g_log_gamma = None
    if needs[2]:
        g_log_gamma = (0.5 * torch.sum(g_scaled * scaled * powers[:, None, None])
                       ).to(ctx.log_gamma_dtype)
    g_un = g_scaled * root_powers[:, None, None]
    g_products = g_un[1:layers]
    g_pre = torch.cat([g_un[:1], torch.bmm(post[:-1].mT, g_products)])
    g_post_parts = [torch.bmm(g_products, pre[1:].mT)]
    g_post_parts.append(g_un[layers:] if plan.sandwich_output else pre.new_zeros(1, size, size))
    g_post = torch.cat(g_post_parts)
    g_psi = (torch.sum(g_post * post, dim=2) - torch.sum(g_pre * pre, dim=1)) / psi
    g_d = torch.where(d.abs() <= plan.log_scale_clip, g_psi * psi, torch.zeros_like(psi))
    g_out = torch.cat([(_SQRT2 * psi)[:, None, :] * g_post.mT,
                       g_pre * (factor[:, None] / psi)[:, None, :]], dim=1)
    # O = R M⁻¹ (R = [I − Z; −2V̄], M = I + Z): ḡ_R = G M⁻ᵀ, ḡ_Z = −Oᵀḡ_R − ḡ_R[:S].
    g_r = torch.bmm(g_out, m_inv.mT)
    g_z = torch.baddbmm(g_r[:, :size], out.mT, g_r).neg_()
    g_wb = torch.cat([g_z - g_z.mT,
                      torch.baddbmm(g_r[:, size:], v, g_z + g_z.mT, beta=-2.0)], dim=1)
    inner = torch.sum(g_wb * w, dim=(-2, -1))
    g_a = inner / nrm
    g_w = s[:, None, None] * (g_wb - (inner / sq)[:, None, None] * w)
    g_w_flat = g_w.reshape(-1)[maps["w_inverse"]]
    g_d_flat = g_d.reshape(-1)[maps["d_inverse"]]
    w_parts = g_w_flat.split([(n + m) * n for n, m in plan.shapes])
    g_weights = [w_parts[k].view(n + m, n) for k, (n, m) in enumerate(plan.shapes)]
    g_psis = list(g_d_flat.split([n for k, (n, _) in enumerate(plan.shapes) if plan.hidden(k)]))
    return (None, None, g_log_gamma, *_param_grads(ctx, g_weights, list(g_a.unbind()), g_psis))


def _inverse(index: Tensor, real: Tensor) -> Tensor:
    """For every flat parameter element, its position in the padded batch (``index`` maps each
    padded position to a flat element; the pad positions are not ``real``)."""
    positions = torch.nonzero(real).flatten()
    return positions[torch.argsort(index[positions])]


def cast_to(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype`` (no op dispatched when it already is)."""
    return t if t.dtype == dtype else t.to(dtype)


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jacrev, …) is running: the fused maps
    do not implement functorch's rules, so their callers fall back to the composed algebra."""
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False
