r"""Sandwich layers and Lipschitz-bounded deep networks (LBDN).

Wang & Manchester (2023). A hidden sandwich layer $h \mapsto h^+$ is

$$
h^+ = \sqrt{2}\,\tilde A \Psi\, \sigma\!\left(\sqrt{2}\,\Psi^{-1} B h + b\right),
$$

with $(\tilde A, B)$ the Cayley transform of the normalised weight
$\bar{W} = (a/\mathrm{nrm}(W)) W$ (so $\tilde A^\top\tilde A + BB^\top = I$) and
$\Psi = \mathrm{diag}(e^{d})$. It is 1-Lipschitz for any σ with slope in [0, 1].
The linear output layer is $h^+ = Bh + b$ with $\|B\| \le 1$, and the network is
$f(x) = \sqrt\gamma\, g_L \circ \dots \circ g_1(\sqrt\gamma\, x)$, which is γ-Lipschitz.

For evaluation the constant scalings are folded into the neighbouring matrices so the
network is an ordinary MLP (`ExplicitMLP`) with one matmul per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from . import _checks
from ._algebra import cast_is_noop, cayley, frobenius, lecun_normal_
from ._lbdn_map import ExplicitWeights, Plan, cast_to, functorch_active
from .activations import Activation, get_activation

_SQRT2 = math.sqrt(2.0)
_LOG_SCALE_CLIP = 20.0


@dataclass(frozen=True)
class ExplicitMLP:
    """An MLP ``out = σ(…σ(x W₀ + b₀)…) W_L + b_L`` (row convention).

    Attributes
    ----------
    weights : tuple of Tensor
        Right-multiplied weight matrices, the last one without activation after it.
    biases : tuple of Tensor or None
        One bias per weight; ``None`` for a layer without bias.
    activation : callable
        The elementwise activation applied after every layer but the last.
    activation_name : str
        Its name in `r2dn_control.nn.activations.ACTIVATIONS` (used by the fused rollout).
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor | None, ...]
    activation: Activation
    activation_name: str

    def __call__(self, x: Tensor) -> Tensor:
        *hidden, last = range(len(self.weights))
        for k in hidden:
            x = self.activation(_affine(x, self.weights[k], self.biases[k]))
        return _affine(x, self.weights[last], self.biases[last])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> ExplicitMLP:
        """Cast/move every tensor (``self`` if every tensor already has that dtype and device)."""
        tensors = [*self.weights, *(b for b in self.biases if b is not None)]
        if all(cast_is_noop(t, dtype, device) for t in tensors):
            return self
        return ExplicitMLP(
            tuple(w.to(dtype=dtype, device=device) for w in self.weights),
            tuple(None if b is None else b.to(dtype=dtype, device=device) for b in self.biases),
            self.activation,
            self.activation_name,
        )


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if bias is None:
        return x @ weight
    if x.dim() == 2:
        return torch.addmm(bias, x, weight)
    return x @ weight + bias


