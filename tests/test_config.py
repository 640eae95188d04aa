"""r2dn_control.config, the C++ build announcements, TF32 handling and the rollout backends."""

from __future__ import annotations

import logging
import time
import warnings

import pytest
import torch

from r2dn_control import config
from r2dn_control.nn import ContractingREN, LipschitzR2DN, cpp, explicit
from r2dn_control.nn._algebra import full_precision_matmul

F64 = torch.float64


@pytest.fixture
def fresh_cpp_state(monkeypatch):
    """Run with the kernels' load state reset (restored afterwards)."""
    monkeypatch.setattr(cpp, "_state", {"loaded": None, "reason": "not tried yet",
                                        "seconds": None})
    monkeypatch.setitem(config.defaults, "nn.cpp.disable", None)
    monkeypatch.delenv(cpp.DISABLE_ENV, raising=False)


def test_set_defaults_validates_and_reset_restores() -> None:
    try:
        config.set_defaults("nn.cpp", loop_width=64, disable=True)
        assert config.defaults["nn.cpp.loop_width"] == 64 and config.cpp_disabled()
        with pytest.raises(ValueError, match="unknown setting 'nn.cpp.width'"):
            config.set_defaults("nn.cpp", width=3)
        with pytest.raises(TypeError, match="nn.cpp.disable must be True, False or None"):
            config.set_defaults("nn.cpp", disable="yes")
        with pytest.raises(ValueError, match="certify.scs_accuracy must be > 0"):
            config.set_defaults("certify", scs_accuracy=0.0)
        with pytest.raises(TypeError, match="certify.large_lmi must be an int"):
            config.set_defaults("certify", large_lmi=1.5)
        assert config.defaults["nn.cpp.loop_width"] == 64  # a rejected call changes nothing
    finally:
        config.reset_defaults()
    assert config.defaults["nn.cpp.loop_width"] == 128
    assert config.defaults["nn.cpp.disable"] is None


def test_deprecated_validation_tol_is_the_scs_accuracy_with_a_warning() -> None:
    """The old key certify.validation_tol sets, reads and writes certify.scs_accuracy, each
    time with a DeprecationWarning pointing at the caller; bad values are still refused."""
    try:
        with pytest.warns(DeprecationWarning, match="use 'certify.scs_accuracy'") as record:
            config.set_defaults("certify", validation_tol=1e-6)
        assert record[0].filename == __file__
        assert config.defaults["certify.scs_accuracy"] == 1e-6
        assert "certify.validation_tol" not in config.defaults
        with pytest.warns(DeprecationWarning, match="deprecated") as record:
            assert config.defaults["certify.validation_tol"] == 1e-6
        assert record[0].filename == __file__
        with pytest.warns(DeprecationWarning, match="deprecated") as record:
            config.defaults["certify.validation_tol"] = 1e-5
        assert record[0].filename == __file__
        assert config.defaults["certify.scs_accuracy"] == 1e-5
        assert "certify.validation_tol" not in config.defaults
        with pytest.warns(DeprecationWarning), pytest.raises(
                ValueError, match="certify.scs_accuracy must be > 0"):
            config.set_defaults("certify", validation_tol=-1.0)
        with pytest.raises(KeyError, match="certify.no_such_key"):
            config.defaults["certify.no_such_key"]
    finally:
        config.reset_defaults()
    assert config.defaults["certify.scs_accuracy"] == 1e-9


def test_disable_setting_turns_the_kernels_off_and_results_agree(monkeypatch) -> None:
    torch.manual_seed(0)
    model = ContractingREN(2, 3, 5, 2, dtype=F64)
    u = torch.randn(4, 6, 2, dtype=F64)
    fast, _ = model(u)
    monkeypatch.setitem(config.defaults, "nn.cpp.disable", True)
    assert not cpp.available()
    assert explicit.select_backend(model.explicit(), u, u.new_zeros(4, 3)).name == "reference"
    torch.testing.assert_close(model(u)[0], fast, rtol=1e-10, atol=1e-10)


def test_failed_build_warns_once_and_falls_back(fresh_cpp_state, monkeypatch) -> None:
    def broken() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp, "_build", broken)
    with pytest.warns(RuntimeWarning, match="could not be built .no compiler here"):
        assert not cpp.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpp.available()  # no second warning
    assert "no compiler here" in cpp.status()
    with pytest.raises(RuntimeError, match="no compiler here"), pytest.warns(RuntimeWarning):
        cpp.build()


