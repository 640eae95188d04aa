"""The export re-checks the certificate on the exported weights and refuses when it fails."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from export_cases import build
from families import FAMILIES

from r2dn_control import config
from r2dn_control.cli import main as cli_main
from r2dn_control.export import CertificateError, recheck, to_c
from r2dn_control.export import api as export_api
from r2dn_control.nn.checkpoint import save_model


def _expanding(explicit):
    """The same explicit model with A scaled to spectral radius 1.5: no metric contracts it."""
    radius = torch.linalg.eigvals(explicit.A.double()).abs().max().item()
    return dataclasses.replace(explicit, A=explicit.A * (1.5 / radius))


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_recheck_holds_on_float32_weights_and_fails_on_an_expanding_A(family):
    model = build(family, seed=11)
    with torch.no_grad():
        exported = model.explicit(torch.float32)
    ok = recheck(model, exported)
    assert ok["holds"], ok["checks"]
    assert ok["checks"]["contraction"]["margin"] >= -1e-9
    rtol = config.defaults["export.certificate_rtol"]
    for prop, check in ok["checks"].items():
        assert check["status"] == "certified" and check["accepted"], (prop, check)
        assert 0.0 <= check["relative_excess"] <= rtol
        if prop != "dissipativity":  # the certified bound is the guaranteed one raised
            assert check["guaranteed"] <= check["bound"] <= check["guaranteed"] * (1 + rtol)
    bad = recheck(model, _expanding(exported))
    assert not bad["holds"]
    assert bad["checks"]["contraction"]["status"] != "certified"


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_acceptance_follows_the_configured_tolerance(family):
    """Accepted exactly when every certified bound is within rtol of the guaranteed one."""
    model = build(family, seed=5)
    with torch.no_grad():
        exported = model.explicit(torch.float32)
    try:
        config.set_defaults("export", certificate_rtol=1e-300)  # only an exact bound passes
        strict = recheck(model, exported)
    finally:
        config.reset_defaults()
    assert strict["tolerance"] == 1e-300
    for check in strict["checks"].values():
        assert check["accepted"] == (check["status"] == "certified"
                                     and check["relative_excess"] <= 1e-300)
    assert strict["holds"] == all(c["accepted"] for c in strict["checks"].values())


def test_sidecar_records_guaranteed_and_certified_bounds(tmp_path):
    model = build(next(f for f in FAMILIES if f.name == "LipschitzR2DN"), seed=2)
    cert = to_c(model, tmp_path, "m")["certificate"]
    gamma, certified = cert["guaranteed"]["lipschitz_gamma"], cert["certified_bounds"]
    assert np.isclose(gamma, model.gamma)
    assert gamma <= certified["lipschitz_gamma"] <= gamma * (1 + cert["relative_tolerance"])
    assert cert["certified_bounds"]["contraction_rate"] >= cert["guaranteed"]["contraction_rate"]
    assert cert["verified_dtype"].startswith("float32")
    header = (tmp_path / "m.h").read_text()
    assert "lipschitz: certified on the exported weights (certified bound" in header
    assert "accepted within relative tolerance: 1e-06" in header


def _break_export(monkeypatch):
    real = export_api.certificate_record

    def broken(model, exported, dtype, on_failure="raise"):
        return real(model, _expanding(exported), dtype, on_failure)

    monkeypatch.setattr(export_api, "certificate_record", broken)


def test_export_refuses_or_warns_when_the_certificate_fails(tmp_path, monkeypatch):
    model = build(FAMILIES[0])
    _break_export(monkeypatch)
    with pytest.raises(CertificateError, match="no longer holds"):
        to_c(model, tmp_path / "refused", "m")
    assert not (tmp_path / "refused").exists()
    with pytest.warns(RuntimeWarning, match="no longer holds"):
        sidecar = to_c(model, tmp_path / "warned", "m", on_failure="warn")
    assert sidecar["certificate"]["holds_on_exported_weights"] is False
    assert "holds on the exported weights: False" in (tmp_path / "warned" / "m.h").read_text()
    with pytest.raises(ValueError, match="on_failure"):
        to_c(model, tmp_path / "x", "m", on_failure="ignore")


def test_export_rejects_non_models_and_bad_dtypes(tmp_path):
    with pytest.raises(TypeError, match="RecurrentModel"):
        to_c(torch.nn.Linear(2, 2), tmp_path, "m")
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        to_c(build(FAMILIES[0]), tmp_path, "m", dtype=torch.float16)


def test_cli_export_writes_c_and_refuses_a_broken_certificate(tmp_path, monkeypatch, capsys):
    model = build(next(f for f in FAMILIES if f.name == "LipschitzREN"))
    ckpt = tmp_path / "model.pt"
    save_model(model, ckpt)
    assert cli_main(["export", str(ckpt), "--format", "c", "--out", str(tmp_path / "c"),
                     "--name", "ctrl"]) == 0
    sidecar = json.loads((tmp_path / "c" / "ctrl.json").read_text())
    assert sidecar["model"].endswith(":LipschitzREN")
    assert np.isclose(sidecar["certificate"]["guaranteed"]["lipschitz_gamma"], model.gamma)
    assert "lipschitz" in capsys.readouterr().out
    _break_export(monkeypatch)
    assert cli_main(["export", str(ckpt), "--format", "c", "--out", str(tmp_path / "bad")]) == 1
    assert "export refused" in capsys.readouterr().out
