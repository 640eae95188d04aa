"""Certify reliability (issue 12): strict float64 proofs, marginal systems, float32, bad input,
the CLI's exit codes and physical units."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import control
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control import certify
from r2dn_control.certify.cli import main
from r2dn_control.certify.target import simulate_explicit
from r2dn_control.nn import ContractingR2DN, LipschitzR2DN
from r2dn_control.nn.checkpoint import save_model


# ------------------------------------------------------------------ exact check of a "certified"
def _exact(a: np.ndarray) -> list[list[Fraction]]:
    return [[Fraction(float(v)) for v in row] for row in np.atleast_2d(a)]


def _mat(x, y):
    return [[sum((x[i][k] * y[k][j] for k in range(len(y))), Fraction(0))
             for j in range(len(y[0]))] for i in range(len(x))]


def _t(x):
    return [list(r) for r in zip(*x)]


def _positive_definite(m) -> bool:
    """Exact Gaussian elimination: every pivot > 0 iff the rational matrix is PD."""
    m = [list(r) for r in m]
    n = len(m)
    for k in range(n):
        if m[k][k] <= 0:
            return False
        for i in range(k + 1, n):
            f = m[i][k] / m[k][k]
            for j in range(k, n):
                m[i][j] -= f * m[k][j]
    return True


def exact_contraction_lmi(blocks, metric, lam, rate):
    """M of (4a) for a scalar multiplier, in exact rational arithmetic (independent code)."""
    nx, nv = blocks.A.shape[0], blocks.C1.shape[0]
    p, a, b1, c1 = _exact(metric), _exact(blocks.A), blocks.B1, blocks.C1
    r2, lam = Fraction(float(rate)) ** 2, Fraction(float(lam))
    xx = [[r2 * v for v in row] for row in p]
    apa = _mat(_t(a), _mat(p, a))
    if nv:
        b1, c1 = _exact(b1), _exact(c1)
        ctc = _mat(_t(c1), c1)
        apb = _mat(_t(a), _mat(p, b1))
        bpb = _mat(_t(b1), _mat(p, b1))
    n = nx + nv
    m = [[Fraction(0)] * n for _ in range(n)]
    for i in range(nx):
        for j in range(nx):
            m[i][j] = xx[i][j] - apa[i][j] - (lam * ctc[i][j] if nv else 0)
        for j in range(nv):
            m[i][nx + j] = m[nx + j][i] = -apb[i][j]
    for i in range(nv):
        for j in range(nv):
            m[nx + i][nx + j] = (lam if i == j else 0) - bpb[i][j]
    return m


@settings(max_examples=12, deadline=None)
@given(radius=st.floats(0.05, 0.999), theta=st.floats(0.0, 3.1), rate_shift=st.sampled_from(
    [-1e-9, 0.0, 1e-12, 1e-9, 1e-4]), seed=st.integers(0, 2**16))
def test_certified_means_the_exact_lmi_holds(radius, theta, rate_shift, seed) -> None:
    """Whatever certify answers "certified" to is exactly positive definite (rationals)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    rot = radius * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = q @ rot @ q.T
    sys_ = control.ss(a, np.ones((2, 1)), np.ones((1, 2)), 0, dt=1)
    rate = min(1.0, radius * (1 + rate_shift))
    for res in (certify.contraction(sys_, rate=rate), certify.contraction(sys_)):
        if res.certified:
            blocks = certify.as_target(sys_).blocks
            m = exact_contraction_lmi(blocks, res.P, 0.0, res.bound)
            assert _positive_definite(m), res
            assert _positive_definite(_exact(res.P))
    if rate_shift < 0:
        assert not certify.contraction(sys_, rate=rate).certified


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certified_r2dn_rate_is_exactly_valid(seed) -> None:
    torch.manual_seed(seed)
    model = ContractingR2DN(1, 3, 2, 1, hidden=(3,), contraction_rate=0.95, dtype=torch.float64)
    for res in (certify.contraction(model), certify.contraction(model, rate=0.95)):
        assert res.certified, res
        m = exact_contraction_lmi(certify.as_target(model).blocks, res.P, res.multiplier,
                                  res.bound)
        assert _positive_definite(m)
        assert res.details["min_eigenvalue"] > res.details["rounding_bound"] > 0