def test_a_slow_load_is_announced_once_at_warning(fresh_cpp_state, monkeypatch, caplog) -> None:
    """A load that outlasts ANNOUNCE_AFTER_S (a compilation) logs one WARNING; a fast one none."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp, "ANNOUNCE_AFTER_S", 0.05)
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: time.sleep(0.5))
    with caplog.at_level(logging.WARNING, logger=cpp.__name__):
        assert cpp.build()
        monkeypatch.setattr(cpp, "_state", {"loaded": None, "reason": "", "seconds": None})
        monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: None)
        assert cpp.build()
        time.sleep(0.2)
    (record,) = [r for r in caplog.records if r.name == cpp.__name__]
    assert record.levelno == logging.WARNING
    assert "python -m r2dn_control.nn.cpp" in record.getMessage()
    assert cpp.DISABLE_ENV in record.getMessage()


def test_disabled_by_environment_is_silent(fresh_cpp_state, monkeypatch) -> None:
    monkeypatch.setenv(cpp.DISABLE_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpp.available()
    assert cpp.DISABLE_ENV in cpp.status()


def test_full_precision_matmul_leaves_cpu_flags_alone(monkeypatch) -> None:
    """On the CPU in the default configuration nothing global is written."""
    writes = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", writes.append)
    with full_precision_matmul(torch.device("cpu")):
        pass
    assert writes == []
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    with full_precision_matmul(torch.device("cpu")):
        assert writes == ["highest"]
    assert writes == ["highest", "high"]  # restored


def test_backend_registry_selects_and_rejects() -> None:
    torch.manual_seed(0)
    r2dn = LipschitzR2DN(2, 3, 4, 2, hidden=(5,), dtype=F64).explicit()
    u, x0 = torch.randn(3, 4, 2, dtype=F64), torch.zeros(3, 3, dtype=F64)
    assert explicit.select_backend(r2dn, u, x0).name == "fused_r2dn"
    assert explicit.select_backend(r2dn, u, x0, "reference").name == "reference"
    with pytest.raises(ValueError, match="'fused_ren' does not apply"):
        explicit.select_backend(r2dn, u, x0, "fused_ren")
    with pytest.raises(ValueError, match="method must be one of"):
        explicit.select_backend(r2dn, u, x0, "fast")


@pytest.mark.parametrize("method", ["auto", "fused", "reference"])
def test_every_backend_equals_the_public_reference_loop(method) -> None:
    torch.manual_seed(1)
    for model in (LipschitzR2DN(2, 3, 4, 2, hidden=(5,), dtype=F64),
                  ContractingREN(2, 3, 4, 2, dtype=F64)):
        e = model.explicit()
        u, x0 = torch.randn(3, 7, 2, dtype=F64), torch.randn(3, 3, dtype=F64)
        if method == "fused" and not any(b.fused and b.applies(e, u, x0)
                                         for b in explicit.BACKENDS.values()):
            continue  # the REN kernel is not built on this machine
        y, x_final = explicit.rollout(e, u, x0, method)
        drive_x = (u @ e.B2.T + e.bx).transpose(0, 1)
        drive_v = (u @ e.D12.T + e.bv).transpose(0, 1)
        xs, ws, x_ref = explicit.reference_loop(e, x0, drive_x, drive_v)
        y_ref = (xs @ e.C2.T + ws @ e.D21.T).transpose(0, 1) + u @ e.D22.T + e.by
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_final, x_ref, rtol=1e-10, atol=1e-10)


def test_certify_settings_change_the_sdp_solver_and_its_accuracy(monkeypatch) -> None:
    """certify.large_lmi picks SCS for this small LMI once lowered; certify.scs_accuracy is
    the accuracy SCS is asked for (the certificate is still re-validated in float64)."""
    import cvxpy as cp

    from r2dn_control import certify
    from r2dn_control.certify import sdp

    if not {"CLARABEL", "SCS"} <= set(cp.installed_solvers()):
        pytest.skip("needs both Clarabel and SCS")
    monkeypatch.setattr(cp, "installed_solvers", lambda: ["CLARABEL", "SCS"])  # no MOSEK
    torch.manual_seed(0)
    model = LipschitzR2DN(2, 3, 3, 2, hidden=(4,), gamma=2.0, dtype=F64)
    asked: list[dict] = []
    real_solve = cp.Problem.solve

    def recording_solve(self, *args, **kwargs):
        asked.append(dict(kwargs))
        return real_solve(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", recording_solve)
    try:
        assert certify.lipschitz(model, method="sdp").solver == "CLARABEL"
        assert asked[0]["solver"] == "CLARABEL"
        config.set_defaults("certify", large_lmi=1, scs_accuracy=1e-7)
        assert sdp.choose_solvers(2) == ["SCS", "CLARABEL"]
        asked.clear()
        res = certify.lipschitz(model, method="sdp")
        assert asked and asked[0]["solver"] == "SCS"
        assert asked[0]["eps_abs"] == asked[0]["eps_rel"] == 1e-7
        assert res.solver in ("SCS", "CLARABEL")  # SCS first; Clarabel if SCS fell short
    finally:
        config.reset_defaults()
    assert sdp.choose_solvers(2) == ["CLARABEL", "SCS"]
