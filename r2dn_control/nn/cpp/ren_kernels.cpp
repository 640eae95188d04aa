// Fused CPU kernels for the REN: the equilibrium layer and the whole time loop.
//
// Math contract: r2dn_control/nn/fused_ren.md. Python side: r2dn_control/nn/cpp/__init__.py
// (build and load) and r2dn_control/nn/fused_ren.py (autograd wrapper).
//
// Layout. Batch samples are independent through the whole REN rollout, so the batch is cut
// into blocks of L lanes and each block runs all T steps on its own (at::parallel_for over
// blocks: no synchronisation inside the time loop). Inside a block every quantity is stored
// feature-major, q[i * L + l] for feature i of lane l, so every inner loop is an axpy over
// the L lanes of fixed length, which the compiler vectorises without reassociating sums.
//
// The equilibrium solve w_i = σ(v_i + Σ_{j<i} D11[i,j] w_j) processes ROWS rows at once: their
// sums over the already solved columns share each load of w_j; the small triangle between
// them is then finished row by row. The adjoint does the mirror image (column sweeps).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "activation_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace r2dn_kernels {
namespace {

constexpr int64_t ROWS = 4;  // rows of the triangular solve handled together

// ---------------------------------------------------------------------------------------------
// Block primitives (feature-major buffers of L lanes)

// w ← solution of w = σ(v + D w), D strictly lower (only j < i read); v, w: nv × L.
template <typename T, int64_t L, Act A>
inline void solve_block(const T* __restrict D, int64_t nv, const T* __restrict v,
                        T* __restrict w) {
  int64_t i0 = 0;
  for (; i0 + ROWS <= nv; i0 += ROWS) {
    const T* d0 = D + i0 * nv;
    const T* d1 = d0 + nv;
    const T* d2 = d1 + nv;
    const T* d3 = d2 + nv;
    T a0[L], a1[L], a2[L], a3[L];
    for (int64_t l = 0; l < L; ++l) {
      a0[l] = v[i0 * L + l];
      a1[l] = v[(i0 + 1) * L + l];
      a2[l] = v[(i0 + 2) * L + l];
      a3[l] = v[(i0 + 3) * L + l];
    }
    for (int64_t j = 0; j < i0; ++j) {
      const T* wj = w + j * L;
      const T c0 = d0[j], c1 = d1[j], c2 = d2[j], c3 = d3[j];
      for (int64_t l = 0; l < L; ++l) {
        a0[l] += c0 * wj[l];
        a1[l] += c1 * wj[l];
        a2[l] += c2 * wj[l];
        a3[l] += c3 * wj[l];
      }
    }
    // The triangle inside the group: each row needs the rows just solved above it.
    T* w0 = w + i0 * L;
    T* w1 = w0 + L;
    T* w2 = w1 + L;
    T* w3 = w2 + L;
    for (int64_t l = 0; l < L; ++l) w0[l] = activate<T, A>(a0[l]);
    for (int64_t l = 0; l < L; ++l) w1[l] = activate<T, A>(a1[l] + d1[i0] * w0[l]);
    for (int64_t l = 0; l < L; ++l)
      w2[l] = activate<T, A>(a2[l] + d2[i0] * w0[l] + d2[i0 + 1] * w1[l]);
    for (int64_t l = 0; l < L; ++l)
      w3[l] = activate<T, A>(a3[l] + d3[i0] * w0[l] + d3[i0 + 1] * w1[l] + d3[i0 + 2] * w2[l]);
  }
  for (; i0 < nv; ++i0) {
    const T* d = D + i0 * nv;
    T a[L];
    for (int64_t l = 0; l < L; ++l) a[l] = v[i0 * L + l];
    for (int64_t j = 0; j < i0; ++j)
      for (int64_t l = 0; l < L; ++l) a[l] += d[j] * w[j * L + l];
    for (int64_t l = 0; l < L; ++l) w[i0 * L + l] = activate<T, A>(a[l]);
  }
}

// g ← J μ where (I − J D)ᵀ μ = g, J = diag(σ'(v)) recovered from w = σ(v); nv × L, in place.
// Back substitution from the last row: μ_i = g_i + Σ_{k>i} D[k,i] (Jμ)_k.
template <typename T, int64_t L, Act A>
inline void adjoint_block(const T* __restrict D, int64_t nv, const T* __restrict w,
                          T* __restrict g) {
  int64_t end = nv;
  // Rows above a multiple of ROWS are done one at a time first (largest indices first).
  for (; end % ROWS != 0; --end) {
    const int64_t i = end - 1;
    const T* d = D + i * nv;
    T* gi = g + i * L;
    for (int64_t l = 0; l < L; ++l) gi[l] *= slope_from_output<T, A>(w[i * L + l]);
    for (int64_t j = 0; j < i; ++j)
      for (int64_t l = 0; l < L; ++l) g[j * L + l] += d[j] * gi[l];
  }
  for (; end > 0; end -= ROWS) {
    const int64_t i0 = end - ROWS;
    const T* d1 = D + (i0 + 1) * nv;
    const T* d2 = d1 + nv;
    const T* d3 = d2 + nv;
    const T* d0 = D + i0 * nv;
    T* q0 = g + i0 * L;
    T* q1 = q0 + L;
    T* q2 = q1 + L;
    T* q3 = q2 + L;
    const T* w0 = w + i0 * L;
    for (int64_t l = 0; l < L; ++l) q3[l] *= slope_from_output<T, A>(w0[3 * L + l]);
    for (int64_t l = 0; l < L; ++l)
      q2[l] = (q2[l] + d3[i0 + 2] * q3[l]) * slope_from_output<T, A>(w0[2 * L + l]);
    for (int64_t l = 0; l < L; ++l)
      q1[l] = (q1[l] + d3[i0 + 1] * q3[l] + d2[i0 + 1] * q2[l]) *
              slope_from_output<T, A>(w0[L + l]);
    for (int64_t l = 0; l < L; ++l)
      q0[l] = (q0[l] + d3[i0] * q3[l] + d2[i0] * q2[l] + d1[i0] * q1[l]) *
              slope_from_output<T, A>(w0[l]);
    for (int64_t j = 0; j < i0; ++j) {
      const T c0 = d0[j], c1 = d1[j], c2 = d2[j], c3 = d3[j];
      T* gj = g + j * L;
      for (int64_t l = 0; l < L; ++l)
        gj[l] += c0 * q0[l] + c1 * q1[l] + c2 * q2[l] + c3 * q3[l];
    }
  }
}

// out (m × L) += M x for a row-major m × n matrix M and x (n × L).
template <typename T, int64_t L>
inline void add_matvec(const T* __restrict M, int64_t m, int64_t n, const T* __restrict x,
                       T* __restrict out) {
  for (int64_t i = 0; i < m; ++i) {
    T* o = out + i * L;
    for (int64_t k = 0; k < n; ++k) {
      const T c = M[i * n + k];
      const T* xk = x + k * L;
      for (int64_t l = 0; l < L; ++l) o[l] += c * xk[l];
    }
  }
}

// out (n × L) += Mᵀ x for a row-major m × n matrix M and x (m × L).
template <typename T, int64_t L>
inline void add_matvec_t(const T* __restrict M, int64_t m, int64_t n, const T* __restrict x,
                         T* __restrict out) {
  for (int64_t i = 0; i < m; ++i) {
    const T* xi = x + i * L;
    for (int64_t k = 0; k < n; ++k) {
      const T c = M[i * n + k];
      T* o = out + k * L;
      for (int64_t l = 0; l < L; ++l) o[l] += c * xi[l];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Drivers

void check_cpu_float(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), "r2dn_control kernels run on CPU tensors only; ", name,
              " is on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "r2dn_control kernels: ", name, " has dtype ",
              t.scalar_type(), ", expected ", dtype);
}

void check_shape(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "r2dn_control kernels: ", name,
              " has shape ", t.sizes(), ", expected ", at::IntArrayRef(shape));
}

// Calls body.template operator()<T, L, A>() for the tensor's dtype and the activation.
template <typename Body>
void dispatch(at::ScalarType dtype, Act act, const Body& body) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "r2dn_control kernels support float32 and float64, got ", dtype);
  auto with_type = [&](auto zero) {
    using T = decltype(zero);
    constexpr int64_t L = std::is_same_v<T, float> ? 16 : 8;  // 64 bytes of lanes
    switch (act) {
      case Act::Relu: body.template operator()<T, L, Act::Relu>(); break;
      case Act::Tanh: body.template operator()<T, L, Act::Tanh>(); break;
      case Act::Sigmoid: body.template operator()<T, L, Act::Sigmoid>(); break;
      case Act::LeakyRelu: body.template operator()<T, L, Act::LeakyRelu>(); break;
      case Act::Identity: body.template operator()<T, L, Act::Identity>(); break;
    }
  };
  if (dtype == at::kFloat) with_type(float(0));
  else with_type(double(0));
}

