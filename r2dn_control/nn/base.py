"""The recurrent-model base class: input checks, rollout dispatch, caching, checkpoints config.

Every recurrent family (R2DN, REN) subclasses `RecurrentModel` and implements only
``_build_explicit(dtype)``: the map from its direct parameters to an
`ExplicitModel`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from . import _checks, realtime
from ._algebra import default_eps, frobenius, full_precision_matmul, lecun_normal_
from ._inference_cache import InferenceCache, needs_no_graph
from ._lbdn_map import functorch_active
from .explicit import ExplicitModel, rollout
from .iqc import SupplyRate
from .parametrizations import LipschitzBound

INITS = ("random", "long_memory")


class RecurrentModel(nn.Module):
    """Base class of the directly parameterized recurrent models.

    The parameters below are shared by every family.

    Parameters
    ----------
    input_size, state_size, features, output_size : int
        nu, nx, nv (width of the nonlinearity's input/output) and ny.
    activation : str
        Slope-restricted activation (``"relu"``, ``"tanh"``, ...).
    init : {"random", "long_memory"}
        Random (lecun-normal) weights, or A ≈ r(I − diag(U[0, 0.05])) with no feedback through
        the nonlinearity (slow, long-memory dynamics), r = ``init_radius``.
    contraction_rate : float
        Bound ᾱ ∈ (0, 1] on the contraction rate: ``‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫``.
    init_radius : float, optional
        Radius r ∈ (0, ᾱ] of the long-memory initial poles (default ᾱ): the initial eigenvalues
        of A lie in [0.95 r, r], while the certificate still only bounds them by ᾱ
        (docs/theory.md §3). Only allowed with ``init="long_memory"``.
    polar : bool
        Polar parameterization of the free factor of H (a learnable magnitude p).
    eps : float, optional
        Positive-definiteness margin; default ``max(finfo(dtype).eps, 1e-12)``.
    init_output_zero : bool
        Start with zero output map (C₂, D₂₁, b_y).
    identity_output : bool
        Fix ``y = x`` (C₂ = I, D₂₁ = 0): the state is the output, e.g. for observers (ny = nx).
    batch_first : bool
        Inputs/outputs are (batch, time, feature) if True (default), else (time, batch, feature).
    dtype, device
        Parameter dtype and device.

    Call
    ----
    ``y, x_T = model(u, x0=None)`` with ``u`` of shape (batch, time, nu) (or (time, nu)),
    ``x0`` of shape (batch, nx) (or (nx,)); ``y`` has shape (batch, time, ny).

    Efficient implementation (a fused backend of `BACKENDS`
    where one applies, see `rollout_method`) equivalent to the following, with
    ``m = model.explicit()`` and ``φ = m.network`` (docs/theory.md §2–§3)::

        x = x0
        for t in range(T):
            w = φ(x @ m.C1.T + u[:, t] @ m.D12.T + m.bv)
            y[:, t] = x @ m.C2.T + w @ m.D21.T + u[:, t] @ m.D22.T + m.by
            x = x @ m.A.T + w @ m.B1.T + u[:, t] @ m.B2.T + m.bx
        return y, x

    (`reference_loop` is this loop, public.)
    """

    #: The fixed supply rate of a dissipative family (None: contracting); read `supply`.
    _supply: SupplyRate | None = None
    init_kwargs: dict[str, Any]
    #: Passed to `rollout`: "auto", "fused", "reference" or a
    #: backend name of `BACKENDS`.
    rollout_method: str = "auto"
    #: Reuse the explicit model of calls that need no autograd graph (``torch.no_grad``,
    #: ``torch.inference_mode``, or no parameter requires grad) while every parameter, buffer
    #: and scalar setting is bit-for-bit unchanged (`r2dn_control.nn._inference_cache`);
    #: False: rebuild it every call.
    inference_cache: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Record the outermost constructor call's arguments so checkpoints can rebuild the model.
        super().__init_subclass__(**kwargs)
        original = cls.__init__
        signature = inspect.signature(original)

        @functools.wraps(original)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if "init_kwargs" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                named = dict(bound.arguments)
                named.pop("self")
                named.update(named.pop("kwargs", {}))
                object.__setattr__(self, "init_kwargs", named)
            original(self, *args, **kw)

        # Wrapping a subclass's __init__ at class creation: mypy forbids assigning to methods.
        cls.__init__ = recording_init  # type: ignore[method-assign]

    def __init__(
        self,
        input_size: int,
        state_size: int,
        features: int,
        output_size: int,
        *,
        activation: str = "relu",
        init: str = "random",
        contraction_rate: float = 1.0,
        init_radius: float | None = None,
        polar: bool = True,
        eps: float | None = None,
        init_output_zero: bool = False,
        identity_output: bool = False,
        batch_first: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.state_size = _checks.positive_int("state_size", state_size)
        self.features = _checks.positive_int("features", features)
        self.output_size = _checks.positive_int("output_size", output_size)
        self.init_method = _checks.choice("init", init, INITS)
        self.contraction_rate = _checks.rate("contraction_rate", contraction_rate)
        self.init_radius = self._checked_init_radius(init_radius)
        dtype = _checks.model_dtype(torch.get_default_dtype() if dtype is None else dtype)
        self.eps = default_eps(dtype) if eps is None else _checks.positive_float("eps", eps)
        self.polar = bool(polar)
        self.init_output_zero = bool(init_output_zero)
        self.identity_output = bool(identity_output)
        if self.identity_output and self.output_size != self.state_size:
            raise ValueError(
                "identity_output=True needs output_size == state_size, got "
                f"output_size={output_size}, state_size={state_size}"
            )
        self.activation_name = activation
        self.batch_first = bool(batch_first)
        self._factory: dict[str, Any] = {"dtype": dtype, "device": device}
        self._frozen: ExplicitModel | None = None
        self._explicit_cache = InferenceCache()

    def _checked_init_radius(self, init_radius: float | None) -> float:
        """r of the long-memory init: ᾱ by default, else a rate in (0, ᾱ] (needs long_memory)."""
        if init_radius is None:
            return self.contraction_rate
        radius = _checks.rate("init_radius", init_radius)
        if self.init_method != "long_memory":
            raise ValueError(f"init_radius only applies to init='long_memory', got "
                             f"init={self.init_method!r} with init_radius={init_radius!r}")
        if radius > self.contraction_rate:
            raise ValueError(f"init_radius must be at most contraction_rate = "
                             f"{self.contraction_rate}, got {radius}")
        return radius

    # ------------------------------------------------------------------ direct parameters
    def _init_shared_parameters(self, h_size: int) -> None:
        """Parameters every family has: the free factor ``X`` of H (h×h), its polar magnitude
        ``p``, ``Y`` (nx×nx), the biases, and ``C2`` (the fixed identity if ``identity_output``).
        """
        nx, nv, ny = self.state_size, self.features, self.output_size
        fk = self._factory
        self.X = nn.Parameter(lecun_normal_(torch.empty(h_size, h_size, **fk)))
        self.polar_scale = nn.Parameter(torch.empty((), **fk)) if self.polar else None
        self.Y = nn.Parameter(lecun_normal_(torch.empty(nx, nx, **fk)))
        self.bx = nn.Parameter(torch.zeros(nx, **fk))
        self.bv = nn.Parameter(torch.zeros(nv, **fk))
        self.by = nn.Parameter(torch.zeros(ny, **fk))
        if self.identity_output:
            self.register_buffer("C2", torch.eye(nx, **fk))
        else:
            self.C2 = nn.Parameter(lecun_normal_(torch.empty(ny, nx, **fk)))

    def _init_long_memory(self) -> None:
        """Family-specific long-memory initialisation of the direct parameters."""
        raise NotImplementedError

    @staticmethod
    def _passive_supply(family: str, input_size: int, output_size: int,
                        input_passivity: float) -> SupplyRate:
        """The supply ``Q = 0, S = I, R = −2νI`` of a passive family (checked before the
        model is built: it needs ``input_size == output_size``)."""
        if input_size != output_size:
            raise ValueError(
                f"{family} needs input_size == output_size, got "
                f"input_size={input_size}, output_size={output_size}"
            )
        return SupplyRate.passive(input_passivity, _checks.positive_int("input_size", input_size))

    def _add_passivity_parameters(self, supply: SupplyRate, input_passivity: float) -> None:
        """Keep the passive supply and ν, and add the free ``X₃, Y₃`` (nu×nu) of the passive
        feedthrough ``D₂₂`` (docs/theory.md §2, §3)."""
        self._supply = supply
        self.input_passivity = float(input_passivity)
        nu, fk = self.input_size, self._factory
        self.X3 = nn.Parameter(lecun_normal_(torch.empty(nu, nu, **fk)))
        self.Y3 = nn.Parameter(lecun_normal_(torch.empty(nu, nu, **fk)))

    def _finish_init(self) -> None:
        """Apply ``init_output_zero`` and ``init``, then set the polar magnitude p = nrm(X).

        Called by each family once all its parameters exist.
        """
        _checks.supply_in_range(self.supply, self._factory["dtype"])
        with torch.no_grad():
            if self.init_output_zero:
                self.by.zero_()
                for name in ("C2", "D21"):
                    param = self._parameters.get(name)
                    if param is not None:  # a fixed identity-output C2 is a buffer: untouched
                        param.zero_()
            if self.init_method == "long_memory":
                self._init_long_memory()
            if self.polar_scale is not None:  # makes p²/nrm(X)² = 1: H_X = XᵀX + εI at init
                self.polar_scale.copy_(frobenius(self.X, self.eps))

    # ------------------------------------------------------------------ supply rate and γ
    @property
    def supply(self) -> SupplyRate | None:
        """The (Q,S,R) supply rate the model is dissipative for (None for contracting models).

        With a learned γ it is built at the current γ (a detached, validated copy).
        """
        gamma = self.gamma
        if self.learns_gamma and gamma is not None:
            return SupplyRate.lipschitz(gamma, self.input_size,
                                        self.output_size)
        return self._supply

    def gamma_bound(self) -> Tensor | None:
        """The current prescribed Lipschitz bound γ as a 0-d float64 tensor; None unless the
        family is a Lipschitz one.

        Differentiable in the model's parameters when ``gamma="learn"`` (usable in a penalty);
        a constant otherwise. The incremental ℓ₂-gain guarantee holds with exactly this γ.
        """
        bound = self._lipschitz_bound()
        return None if bound is None else bound.value(self.device)

    def _lipschitz_bound(self) -> LipschitzBound | None:
        """The γ module of a Lipschitz family (None for the others)."""
        bound = self._modules.get("lipschitz_bound")
        return bound if isinstance(bound, LipschitzBound) else None

    @property
    def learns_gamma(self) -> bool:
        """Whether γ is a trained parameter (``gamma="learn"``)."""
        bound = self._lipschitz_bound()
        return bound is not None and bool(bound.learns)

    @property
    def gamma(self) -> float | None:
        """The current Lipschitz bound γ as a float (None unless a Lipschitz family)."""
        value = self.gamma_bound()
        return None if value is None else float(value.detach())

    def _supply_on(self, device: torch.device) -> SupplyRate:
        """The supply rate's float64 matrices on ``device`` (cached per device when fixed;
        rebuilt from the current γ, differentiably, when learned)."""
        bound = self._lipschitz_bound()
        if bound is not None and self.learns_gamma:
            return bound.supply(self.input_size, self.output_size, device)
        if self._supply is None:
            raise RuntimeError(f"{type(self).__name__} has no supply rate")
        cache = self.__dict__.setdefault("_supply_cache", {})
        if device not in cache:
            cache[device] = self._supply.to(device)
        return cache[device]

    # ------------------------------------------------------------------ explicit model
    def _build_explicit(self, dtype: torch.dtype, certificate: bool = True,
                        network_dtype: torch.dtype | None = None,
                        defer_network: bool = False) -> ExplicitModel:
        """Map the direct parameters to the explicit model, computing in ``dtype``.

        With ``certificate`` the implied Lyapunov metric and multiplier are filled in.
        ``network_dtype`` (default ``dtype``) is where a family may build its nonlinearity when
        that does not enter the certificate (the LBDN's Cayley transforms are well conditioned:
        ‖(I+Z)⁻¹‖ ≤ 1, so float32 there costs nothing in accuracy and halves the time).
        ``defer_network``: a family whose nonlinearity does not enter the LTI blocks may
        return it as a `DeferredNetwork` (built on first use).
        """
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's parameters."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def explicit(self, dtype: torch.dtype | None = None, *, defer_network: bool = False
                 ) -> ExplicitModel:
        """The explicit model.

        The direct-to-explicit algebra always runs in float64 (the certificate survives only
        there, docs/theory.md §6); the result is cast to ``dtype`` (default: the model's dtype).
        Inside `frozen` the cached model is returned. ``defer_network=True``: an R2DN's LBDN
        weights are built only when the network is first called (`DeferredNetwork`; what the
        certificates use, which read only the LTI blocks).
        """
        if not isinstance(defer_network, bool):
            raise TypeError(f"defer_network must be a bool, got {type(defer_network).__name__}")
        return self._explicit(dtype, certificate=True, defer_network=defer_network)

    def _explicit(self, dtype: torch.dtype | None, certificate: bool,
                  defer_network: bool = False) -> ExplicitModel:
        first = next(self.parameters())  # one look-up for the dtype and the device
        target = first.dtype if dtype is None else _checks.model_dtype(dtype)
        if self._frozen is not None and target == self._frozen.A.dtype:
            return self._frozen
        if (not certificate and self.inference_cache and needs_no_graph(self)
                and not functorch_active()):
            key = (target, torch.is_inference_mode_enabled())
            return self._explicit_cache.get(
                self, key, lambda: self._build_cast(target, certificate, first.device))
        return self._build_cast(target, certificate, first.device, defer_network)

    def _build_cast(self, target: torch.dtype, certificate: bool, device: torch.device,
                    defer_network: bool = False) -> ExplicitModel:
        """`_build_explicit` in float64 (the network in ``target``), cast to ``target``."""
        with full_precision_matmul(device):
            exact = self._build_explicit(torch.float64, certificate, network_dtype=target,
                                         defer_network=defer_network)
        return exact if target == torch.float64 else exact.to(dtype=target)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[RecurrentModel]:
        """Cache the explicit model for repeated inference (no gradients flow to parameters).

        Parameter updates made inside the context are not seen until it exits.
        """
        previous = self._frozen
        with torch.no_grad():
            self._frozen = None
            self._frozen = self.explicit()
        try:
            yield self
        finally:
            self._frozen = previous

    def _apply(self, fn, *args, **kwargs):
        # .to()/.double()/.cuda() invalidate a cached explicit model.
        self._frozen = None
        self.__dict__.get("_explicit_cache", InferenceCache()).clear()
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ calling
    def _check_tensor(self, name: str, value: object) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.dtype != self.dtype:
            raise TypeError(
                f"{name} has dtype {value.dtype} but the model has dtype {self.dtype}; "
                f"convert one of them (e.g. {name}.to({self.dtype}) or model.to({value.dtype}))"
            )
        _checks.same_device(name, value, self.device)
        return value

    def _batch_input(self, u: object) -> tuple[Tensor, bool]:
        u = self._check_tensor("u", u)
        nu = self.input_size
        layout = "(batch, time, input)" if self.batch_first else "(time, batch, input)"
        if u.dim() not in (2, 3) or u.shape[-1] != nu:
            raise ValueError(
                f"u must have shape {layout} or (time, input) with input = {nu}, "
                f"got {tuple(u.shape)}"
            )
        batched = u.dim() == 3
        if u.shape[1 if batched and self.batch_first else 0] == 0:
            raise ValueError(f"u must contain at least one time step, got shape {tuple(u.shape)}")
        if not batched:
            u = u.unsqueeze(0)
        elif not self.batch_first:
            u = u.transpose(0, 1)
        return u, batched

    def _batch_state(self, x0: object, batch: int, batched: bool, like: Tensor) -> Tensor:
        nx = self.state_size
        if x0 is None:
            return like.new_zeros(batch, nx)
        x0 = self._check_tensor("x0", x0)
        expected = (batch, nx) if batched else (nx,)
        if tuple(x0.shape) != expected:
            raise ValueError(f"x0 must have shape {expected}, got {tuple(x0.shape)}")
        return x0 if batched else x0.unsqueeze(0)

    def forward(self, u: Tensor, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Simulate from ``x0`` (zeros if None); returns ``(y, x_T)``."""
        u_b, batched = self._batch_input(u)
        x = self._batch_state(x0, u_b.shape[0], batched, u_b)
        y, x_final = rollout(self._explicit(None, certificate=False), u_b, x, self.rollout_method)
        if not batched:
            return y.squeeze(0), x_final.squeeze(0)
        return (y if self.batch_first else y.transpose(0, 1)), x_final

    def step(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """One time step: returns ``(y_t, x_{t+1})`` for ``x`` (batch, nx) and ``u`` (batch, nu).

        Unbatched ``x`` (nx,) and ``u`` (nu,) are accepted. Builds the explicit model each call
        unless inside `frozen`, where it takes the cached fast path of `compile_step`.
        """
        if self._frozen is not None:
            return realtime.frozen_step(self)(x, u)
        u = self._check_tensor("u", u)
        if u.dim() not in (1, 2) or u.shape[-1] != self.input_size:
            raise ValueError(
                f"u must have shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(u.shape)}"
            )
        batched = u.dim() == 2
        u_b = u.unsqueeze(-2) if batched else u.reshape(1, 1, -1)
        x_b = self._batch_state(x, u_b.shape[0], batched, u_b)
        y, x_next = rollout(self._explicit(None, certificate=False), u_b, x_b, self.rollout_method)
        return (y[:, 0], x_next) if batched else (y[0, 0], x_next[0])

    def compile_step(self, backend: str = "auto") -> realtime.CompiledStep:
        """A low-overhead ``y, x_next = step(x, u)`` of the current weights (no gradients to
        parameters; see `r2dn_control.nn.realtime`)."""
        return realtime.compile_step(self, backend)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, state_size={self.state_size}, "
            f"features={self.features}, output_size={self.output_size}, "
            f"contraction_rate={self.contraction_rate}"
        )
