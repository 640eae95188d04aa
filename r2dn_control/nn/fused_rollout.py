r"""Fused R2DN rollout: a hand-written adjoint for the whole sequence.

Autograd records every small op of every time step and computes each weight gradient as T
separate small matmuls. This `torch.autograd.Function` runs the forward loop into
preallocated buffers, and its backward runs only the sequential adjoint chain through time,
then forms every weight gradient as one matmul over all (time × batch) samples. The
activations' derivatives are recovered from their saved outputs. The equations are in
``fused_rollout.md`` beside this file; ``tests/test_fused_rollout.py`` holds it equal to the
reference path (`r2dn_control.nn.explicit.reference_rollout`) to 1e-10 in float64.

On CPU float32/float64 tensors, when the C++ kernels are built (`.cpp`), both time loops
run in C++ (``torch.ops.r2dn_control.r2dn_forward`` / ``r2dn_adjoint``): hand-vectorised loops
over blocks of batch rows when every width is at most the ``nn.cpp.loop_width`` setting
(`r2dn_control.config`), else torch's CPU kernels called in this file's order, in both
cases without per-op Python and dispatcher overhead. Elsewhere (CUDA, other dtypes,
``R2DN_DISABLE_CPP=1``, no compiler, inside ``cpp.suspended()``) the Python loops below run.
The weight gradients are a few large matmuls and stay in torch either way (σ' is evaluated
in the C++ adjoint, or in torch on the pure-torch path). Under ``torch.no_grad`` (or when
nothing requires grad) the C++ forward runs without the Function and keeps no activations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import config
from . import cpp
from .activations import DERIVATIVE_FROM_OUTPUT, INPLACE
from .lbdn import ExplicitMLP

# The widest layer (nv or hidden) for which the C++ kernel runs its hand-written lane loops is
# the setting ``nn.cpp.loop_width`` of r2dn_control.config (measured there); wider networks run
# its ATen loop.


class _FusedR2DNRollout(torch.autograd.Function):
    """Inputs: x0, drive_x (T,B,nx), drive_v (T,B,nv), A, B1, C1, activation name, L, *W, *b.

    Outputs: states x_0..x_{T-1} (T,B,nx), features w_0..w_{T-1} (T,B,nv), x_T (B,nx).
    """

    @staticmethod
    def forward(ctx: Any, x0: Tensor, drive_x: Tensor, drive_v: Tensor, A: Tensor, B1: Tensor,
                C1: Tensor, activation: str, n_weights: int, *params: Tensor):
        weights, biases = params[:n_weights], params[n_weights:]
        ctx.use_cpp = cpp.usable(x0, drive_x, drive_v, A, B1, C1, *params)
        ctx.loop_width = config.defaults["nn.cpp.loop_width"]
        if ctx.use_cpp:
            states, vs, ws, acts = cpp.ops().r2dn_forward(
                x0, drive_x, drive_v, A, B1, C1, list(weights), list(biases), activation,
                ctx.loop_width, True)
        else:
            states, vs, ws, acts = _forward_loop(x0, drive_x, drive_v, A, B1, C1, activation,
                                                 weights, biases)
        xs = states[:-1]
        ctx.activation = activation
        ctx.n_weights = n_weights
        ctx.save_for_backward(xs, vs, ws, A, B1, C1, *weights, *acts)
        return xs, ws, states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_xs: Tensor | None, g_ws: Tensor | None, g_final: Tensor | None):
        xs, vs, ws, A, B1, C1, *rest = ctx.saved_tensors
        n_weights = ctx.n_weights
        weights, acts = rest[:n_weights], rest[n_weights:]
        batch, nx = xs.shape[1:]
        g_xs = torch.zeros_like(xs) if g_xs is None else g_xs.contiguous()
        g_ws = torch.zeros_like(ws) if g_ws is None else g_ws.contiguous()
        g_final = xs.new_zeros(batch, nx) if g_final is None else g_final
        if ctx.use_cpp:  # the kernel evaluates σ' from the saved outputs itself
            lams, g_w, g_v, g_z = cpp.ops().r2dn_adjoint(g_xs, g_ws, g_final, A, B1, C1,
                                                         list(weights), list(acts),
                                                         ctx.activation, ctx.loop_width)
        else:
            # σ' for every step at once (one vectorised op per layer instead of one per step).
            slopes = [DERIVATIVE_FROM_OUTPUT[ctx.activation](a) for a in acts]
            lams, g_w, g_v, g_z = _adjoint_loop(g_xs, g_ws, g_final, A, B1, C1, weights,
                                                slopes)
        lam_next = lams[1:]
        inputs = [vs] + list(acts)  # the input of weight k is inputs[k]
        outs = list(g_z) + [g_w]    # the gradient at its output is outs[k]
        products, sums = weight_gradients(
            [*inputs, lam_next, lam_next, g_v], [*outs, xs, ws, xs], ctx.use_cpp)
        g_weights, g_biases = products[:n_weights], sums[:n_weights]
        g_a, g_b1, g_c1 = products[n_weights:]
        return (lams[0], lam_next, g_v, g_a, g_b1, g_c1, None, None, *g_weights, *g_biases)


#: Largest m·n of a weight gradient XᵀG (X: K×m, G: K×n) that the C++ ``gram_pairs`` kernel
#: takes; larger products go to torch.mm, which is as fast or faster there. Measured on the
#: 2-core EPYC (K = 8192, one thread, loaded machine): 8×8 83 vs 171 µs (kernel vs torch.mm +
#: sum), 16×8 145 vs 321 µs, 1×16 42 vs 60 µs, but 16×16 273 vs 154 µs (and 1×1 108 vs 29 µs:
#: see `_gram_fits`).
GRAM_MAX_ENTRIES = 128


def _gram_fits(x: Tensor, g: Tensor) -> bool:
    """Whether ``gram_pairs`` is the faster way to XᵀG: m·n ≤ `GRAM_MAX_ENTRIES` and whole
    32-byte vectors of G's columns (n a multiple of 8 in float32, of 4 in float64; ragged
    column tiles cost a store-forwarding stall per sample)."""
    return (x.shape[-1] * g.shape[-1] <= GRAM_MAX_ENTRIES
            and g.shape[-1] % (32 // g.element_size()) == 0)


def weight_gradients(xs: list[Tensor], gs: list[Tensor], use_cpp: bool
                     ) -> tuple[list[Tensor], list[Tensor]]:
    """``([Σ_r x_rᵀ g_r], [Σ_r g_r])`` for each pair ``(X, G)`` of (…, m) and (…, n) tensors
    with the same leading dimensions (flattened to K rows: all time steps and batch rows).

    The small products run in one call of the C++ ``gram_pairs`` kernel (when ``use_cpp``:
    CPU tensors, kernels loaded), the rest as ``torch.mm`` and ``sum``.
    """
    def flat(x: Tensor) -> Tensor:
        return x.reshape(-1, x.shape[-1])

    products: list[Tensor | None] = [None] * len(xs)
    sums: list[Tensor | None] = [None] * len(xs)
    small = [k for k, (x, g) in enumerate(zip(xs, gs, strict=True)) if use_cpp and _gram_fits(x, g)]
    if small:
        got_p, got_s = cpp.ops().gram_pairs([flat(xs[k]).contiguous() for k in small],
                                            [flat(gs[k]).contiguous() for k in small])
        for k, p, s in zip(small, got_p, got_s, strict=True):
            products[k], sums[k] = p, s
    for k, (x, g) in enumerate(zip(xs, gs, strict=True)):
        if products[k] is None:
            products[k], sums[k] = flat(x).t() @ flat(g), flat(g).sum(0)
    return products, sums  # type: ignore[return-value]


def _forward_loop(x0: Tensor, drive_x: Tensor, drive_v: Tensor, A: Tensor, B1: Tensor,
                  C1: Tensor, activation: str, weights: tuple[Tensor, ...],
                  biases: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Pure-torch forward loop (the C++ ``r2dn_forward`` is the same loop).

    Returns states x_0..x_T (T+1, B, nx), v (T, B, nv), w (T, B, nv) and the hidden layers'
    outputs s^k (T, B, width_k).
    """
    steps, batch = drive_x.shape[:2]
    hidden = len(weights) - 1
    new = x0.new_empty
    # states[t] = x_t for t = 0..T: every step writes x_{t+1} straight into its slot.
    states = new(steps + 1, batch, A.shape[0])
    states[0].copy_(x0)
    vs = new(steps, batch, C1.shape[0])
    ws = new(steps, batch, B1.shape[1])
    acts = [new(steps, batch, w.shape[1]) for w in weights[:-1]]
    act_ = INPLACE[activation]
    a_t, b1_t, c1_t = A.t(), B1.t(), C1.t()
    for t in range(steps):
        x = states[t]
        h = torch.addmm(drive_v[t], x, c1_t, out=vs[t])
        for k in range(hidden):
            h = torch.addmm(biases[k], h, weights[k], out=acts[k][t])
            act_(h)
        w = torch.addmm(biases[-1], h, weights[-1], out=ws[t])
        torch.addmm(drive_x[t], x, a_t, out=states[t + 1]).addmm_(w, b1_t)
    return states, vs, ws, acts