struct EquilibriumForward {
  const at::Tensor& D11;
  const at::Tensor& b;
  at::Tensor& w;
  template <typename T, int64_t L, Act A>
  void operator()() const {
    const int64_t batch = b.size(0), nv = b.size(1);
    const T* D = D11.data_ptr<T>();
    const T* bp = b.data_ptr<T>();
    T* wp = w.data_ptr<T>();
    for_each_block(batch, L, [&](int64_t b0, int64_t lanes) {
      std::vector<T> v(nv * L), out(nv * L);
      gather<T, L>(bp + b0 * nv, nv, lanes, v.data());
      solve_block<T, L, A>(D, nv, v.data(), out.data());
      scatter<T, L>(out.data(), nv, lanes, wp + b0 * nv);
    });
  }
};

struct EquilibriumAdjoint {
  const at::Tensor& D11;
  const at::Tensor& w;
  const at::Tensor& g;
  at::Tensor& out;
  template <typename T, int64_t L, Act A>
  void operator()() const {
    const int64_t batch = w.size(0), nv = w.size(1);
    const T* D = D11.data_ptr<T>();
    const T* wp = w.data_ptr<T>();
    const T* gp = g.data_ptr<T>();
    T* op = out.data_ptr<T>();
    for_each_block(batch, L, [&](int64_t b0, int64_t lanes) {
      std::vector<T> wb(nv * L), gb(nv * L);
      gather<T, L>(wp + b0 * nv, nv, lanes, wb.data());
      gather<T, L>(gp + b0 * nv, nv, lanes, gb.data());
      adjoint_block<T, L, A>(D, nv, wb.data(), gb.data());
      scatter<T, L>(gb.data(), nv, lanes, op + b0 * nv);
    });
  }
};

