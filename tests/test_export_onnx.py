"""ONNX export: onnxruntime reproduces the torch rollout for every family (float32, ≤ 1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_cases import CASES, IDS, build, relative_error

from r2dn_control.export import metric_checksum, to_onnx
from r2dn_control.export.files import sha256_file

ort = pytest.importorskip("onnxruntime", reason="needs the 'export' extra (onnxruntime)")
pytest.importorskip("onnx", reason="needs the 'export' extra (onnx)")


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("family", "activation"), CASES, ids=IDS)
def test_onnx_sequence_and_step_match_torch(tmp_path, family, activation):
    model = build(family, seed=len(family.name), activation=activation)
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(3, 20, model.input_size, generator=gen)
    x0 = torch.randn(3, model.state_size, generator=gen)
    with torch.no_grad():
        y_ref, x_ref = model(u, x0)
    to_onnx(model, tmp_path / "seq.onnx", "sequence")
    y, x_final = _session(tmp_path / "seq.onnx").run(None, {"u": u.numpy(), "x0": x0.numpy()})
    assert y.shape == tuple(y_ref.shape) and y.dtype == np.float32
    assert relative_error(y, y_ref) <= 1e-5
    assert relative_error(x_final, x_ref) <= 1e-5

    to_onnx(model, tmp_path / "step.onnx", "step")
    step = _session(tmp_path / "step.onnx")
    x = x0.numpy()
    for t in range(u.shape[1]):
        y_t, x = step.run(None, {"u": u[:, t].numpy(), "x": x})
        assert relative_error(y_t, y_ref[:, t]) <= 1e-5
    assert relative_error(x, x_ref) <= 1e-5


def test_onnx_sidecar_records_certificate_and_checksums(tmp_path):
    from families import FAMILIES

    model = build(next(f for f in FAMILIES if f.name == "LipschitzR2DN"))
    sidecar = to_onnx(model, tmp_path / "m.onnx")
    on_disk = json.loads((tmp_path / "m.onnx.json").read_text())
    assert on_disk == json.loads(json.dumps(sidecar))
    assert on_disk["artifact"]["files"]["m.onnx"] == sha256_file(tmp_path / "m.onnx")
    cert = on_disk["certificate"]
    assert cert["guaranteed"]["lipschitz_gamma"] == pytest.approx(model.gamma)
    assert cert["certified"]["lipschitz"]["status"] == "certified"
    assert cert["certified"]["lipschitz"]["bound"] == pytest.approx(model.gamma)
    with torch.no_grad():
        assert cert["metric_sha256"] == metric_checksum(model.explicit(torch.float32).metric)
    assert cert["verified_dtype"].startswith("float32")


def test_onnx_rejects_bad_mode(tmp_path):
    from families import FAMILIES

    with pytest.raises(ValueError, match="mode must be one of"):
        to_onnx(build(FAMILIES[0]), tmp_path / "m.onnx", "rollout")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("family", "activation"), CASES, ids=IDS)
def test_onnx_float64_export_matches_torch_float64(tmp_path, family, activation):
    """float64 export run by onnxruntime vs the torch float64 rollout, ≤ 1e-12 relative."""
    model = build(family, seed=len(family.name), dtype=torch.float64, activation=activation)
    gen = torch.Generator().manual_seed(8)
    u = torch.randn(2, 15, model.input_size, generator=gen, dtype=torch.float64)
    x0 = torch.randn(2, model.state_size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y_ref, x_ref = model(u, x0)
    sidecar = to_onnx(model, tmp_path / "seq.onnx", "sequence", dtype=torch.float64)
    assert sidecar["exported_dtype"] == "float64"
    y, x_final = _session(tmp_path / "seq.onnx").run(None, {"u": u.numpy(), "x0": x0.numpy()})
    assert y.dtype == np.float64
    assert relative_error(y, y_ref) <= 1e-12
    assert relative_error(x_final, x_ref) <= 1e-12
    to_onnx(model, tmp_path / "step.onnx", "step", dtype=torch.float64)
    y_0, x_1 = _session(tmp_path / "step.onnx").run(None, {"u": u[:, 0].numpy(),
                                                           "x": x0.numpy()})
    with torch.no_grad():
        _, x_1_ref = model(u[:, :1], x0)
    assert relative_error(y_0, y_ref[:, 0]) <= 1e-12
    assert relative_error(x_1, x_1_ref) <= 1e-12
