"""R2DN families: API behaviour, initialisations, gradients and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import FAMILIES, Family, Sizes

from r2dn_control.nn import (
    ContractingR2DN,
    GeneralR2DN,
    LipschitzR2DN,
    PassiveR2DN,
)
from r2dn_control.nn.checkpoint import load_model, save_model

ALL = pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)


def make(family: Family, nu=2, nx=3, nv=4, ny=2, hidden=(5,), **common):
    torch.manual_seed(0)
    ny = nu if family.square_io else ny
    return family.build(Sizes(nu, nx, nv, ny, hidden), np.random.default_rng(0), common)


@ALL
def test_shapes_batched_unbatched_and_time_major(family: Family) -> None:
    model = make(family, nu=3, ny=2, dtype=torch.float64)
    ny = model.output_size
    u = torch.randn(5, 7, 3, dtype=torch.float64)
    y, x_final = model(u)
    assert y.shape == (5, 7, ny) and x_final.shape == (5, 3)
    y1, x1 = model(u[2])
    assert y1.shape == (7, ny) and x1.shape == (3,)
    torch.testing.assert_close(y1, y[2])
    model.batch_first = False
    y_tm, _ = model(u.transpose(0, 1))
    torch.testing.assert_close(y_tm.transpose(0, 1), y)


@ALL
def test_state_carry_two_halves_equal_the_whole(family: Family) -> None:
    model = make(family, dtype=torch.float64)
    u = torch.randn(4, 12, 2, dtype=torch.float64)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    y, x_final = model(u, x0)
    y_a, x_mid = model(u[:, :5], x0)
    y_b, x_end = model(u[:, 5:], x_mid)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_end, x_final, rtol=1e-12, atol=1e-12)


@ALL
def test_step_matches_forward_and_frozen_matches_unfrozen(family: Family) -> None:
    model = make(family, dtype=torch.float64)
    u = torch.randn(3, 6, 2, dtype=torch.float64)
    y, x_final = model(u)
    x = torch.zeros(3, 3, dtype=torch.float64)
    with model.frozen():
        assert model.explicit() is model.explicit()  # cached once
        outputs = []
        for t in range(6):
            y_t, x = model.step(x, u[:, t])
            outputs.append(y_t)
        y_frozen, _ = model(u)
    torch.testing.assert_close(torch.stack(outputs, 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, x_final, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_frozen, y)
    y_unbatched, x_unbatched = model.step(torch.zeros(3, dtype=torch.float64), u[0, 0])
    assert y_unbatched.shape == (model.output_size,) and x_unbatched.shape == (3,)


@ALL
def test_gradcheck_through_parameterization_and_rollout(family: Family) -> None:
    model = make(family, nu=2, nx=2, nv=2, ny=2, hidden=(3,), dtype=torch.float64,
                 activation="tanh")
    names, params = zip(*model.named_parameters())
    u = torch.randn(2, 4, 2, dtype=torch.float64)

    def run(*values):
        state = dict(zip(names, values))
        y, x_final = torch.func.functional_call(model, state, (u,))
        return y.sum() + x_final.pow(2).sum()

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@ALL
def test_every_parameter_receives_a_gradient(family: Family) -> None:
    model = make(family, init="random")
    y, x_final = model(torch.randn(2, 5, 2))
    (y.square().sum() + x_final.square().sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


@ALL
@pytest.mark.parametrize("rate", [1.0, 0.9])
def test_long_memory_puts_eigenvalues_just_below_the_rate(family: Family, rate: float) -> None:
    model = make(family, nx=8, init="long_memory", contraction_rate=rate, dtype=torch.float64)
    eig = torch.linalg.eigvals(model.explicit().A).abs()
    assert eig.max() <= rate * (1 + 1e-9)
    assert eig.min() >= 0.94 * rate


@ALL
def test_works_under_no_grad_and_moves_with_to(family: Family) -> None:
    model = make(family)
    u = torch.randn(2, 3, 2)
    with torch.no_grad():
        y, _ = model(u)
    assert not y.requires_grad
    model64 = model.to(torch.float64)
    y64, _ = model64(u.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=1e-4, atol=1e-5)


@ALL
def test_checkpoint_round_trip(family: Family, tmp_path) -> None:
    model = make(family, init="long_memory", dtype=torch.float64)
    path = tmp_path / "model.pt"
    save_model(model, path, note="unit test")
    loaded, metadata = load_model(path)
    u = torch.randn(2, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(u)[0], model(u)[0], rtol=0, atol=0)
    assert metadata == {"note": "unit test"}
    assert type(loaded) is type(model)


def test_identity_output_and_init_output_zero() -> None:
    model = ContractingR2DN(2, 4, 3, 4, identity_output=True, dtype=torch.float64)
    x0 = torch.randn(3, 4, dtype=torch.float64)
    y, _ = model(torch.randn(3, 1, 2, dtype=torch.float64), x0)
    torch.testing.assert_close(y[:, 0], x0 + model.by)
    for cls, kw in ((ContractingR2DN, {}), (LipschitzR2DN, {"gamma": 2.0}),
                    (PassiveR2DN, {"input_passivity": 0.1})):
        zero = cls(2, 3, 4, 2, init_output_zero=True, dtype=torch.float64, **kw)
        e = zero.explicit()
        assert e.C2.abs().max() == 0 and e.D21.abs().max() < 1e-12 and e.by.abs().max() == 0


def test_lipschitz_d22_is_zero_unless_full_d22() -> None:
    e = LipschitzR2DN(2, 3, 4, 2, gamma=2.0).explicit(torch.float64)
    assert e.D22.abs().max() == 0
    e_full = LipschitzR2DN(2, 3, 4, 2, gamma=2.0, full_d22=True).explicit(torch.float64)
    assert torch.linalg.matrix_norm(e_full.D12, 2) < 2.0**0.5
    assert torch.linalg.matrix_norm(e_full.D21, 2) < 2.0**0.5


# ------------------------------------------------------------------ bad input
MODEL = LipschitzR2DN(2, 3, 4, 2, gamma=1.0)


@pytest.mark.parametrize(
    "u, x0, error, match",
    [
        (torch.randn(4, 5, 3), None, ValueError, r"input = 2, got \(4, 5, 3\)"),
        (torch.randn(5), None, ValueError, "got \\(5,\\)"),
        (torch.randn(4, 5, 2, 1), None, ValueError, "shape"),
        (torch.randint(0, 3, (4, 5, 2)), None, TypeError, "floating-point"),
        (torch.randn(4, 5, 2, dtype=torch.float64), None, TypeError, "dtype"),
        (torch.randn(4, 0, 2), None, ValueError, "at least one time step"),
        (torch.randn(4, 5, 2), torch.zeros(4, 2), ValueError, r"x0 must have shape \(4, 3\)"),
        (torch.randn(4, 5, 2), torch.zeros(3), ValueError, r"x0 must have shape \(4, 3\)"),
        (torch.randn(5, 2), torch.zeros(1, 3), ValueError, r"x0 must have shape \(3,\)"),
        ([[0.0, 1.0]], None, TypeError, "torch.Tensor"),
    ],
)
def test_forward_rejects_bad_input(u, x0, error, match) -> None:
    with pytest.raises(error, match=match):
        MODEL(u, x0)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: LipschitzR2DN(2, 3, 4, 2, gamma=0.0), ValueError, "gamma"),
        (lambda: LipschitzR2DN(2, 3, 4, 2, gamma=-2.0), ValueError, "gamma"),
        (lambda: ContractingR2DN(2, 3, 4, 2, contraction_rate=0.0), ValueError, "contraction_rate"),
        (lambda: ContractingR2DN(2, 3, 4, 2, contraction_rate=1.5), ValueError, "contraction_rate"),
        (lambda: ContractingR2DN(2, 3, 0, 2), ValueError, "features"),
        (lambda: ContractingR2DN(2.5, 3, 4, 2), TypeError, "input_size"),
        (lambda: ContractingR2DN(2, 3, 4, 2, init="zeros"), ValueError, "init"),
        (lambda: ContractingR2DN(2, 3, 4, 2, activation="gelu"), ValueError, "activation"),
        (lambda: ContractingR2DN(2, 3, 4, 2, dtype=torch.int64), TypeError, "dtype"),
        (lambda: ContractingR2DN(2, 3, 4, 2, identity_output=True), ValueError, "identity_output"),
        (lambda: PassiveR2DN(2, 3, 4, 3), ValueError, "input_size == output_size"),
        (lambda: PassiveR2DN(2, 3, 4, 2, input_passivity=-1.0), ValueError, "input_passivity"),
        (lambda: GeneralR2DN(2, 3, 4, 2, Q=np.eye(2), S=np.zeros((2, 2)), R=np.eye(2)),
         ValueError, "negative definite"),
        (lambda: GeneralR2DN(2, 3, 4, 2, Q=-np.eye(2), S=3 * np.eye(2), R=-20 * np.eye(2)),
         ValueError, "positive definite"),
        (lambda: GeneralR2DN(2, 3, 4, 2, Q=-np.eye(3), S=np.zeros((2, 2)), R=np.eye(2)),
         ValueError, r"Q must have shape \(2, 2\)"),
        (lambda: GeneralR2DN(2, 3, 4, 2, Q=-np.eye(2), S=np.zeros((2, 2)),
                             R=np.array([[1.0, 0.5], [0.0, 1.0]])), ValueError, "symmetric"),
    ],
)
def test_constructors_reject_bad_arguments(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_explicit_model_is_built_with_tf32_off_and_settings_restored(monkeypatch) -> None:
    model = ContractingR2DN(1, 2, 3, 1)
    seen = {}
    original = type(model)._build_explicit

    def spy(self, *args, **kwargs):
        seen["tf32"] = torch.backends.cuda.matmul.allow_tf32
        seen["precision"] = torch.get_float32_matmul_precision()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "_build_explicit", spy)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    try:
        model(torch.randn(1, 2, 1))
        assert seen == {"tf32": False, "precision": "highest"}
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize("init", ["random", "long_memory"])
def test_contracting_input_weights_use_the_row_fan_in(init: str) -> None:
    # B2 ~ N(0, 1/nx), D12 ~ N(0, 1/nv) (the reference code's lecun_normal), not N(0, 1/nu):
    # with one or two inputs 1/nu made the input term dominate v and x+ at initialisation
    torch.manual_seed(0)
    nu, nx, nv = 2, 256, 400
    model = ContractingR2DN(nu, nx, nv, 1, hidden=(8,), init=init, dtype=torch.float64)
    for weight, rows in ((model.B2, nx), (model.D12, nv)):
        std = float(weight.detach().std())
        # 512 / 800 draws: the sample std is within 10 % of 1/sqrt(rows) with overwhelming odds
        assert abs(std * rows**0.5 - 1.0) < 0.1, (weight.shape, std)