struct RenForward {
  const at::Tensor &x0, &dx, &dv, &A, &B1, &C1, &D11;
  at::Tensor &xs, &ws, &xT;
  template <typename T, int64_t L, Act ACT>
  void operator()() const {
    const int64_t steps = dx.size(0), batch = dx.size(1), nx = dx.size(2), nv = dv.size(2);
    const T *a = A.data_ptr<T>(), *b1 = B1.data_ptr<T>(), *c1 = C1.data_ptr<T>();
    const T *d = D11.data_ptr<T>(), *dxp = dx.data_ptr<T>(), *dvp = dv.data_ptr<T>();
    T *xsp = xs.data_ptr<T>(), *wsp = ws.data_ptr<T>();
    const T* x0p = x0.data_ptr<T>();
    T* xTp = xT.data_ptr<T>();
    for_each_block(batch, L, [&](int64_t b0, int64_t lanes) {
      std::vector<T> x(nx * L), xn(nx * L), v(nv * L), w(nv * L);
      gather<T, L>(x0p + b0 * nx, nx, lanes, x.data());
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t row = t * batch + b0;
        scatter<T, L>(x.data(), nx, lanes, xsp + row * nx);
        gather<T, L>(dvp + row * nv, nv, lanes, v.data());
        add_matvec<T, L>(c1, nv, nx, x.data(), v.data());  // v = dv + C1 x
        solve_block<T, L, ACT>(d, nv, v.data(), w.data());
        scatter<T, L>(w.data(), nv, lanes, wsp + row * nv);
        gather<T, L>(dxp + row * nx, nx, lanes, xn.data());
        add_matvec<T, L>(a, nx, nx, x.data(), xn.data());   // x' = dx + A x + B1 w
        add_matvec<T, L>(b1, nx, nv, w.data(), xn.data());
        std::swap(x, xn);
      }
      scatter<T, L>(x.data(), nx, lanes, xTp + b0 * nx);
    });
  }
};

