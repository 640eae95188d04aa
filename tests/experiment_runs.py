"""Checks every experiment run folder must pass (shared by the experiment test files)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from r2dn_control.experiments import get_experiment
from r2dn_control.experiments.common import config_from_dict, read_json
from r2dn_control.nn.checkpoint import load_model

PNG = b"\x89PNG\r\n\x1a\n"
RUN_FILES = ("config.json", "metrics.json", "curves.json", "certificate.json", "loss.png",
             "model.pt")


@pytest.fixture(autouse=True)
def one_thread():
    """Every experiment test runs torch on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_run_folder(name: str, run: Path, preset: str = "test") -> dict:
    """Assert the files of one run are complete and consistent; returns its metrics."""
    experiment = get_experiment(name)
    for file in RUN_FILES:
        assert (run / file).is_file(), f"{run}: {file} missing"
    metrics = read_json(run / "metrics.json")
    assert metrics["experiment"] == name and run.name == (
        f"{name}-{metrics['model']}-{metrics['seed']}")
    value = metrics["test_metric"]["value"]
    assert isinstance(value, float) and math.isfinite(value) and value >= 0
    timing = metrics["epoch_time"]
    assert timing["excludes_first_epoch"] and timing["median_s"] > 0
    model, _ = load_model(run / "model.pt")
    trainable = sum(p.numel() for p in model.parameters())
    if name.startswith("youla") and not read_json(run / "config.json")["config"]["q_biases"]:
        from r2dn_control.experiments.youla import bias_parameters

        trainable -= sum(p.numel() for p in bias_parameters(model))  # fixed at zero
    assert metrics["parameters"] == trainable or \
        name == "observer"  # the observer counts its wrapper's parameters too
    plot = run / metrics["plot"]
    assert plot.read_bytes()[:8] == PNG and (run / "loss.png").read_bytes()[:8] == PNG
    # config.json rebuilds exactly the configuration that ran
    config = read_json(run / "config.json")
    cls = type(experiment.config(preset))
    rebuilt = config_from_dict(cls, config["config"])
    if "data" in config["config"]:  # f16 records the data folder it read
        from dataclasses import replace

        rebuilt = replace(rebuilt, data=None)
    assert rebuilt == experiment.config(preset)
    # the certificates written are those of certificate.json
    certs = read_json(run / "certificate.json")
    assert set(certs) == set(metrics["certificates"])
    for label, summary in metrics["certificates"].items():
        assert summary["status"] == certs[label]["status"]
    curves = read_json(run / "curves.json")
    assert all(all(math.isfinite(v) for v in c) for c in curves.values())
    return metrics
