"""F-16 ground-vibration identification: R2DN vs REN (the paper's experiment 1).

Data: the benchmark's seven full-multisine records (Noël & Schoukens 2017), loaded by
`r2dn_control.sysid.load_f16` from ``--data DIR`` or ``$R2DN_F16_DIR`` (the folder holding
``F16Data_FullMSine_Level{1,3,5,7}.csv`` and ``..._Level{2,4,6}_Validation.csv``, or its parent
with ``BenchmarkData/``). Training: L1, L3, L5, L7; test: L2, L4, L6; u = (force, voltage),
y = three accelerations; the paper's normalisation (mean/std of L4_Validation, ``paper_split``).

Full preset (the paper's): R2DN nx = nv = 75 with LBDN (87, 87, 87), REN nx = 75, nv = 150,
relu, ``init="long_memory"``; 70 epochs of truncated BPTT (segments of 256 samples, state
carried, not shuffled; the paper's loss), Adam 1e-3 ×0.1 at epochs 20/40/60, clip ±10. Test:
simulation from the zero state, NRMSE after 100 samples (see `.identification`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .common import ExperimentError
from .identification import IdentificationConfig, run_identification

DESCRIPTION = "F-16 ground-vibration identification (needs the data: --data DIR or $R2DN_F16_DIR)"
ENV = "R2DN_F16_DIR"
EXPECTED_FILES = tuple(f"F16Data_FullMSine_Level{k}.csv" for k in (1, 3, 5, 7)) + tuple(
    f"F16Data_FullMSine_Level{k}_Validation.csv" for k in (2, 4, 6))


@dataclass(frozen=True)
class F16Config(IdentificationConfig):
    """`IdentificationConfig` plus the data folder (None: $R2DN_F16_DIR)."""

    data: str | None = None
    paper_normalization: bool = True

    def __post_init__(self) -> None:
        self._check()


PRESETS = {
    "full": F16Config(),
    "quick": F16Config(state_size=16, r2dn_features=16, r2dn_hidden=(32, 32), ren_features=32,
                       epochs=4, max_samples=8192, milestones=(3,), plot_samples=800),
    "test": F16Config(state_size=3, r2dn_features=4, r2dn_hidden=(4,), ren_features=4,
                      epochs=2, segment=64, max_samples=300, milestones=(1,), plot_samples=200),
}


def data_folder(config: F16Config) -> Path:
    """The configured folder, else $R2DN_F16_DIR; absent or incomplete → ExperimentError."""
    path = config.data if config.data is not None else os.environ.get(ENV)
    expected = ", ".join(EXPECTED_FILES)
    if path is None:
        raise ExperimentError(f"f16 needs the F-16 benchmark data: pass --data DIR or set ${ENV} "
                              f"to the folder holding {expected} (the benchmark's "
                              f"BenchmarkData/ folder, or its parent)")
    folder = Path(path)
    if not (folder / EXPECTED_FILES[0]).exists() and (folder / "BenchmarkData").is_dir():
        folder = folder / "BenchmarkData"
    missing = [name for name in EXPECTED_FILES if not (folder / name).is_file()]
    if missing:
        raise ExperimentError(f"f16 data folder {path} lacks {', '.join(missing)}; expected "
                              f"{expected} (the benchmark's BenchmarkData/ folder)")
    return folder


def run(config: F16Config, family: str, seed: int, run_dir: Path, device: torch.device,
        *, preset: str = "custom", experiment: str = "f16", progress: bool = True
        ) -> dict[str, Any]:
    """Load the data, fit, test, certify and write the run folder; returns metrics.json."""
    from .. import sysid

    folder = data_folder(config)
    try:
        data = sysid.load_f16(folder, paper_split=config.paper_normalization)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"f16: cannot read the data in {folder}: {exc}") from None
    return run_identification(
        replace(config, data=str(folder)), family, seed, run_dir, device, train=data.train,
        test=data.test, normalization=data.normalization, preset=preset, experiment=experiment,
        progress=progress, title=f"F-16 {family.upper()}",
        output_names=["acceleration 1", "acceleration 2", "acceleration 3"],
        output_unit="m/s²")