struct RenAdjoint {
  const at::Tensor &g_xs, &g_ws, &g_final, &ws, &A, &B1, &C1, &D11;
  at::Tensor &lam_next, &g_v, &lam0;
  template <typename T, int64_t L, Act ACT>
  void operator()() const {
    const int64_t steps = ws.size(0), batch = ws.size(1), nv = ws.size(2), nx = A.size(0);
    const T *a = A.data_ptr<T>(), *b1 = B1.data_ptr<T>(), *c1 = C1.data_ptr<T>();
    const T *d = D11.data_ptr<T>(), *wsp = ws.data_ptr<T>();
    const T *gxp = g_xs.data_ptr<T>(), *gwp = g_ws.data_ptr<T>(), *gfp = g_final.data_ptr<T>();
    T *lnp = lam_next.data_ptr<T>(), *gvp = g_v.data_ptr<T>(), *l0p = lam0.data_ptr<T>();
    for_each_block(batch, L, [&](int64_t b0, int64_t lanes) {
      std::vector<T> lam(nx * L), lam_new(nx * L), g(nv * L), w(nv * L);
      gather<T, L>(gfp + b0 * nx, nx, lanes, lam.data());
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t row = t * batch + b0;
        scatter<T, L>(lam.data(), nx, lanes, lnp + row * nx);  // ∂L/∂dx_t = λ_{t+1}
        gather<T, L>(gwp + row * nv, nv, lanes, g.data());
        add_matvec_t<T, L>(b1, nx, nv, lam.data(), g.data());   // g = G^w_t + B1ᵀ λ_{t+1}
        gather<T, L>(wsp + row * nv, nv, lanes, w.data());
        adjoint_block<T, L, ACT>(d, nv, w.data(), g.data());    // g ← g^v_t = J μ
        scatter<T, L>(g.data(), nv, lanes, gvp + row * nv);
        gather<T, L>(gxp + row * nx, nx, lanes, lam_new.data());
        add_matvec_t<T, L>(a, nx, nx, lam.data(), lam_new.data());  // λ_t = G^x + Aᵀλ + C1ᵀg^v
        add_matvec_t<T, L>(c1, nv, nx, g.data(), lam_new.data());
        std::swap(lam, lam_new);
      }
      scatter<T, L>(lam.data(), nx, lanes, l0p + b0 * nx);
    });
  }
};

// ---------------------------------------------------------------------------------------------
// Operators

at::Tensor equilibrium_forward(const at::Tensor& D11, const at::Tensor& b,
                               std::string activation) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(b.dim() == 2, "equilibrium_forward: b must be (batch, nv), got ", b.sizes());
  const auto dtype = b.scalar_type();
  check_cpu_float(b, "b", dtype);
  check_cpu_float(D11, "D11", dtype);
  check_shape(D11, "D11", {b.size(1), b.size(1)});
  const at::Tensor bc = b.contiguous(), dc = D11.contiguous();
  at::Tensor w = at::empty(b.sizes(), b.options());
  dispatch(dtype, act, EquilibriumForward{dc, bc, w});
  return w;
}

