"""The cheaper algebra of the certificate searches (issue 16) against the plain formulas.

Float64 properties over random draws: the structured Riccati data equal those of the
ε-augmented system written out in full, the eigen-form frequency response (one LU of V and
LAPACK's condition estimate) equals the resolvent, the rank-k-update gain is σ_max, the
deferred LBDN gives the eager explicit model (the end-to-end searches built on these are
checked in tests/test_certify_search.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r2dn_control import certify
from r2dn_control.certify import kyp
from r2dn_control.certify.freq import FrequencyResponse
from r2dn_control.certify.lmi import StateSpaceBlocks
from r2dn_control.nn import LipschitzR2DN
from r2dn_control.nn.explicit import DeferredNetwork


def _augmented_riccati_data(a, b, c, d, eps):
    """(Ā, −G, Q̄) for ``[Ĉ; √ε·s·I]``, ``[D̂; 0]`` written out in full (the reference)."""
    n, m = b.shape
    scale = max(1.0, float(np.abs(c).max()))
    c_aug = np.vstack([c, math.sqrt(eps) * scale * np.eye(n)])
    d_aug = np.vstack([d, np.zeros((n, m))])
    r = np.eye(m) - d_aug.T @ d_aug
    dd = np.eye(d_aug.shape[0]) - d_aug @ d_aug.T
    a_bar = a + b @ np.linalg.solve(r, d_aug.T @ c_aug)
    g = b @ np.linalg.solve(r, b.T)
    q_bar = c_aug.T @ np.linalg.solve(dd, c_aug)
    return a_bar, -g, q_bar


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 9), m=st.integers(1, 5),
       p=st.integers(1, 5), norm=st.floats(0.05, 0.95), eps=st.sampled_from([1e-10, 1e-6, 1e-3]))
def test_structured_riccati_data_equal_the_augmented_system(seed, n, m, p, norm, eps) -> None:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(n, n)), rng.normal(size=(n, m)), rng.normal(size=(p, n))
    d = rng.normal(size=(p, m))
    d *= norm / np.linalg.norm(d, 2)  # ‖D̂‖ < 1: R ≻ 0 and I − D̂D̂ᵀ ≻ 0
    fast = kyp._riccati_data(a, b, c, d, eps)
    ref = _augmented_riccati_data(a, b, c, d, eps)
    cond = 1.0 / (1.0 - norm**2)
    for got, want in zip(fast, ref):
        tol = 1e-12 * cond * max(1.0, np.abs(want).max())
        assert np.abs(got - want).max() <= tol, (np.abs(got - want).max(), tol)
        assert np.array_equal(got, got.T) or got is fast[0]  # −G and Q̄ are symmetric


def _blocks(rng, n: int, nv: int, nu: int, ny: int, radius: float) -> StateSpaceBlocks:
    a = rng.normal(size=(n, n))
    a *= radius / np.abs(np.linalg.eigvals(a)).max()
    return StateSpaceBlocks(a, rng.normal(size=(n, nv)), rng.normal(size=(n, nu)),
                            rng.normal(size=(nv, n)), rng.normal(size=(ny, n)),
                            np.zeros((nv, nv)), rng.normal(size=(nv, nu)),
                            rng.normal(size=(ny, nv)), rng.normal(size=(ny, nu)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 10), nv=st.integers(1, 6),
       radius=st.floats(0.1, 0.99), omega=st.floats(0.0, math.pi))
def test_eigen_form_response_equals_the_resolvent(seed, n, nv, radius, omega) -> None:
    rng = np.random.default_rng(seed)
    ss = _blocks(rng, n, nv, 2, 2, radius)
    resp = FrequencyResponse(ss)
    z = complex(math.cos(omega), math.sin(omega))
    b, c = np.hstack([ss.B1, ss.B2]), np.vstack([ss.C1, ss.C2])
    want = c @ np.linalg.solve(z * np.eye(n) - ss.A, b) + resp.d
    got = resp(omega)
    scale = np.abs(c).max() * np.abs(b).max() * np.linalg.norm(np.linalg.inv(z * np.eye(n) - ss.A), 2)
    assert np.abs(got - want).max() <= 1e-9 * n * max(1.0, scale) * max(1.0, np.abs(want).max())


def test_defective_a_takes_the_lu_path() -> None:
    """A Jordan block: V is singular to working precision, so no diagonal form is used."""
    rng = np.random.default_rng(1)
    n = 6
    a = 0.5 * np.eye(n) + np.diag(np.ones(n - 1), 1)
    ss = _blocks(rng, n, 3, 2, 2, 0.5)
    ss = StateSpaceBlocks(a, *(getattr(ss, k) for k in ("B1", "B2", "C1", "C2", "D11", "D12",
                                                         "D21", "D22")))
    resp = FrequencyResponse(ss)
    assert resp._cv is None
    z = complex(math.cos(0.3), math.sin(0.3))
    b, c = np.hstack([ss.B1, ss.B2]), np.vstack([ss.C1, ss.C2])
    np.testing.assert_allclose(resp(0.3), c @ np.linalg.solve(z * np.eye(n) - a, b) + resp.d,
                               rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 9), nv=st.integers(1, 7),
       radius=st.floats(0.1, 0.95), r=st.floats(0.5, 1.5), omega=st.floats(0.0, math.pi))
def test_w_channel_gain_is_the_largest_singular_value(seed, n, nv, radius, r, omega) -> None:
    rng = np.random.default_rng(seed)
    ss = _blocks(rng, n, nv, 1, 1, radius)
    z = kyp._on_ray(max(r, 1.01 * radius), omega)
    want = np.linalg.norm(ss.C1 @ np.linalg.solve(z * np.eye(n) - ss.A, ss.B1), 2)
    got = kyp._w_channel_gain(ss, z)
    assert abs(got - want) <= 1e-10 * max(1.0, want), (got, want)
    for shape in ((nv, n), (n, nv)):
        g = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        assert abs(kyp._largest_gram_eigenvalue(g) - np.linalg.norm(g, 2) ** 2) \
            <= 1e-12 * np.linalg.norm(g, 2) ** 2


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


@pytest.mark.parametrize("grad", [False, True])
def test_deferred_network_gives_the_eager_explicit_model(grad: bool) -> None:
    torch.manual_seed(3)
    model = LipschitzR2DN(2, 5, 4, 2, hidden=(6,), gamma=1.5, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        eager = model.explicit(torch.float64)
        lazy = model.explicit(torch.float64, defer_network=True)
    assert isinstance(lazy.network, DeferredNetwork)
    for name, value in eager.matrices().items():
        assert _same(value, lazy.matrices()[name]), name
    assert _same(eager.metric, lazy.metric)
    v = torch.randn(7, 4, dtype=torch.float64)
    out, want = lazy.network(v), eager.network(v)
    assert torch.allclose(out, want, rtol=0, atol=1e-14)
    # Built in the autograd mode of the deferral: weights with a graph exactly when grad was on.
    built = lazy.network.built()
    assert all((w.grad_fn is not None) == grad for w in built.weights)
    assert [w.grad_fn is None for w in built.weights] == \
        [w.grad_fn is None for w in eager.network.weights]
    moved = lazy.to(dtype=torch.float32)
    assert moved.network(v.float()).dtype == torch.float32
    assert lazy.network.to() is lazy.network


def test_deferred_network_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        DeferredNetwork(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defer_network must be a bool"):
        LipschitzR2DN(2, 3, 3, 2).explicit(defer_network="yes")  # type: ignore[arg-type]


def test_certify_target_does_not_build_the_lbdn() -> None:
    """The certificates read only the LTI blocks: the LBDN is built when something calls it."""
    torch.manual_seed(4)
    model = LipschitzR2DN(2, 4, 4, 2, hidden=(5,), gamma=1.5, dtype=torch.float64)
    target = certify.as_target(model)
    res = certify.lipschitz(model, method="kyp")
    assert res.certified
    u, x0 = torch.randn(2, 3, 2, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    y, _ = target.simulate(u, x0)
    with torch.no_grad():
        want, _ = model(u, x0)
    assert torch.allclose(y, want, rtol=1e-10, atol=1e-12)


def test_margin_ladder_goes_past_max_margin_before_the_dense_retry() -> None:
    """A check that needs τ above `MAX_MARGIN` is met on the same candidate (n = 200: the
    ladder runs to 10·first_margin(n) = 2.5e-5), and the result is proved in float64."""
    from r2dn_control.certify.freq import GainSearch
    from r2dn_control.certify.lmi import Validation, lipschitz_supply, validate

    torch.manual_seed(7)
    n = 200
    model = LipschitzR2DN(2, n, n, 2, gamma=2.0, dtype=torch.float64)
    ss = certify.as_target(model).blocks
    search = GainSearch(ss)
    cand = search.run()
    need = 2 * kyp.MAX_MARGIN  # pretend the rounding bound asks for more than MAX_MARGIN
    limit = 10 * kyp.first_margin(n)
    assert kyp.first_margin(n) < kyp.MAX_MARGIN < need < limit

    def accept(c: kyp.KypCertificate) -> Validation:
        real = validate(ss, c.metric, c.multiplier, 1.0, lipschitz_supply(c.value, 2, 2))
        if c.margin < need:
            return Validation(False, real.margin, real.min_eigenvalue, need, "margin too small")
        return real

    cert, solves = kyp._certify_candidate(ss, cand.kappa, cand.gamma, search.mu_max, accept)
    assert cert is not None and cert.proof is not None and cert.proof.holds
    assert need <= cert.margin <= limit and solves >= 2
    assert validate(ss, cert.metric, cert.multiplier, 1.0,
                    lipschitz_supply(cert.value, 2, 2)).holds
    assert cand.gamma <= cert.value <= cand.gamma * (1 + 10 * limit)  # κ and γ both raised by 4τ
