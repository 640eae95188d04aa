r"""Low-overhead stepping for real-time loops: the explicit model in a stacked "step form".

One step of every model (docs/theory.md §2, §3), with ``z = [x; u]``:

$$
v = W_{in}^\top z + b_v, \qquad w = \phi(v), \qquad
\begin{bmatrix} y \\ x^+ \end{bmatrix} = W_{out}^\top \begin{bmatrix} z \\ w \end{bmatrix} + b_{out},
$$

where $W_{in} = [C_1\; D_{12}]^\top$ and
$W_{out} = \begin{bmatrix} C_2 & D_{22} & D_{21} \\ A & B_2 & B_1 \end{bmatrix}^\top$
only *stack* the explicit matrices (no products, so the stacked values are exactly the
explicit model's values in any dtype), ``φ`` is the LBDN with its scalings folded into one
matrix per layer (R2DN) or the equilibrium ``w = σ(D₁₁w + v)`` solved row by row (REN).
`StepForm` holds these arrays; the ONNX and C exporters write the same form.

`CompiledStep` evaluates it with every weight cached and every intermediate buffer
preallocated: on CPU an R2DN runs in numpy (about one BLAS call per layer, biases folded into
the matmuls through a constant-one row), elsewhere (CUDA, REN, or inputs that need gradients)
in torch with the same stacked matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .activations import ACTIVATIONS, INPLACE
from .equilibrium import EquilibriumLayer
from .fused_ren import activation_name
from .lbdn import ExplicitMLP

if TYPE_CHECKING:
    from .base import RecurrentModel
    from .explicit import ExplicitModel

@dataclass(frozen=True)
class StepForm:
    """The stacked explicit model (see the module docstring), as float64 numpy arrays.

    Attributes
    ----------
    nu, nx, nv, ny : int
        Sizes.
    w_in : ndarray (nx+nu, nv)
        ``[C₁ D₁₂]ᵀ`` (row convention: ``v = z @ w_in + b_in``).
    b_in : ndarray (nv,)
        ``b_v``.
    layers : tuple of (ndarray, ndarray or None)
        R2DN: the folded LBDN ``(W_k, b_k)`` in row convention, activation after every layer
        but the last. Empty for a REN.
    d11 : ndarray (nv, nv) or None
        REN: the strictly lower triangular ``D₁₁`` (zeros on and above the diagonal).
    w_out : ndarray (nx+nu+nv, ny+nx)
        ``[[C₂ᵀ Aᵀ]; [D₂₂ᵀ B₂ᵀ]; [D₂₁ᵀ B₁ᵀ]]``: ``[y, x⁺] = [z, w] @ w_out + b_out``.
    b_out : ndarray (ny+nx,)
        ``[b_y, b_x]``.
    activation : str
        Name in `ACTIVATIONS`.
    dtype : torch.dtype
        The dtype of the explicit model the values were read from (they are exactly
        representable in it).
    """

    nu: int
    nx: int
    nv: int
    ny: int
    w_in: np.ndarray
    b_in: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    d11: np.ndarray | None
    w_out: np.ndarray
    b_out: np.ndarray
    activation: str
    dtype: torch.dtype

    @classmethod
    def from_explicit(cls, model: ExplicitModel) -> StepForm:
        """Stack the matrices of ``model`` (an R2DN with an LBDN or a REN equilibrium)."""
        nu, nx, nv, ny = model.sizes

        def arr(t: Tensor) -> np.ndarray:
            return t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()

        network = model.network
        name: str | None
        if isinstance(network, ExplicitMLP):
            name = network.activation_name
            layers = tuple((arr(w), None if b is None else arr(b))
                           for w, b in zip(network.weights, network.biases))
            d11 = None
        elif isinstance(network, EquilibriumLayer):
            name = activation_name(network.activation)
            layers = ()
            d11 = np.tril(arr(network.D11), -1)
        else:
            raise TypeError("the step form needs an LBDN (ExplicitMLP) or an EquilibriumLayer "
                            f"network, got {type(network).__name__}")
        if name is None or name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
        w_in = np.concatenate([arr(model.C1), arr(model.D12)], axis=1).T
        top = np.concatenate([arr(model.C2), arr(model.D22), arr(model.D21)], axis=1)
        bottom = np.concatenate([arr(model.A), arr(model.B2), arr(model.B1)], axis=1)
        w_out = np.concatenate([top, bottom], axis=0).T
        b_out = np.concatenate([arr(model.by), arr(model.bx)])
        return cls(nu, nx, nv, ny, np.ascontiguousarray(w_in), arr(model.bv), layers, d11,
                   np.ascontiguousarray(w_out), b_out, name, model.A.dtype)


def _aug(weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Row-convention affine map as one matrix: ``[h, 1] @ [[W], [b]] = h W + b``."""
    b = np.zeros((1, weight.shape[1])) if bias is None else bias[None, :]
    return np.concatenate([weight, b], axis=0)


