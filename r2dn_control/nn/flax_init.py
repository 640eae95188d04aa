r"""The reference JAX/flax code's initial distribution, as an option (`flax_lecun_init_`).

Our families draw their weight matrices from N(0, 1/fan_in) with fan_in = the number of
columns (`lecun_normal_`), except B₂ and D₁₂ (fan_in = rows) and the sandwich weights
(fan_in = the layer's input width m). The authors' code (flax ``lecun_normal()``) takes, for
every matrix ``W`` of shape (r, c), fan_in = r (the second-to-last dimension) and a normal
truncated at two standard deviations, rescaled so that the drawn values have variance
exactly 1/r:

$$
W_{ij} = \frac{s}{0.8796256610342398}\, z_{ij},\qquad z_{ij} \sim \mathcal N(0, 1)
\text{ conditioned on } |z_{ij}| \le 2,\qquad s = 1/\sqrt{r},
$$

(0.87962566… is the standard deviation of a standard normal truncated to [−2, 2]), so
std(W_ij) = 1/√r and |W_ij| ≤ 2.27/√r. For a contracting R2DN with nx states, nv features
and nu inputs this gives

| parameter | shape | ours (`init="random"`) | flax-style |
|---|---|---|---|
| X | 2nx × 2nx | 1/√(2nx) | 1/√(2nx), truncated |
| Y | nx × nx | 1/√nx | 1/√nx, truncated |
| B̂₁ | nx × nv | 1/√nv | 1/√nx |
| C₁ | nv × nx | 1/√nx | 1/√nv |
| B₂ | nx × nu | 1/√nx | 1/√nx, truncated |
| D₁₂ | nv × nu | 1/√nv | 1/√nv, truncated |
| C₂, D₂₁ (free output) | ny × · | 1/√columns | 1/√ny |
| sandwich weight (m → n) | (n+m) × n | 1/√m | 1/√(n+m) |

and then, as in both codes, the magnitudes are reset to the new directions: the polar
magnitude p = nrm(X) and each sandwich layer's a = nrm(W), with
nrm(W) = (Σ W_ij² + ε)^{1/2}, so that H_X = XᵀX + εI and every normalised sandwich weight
equals its direction at initialisation. Zero-initialised parameters (biases, log ψ, D₂₂, an
``init_output_zero`` output map) stay zero. Any parameter value gives a contracting model
(docs/theory.md §3), so the redraw changes the starting point, never the guarantee.

(std of each entry; ours are untruncated normals). Used by the scaling study's presets
(docs/results.md "Scaling study"), where it and the reference code's sandwich last layer
together close the gap between our R2DN and the authors' at equal steps; the families'
defaults are unchanged (identification, observer and Youla were tuned with them).
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import Tensor, nn

from ._algebra import frobenius
from .lbdn import LBDN, SandwichLayer
from .r2dn import ContractingR2DN

__all__ = ["TRUNCATED_STD", "flax_lecun_init_", "flax_lecun_normal_"]

_Module = TypeVar("_Module", ContractingR2DN, LBDN, SandwichLayer)

#: Standard deviation of a standard normal truncated to [−2, 2] (flax's correction factor).
TRUNCATED_STD = 0.87962566103423978


def flax_lecun_normal_(t: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill the matrix ``t`` (r × c) in place from flax's ``lecun_normal()``: a normal truncated
    at ±2 standard deviations with std exactly 1/√r (see the module docstring)."""
    if t.dim() != 2:
        raise ValueError(f"flax_lecun_normal_ needs a matrix (2-D tensor), got shape "
                         f"{tuple(t.shape)}")
    std = 1.0 / math.sqrt(max(t.shape[-2], 1)) / TRUNCATED_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def _redraw_lbdn(network: LBDN, generator: torch.Generator | None) -> None:
    for layer in network.sandwich_layers:
        flax_lecun_normal_(layer.weight, generator)
        layer.reset_scale()


def flax_lecun_init_(model: _Module, generator: torch.Generator | None = None) -> _Module:
    """Redraw ``model``'s weight matrices in place with the reference flax code's distribution.

    Parameters
    ----------
    model : ContractingR2DN, LBDN or SandwichLayer
        A contracting R2DN built with ``init="random"``, or an LBDN / sandwich layer.
    generator : torch.Generator, optional
        Source of the draws (default: torch's global generator).

    Returns
    -------
    The same module (for chaining), with every lecun-drawn matrix redrawn from
    `flax_lecun_normal_` (fan-in = rows, truncated), then the polar magnitude and the sandwich
    magnitudes reset to the new norms; see the module docstring for the table.

    Raises
    ------
    TypeError
        For another module type (the other families' parameterizations are not covered).
    ValueError
        For an R2DN built with ``init="long_memory"`` (its X, Y, B̂₁, C₁ are not random).
    """
    if isinstance(model, SandwichLayer):
        flax_lecun_normal_(model.weight, generator)
        model.reset_scale()
        return model
    if isinstance(model, LBDN):
        _redraw_lbdn(model, generator)
        return model
    if not isinstance(model, ContractingR2DN):
        raise TypeError("flax_lecun_init_ expects a ContractingR2DN, LBDN or SandwichLayer, got "
                        f"{type(model).__name__}")
    if model.init_method != "random":
        raise ValueError("flax_lecun_init_ redraws a random initialisation; expected a model "
                         f"built with init='random', got init={model.init_method!r}")
    names = ["X", "Y", "B1_hat", "C1", "B2", "D12"]
    if not model.init_output_zero:
        names += ["C2", "D21"]
    for name in names:
        param = model._parameters.get(name)
        if param is not None:  # identity_output: C2, D21 are fixed buffers
            flax_lecun_normal_(param, generator)
    _redraw_lbdn(model.network, generator)
    if model.polar_scale is not None:
        with torch.no_grad():
            model.polar_scale.copy_(frobenius(model.X, model.eps))
    return model