class SandwichLayer(nn.Module):
    r"""One 1-Lipschitz sandwich layer ``in_features → out_features``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes m and n.
    activation : str
        Slope-restricted activation (see `r2dn_control.nn.activations`).
    linear : bool
        If True this is the linear output layer ``h⁺ = B h + b`` (no activation, no ``d``).
    bias : bool
        Learn the bias ``b`` (zero and fixed otherwise).

    Notes
    -----
    Direct parameters: ``weight`` (n+m)×n (direction), ``scale`` a (magnitude, initialised to
    ‖weight‖ so the normalised weight equals ``weight``), ``log_psi`` d (hidden layers only),
    ``bias`` b.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "relu",
        *,
        linear: bool = False,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _checks.positive_int("in_features", in_features)
        self.out_features = _checks.positive_int("out_features", out_features)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.linear = bool(linear)
        n, m = out_features, in_features
        self.weight = nn.Parameter(lecun_normal_(torch.empty(n + m, n, dtype=dtype, device=device),
                                                 fan_in=m))
        self.scale = nn.Parameter(torch.empty((), dtype=dtype, device=device))
        self.log_psi = (None if linear
                        else nn.Parameter(torch.zeros(n, dtype=dtype, device=device)))
        self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device)) if bias else None
        self.reset_scale()

    @property
    def eps(self) -> float:
        return max(torch.finfo(self.weight.dtype).eps, 1e-12)

    def reset_scale(self) -> None:
        """Set the magnitude ``a`` to nrm(weight), making the normalised weight equal ``weight``."""
        with torch.no_grad():
            self.scale.copy_(frobenius(self.weight, self.eps))

    def normalized_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The weight rescaled to Frobenius norm ``a``: ``(a / nrm(W)) W``."""
        w = self.weight if dtype is None else self.weight.to(dtype)
        a = self.scale if dtype is None else self.scale.to(dtype)
        return (a / frobenius(w, self.eps)) * w

    def cayley_factors(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        r"""Return $(\tilde A, B)$ with $\tilde A^\top\tilde A + BB^\top = I$."""
        return cayley(self.normalized_weight(dtype), self.out_features)

    def psi(self, dtype: torch.dtype | None = None) -> Tensor | None:
        r"""$\psi = \exp(\mathrm{clip}(d, \pm 20))$, or None for the linear layer."""
        if self.log_psi is None:
            return None
        d = self.log_psi if dtype is None else self.log_psi.to(dtype)
        return torch.exp(torch.clamp(d, -_LOG_SCALE_CLIP, _LOG_SCALE_CLIP))

    def folded(self, dtype: torch.dtype | None = None,
               factors: tuple[Tensor, Tensor] | None = None
               ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        r"""Right-multiplied ``(pre, bias, post)`` with ``h⁺ = σ(h·pre + b)·post``.

        ``pre = √2 Bᵀ Ψ⁻¹`` and ``post = √2 Ψ Ãᵀ`` for a hidden layer;
        ``pre = Bᵀ`` and ``post = None`` for the linear layer. ``factors`` are precomputed
        `cayley_factors` (the LBDN batches them over identically shaped layers).
        """
        a_tilde, b = self.cayley_factors(dtype) if factors is None else factors
        bias = self.bias if (self.bias is None or dtype is None) else self.bias.to(dtype)
        psi = self.psi(dtype)
        if psi is None:
            return b.T, bias, None
        pre = (_SQRT2 * b.T) / psi
        post = (_SQRT2 * psi)[:, None] * a_tilde.T
        return pre, bias, post

    def forward(self, h: Tensor) -> Tensor:
        """Apply the layer to ``h`` of shape (..., in_features)."""
        pre, bias, post = self.folded()
        z = _affine(h, pre, bias)
        return z if post is None else self.activation(z) @ post

    def extra_repr(self) -> str:
        kind = "linear" if self.linear else self.activation_name
        return f"{self.in_features}, {self.out_features}, {kind}"


def _hidden_log_psi(layer: SandwichLayer) -> Tensor:
    """``d`` of a hidden sandwich layer (the linear output layer has none)."""
    if layer.log_psi is None:
        raise ValueError("the linear output layer has no log_psi (d); expected a hidden layer")
    return layer.log_psi


class LBDN(nn.Module):
    r"""Lipschitz-bounded deep network $f(x)=\sqrt\gamma\,g_L\circ\dots\circ g_1(\sqrt\gamma x)$.

    ``‖f(a) − f(b)‖ ≤ γ‖a − b‖`` for every value of the parameters.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    hidden : sequence of int
        Widths of the hidden sandwich layers (may be empty).
    gamma : float
        Lipschitz bound γ > 0.
    learn_gamma : bool
        Make ``log γ`` a learnable parameter (initialised at ``log gamma``).
    activation : str
        Slope-restricted activation.
    output_layer : {"linear", "sandwich"}
        ``"linear"`` (paper, RobustNeuralNetworks.jl): a final ``h⁺ = Bh + b``;
        ``"sandwich"`` (the JAX reference code's behaviour): the last layer is another
        nonlinear sandwich layer. Both are 1-Lipschitz.
    """

    log_gamma: Tensor  # a parameter (learn_gamma) or a buffer

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (),
        *,
        gamma: float = 1.0,
        learn_gamma: bool = False,
        activation: str = "relu",
        output_layer: str = "linear",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _checks.positive_int("in_features", in_features)
        self.out_features = _checks.positive_int("out_features", out_features)
        self.hidden = _checks.positive_ints("hidden", hidden)
        gamma = _checks.scale_in_range("gamma", _checks.positive_float("gamma", gamma),
                                       _checks.model_dtype(dtype or torch.get_default_dtype()))
        self.output_layer = _checks.choice("output_layer", output_layer, ("linear", "sandwich"))
        self.activation = get_activation(activation)
        self.activation_name = activation
        widths = (self.in_features, *self.hidden, self.out_features)
        self.layers = nn.ModuleList(
            SandwichLayer(
                widths[k], widths[k + 1], activation,
                linear=(output_layer == "linear" and k == len(widths) - 2), dtype=dtype,
                device=device,
            )
            for k in range(len(widths) - 1)
        )
        log_gamma = torch.tensor(math.log(gamma), dtype=dtype, device=device)
        if learn_gamma:
            self.log_gamma = nn.Parameter(log_gamma)
        else:
            self.register_buffer("log_gamma", log_gamma)

    @property
    def sandwich_layers(self) -> list[SandwichLayer]:
        """``layers`` as what they are (``nn.ModuleList`` items are typed ``nn.Module``)."""
        return cast("list[SandwichLayer]", list(self.layers))

    @property
    def gamma(self) -> Tensor:
        """The Lipschitz bound γ = exp(log γ) (a tensor, differentiable if learnable)."""
        return torch.exp(self.log_gamma)

    def explicit(self, dtype: torch.dtype | None = None, *, fused: bool = True) -> ExplicitMLP:
        """Fold every layer's scalings into one weight per layer (computed in ``dtype``).

        ``fused=True`` (default) computes all layers' weights in one ``torch.autograd.Function``
        with a hand-written backward (`r2dn_control.nn._lbdn_map`: one C++ call forward and one
        backward on the CPU, else every layer padded into one torch batch; first derivatives
        only; inside ``torch.func`` transforms the composed path runs). ``fused=False``
        composes torch ops (the reference; supports higher derivatives): identically shaped
        layers are handled together (one stacked normalisation, Cayley transform and scaling
        per group, one batched product per group of equal-shape weight products); every
        parameter is cast once.
        """
        if fused and not functorch_active():
            return self._explicit_fused(dtype)
        log_gamma = self.log_gamma if dtype is None else self.log_gamma.to(dtype)
        root_gamma = torch.exp(0.5 * log_gamma)
        pres, posts, last_post = self._folded_factors(dtype)
        weights: list[Tensor] = [root_gamma * pres[0]]
        # W_k = post_{k-1} @ pre_k for k ≥ 1, one bmm per group of equal shapes.
        products: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
        for k in range(1, len(self.layers)):
            products.setdefault((tuple(posts[k - 1].shape), tuple(pres[k].shape)), []).append(k)
        chained: dict[int, Tensor] = {}
        for members in products.values():
            if len(members) == 1:
                k = members[0]
                chained[k] = posts[k - 1] @ pres[k]
                continue
            left = torch.stack([posts[k - 1] for k in members])
            right = torch.stack([pres[k] for k in members])
            chained.update(zip(members, torch.bmm(left, right).unbind(0)))
        weights.extend(chained[k] for k in range(1, len(self.layers)))
        biases: list[Tensor | None] = [
            None if layer.bias is None else (layer.bias if dtype is None else layer.bias.to(dtype))
            for layer in self.sandwich_layers
        ]
        if last_post is None:  # linear output layer: scale its output by √γ
            weights[-1] = weights[-1] * root_gamma
            biases[-1] = None if biases[-1] is None else biases[-1] * root_gamma
        else:  # sandwich output layer: its post-matrix (times √γ) is a bias-free final layer
            weights.append(last_post * root_gamma)
            biases.append(None)
        return ExplicitMLP(tuple(weights), tuple(biases), self.activation, self.activation_name)

    def _plan(self) -> Plan:
        """The static structure `ExplicitWeights` needs (cached: it depends only on shapes)."""
        plan = self.__dict__.get("_plan_cache")
        if plan is None:
            layers = self.sandwich_layers
            plan = Plan(tuple((layer.out_features, layer.in_features) for layer in layers),
                        self.output_layer == "sandwich", layers[0].eps, _LOG_SCALE_CLIP)
            self.__dict__["_plan_cache"] = plan
        return plan

    def _explicit_fused(self, dtype: torch.dtype | None) -> ExplicitMLP:
        layers = self.sandwich_layers
        target = dtype or layers[0].weight.dtype
        params: list[Tensor] = []
        for layer in layers:
            params += [layer.weight, layer.scale]
            if layer.log_psi is not None:
                params.append(layer.log_psi)
        weights = ExplicitWeights.apply(self._plan(), target, self.log_gamma, *params)
        biases: list[Tensor | None] = [
            None if (b := layer.bias) is None else cast_to(b, target)
            for layer in layers
        ]
        if self.output_layer == "linear":  # the linear output layer's bias is scaled by √γ
            if biases[-1] is not None:
                biases[-1] = biases[-1] * torch.exp(0.5 * self.log_gamma.to(target))
        else:
            biases.append(None)
        return ExplicitMLP(tuple(weights), tuple(biases), self.activation, self.activation_name)

    def _layer_groups(self) -> list[list[int]]:
        """Indices of the layers with equal weight shape and kind (hidden or linear)."""
        groups: dict[tuple[tuple[int, ...], bool], list[int]] = {}
        for k, layer in enumerate(self.sandwich_layers):
            groups.setdefault((tuple(layer.weight.shape), layer.linear), []).append(k)
        return list(groups.values())

    def _folded_factors(self, dtype: torch.dtype | None
                        ) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
        r"""Every layer's right-multiplied ``pre`` and ``post`` of `SandwichLayer.folded`,
        computed group-wise: ``W̄ = (a/nrm(W))W``, ``(Ã, B) = cayley(W̄)``,
        ``pre = √2 Bᵀ Ψ⁻¹``, ``post = √2 Ψ Ãᵀ`` (``pre = Bᵀ``, ``post = None`` if linear).

        Returns ``(pres, posts, last_post)``: ``posts`` of every layer but the last (hidden
        layers, never None) and the last layer's ``post`` (None for a linear output layer).
        """
        layers = self.sandwich_layers
        pres: dict[int, Tensor] = {}
        posts: dict[int, Tensor] = {}
        for members in self._layer_groups():
            first = layers[members[0]]
            if len(members) == 1:
                pre, _, post = first.folded(dtype)
                pres[members[0]] = pre
                if post is not None:
                    posts[members[0]] = post
                continue
            w = torch.stack([layers[k].weight for k in members])
            scale = torch.stack([layers[k].scale for k in members])
            if dtype is not None:
                w, scale = w.to(dtype), scale.to(dtype)
            norm = torch.sqrt(torch.sum(w * w, dim=(-2, -1)) + first.eps)
            a_tilde, b = cayley((scale / norm)[:, None, None] * w, first.out_features)
            if first.linear:
                pre_g, post_g = b.mT, None
            else:
                d = torch.stack([_hidden_log_psi(layers[k]) for k in members])
                d = d if dtype is None else d.to(dtype)
                psi = torch.exp(torch.clamp(d, -_LOG_SCALE_CLIP, _LOG_SCALE_CLIP))
                pre_g = (_SQRT2 * b.mT) / psi[:, None, :]
                post_g = (_SQRT2 * psi)[:, :, None] * a_tilde.mT
            for i, k in enumerate(members):
                pres[k] = pre_g[i]
                if post_g is not None:
                    posts[k] = post_g[i]
        last = len(layers) - 1
        return [pres[k] for k in range(last + 1)], [posts[k] for k in range(last)], posts.get(last)

    def forward(self, x: Tensor) -> Tensor:
        """Evaluate f on ``x`` of shape (..., in_features)."""
        weight = self.sandwich_layers[0].weight
        _checks.feature_tensor("x", x, self.in_features, weight.dtype, weight.device)
        return self.explicit()(x)
