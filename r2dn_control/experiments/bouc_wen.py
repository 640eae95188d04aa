"""Bouc–Wen hysteretic oscillator identification: R2DN vs REN (data-free second benchmark).

The records are simulated by `r2dn_control.sysid.bouc_wen_data` (the benchmark's
parameters, random-phase multisines of 5–150 Hz, 50 N RMS, 750 Hz, the first period of each
record dropped as transient; see `r2dn_control.sysid.boucwen` for how the simulator differs
from the published files): training and test records come from independent multisines (seeds
``data_seed`` and ``data_seed + 1``). Input force u [N], output displacement y [m];
normalisation fitted on the training records. Training and scoring as in
`.identification`, with no paper configuration to follow (the R2DN paper does not run
this benchmark): the full preset is the benchmark's size, 5 training records of 2 × 8,192
samples, one test record of 8,192.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .common import check_positive_ints
from .identification import IdentificationConfig, run_identification

DESCRIPTION = "Bouc-Wen hysteresis identification on simulated multisine records"


@dataclass(frozen=True)
class BoucWenConfig(IdentificationConfig):
    """`IdentificationConfig` plus the simulated data set."""

    train_records: int = 5
    train_periods: int = 2
    test_periods: int = 1
    samples_per_period: int = 8192
    noise_std: float = 0.0
    data_seed: int = 0

    def __post_init__(self) -> None:
        self._check()
        check_positive_ints(self, ("train_records", "train_periods", "test_periods", "samples_per_period"))
        if self.test_periods * self.samples_per_period <= self.washout:
            raise ValueError(f"a test record ({self.test_periods} × {self.samples_per_period} "
                             f"samples) must be longer than washout={self.washout}")


_MODEL: dict[str, Any] = dict(state_size=32, r2dn_features=64, r2dn_hidden=(64, 64), ren_features=64,
                              contraction_rate=0.995, milestones=(50, 80))
PRESETS = {
    "full": BoucWenConfig(**_MODEL, epochs=100),
    "quick": BoucWenConfig(state_size=16, r2dn_features=16, r2dn_hidden=(32, 32),
                           ren_features=32, contraction_rate=0.995, epochs=6, train_records=2,
                           train_periods=1, samples_per_period=4096, milestones=(5,),
                           plot_samples=600),
    "test": BoucWenConfig(state_size=3, r2dn_features=4, r2dn_hidden=(4,), ren_features=4,
                          contraction_rate=0.995, epochs=2, segment=64, train_records=1,
                          samples_per_period=256, milestones=(1,), plot_samples=150),
}


def simulate_records(config: BoucWenConfig):
    """(train, test) SequenceData from the Bouc–Wen simulator."""
    from .. import sysid

    common: dict[str, Any] = dict(samples_per_period=config.samples_per_period, noise_std=config.noise_std)
    train = sysid.bouc_wen_data(config.train_records, config.train_periods,
                                seed=config.data_seed, **common)
    test = sysid.bouc_wen_data(1, config.test_periods, seed=config.data_seed + 1, **common)
    return train, test


def run(config: BoucWenConfig, family: str, seed: int, run_dir: Path, device: torch.device,
        *, preset: str = "custom", experiment: str = "bouc-wen", progress: bool = True
        ) -> dict[str, Any]:
    """Simulate the records, fit, test, certify and write the run folder; returns metrics.json."""
    train, test = simulate_records(config)
    return run_identification(
        config, family, seed, run_dir, device, train=train, test=test, normalization=True,
        preset=preset, experiment=experiment, progress=progress,
        title=f"Bouc–Wen {family.upper()}", output_names=["displacement"], output_unit="m")
