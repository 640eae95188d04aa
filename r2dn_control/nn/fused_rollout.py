r"""Fused R2DN rollout: a hand-written adjoint for the whole sequence.

Autograd records every small op of every time step and computes each weight gradient as T
separate small matmuls. This `torch.autograd.Function` runs the forward loop into
preallocated buffers, and its backward runs only the sequential adjoint chain through time,
then forms every weight gradient as one matmul over all (time × batch) samples. The
activations' derivatives are recovered from their saved outputs. The equations are in
``fused_rollout.md`` beside this file; ``tests/test_fused_rollout.py`` holds it equal to the
reference path (`r2dn_control.nn.explicit.reference_rollout`) to 1e-10 in float64.
`fused_sequence` (what `rollout` calls for an R2DN) is the same with the input terms and the
outputs inside the Function too, so a whole training sequence is one autograd node.

On CPU float32/float64 tensors, when the C++ kernels are built (`.cpp`), both time loops
run in C++ (``torch.ops.r2dn_control.r2dn_forward`` / ``r2dn_adjoint``): hand-vectorised loops
over blocks of batch rows when every width is at most the ``nn.cpp.loop_width`` setting
(`r2dn_control.config`), else torch's CPU kernels called in this file's order, in both
cases without per-op Python and dispatcher overhead. Elsewhere (CUDA, other dtypes,
``R2DN_DISABLE_CPP=1``, no compiler, inside ``cpp.suspended()``) the Python loops below run.
The weight gradients are one product over all samples per weight: the C++ ``gram_pairs``
kernel on that path (`weight_gradients`), torch.mm elsewhere (σ' is evaluated in the C++
adjoint, or in torch on the pure-torch path). Under ``torch.no_grad`` (or when
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


def _loop_forward(ctx: Any, x0: Tensor, drive_x: Tensor, drive_v: Tensor, A: Tensor,
                  B1: Tensor, C1: Tensor, activation: str, weights: tuple[Tensor, ...],
                  biases: tuple[Tensor, ...], use_cpp: bool
                  ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """The forward time loop with saved activations (C++ or `_forward_loop`); records on
    ``ctx`` what `_loop_backward` needs besides the saved tensors."""
    ctx.use_cpp = use_cpp
    ctx.loop_width = config.defaults["nn.cpp.loop_width"]
    ctx.activation = activation
    ctx.n_weights = len(weights)
    if use_cpp:
        states, vs, ws, acts = cpp.ops().r2dn_forward(
            x0, drive_x, drive_v, A, B1, C1, list(weights), list(biases), activation,
            ctx.loop_width, True)
        return states, vs, ws, acts
    return _forward_loop(x0, drive_x, drive_v, A, B1, C1, activation, weights, biases)


#: The LBDN's weight and bias gradients when the adjoint formed them itself, else None.
LbdnGradients = tuple[list[Tensor], list[Tensor]] | None


def _loop_backward(ctx: Any, g_xs: Tensor, g_ws: Tensor, g_final: Tensor, A: Tensor,
                   B1: Tensor, C1: Tensor, weights: tuple[Tensor, ...] | list[Tensor],
                   vs: Tensor, acts: tuple[Tensor, ...] | list[Tensor]
                   ) -> tuple[Tensor, Tensor, Tensor, list[Tensor], LbdnGradients]:
    """The adjoint time loop: ``(λ_0..λ_T, g^w, g^v, [g^{z,k}], LBDN gradients)``
    (`fused_rollout.md`). The C++ lane loops form ``([∂L/∂W_k], [∂L/∂b_k])`` inside the loop
    and return no g^{z,k}; the other loops return g^{z,k} and None."""
    if ctx.use_cpp:  # the kernel evaluates σ' from the saved outputs itself
        lams, g_w, g_v, g_z, d_w, d_b = cpp.ops().r2dn_adjoint(
            g_xs, g_ws, g_final, A, B1, C1, list(weights), vs, list(acts), ctx.activation,
            ctx.loop_width)
        return lams, g_w, g_v, g_z, ((d_w, d_b) if d_w else None)
    # σ' for every step at once (one vectorised op per layer instead of one per step).
    slopes = [DERIVATIVE_FROM_OUTPUT[ctx.activation](a) for a in acts]
    return (*_adjoint_loop(g_xs, g_ws, g_final, A, B1, C1, tuple(weights), slopes), None)


def _recurrent_pairs(xs: Tensor, vs: Tensor, ws: Tensor, acts: list[Tensor] | tuple[Tensor, ...],
                     lam_next: Tensor, g_w: Tensor, g_v: Tensor, g_z: list[Tensor],
                     lbdn: LbdnGradients) -> tuple[list[Tensor], list[Tensor]]:
    """The `weight_gradients` pairs of the LBDN's weights (their biases are the sums; none
    when the adjoint formed them, ``lbdn``), then ``A``, ``B₁``, ``C₁`` (the products are the
    gradients, column convention)."""
    inputs = [] if lbdn else [vs, *acts]  # the input of weight k is inputs[k]
    outs = [] if lbdn else [*g_z, g_w]    # the gradient at its output is outs[k]
    return [*inputs, lam_next, lam_next, g_v], [*outs, xs, ws, xs]


def _split_lbdn(products: list[Tensor], sums: list[Tensor], lbdn: LbdnGradients,
                n_weights: int) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """(∂L/∂W_k, ∂L/∂b_k, the other products, their sums) from `weight_gradients` on the
    pairs of `_recurrent_pairs` (the LBDN's from the adjoint when it formed them)."""
    if lbdn is not None:
        return lbdn[0], lbdn[1], products, sums
    return products[:n_weights], sums[:n_weights], products[n_weights:], sums[n_weights:]


class _FusedR2DNRollout(torch.autograd.Function):
    """Inputs: x0, drive_x (T,B,nx), drive_v (T,B,nv), A, B1, C1, activation name, L, *W, *b.

    Outputs: states x_0..x_{T-1} (T,B,nx), features w_0..w_{T-1} (T,B,nv), x_T (B,nx).
    """

    @staticmethod
    def forward(ctx: Any, x0: Tensor, drive_x: Tensor, drive_v: Tensor, A: Tensor, B1: Tensor,
                C1: Tensor, activation: str, n_weights: int, *params: Tensor):
        weights, biases = params[:n_weights], params[n_weights:]
        use_cpp = cpp.usable(x0, drive_x, drive_v, A, B1, C1, *params)
        states, vs, ws, acts = _loop_forward(ctx, x0, drive_x, drive_v, A, B1, C1, activation,
                                             weights, biases, use_cpp)
        xs = states[:-1]
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
        lams, g_w, g_v, g_z, lbdn = _loop_backward(ctx, g_xs, g_ws, g_final, A, B1, C1,
                                                   weights, vs, acts)
        lam_next = lams[1:]
        products, sums = weight_gradients(
            *_recurrent_pairs(xs, vs, ws, acts, lam_next, g_w, g_v, g_z, lbdn), ctx.use_cpp)
        g_weights, g_biases, (g_a, g_b1, g_c1), _ = _split_lbdn(products, sums, lbdn, n_weights)
        return (lams[0], lam_next, g_v, g_a, g_b1, g_c1, None, None, *g_weights, *g_biases)


def input_terms(u: Tensor, B2: Tensor, D12: Tensor, bx: Tensor, bv: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
    """The batch-major input u (B, T, nu) as time-major rows ``u_flat`` (T·B, nu), and
    ``dx = u B₂ᵀ + b_x``, ``dv = u D₁₂ᵀ + b_v`` for all steps, time-major (T, B, n), so the
    loop reads contiguous slices (`output_terms` takes the same rows)."""
    steps, nu = u.shape[1], u.shape[2]
    u_flat = u.transpose(0, 1).reshape(-1, nu)
    drive_x = torch.addmm(bx, u_flat, B2.T).view(steps, -1, B2.shape[0])
    drive_v = torch.addmm(bv, u_flat, D12.T).view(steps, -1, D12.shape[0])
    return u_flat, drive_x, drive_v


def output_terms(u_flat: Tensor, xs: Tensor, ws: Tensor, C2: Tensor, D21: Tensor, D22: Tensor,
             by: Tensor) -> Tensor:
    """``y = x C₂ᵀ + w D₂₁ᵀ + u D₂₂ᵀ + b_y`` for all steps in the loops' time-major flat layout
    (contiguous: no copies forward or back), transposed to batch-major (B, T, ny) once."""
    steps = xs.shape[0]
    y = torch.addmm(torch.addmm(by, u_flat, D22.T), xs.reshape(-1, xs.shape[-1]), C2.T)
    y = torch.addmm(y, ws.reshape(-1, ws.shape[-1]), D21.T)
    return y.view(steps, -1, C2.shape[0]).transpose(0, 1).contiguous()


#: Positions of the I/O matrices in `_FusedR2DNSequence`'s inputs (after x0, u, A, B1, C1).
_IO = ("B2", "D12", "C2", "D21", "D22", "bx", "bv", "by")


class _FusedR2DNSequence(torch.autograd.Function):
    """The whole R2DN sequence as one autograd node: input terms, both time loops, outputs.

    Inputs: x0 (B,nx), u (B,T,nu), A, B1, C1, B2, D12, C2, D21, D22, bx, bv, by, activation
    name, L, *W, *b. Outputs: y (B,T,ny), x_T (B,nx). The backward forms only the gradients
    autograd asks for (``needs_input_grad``): e.g. no ∂/∂u for a data input, none for the
    fixed C₂ = I, D₂₁ = D₂₂ = 0 of an identity output.
    """

    @staticmethod
    def forward(ctx: Any, x0: Tensor, u: Tensor, A: Tensor, B1: Tensor, C1: Tensor,
                B2: Tensor, D12: Tensor, C2: Tensor, D21: Tensor, D22: Tensor, bx: Tensor,
                bv: Tensor, by: Tensor, activation: str, n_weights: int, *params: Tensor):
        weights, biases = params[:n_weights], params[n_weights:]
        use_cpp = cpp.usable(x0, u, A, B1, C1, B2, D12, C2, D21, D22, bx, bv, by, *params)
        u_flat, drive_x, drive_v = input_terms(u, B2, D12, bx, bv)
        states, vs, ws, acts = _loop_forward(ctx, x0, drive_x, drive_v, A, B1, C1, activation,
                                             weights, biases, use_cpp)
        xs = states[:-1]
        y = output_terms(u_flat, xs, ws, C2, D21, D22, by)
        ctx.save_for_backward(u_flat, xs, vs, ws, A, B1, C1, B2, D12, C2, D21, D22, *weights,
                              *acts)
        return y, states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_y: Tensor | None, g_final: Tensor | None):
        u_flat, xs, vs, ws, A, B1, C1, B2, D12, C2, D21, D22, *rest = ctx.saved_tensors
        needs = dict(zip(_IO, ctx.needs_input_grad[5:13], strict=True))
        n_weights = ctx.n_weights
        weights, acts = rest[:n_weights], rest[n_weights:]
        steps, batch, nx = xs.shape
        ny = C2.shape[0]
        # ∂L/∂y time-major (K, ny), K = T·B rows in the loops' order.
        g_flat = (xs.new_zeros(steps * batch, ny) if g_y is None
                  else g_y.transpose(0, 1).reshape(-1, ny))
        g_xs = (g_flat @ C2).view(steps, batch, nx)
        g_ws = (g_flat @ D21).view(steps, batch, -1)
        g_final = xs.new_zeros(batch, nx) if g_final is None else g_final
        lams, g_w, g_v, g_z, lbdn = _loop_backward(ctx, g_xs, g_ws, g_final, A, B1, C1,
                                                   weights, vs, acts)
        lam_next = lams[1:]
        firsts, seconds = _recurrent_pairs(xs, vs, ws, acts, lam_next, g_w, g_v, g_z, lbdn)
        # The I/O blocks: Σ (input)ᵀ(gradient at the output) is the transposed gradient of
        # the matrix, Σ (gradient at the output) that of its bias (fused_rollout.md).
        io_pairs = {"B2": (u_flat, lam_next, needs["B2"] or needs["bx"]),
                    "D12": (u_flat, g_v, needs["D12"] or needs["bv"]),
                    "C2": (xs, g_flat, needs["C2"] or needs["by"]),
                    "D21": (ws, g_flat, needs["D21"]),
                    "D22": (u_flat, g_flat, needs["D22"])}
        wanted = [name for name, (_, _, need) in io_pairs.items() if need]
        firsts += [io_pairs[name][0] for name in wanted]
        seconds += [io_pairs[name][1] for name in wanted]
        products, sums = weight_gradients(firsts, seconds, ctx.use_cpp)
        g_weights, g_biases, products, sums = _split_lbdn(products, sums, lbdn, n_weights)
        g_a, g_b1, g_c1 = products[:3]
        io_grads: dict[str, Tensor | None] = dict.fromkeys(_IO)
        for name, product, total in zip(wanted, products[3:], sums[3:], strict=True):
            io_grads[name] = product.T if needs[name] else None
            bias = {"B2": "bx", "D12": "bv", "C2": "by"}.get(name)
            if bias is not None and needs[bias]:
                io_grads[bias] = total
        g_u = None
        if ctx.needs_input_grad[1]:
            g_u_flat = (lam_next.reshape(-1, nx) @ B2 + g_v.reshape(-1, g_v.shape[-1]) @ D12
                        + g_flat @ D22)
            g_u = g_u_flat.view(steps, batch, -1).transpose(0, 1)
        return (lams[0], g_u, g_a, g_b1, g_c1, *(io_grads[name] for name in _IO), None, None,
                *g_weights, *g_biases)


#: Largest m and n of a weight gradient XᵀG (X: K×m, G: K×n) that the C++ ``gram_pairs`` kernel
#: takes; wider products go to torch.mm. Measured on the 2-core EPYC (K = 8192, one thread,
#: thread CPU time, kernel builds and torch.mm interleaved; docs/performance.md, "Sixth round"):
#: the kernel is faster at every shape from 1×1 to 256×256 in float32 (0.45–0.9× torch.mm +
#: sum; 16×16 44 vs 79 µs, 64×64 0.65 vs 0.86 ms, 128×128 3.2 vs 4.2 ms) and float64; beyond
#: 256 it was not measured.
GRAM_MAX_SIDE = 256


def _gram_fits(x: Tensor, g: Tensor) -> bool:
    """Whether ``gram_pairs`` is the faster way to XᵀG: m, n ≤ `GRAM_MAX_SIDE`."""
    return x.shape[-1] <= GRAM_MAX_SIDE and g.shape[-1] <= GRAM_MAX_SIDE


def weight_gradients(xs: list[Tensor], gs: list[Tensor], use_cpp: bool
                     ) -> tuple[list[Tensor], list[Tensor]]:
    """``([Σ_r x_rᵀ g_r], [Σ_r g_r])`` for each pair ``(X, G)`` of (…, m) and (…, n) tensors
    with the same leading dimensions (flattened to K rows: all time steps and batch rows).

    Products up to `GRAM_MAX_SIDE` wide run in one call of the C++ ``gram_pairs`` kernel
    (when ``use_cpp``: CPU tensors, kernels loaded), the rest as ``torch.mm`` and ``sum``.
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
    biases = _biases(network)
    tensors = (x0, drive_x, drive_v, A, B1, C1, *network.weights, *biases)
    if not _needs_graph(tensors):
        return _forward_without_graph(network, biases, x0, drive_x, drive_v, A, B1, C1)
    return _FusedR2DNRollout.apply(x0, drive_x.contiguous(), drive_v.contiguous(), A, B1, C1,
                                   network.activation_name, len(network.weights),
                                   *network.weights, *biases)


def fused_sequence(network: ExplicitMLP, x0: Tensor, u: Tensor, A: Tensor, B1: Tensor,
                   C1: Tensor, B2: Tensor, D12: Tensor, C2: Tensor, D21: Tensor, D22: Tensor,
                   bx: Tensor, bv: Tensor, by: Tensor) -> tuple[Tensor, Tensor]:
    """A whole R2DN sequence (input terms, time loop, outputs) as one autograd node.

    The same computation as `r2dn_control.nn.explicit.rollout` with `fused_rollout` as its
    time loop, but the input terms ``B₂u + b_x``, ``D₁₂u + b_v`` and the outputs
    ``C₂x + D₂₁w + D₂₂u + b_y`` are computed inside one ``autograd.Function`` whose backward
    forms their gradients with the recurrent ones (one `weight_gradients` call), instead of
    five ``addmm`` nodes and the layout copies around them.

    Parameters
    ----------
    network : ExplicitMLP
        The folded LBDN φ.
    x0 : Tensor (B, nx)
    u : Tensor (B, T, nu)
    A, B1, C1, B2, D12, C2, D21, D22, bx, bv, by : Tensor
        The explicit model (column convention, `ExplicitModel`).

    Returns
    -------
    y : Tensor (B, T, ny)
        Outputs y₀ … y_{T−1} (``y_t`` uses ``x_t``).
    x_T : Tensor (B, nx)
    """
    biases = _biases(network)
    io = (B2, D12, C2, D21, D22, bx, bv, by)
    tensors = (x0, u, A, B1, C1, *io, *network.weights, *biases)
    if not _needs_graph(tensors):
        u_flat, drive_x, drive_v = input_terms(u, B2, D12, bx, bv)
        xs, ws, x_final = _forward_without_graph(network, biases, x0, drive_x, drive_v, A, B1,
                                                 C1)
        return output_terms(u_flat, xs, ws, C2, D21, D22, by), x_final
    return _FusedR2DNSequence.apply(x0, u, A, B1, C1, *io, network.activation_name,
                                    len(network.weights), *network.weights, *biases)


def _biases(network: ExplicitMLP) -> tuple[Tensor, ...]:
    """The network's biases, zeros where a layer has none."""
    return tuple(
        b if b is not None else network.weights[k].new_zeros(network.weights[k].shape[1])
        for k, b in enumerate(network.biases)
    )


def _needs_graph(tensors: tuple[Tensor, ...]) -> bool:
    """Whether autograd records: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _forward_without_graph(network: ExplicitMLP, biases: tuple[Tensor, ...], x0: Tensor,
                           drive_x: Tensor, drive_v: Tensor, A: Tensor, B1: Tensor, C1: Tensor
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """``(xs, ws, x_T)`` with nothing to differentiate: the C++ forward keeps neither v nor
    the hidden outputs; off the C++ path the Python loop."""
    drive_x, drive_v = drive_x.contiguous(), drive_v.contiguous()
    if cpp.usable(x0, drive_x, drive_v, A, B1, C1, *network.weights, *biases):
        states, _, ws, _ = cpp.ops().r2dn_forward(
            x0, drive_x, drive_v, A, B1, C1, list(network.weights), list(biases),
            network.activation_name, config.defaults["nn.cpp.loop_width"], False)
    else:
        states, _, ws, _ = _forward_loop(x0, drive_x, drive_v, A, B1, C1,
                                         network.activation_name, network.weights, biases)
    return states[:-1], ws, states[-1]
