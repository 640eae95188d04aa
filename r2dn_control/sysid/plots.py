"""Loss-curve figure of a `fit` history (needs the ``plot`` extra)."""

from __future__ import annotations

import math
import pathlib

from .checkpointing import atomic_write


def plot_history(history: list[dict[str, float]], path: str | pathlib.Path) -> bool:
    """Write training loss and validation NRMSE per epoch as a PNG; False if matplotlib is absent.

    The figure is written atomically (temporary file, then rename).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not history:
        return False
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(epochs, [row["train_loss"] for row in history], label="training loss")
    val = [row["val_nrmse"] for row in history]
    if any(math.isfinite(v) for v in val):
        ax.semilogy(epochs, val, label="validation NRMSE")
    ax.set_xlabel("epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True