def _adjoint_loop(g_xs: Tensor, g_ws: Tensor, g_final: Tensor, A: Tensor, B1: Tensor,
                  C1: Tensor, weights: tuple[Tensor, ...],
                  slopes: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Pure-torch adjoint loop (the C++ ``r2dn_adjoint`` is the same loop).

    Returns λ_0..λ_T (T+1, B, nx), g^w (T, B, nv), g^v (T, B, nv) and g^{z,k} (T, B, width_k).
    """
    steps, batch, nx = g_xs.shape
    hidden = len(weights) - 1
    # lams[t] = λ_t for t = 0..T (λ_T = ∂L/∂x_T); each step writes λ_t into its slot.
    lams = g_xs.new_empty(steps + 1, batch, nx)
    lams[steps].copy_(g_final)
    g_w = torch.empty_like(g_ws)
    g_v = torch.empty_like(g_ws)
    g_z = [torch.empty_like(s) for s in slopes]
    weights_t = [w.t() for w in weights]
    for t in range(steps - 1, -1, -1):
        lam = lams[t + 1]
        g = torch.addmm(g_ws[t], lam, B1, out=g_w[t])
        for k in range(hidden - 1, -1, -1):
            g = torch.mul(g @ weights_t[k + 1], slopes[k][t], out=g_z[k][t])
        torch.mm(g, weights_t[0], out=g_v[t])
        torch.addmm(g_xs[t], lam, A, out=lams[t]).addmm_(g_v[t], C1)
    return lams, g_w, g_v, g_z


def fused_rollout(network: ExplicitMLP, x0: Tensor, drive_x: Tensor, drive_v: Tensor,
                  A: Tensor, B1: Tensor, C1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Run the recurrent part of an R2DN with the hand-written adjoint.

    Parameters
    ----------
    network : ExplicitMLP
        The folded LBDN φ.
    x0 : Tensor (B, nx)
    drive_x, drive_v : Tensor (T, B, nx), (T, B, nv)
        Precomputed input terms ``B₂u_t + b_x`` and ``D₁₂u_t + b_v`` (time-major).
    A, B1, C1 : Tensor

    Returns
    -------
    xs : Tensor (T, B, nx)
        States x₀ … x_{T−1}.
    ws : Tensor (T, B, nv)
        Nonlinearity outputs w₀ … w_{T−1}.
    x_T : Tensor (B, nx)
    """
    biases = tuple(
        b if b is not None else network.weights[k].new_zeros(network.weights[k].shape[1])
        for k, b in enumerate(network.biases)
    )
    tensors = (x0, drive_x, drive_v, A, B1, C1, *network.weights, *biases)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) \
            and cpp.usable(*tensors):
        # Nothing to differentiate: the C++ forward keeps neither v nor the hidden outputs.
        states, _, ws, _ = cpp.ops().r2dn_forward(
            x0, drive_x.contiguous(), drive_v.contiguous(), A, B1, C1, list(network.weights),
            list(biases), network.activation_name, config.defaults["nn.cpp.loop_width"], False)
        return states[:-1], ws, states[-1]
    return _FusedR2DNRollout.apply(x0, drive_x.contiguous(), drive_v.contiguous(), A, B1, C1,
                                   network.activation_name, len(network.weights),
                                   *network.weights, *biases)