# ------------------------------------------------------------------ marginal systems (item 7)
@pytest.mark.parametrize("a", [
    np.array([[0.0, -1.0], [1.0, 0.0]]),  # rotation, |λ| = 1
    np.array([[1.0, 1.0], [0.0, 1.0]]),   # Jordan block at 1
    np.array([[1.0, 0.0], [0.0, 0.5]]),
])
@pytest.mark.parametrize("method", ["auto", "kyp", "sdp"])
def test_marginally_stable_systems_are_answered_not_raised(a, method) -> None:
    sys_ = control.ss(a, np.ones((2, 1)), np.ones((1, 2)), 0, dt=1)
    for res in (certify.lipschitz(sys_, method=method), certify.contraction(sys_, method=method)):
        assert res.status in ("not certified", "inconclusive"), res
        assert res.message
    assert "spectral radius" in certify.lipschitz(sys_).message


# ------------------------------------------------------------------ float32 (item 8)
def test_dtype_checks_the_matrices_as_cast() -> None:
    torch.manual_seed(0)
    model = LipschitzR2DN(2, 4, 3, 2, gamma=1.5, contraction_rate=0.9, dtype=torch.float32)
    t32 = certify.as_target(model, dtype=torch.float32)
    a32 = model.explicit(torch.float64).A.detach().to(torch.float32).double().numpy()
    assert np.array_equal(t32.blocks.A, a32)
    for fn in (lambda d: certify.contraction(model, dtype=d),
               lambda d: certify.lipschitz(model, dtype=d)):
        assert fn(torch.float32).certified and fn(None).certified
    s = model.supply
    assert certify.dissipativity(model, s.Q.numpy(), s.S.numpy(), s.R.numpy(),
                                 dtype=torch.float32).certified
    with pytest.raises(TypeError, match="dtype"):
        certify.contraction(model, dtype="float32")


# ------------------------------------------------------------------ bad input (item 10)
def test_rate_of_the_wrong_type_is_a_clear_type_error() -> None:
    sys_ = control.ss(0.5, 1.0, 1.0, 0.0, dt=1)
    for bad in ("0.9", True, [0.9]):
        with pytest.raises(TypeError, match="rate"):
            certify.contraction(sys_, rate=bad)
    for bad in (0.0, 1.5, float("nan"), -1.0):
        with pytest.raises(ValueError, match="rate"):
            certify.contraction(sys_, rate=bad)
    assert certify.contraction(sys_, rate=np.float32(0.9)).certified
    with pytest.raises(ValueError, match="method"):
        certify.lipschitz(sys_, method="fast")


