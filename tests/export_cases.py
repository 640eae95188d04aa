"""Small models of every family for the export tests (non-zero biases, a fixed seed each)."""

from __future__ import annotations

import numpy as np
import torch
from families import FAMILIES, Family, Sizes


def build(family: Family, seed: int = 0, dtype: torch.dtype = torch.float32,
          activation: str = "relu"):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    io = 2 if family.square_io else 3
    sizes = Sizes(io, 4, 6, 2 if family.square_io else 3, (8, 5))
    model = family.build(sizes, rng, {"dtype": dtype, "activation": activation})
    with torch.no_grad():
        for name in ("bx", "bv", "by"):
            getattr(model, name).normal_(std=0.3)
    return model


def relative_error(got, ref) -> float:
    """max |got − ref| / max |ref| (both as float64 arrays)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


CASES = [(f, act) for f in FAMILIES for act in ("relu",)] + [
    (FAMILIES[0], "tanh"), (FAMILIES[0], "sigmoid"), (FAMILIES[0], "leaky_relu"),
    (FAMILIES[-1], "tanh")]
IDS = [f"{f.name}-{a}" for f, a in CASES]