at::Tensor equilibrium_adjoint(const at::Tensor& D11, const at::Tensor& w, const at::Tensor& g,
                               std::string activation) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(w.dim() == 2, "equilibrium_adjoint: w must be (batch, nv), got ", w.sizes());
  const auto dtype = w.scalar_type();
  for (auto [t, name] : {std::pair{&D11, "D11"}, {&w, "w"}, {&g, "g"}})
    check_cpu_float(*t, name, dtype);
  check_shape(D11, "D11", {w.size(1), w.size(1)});
  check_shape(g, "g", {w.size(0), w.size(1)});
  const at::Tensor dc = D11.contiguous(), wc = w.contiguous(), gc = g.contiguous();
  at::Tensor out = at::empty(w.sizes(), w.options());
  dispatch(dtype, act, EquilibriumAdjoint{dc, wc, gc, out});
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ren_forward(
    const at::Tensor& x0, const at::Tensor& dx, const at::Tensor& dv, const at::Tensor& A,
    const at::Tensor& B1, const at::Tensor& C1, const at::Tensor& D11, std::string activation) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(dx.dim() == 3 && dv.dim() == 3, "ren_forward: drives must be (T, batch, n)");
  const int64_t steps = dx.size(0), batch = dx.size(1), nx = dx.size(2), nv = dv.size(2);
  const auto dtype = dx.scalar_type();
  for (auto [t, name] : {std::pair{&x0, "x0"}, {&dx, "dx"}, {&dv, "dv"}, {&A, "A"},
                         {&B1, "B1"}, {&C1, "C1"}, {&D11, "D11"}})
    check_cpu_float(*t, name, dtype);
  check_shape(x0, "x0", {batch, nx});
  check_shape(dv, "dv", {steps, batch, nv});
  check_shape(A, "A", {nx, nx});
  check_shape(B1, "B1", {nx, nv});
  check_shape(C1, "C1", {nv, nx});
  check_shape(D11, "D11", {nv, nv});
  const at::Tensor x0c = x0.contiguous(), dxc = dx.contiguous(), dvc = dv.contiguous();
  const at::Tensor ac = A.contiguous(), b1c = B1.contiguous(), c1c = C1.contiguous();
  const at::Tensor dc = D11.contiguous();
  at::Tensor xs = at::empty({steps, batch, nx}, dx.options());
  at::Tensor ws = at::empty({steps, batch, nv}, dx.options());
  at::Tensor xT = at::empty({batch, nx}, dx.options());
  dispatch(dtype, act, RenForward{x0c, dxc, dvc, ac, b1c, c1c, dc, xs, ws, xT});
  return {xs, ws, xT};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ren_adjoint(
    const at::Tensor& g_xs, const at::Tensor& g_ws, const at::Tensor& g_final,
    const at::Tensor& ws, const at::Tensor& A, const at::Tensor& B1, const at::Tensor& C1,
    const at::Tensor& D11, std::string activation) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(ws.dim() == 3, "ren_adjoint: ws must be (T, batch, nv), got ", ws.sizes());
  const int64_t steps = ws.size(0), batch = ws.size(1), nv = ws.size(2), nx = A.size(0);
  const auto dtype = ws.scalar_type();
  for (auto [t, name] : {std::pair{&g_xs, "g_xs"}, {&g_ws, "g_ws"}, {&g_final, "g_final"},
                         {&ws, "ws"}, {&A, "A"}, {&B1, "B1"}, {&C1, "C1"}, {&D11, "D11"}})
    check_cpu_float(*t, name, dtype);
  check_shape(g_xs, "g_xs", {steps, batch, nx});
  check_shape(g_ws, "g_ws", {steps, batch, nv});
  check_shape(g_final, "g_final", {batch, nx});
  check_shape(A, "A", {nx, nx});
  check_shape(B1, "B1", {nx, nv});
  check_shape(C1, "C1", {nv, nx});
  check_shape(D11, "D11", {nv, nv});
  const at::Tensor gxc = g_xs.contiguous(), gwc = g_ws.contiguous(), gfc = g_final.contiguous();
  const at::Tensor wsc = ws.contiguous(), ac = A.contiguous(), b1c = B1.contiguous();
  const at::Tensor c1c = C1.contiguous(), dc = D11.contiguous();
  at::Tensor lam_next = at::empty({steps, batch, nx}, ws.options());
  at::Tensor g_v = at::empty({steps, batch, nv}, ws.options());
  at::Tensor lam0 = at::empty({batch, nx}, ws.options());
  dispatch(dtype, act,
           RenAdjoint{gxc, gwc, gfc, wsc, ac, b1c, c1c, dc, lam_next, g_v, lam0});
  return {lam_next, g_v, lam0};
}

}  // namespace

TORCH_LIBRARY(r2dn_control, m) {
  m.def("equilibrium_forward(Tensor D11, Tensor b, str activation) -> Tensor");
  m.def("equilibrium_adjoint(Tensor D11, Tensor w, Tensor g, str activation) -> Tensor");
  m.def("ren_forward(Tensor x0, Tensor dx, Tensor dv, Tensor A, Tensor B1, Tensor C1, "
        "Tensor D11, str activation) -> (Tensor, Tensor, Tensor)");
  m.def("ren_adjoint(Tensor g_xs, Tensor g_ws, Tensor g_final, Tensor ws, Tensor A, "
        "Tensor B1, Tensor C1, Tensor D11, str activation) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(r2dn_control, CPU, m) {
  m.impl("equilibrium_forward", &equilibrium_forward);
  m.impl("equilibrium_adjoint", &equilibrium_adjoint);
  m.impl("ren_forward", &ren_forward);
  m.impl("ren_adjoint", &ren_adjoint);
}

}  // namespace r2dn_kernels