def test_non_finite_weights_are_not_certified_with_the_reason() -> None:
    torch.manual_seed(0)
    model = LipschitzR2DN(1, 2, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    s = model.supply
    for res in (certify.contraction(model), certify.lipschitz(model),
                certify.dissipativity(model, s.Q.numpy(), s.S.numpy(), s.R.numpy())):
        assert res.status == "not certified" and "non-finite weights" in res.message
    blocks = certify.as_target(control.ss(0.5, 1.0, 1.0, 0.0, dt=1)).blocks
    bad = certify.Target(certify.StateSpaceBlocks(**{**blocks.__dict__, "A": np.array([[np.inf]])}),
                         "none")
    assert "non-finite" in certify.contraction(bad).message


# ------------------------------------------------------------------ CLI (item 11)
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_model(LipschitzR2DN(1, 2, 2, 1, gamma=1.5, dtype=torch.float64), path)
    return path


def _cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args] + ["--no-empirical"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_exit_codes_for_bad_files(tmp_path, checkpoint, capsys) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    for path in (tmp_path / "missing.pt", tmp_path, truncated, corrupt, foreign):
        code, _, err = _cli([path], capsys)
        assert code == 2, (path, err)
        assert err.count("\n") == 1 and "Traceback" not in err and "error" in err


def test_cli_usage_error_exits_2_without_traceback(checkpoint, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(checkpoint), "--method", "nope"])
    assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_cli_entry_point_missing_file() -> None:
    """A fresh interpreter (imports torch, cvxpy: ~25 s on the shared machine)."""
    # The installed entry point: a missing file is exit 2 with one line on stderr.
    proc = subprocess.run([sys.executable, "-m", "r2dn_control.cli", "certify", "/nonexistent"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_cli_exit_0_certified_and_1_not_certified(tmp_path, checkpoint, capsys) -> None:
    code, out, _ = _cli([checkpoint, "--json", tmp_path / "r.json"], capsys)
    assert code == 0 and "lipschitz" in out
    assert json.loads((tmp_path / "r.json").read_text())["lipschitz"]["status"] == "certified"
    torch.manual_seed(0)
    model = LipschitzR2DN(1, 2, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, tmp_path / "nan.pt", allow_nonfinite=True)
    with pytest.warns(RuntimeWarning, match="non-finite"):  # load_model says so, then certify answers
        code, out, _ = _cli([tmp_path / "nan.pt"], capsys)
    assert code == 1 and "not certified" in out


def test_cli_reports_gamma_in_physical_units(tmp_path, capsys) -> None:
    torch.manual_seed(1)
    model = LipschitzR2DN(2, 3, 3, 2, gamma=1.5, dtype=torch.float64)
    norm = {"u_mean": [0.0, 1.0], "u_std": [2.0, 0.5], "y_mean": [3.0, 0.0], "y_std": [10.0, 1.0]}
    save_model(model, tmp_path / "n.pt", normalization=norm)
    code, out, _ = _cli([tmp_path / "n.pt", "--json", tmp_path / "r.json"], capsys)
    assert code == 0 and "lipschitz (physical)" in out
    data = json.loads((tmp_path / "r.json").read_text())
    gamma_n = data["lipschitz"]["bound"]
    phys = data["lipschitz_physical"]
    simple = phys["details"]["simple_bound"]
    assert simple == pytest.approx(gamma_n * 10.0 / 0.5)
    assert phys["status"] == "certified" and phys["bound"] <= simple * (1 + 1e-5)
    save_model(model, tmp_path / "bad.pt", normalization={"u_std": [1.0], "y_std": [1.0, 1.0]})
    code, _, err = _cli([tmp_path / "bad.pt"], capsys)
    assert code == 2 and "u_std" in err


def test_in_physical_units_maps_physical_inputs_to_physical_outputs() -> None:
    torch.manual_seed(2)
    model = LipschitzR2DN(2, 3, 3, 2, gamma=1.5, dtype=torch.float64)
    u_std, y_std = [2.0, 0.5], [10.0, 1.0]
    phys = certify.in_physical_units(model, u_std, y_std)
    e = model.explicit(torch.float64)
    u = torch.randn(3, 7, 2, dtype=torch.float64)
    x0 = torch.randn(3, 3, dtype=torch.float64)
    y_phys, _ = simulate_explicit(phys, u, x0)
    y_norm, _ = simulate_explicit(e, u / torch.tensor(u_std, dtype=torch.float64), x0)
    assert torch.allclose(y_phys, y_norm * torch.tensor(y_std, dtype=torch.float64), atol=1e-12)
    gamma = certify.lipschitz(phys)
    assert gamma.certified
    assert gamma.bound >= certify.lipschitz_lower_bound(phys, steps=5, iters=10, batch=4)
    with pytest.raises(ValueError, match="u_std"):
        certify.in_physical_units(model, [1.0], y_std)
    with pytest.raises(ValueError, match="positive"):
        certify.in_physical_units(model, [1.0, 0.0], y_std)
    with pytest.raises(TypeError, match="RecurrentModel"):
        certify.in_physical_units("model", u_std, y_std)