def _then(first: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Compose the augmented affine map ``first`` with ``h ↦ h W + b`` (still augmented)."""
    out = first @ weight
    if bias is not None:
        out[-1] += bias
    return out


class _NumpyR2DN:
    """An R2DN step in numpy with the affine maps around the LBDN folded together.

    Every affine map is one augmented matrix acting on a buffer whose last column is the
    constant 1 (the bias folded into the matmul). ``v ↦`` first LBDN layer is folded into the
    map from ``[z, 1]``, and the last LBDN layer into the output map, so a network of L
    layers costs L−1 matmuls plus the output map (products formed in float64, then cast).
    The last hidden activation and ``z`` share one buffer ``[h, z, 1]`` that the output map
    reads in one matmul. Buffers are allocated once per batch size.
    """

    def __init__(self, form: StepForm, np_dtype: np.dtype) -> None:
        self.nx, self.nu, self.ny = form.nx, form.nu, form.ny
        nz = form.nx + form.nu
        into = _aug(form.w_in, form.b_in)                       # [z, 1] -> v
        out_z = _aug(form.w_out[:nz], form.b_out)               # [z, 1] -> [y, x+] (w part aside)
        out_w = form.w_out[nz:]                                 # w -> [y, x+]
        layers = form.layers
        if len(layers) == 1:  # no hidden layer: the whole step is affine in z
            mats, final = [], out_z + _then(into, *layers[0]) @ out_w
        else:
            mats = [_then(into, *layers[0])] + [_aug(w, b) for w, b in layers[1:-1]]
            w_last, b_last = layers[-1]
            tail = w_last @ out_w                               # h_L -> [y, x+]
            head = out_z.copy()
            if b_last is not None:
                head[-1] += b_last @ out_w
            final = np.concatenate([tail, head], axis=0)        # [h_L, z, 1] -> [y, x+]
        self.mats = [np.ascontiguousarray(m, dtype=np_dtype) for m in mats]
        self.final = np.ascontiguousarray(final, dtype=np_dtype)
        self.widths = [m.shape[1] for m in self.mats]
        self.last = self.widths[-1] if self.widths else 0       # width of h_L in the shared buffer
        self.np_dtype = np_dtype
        self.activation = form.activation
        self._buffers: dict[int, tuple] = {}

    def _allocate(self, batch: int) -> tuple:
        dt = self.np_dtype
        shared = np.empty((batch, self.last + self.nx + self.nu + 1), dtype=dt)
        shared[:, -1] = 1.0
        hidden = []
        for width in self.widths[:-1]:
            buf = np.empty((batch, width + 1), dtype=dt)
            buf[:, -1] = 1.0
            hidden.append(buf)
        outs = [h[:, :-1] for h in hidden] + ([shared[:, :self.last]] if self.widths else [])
        # np.dot writes only into C-contiguous arrays: batch > 1 goes through a scratch array.
        scratch = [None if o.flags.c_contiguous else np.empty(o.shape, dtype=dt) for o in outs]
        zeros = [np.zeros(o.shape, dtype=dt) for o in outs]
        inputs = [shared[:, self.last:]] + hidden
        bufs = (shared, inputs, outs, scratch, zeros)
        self._buffers[batch] = bufs
        return bufs

    def _activate(self, h: np.ndarray, zeros: np.ndarray) -> None:
        name = self.activation
        if name == "relu":
            np.maximum(h, zeros, out=h)
        elif name == "leaky_relu":
            np.maximum(h, 0.01 * h, out=h)
        elif name == "tanh":
            np.tanh(h, out=h)
        elif name == "sigmoid":
            np.negative(h, out=h)
            np.exp(h, out=h)
            h += 1.0
            np.reciprocal(h, out=h)

    def __call__(self, x: np.ndarray, u: np.ndarray, batch: int) -> np.ndarray:
        """``x`` (B, nx), ``u`` (B, nu) (or 1-D when B = 1) → a fresh ``[y, x⁺]`` array
        of shape (B, ny+nx)."""
        bufs = self._buffers.get(batch) or self._allocate(batch)
        shared, inputs, outs, scratch, zeros = bufs
        at = self.last
        shared[:, at:at + self.nx] = x
        shared[:, at + self.nx:-1] = u
        # Non-finite inputs propagate to the outputs without a warning, as in the torch path
        # (inf·0 = nan inside a product would otherwise warn; ~1.5 µs per call).
        with np.errstate(invalid="ignore", over="ignore"):
            for k, mat in enumerate(self.mats):
                tmp = scratch[k]
                if tmp is None:
                    np.dot(inputs[k], mat, out=outs[k])
                else:
                    np.dot(inputs[k], mat, out=tmp)
                    outs[k][...] = tmp
                self._activate(outs[k], zeros[k])
            return np.dot(shared, self.final)


class _TorchStep:
    """The step form in torch (any device; differentiable in x and u)."""

    def __init__(self, form: StepForm, dtype: torch.dtype, device: torch.device) -> None:
        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        self.w_in, self.b_in = t(form.w_in), t(form.b_in)
        self.layers = [(t(w), None if b is None else t(b)) for w, b in form.layers]
        self.w_out, self.b_out = t(form.w_out), t(form.b_out)
        self.equilibrium: EquilibriumLayer | None = None
        if form.d11 is not None:
            self.equilibrium = EquilibriumLayer(t(form.d11), ACTIVATIONS[form.activation])
        self.act = ACTIVATIONS[form.activation]
        self.act_ = INPLACE[form.activation]

    def __call__(self, x: Tensor, u: Tensor) -> Tensor:
        z = torch.cat([x, u], dim=1)
        v = torch.addmm(self.b_in, z, self.w_in)
        if self.equilibrium is not None:
            w = self.equilibrium(v)
        else:
            inplace = not (torch.is_grad_enabled() and v.requires_grad)
            h = v
            *hidden, (w_last, b_last) = self.layers
            for weight, bias in hidden:
                h = h @ weight if bias is None else torch.addmm(bias, h, weight)
                if inplace:
                    self.act_(h)
                else:
                    h = self.act(h)
            w = h @ w_last if b_last is None else torch.addmm(b_last, h, w_last)
        return torch.addmm(self.b_out, torch.cat([z, w], dim=1), self.w_out)


class CompiledStep:
    """``y, x_next = step(x, u)``: one time step of a frozen explicit model, low overhead.

    Parameters
    ----------
    explicit : ExplicitModel
        The model to step (its values are copied: later parameter updates are not seen).
    backend : {"auto", "numpy", "torch"}
        ``"auto"``: numpy for an R2DN on CPU, torch otherwise. Inputs that need gradients
        always take the torch path.

    Call
    ----
    ``x`` (batch, nx) or (nx,) or None (zeros), ``u`` (batch, nu) or (nu,): torch tensors of the
    model's dtype and device. Returns new tensors ``y`` (batch, ny) and ``x_next`` (batch, nx)
    (unbatched in, unbatched out); only internal buffers are reused between calls. Only the
    dtype and shapes are checked.
    """

    def __init__(self, explicit: ExplicitModel, backend: str = "auto") -> None:
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
        self.form = StepForm.from_explicit(explicit)
        self.dtype, self.device = explicit.A.dtype, explicit.A.device
        numpy_ok = (self.device.type == "cpu" and self.form.d11 is None
                    and self.dtype in (torch.float32, torch.float64))
        if backend == "numpy" and not numpy_ok:
            raise ValueError("the numpy backend needs an R2DN with float32/float64 weights on "
                             f"CPU, got {type(explicit.network).__name__} {self.dtype} on "
                             f"{self.device}")
        self.torch_step = _TorchStep(self.form, self.dtype, self.device)
        self.numpy_step = None
        if numpy_ok and backend != "torch":
            np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
            self.numpy_step = _NumpyR2DN(self.form, np.dtype(np_dtype))
        f = self.form
        self.backend = "numpy" if self.numpy_step is not None else "torch"
        self._sizes = (f.nx, f.nu, f.ny)
        self._single = ((torch.Size([f.nu]), torch.Size([f.nx])),
                        (torch.Size([1, f.nu]), torch.Size([1, f.nx])))

    def _check(self, name: str, value: object, size: int) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but the model has dtype {self.dtype}")
        if value.dim() not in (1, 2) or value.shape[-1] != size:
            raise ValueError(f"{name} must have shape (batch, {size}) or ({size},), "
                             f"got {tuple(value.shape)}")
        return value

    def __call__(self, x: Tensor | None, u: Tensor) -> tuple[Tensor, Tensor]:
        nx, nu, ny = self._sizes
        # Fast path: one sample ((n,) or (1, n)) on CPU, the model's dtype, no gradients.
        if (self.numpy_step is not None and type(u) is Tensor and type(x) is Tensor
                and u.dtype == self.dtype and x.dtype == self.dtype
                and (u.shape, x.shape) in self._single
                and not (u.requires_grad or x.requires_grad) and u.is_cpu and x.is_cpu):
            out = self.numpy_step(x.numpy(), u.numpy(), 1)
            if u.dim() == 1:
                out = out[0]
            return torch.from_numpy(out[..., :ny]), torch.from_numpy(out[..., ny:])
        u = self._check("u", u, nu)
        batched = u.dim() == 2
        if x is None:
            x = u.new_zeros((u.shape[0], nx) if batched else (nx,))
        x = self._check("x", x, nx)
        if x.dim() != u.dim() or (batched and x.shape[0] != u.shape[0]):
            raise ValueError(f"x must have shape {(u.shape[0], nx) if batched else (nx,)} "
                             f"to match u of shape {tuple(u.shape)}, got {tuple(x.shape)}")
        if self.numpy_step is not None and not (
                (u.requires_grad or x.requires_grad) and torch.is_grad_enabled()):
            if u.device.type != "cpu" or x.device.type != "cpu":
                raise ValueError(f"x and u must be on cpu, got {x.device} and {u.device}")
            x_np, u_np = x.detach().numpy(), u.detach().numpy()
            out = self.numpy_step(x_np, u_np, u.shape[0] if batched else 1)
            if not batched:
                out = out[0]
            return torch.from_numpy(out[..., :ny]), torch.from_numpy(out[..., ny:])
        x_b, u_b = (x, u) if batched else (x.unsqueeze(0), u.unsqueeze(0))
        stacked = self.torch_step(x_b, u_b)
        y, x_next = stacked[:, :ny], stacked[:, ny:]
        return (y, x_next) if batched else (y[0], x_next[0])

    def numpy(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same step on numpy arrays (B, nx), (B, nu) of the model's dtype (R2DN on CPU).

        Skips the torch conversions; the caller guarantees shapes and dtypes.
        """
        if self.numpy_step is None:
            raise ValueError("numpy stepping needs the numpy backend (an R2DN on CPU)")
        out = self.numpy_step(x, u, x.shape[0])
        return out[:, :self._sizes[2]], out[:, self._sizes[2]:]


def compile_step(model: RecurrentModel, backend: str = "auto") -> CompiledStep:
    """A `CompiledStep` of ``model``'s current explicit model (no gradients)."""
    with torch.no_grad():
        explicit = model.explicit()
    return CompiledStep(explicit, backend)


def frozen_step(model: RecurrentModel) -> CompiledStep:
    """The `CompiledStep` of the explicit model cached by ``model.frozen()``."""
    frozen = model._frozen
    if frozen is None:
        raise ValueError("frozen_step needs a frozen model (call model.frozen() first)")
    cached = model.__dict__.get("_frozen_step")
    if cached is None or cached[0] is not frozen:
        cached = (frozen, CompiledStep(frozen))
        model.__dict__["_frozen_step"] = cached
    return cached[1]
