"""The identification experiments (bouc-wen, f16) through the sysid workflow, test preset."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch
from experiment_runs import check_run_folder, one_thread  # noqa: F401 (autouse fixture)

from r2dn_control import certify
from r2dn_control.cli import main
from r2dn_control.experiments import run_experiment
from r2dn_control.experiments.bouc_wen import PRESETS, simulate_records
from r2dn_control.experiments.common import ExperimentError, read_json
from r2dn_control.experiments.compare import compare, find_runs, summarize
from r2dn_control.experiments.f16 import EXPECTED_FILES
from r2dn_control.nn.checkpoint import load_model

F16_DIR = os.environ.get("R2DN_F16_DIR")
needs_f16 = pytest.mark.skipif(
    F16_DIR is None or not all((pathlib.Path(F16_DIR) / f).is_file() or
                               (pathlib.Path(F16_DIR) / "BenchmarkData" / f).is_file()
                               for f in EXPECTED_FILES),
    reason="F-16 benchmark data not available: set R2DN_F16_DIR to the folder holding "
           + ", ".join(EXPECTED_FILES))


@pytest.fixture(scope="module")
def bouc_wen_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, run_experiment("bouc-wen", model="both", preset="test", out=out, progress=False)


def _check_identification(name: str, run: pathlib.Path, test_data) -> None:
    metrics = check_run_folder(name, run)
    model, meta = load_model(run / "model.pt")
    norm = meta["normalization"]
    # the test scores are those of the saved model re-simulated from x0 = 0, in physical units
    washout = metrics["washout"]
    errors, stds = [], []
    for u, y in zip(test_data.u, test_data.y):
        u_n = (u - np.asarray(norm["u_mean"])) / np.asarray(norm["u_std"])
        with torch.no_grad():
            y_n, _ = model(torch.as_tensor(u_n, dtype=model.dtype)[None])
        y_hat = y_n[0].double().numpy() * np.asarray(norm["y_std"]) + np.asarray(norm["y_mean"])
        errors.append((y_hat - y)[washout:])
        stds.append(y[washout:])
    err, meas = np.concatenate(errors), np.concatenate(stds)
    rmse = np.sqrt(np.mean(err**2, axis=0))
    assert metrics["test_rmse_per_channel"] == pytest.approx(rmse.tolist(), rel=1e-4)
    assert metrics["test_metric"]["value"] == pytest.approx(
        float(np.mean(rmse / meas.std(axis=0))), rel=1e-4)
    certs = metrics["certificates"]
    # contraction does not depend on the units; both are proved by the parameterization
    for units in ("normalised", "physical"):
        assert certs[f"contraction ({units})"]["status"] == "certified"
        assert certs[f"contraction ({units})"]["bound"] <= 1.0
    assert certs["contraction (physical)"]["bound"] == pytest.approx(
        certs["contraction (normalised)"]["bound"], rel=1e-6)
    # a gain bound, when proved, is one a fresh check of the physical-unit model reproduces
    gamma = certs["l2 gain γ (physical)"]
    if gamma["status"] == "certified":
        physical = certify.in_physical_units(model, norm["u_std"], norm["y_std"])
        fresh = certify.lipschitz(physical, method=gamma["solver"]
                                  if gamma["solver"] in ("implied", "kyp") else "auto")
        assert fresh.status == "certified"
        assert fresh.bound == pytest.approx(gamma["bound"], rel=1e-3)
    assert (run / metrics["plot"]).name == "simulated.png"


def test_bouc_wen_runs_write_scores_and_certificates(bouc_wen_runs) -> None:
    _, runs = bouc_wen_runs
    _, test = simulate_records(PRESETS["test"])
    for run in runs:
        _check_identification("bouc-wen", run, test)


def test_compare_reads_the_identification_runs(bouc_wen_runs) -> None:
    out, _ = bouc_wen_runs
    rows = summarize(find_runs([out]))
    assert {(r["experiment"], r["model"]) for r in rows} == {("bouc-wen", "r2dn"),
                                                            ("bouc-wen", "ren")}
    table = compare([out])
    assert "bouc-wen" in table and "test NRMSE" in table


def test_f16_without_data_is_a_usage_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("R2DN_F16_DIR", raising=False)
    with pytest.raises(ExperimentError, match="F16Data_FullMSine_Level1.csv"):
        run_experiment("f16", preset="test", out=tmp_path, progress=False)
    code = main(["run", "f16", "--preset", "test", "--out", str(tmp_path),
                 "--data", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "F16Data_FullMSine_Level6_Validation.csv" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


@needs_f16
def test_f16_runs_on_the_benchmark_data(tmp_path) -> None:
    from r2dn_control import sysid
    from r2dn_control.experiments.f16 import PRESETS as F16_PRESETS
    from r2dn_control.experiments.identification import truncate

    runs = run_experiment("f16", model="r2dn", preset="test", out=tmp_path, progress=False,
                          data=F16_DIR)
    test = truncate(sysid.load_f16(F16_DIR).test, F16_PRESETS["test"].max_samples)
    _check_identification("f16", runs[0], test)
    assert read_json(runs[0] / "config.json")["config"]["data"]
