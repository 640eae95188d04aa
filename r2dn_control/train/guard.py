"""Guards that keep non-finite numbers out of a model's parameters.

One NaN in the data, or one overflowing step, turns every parameter of a recurrent model into NaN
after a single optimizer update, and the error that finally surfaces (a failed Cholesky, say)
names nothing useful. Every training loop in the package runs its optimizer step through
`guarded_step`, which looks at the loss and the gradients *before* the update:

* ``on_nonfinite="raise"`` (default): raise `NonFiniteError`; the parameters and the
  optimizer state are exactly as they were before the step;
* ``on_nonfinite="skip"``: drop the step (gradients zeroed, parameters untouched), warn, and
  return ``False``.

Data are checked once, up front, by `check_finite`, which names the array and the first bad
position.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

ON_NONFINITE = ("raise", "skip")


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN or infinite; the parameters were left unchanged."""


def check_on_nonfinite(value: object) -> str:
    """Validate an ``on_nonfinite`` argument (``"raise"`` or ``"skip"``)."""
    if value not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {value!r}")
    return str(value)


def check_finite(name: str, value: Tensor | np.ndarray) -> None:
    """Raise ``ValueError`` if ``value`` holds a NaN or infinity, naming the first bad index."""
    array = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if not (array.is_floating_point() or array.is_complex()):
        return
    bad = ~torch.isfinite(array)
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite, got {int(bad.sum())} non-finite value(s) of {array.numel()}, "
            f"first at index {first}: {array[first].item()}"
        )


def _nonfinite_reason(loss: Tensor, parameters: list[Tensor]) -> str | None:
    if not bool(torch.isfinite(loss.detach()).all()):
        return f"loss is {loss.detach().flatten()[0].item()}"
    for index, p in enumerate(parameters):
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of parameter {index} (shape {tuple(p.shape)}) is not finite"
    return None


def guarded_step(optimizer: torch.optim.Optimizer, loss: Tensor, parameters: Iterable[Tensor], *,
                 on_nonfinite: str = "raise", clip_value: float | None = None,
                 clip_norm: float | None = None, context: str = "training") -> bool:
    """Clip the gradients and take ``optimizer.step()`` only if the loss and gradients are finite.

    Call after ``loss.backward()``. Gradient clipping, when asked, is element-wise to
    ``±clip_value`` (``optax.clip``) and/or by global 2-norm ``clip_norm``; it runs after the
    finiteness check, so an infinite gradient is never clipped into a finite-looking one.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    loss : Tensor
        The loss whose gradients were just computed.
    parameters : iterable of Tensor
        The parameters the optimizer updates.
    on_nonfinite : {"raise", "skip"}
        What a NaN/inf loss or gradient does (see the module docstring).
    clip_value, clip_norm : float, optional
        Element-wise and global-norm gradient clipping thresholds.
    context : str
        Named in the error message (e.g. ``"epoch 3, segment 12"``).

    Returns
    -------
    bool
        True if the step was taken, False if it was skipped.

    Raises
    ------
    NonFiniteError
        With ``on_nonfinite="raise"`` when the loss or a gradient is not finite.
    """
    check_on_nonfinite(on_nonfinite)
    params = [p for p in parameters if p.requires_grad]
    reason = _nonfinite_reason(loss, params)
    if reason is not None:
        optimizer.zero_grad(set_to_none=True)
        message = f"non-finite values in {context}: {reason}; the parameters were not updated"
        if on_nonfinite == "raise":
            raise NonFiniteError(message + " (pass on_nonfinite='skip' to skip such steps)")
        warnings.warn(message + "; step skipped", RuntimeWarning, stacklevel=2)
        return False
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    return True


def check_parameters_finite(module: torch.nn.Module, what: str = "model") -> None:
    """Raise ``ValueError`` naming the first parameter or buffer of ``module`` that is not finite."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{what} has non-finite values in {name!r}")
