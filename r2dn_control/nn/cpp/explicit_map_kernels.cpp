// The R2DN's direct-to-explicit maps, forward and backward in one call each: the LBDN's weight
// map (lbdn_map_*) and the contracting family's LTI map (contracting_lti_*).
//
// Math contracts: the module docstrings of r2dn_control/nn/_lbdn_map.py (docs/theory.md §1) and
// r2dn_control/nn/_contracting_map.py (§3), which keep the torch implementations as the
// reference and as the path off the CPU.
//
// LBDN weight map. Per layer
// (W = [U; V] of shape (n+m)×n, scale a, log ψ = d for hidden layers):
//
//   s = a / √(Σ W² + ε),  M = I + s(U − Uᵀ) + s² VᵀV,  Ã = 2M⁻¹ − I,  Bᵀ = −2 s V M⁻¹,
//   pre = Bᵀ diag(f/ψ) (f = √2 hidden, 1 linear),  post = √2 diag(ψ) Ãᵀ (hidden layers),
//   outputs: √γ pre₀, post_{k−1} pre_k, (√γ post_last for a sandwich output layer), the last
//   one times √γ as well.
//
// Why C++: at the paper's small sizes every matrix is at most a few dozen wide, and the torch
// version is ~200 dispatched ops forward and as many backward, each costing more than its
// arithmetic. Here every layer is handled at its own size (no padding), the products run as
// plain loops up to SMALL_PRODUCT multiply-adds and through ATen's CPU matmul (BLAS) beyond,
// and M⁻¹ by Gauss–Jordan elimination with partial pivoting up to SMALL_INVERSE rows (LAPACK
// through at::linalg_inv_ex beyond). The forward saves what the backward needs in one flat
// buffer (layout: `Layout`).

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/linalg_inv_ex.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

namespace r2dn_kernels {
namespace {

// Products with at most this many multiply-adds run as loops; larger ones call BLAS.
constexpr int64_t SMALL_PRODUCT = 16 * 16 * 16;
// Matrices up to this size are inverted by the loops below; larger ones by LAPACK.
constexpr int64_t SMALL_INVERSE = 64;

// A strided view of a row-major matrix (a transpose swaps the strides).
template <typename T>
struct Mat {
  T* p;
  int64_t rows, cols, rs, cs;
  T& operator()(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
  Mat t() const { return {p, cols, rows, cs, rs}; }
};

template <typename T>
Mat<T> dense(T* p, int64_t rows, int64_t cols) { return {p, rows, cols, cols, 1}; }

template <typename T>
at::Tensor as_tensor(const Mat<T>& a) {
  return at::from_blob(a.p, {a.rows, a.cols}, {a.rs, a.cs},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// C = alpha·A·B + beta·C (C dense row-major; beta = 0 overwrites).
template <typename T>
void gemm(const Mat<T>& c, const Mat<T>& a, const Mat<T>& b, T alpha, T beta) {
  TORCH_INTERNAL_ASSERT(a.cols == b.rows && c.rows == a.rows && c.cols == b.cols);
  const int64_t rows = c.rows, cols = c.cols, inner = a.cols;
  if (rows * cols * inner > SMALL_PRODUCT) {
    at::Tensor ct = as_tensor(c);
    if (beta == T(0)) {
      at::cpu::mm_out(ct, as_tensor(a), as_tensor(b));
      if (alpha != T(1)) for (int64_t i = 0; i < rows * cols; ++i) c.p[i] *= alpha;
    } else {
      at::cpu::addmm_(ct, as_tensor(a), as_tensor(b), beta, alpha);
    }
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict__ ci = c.p + i * c.rs;
    if (beta == T(0)) {
      for (int64_t j = 0; j < cols; ++j) ci[j] = T(0);
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < cols; ++j) ci[j] *= beta;
    }
    for (int64_t k = 0; k < inner; ++k) {
      const T aik = alpha * a(i, k);
      if (b.cs == 1) {
        const T* __restrict__ bk = b.p + k * b.rs;
        for (int64_t j = 0; j < cols; ++j) ci[j] += aik * bk[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) ci[j] += aik * b(k, j);
      }
    }
  }
}

// a ← a⁻¹ in place (n×n row-major): Gauss–Jordan elimination with partial pivoting (the rows
// of P·a are eliminated, (P·a)⁻¹ = a⁻¹Pᵀ, so the columns are swapped back at the end). n³
// multiply-adds, every inner loop over one contiguous row.
template <typename T>
void invert_in_place(T* a, int64_t n) {
  std::vector<int64_t> pivots(n);
  for (int64_t k = 0; k < n; ++k) {
    int64_t pivot = k;
    for (int64_t r = k + 1; r < n; ++r)
      if (std::abs(a[r * n + k]) > std::abs(a[pivot * n + k])) pivot = r;
    pivots[k] = pivot;
    if (pivot != k)
      for (int64_t j = 0; j < n; ++j) std::swap(a[k * n + j], a[pivot * n + j]);
    T* __restrict__ row_k = a + k * n;
    const T inv = T(1) / row_k[k];
    row_k[k] = T(1);
    for (int64_t j = 0; j < n; ++j) row_k[j] *= inv;
    for (int64_t r = 0; r < n; ++r) {
      if (r == k) continue;
      T* __restrict__ row_r = a + r * n;
      const T f = row_r[k];
      if (f == T(0)) continue;
      row_r[k] = T(0);
      for (int64_t j = 0; j < n; ++j) row_r[j] -= f * row_k[j];
    }
  }
  for (int64_t k = n - 1; k >= 0; --k)
    if (pivots[k] != k)
      for (int64_t r = 0; r < n; ++r) std::swap(a[r * n + k], a[r * n + pivots[k]]);
}

// Invert the n×n matrices at ``offsets`` of ``buf`` in place: up to SMALL_INVERSE rows by the
// loops above, larger ones grouped by size, one batched LAPACK call (at::linalg_inv_ex) each.
template <typename T>
void invert_all(T* buf, const std::vector<std::pair<int64_t, int64_t>>& matrices) {
  std::vector<std::pair<int64_t, std::vector<int64_t>>> large;  // size → offsets
  for (const auto& [offset, n] : matrices) {
    if (n <= SMALL_INVERSE) {
      invert_in_place(buf + offset, n);
      continue;
    }
    auto group = std::find_if(large.begin(), large.end(),
                              [n = n](const auto& g) { return g.first == n; });
    if (group == large.end()) {
      large.emplace_back(n, std::vector<int64_t>{});
      group = large.end() - 1;
    }
    group->second.push_back(offset);
  }
  for (const auto& [n, offsets] : large) {
    const int64_t count = static_cast<int64_t>(offsets.size());
    at::Tensor batch = at::empty({count, n, n},
                                 at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    T* b = batch.data_ptr<T>();
    for (int64_t i = 0; i < count; ++i) std::memcpy(b + i * n * n, buf + offsets[i], sizeof(T) * n * n);
    const at::Tensor inv = std::get<0>(at::linalg_inv_ex(batch)).contiguous();
    const T* ip = inv.data_ptr<T>();
    for (int64_t i = 0; i < count; ++i) std::memcpy(buf + offsets[i], ip + i * n * n, sizeof(T) * n * n);
  }
}

// Offsets of one layer's saved quantities in the flat buffer.
struct LayerSlots {
  int64_t n, m;
  bool hidden;
  int64_t scalars;  // s, nrm, sq
  int64_t m_inv;    // n×n
  int64_t out;      // (n+m)×n: [Ã; Bᵀ]
  int64_t psi, d;   // n each
  int64_t pre;      // m×n
  int64_t post;     // n×n (hidden layers)
};

struct Layout {
  std::vector<LayerSlots> layers;
  std::vector<int64_t> results;  // offset of every explicit weight (a copy, for ∂/∂log γ)
  std::vector<std::pair<int64_t, int64_t>> result_shapes;
  int64_t total = 1;             // [0]: log γ

  Layout(const std::vector<std::pair<int64_t, int64_t>>& shapes, int64_t hidden_count) {
    const int64_t count = static_cast<int64_t>(shapes.size());
    for (int64_t k = 0; k < count; ++k) {
      LayerSlots l{};
      l.n = shapes[k].first;
      l.m = shapes[k].second;
      l.hidden = k < hidden_count;
      l.scalars = take(3);
      l.m_inv = take(l.n * l.n);
      l.out = take((l.n + l.m) * l.n);
      l.psi = take(l.n);
      l.d = take(l.n);
      l.pre = take(l.m * l.n);
      l.post = l.hidden ? take(l.n * l.n) : -1;
      layers.push_back(l);
    }
    result_shapes.emplace_back(shapes[0].second, shapes[0].first);
    for (int64_t k = 1; k < count; ++k) result_shapes.emplace_back(shapes[k].second, shapes[k].first);
    if (hidden_count == count) result_shapes.emplace_back(shapes.back().first, shapes.back().first);
    for (const auto& rc : result_shapes) results.push_back(take(rc.first * rc.second));
  }

  int64_t take(int64_t size) {
    const int64_t at = total;
    total += size;
    return at;
  }

  // exp(½ log γ · power_j): √γ on the first and on the last explicit weight.
  double root_power(int64_t j, double log_gamma) const {
    const int64_t last = static_cast<int64_t>(result_shapes.size()) - 1;
    return std::exp(0.5 * log_gamma * ((j == 0 ? 1.0 : 0.0) + (j == last ? 1.0 : 0.0)));
  }
  double power(int64_t j) const {
    const int64_t last = static_cast<int64_t>(result_shapes.size()) - 1;
    return (j == 0 ? 1.0 : 0.0) + (j == last ? 1.0 : 0.0);
  }
};

std::vector<std::pair<int64_t, int64_t>> layer_shapes(const std::vector<at::Tensor>& weights,
                                                      at::ScalarType dtype) {
  TORCH_CHECK(!weights.empty(), "lbdn_map: at least one layer expected");
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (size_t k = 0; k < weights.size(); ++k) {
    const auto& w = weights[k];
    TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == dtype && w.dim() == 2,
                "lbdn_map: weight ", k, " must be a 2-D CPU tensor of dtype ", dtype, ", got ",
                w.scalar_type(), " of shape ", w.sizes(), " on ", w.device());
    const int64_t n = w.size(1), m = w.size(0) - n;
    TORCH_CHECK(n > 0 && m > 0, "lbdn_map: weight ", k, " must be (n+m)×n with n, m ≥ 1, got ",
                w.sizes());
    if (k > 0)
      TORCH_CHECK(m == shapes.back().first, "lbdn_map: layer ", k, " takes ", m,
                  " features but layer ", k - 1, " gives ", shapes.back().first);
    shapes.emplace_back(n, m);
  }
  return shapes;
}

template <typename T>
T scalar_of(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() == 1 && t.device().is_cpu(),
              "lbdn_map: ", name, " must be one value on the CPU, got shape ", t.sizes(), " on ",
              t.device());
  if (t.scalar_type() == c10::CppTypeToScalarType<T>::value) return t.data_ptr<T>()[0];
  return t.to(c10::CppTypeToScalarType<T>::value).template item<T>();
}

template <typename T>
std::tuple<std::vector<at::Tensor>, at::Tensor> forward_impl(
    const std::vector<at::Tensor>& weights_in, const std::vector<at::Tensor>& scales,
    const std::vector<at::Tensor>& log_psis_in, const at::Tensor& log_gamma, double eps,
    double clip) {
  const auto dtype = weights_in[0].scalar_type();
  const auto shapes = layer_shapes(weights_in, dtype);
  const int64_t count = static_cast<int64_t>(shapes.size());
  const int64_t hidden_count = static_cast<int64_t>(log_psis_in.size());
  TORCH_CHECK(hidden_count == count || hidden_count == count - 1,
              "lbdn_map: one log ψ per hidden layer expected (", count - 1, " or ", count,
              "), got ", hidden_count);
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == count, "lbdn_map: one scale per layer");
  const Layout lay(shapes, hidden_count);
  const auto opts = weights_in[0].options();
  at::Tensor saved = at::empty({lay.total}, opts);
  T* buf = saved.data_ptr<T>();
  const T lg = scalar_of<T>(log_gamma, "log_gamma");
  buf[0] = lg;
  const T sqrt2 = std::sqrt(T(2));
  // M_k = I + s(U − Uᵀ) + s² VᵀV into the M⁻¹ slots, then all inverted at once.
  std::vector<at::Tensor> weights;
  std::vector<std::pair<int64_t, int64_t>> matrices;
  for (int64_t k = 0; k < count; ++k) {
    const LayerSlots& l = lay.layers[k];
    const int64_t n = l.n, m = l.m;
    weights.push_back(weights_in[k].contiguous());
    const T* w = weights.back().data_ptr<T>();
    T sq = T(0);
    for (int64_t i = 0; i < (n + m) * n; ++i) sq += w[i] * w[i];
    sq += T(eps);
    const T nrm = std::sqrt(sq), s = scalar_of<T>(scales[k], "scale") / nrm;
    buf[l.scalars] = s;
    buf[l.scalars + 1] = nrm;
    buf[l.scalars + 2] = sq;
    T* mk = buf + l.m_inv;
    Mat<T> v{const_cast<T*>(w) + n * n, m, n, n, 1};
    gemm(dense(mk, n, n), v.t(), v, s * s, T(0));
    for (int64_t i = 0; i < n; ++i) {
      mk[i * n + i] += T(1);
      for (int64_t j = 0; j < n; ++j) mk[i * n + j] += s * (w[i * n + j] - w[j * n + i]);
    }
    matrices.emplace_back(l.m_inv, n);
  }
  invert_all(buf, matrices);
  for (int64_t k = 0; k < count; ++k) {
    const LayerSlots& l = lay.layers[k];
    const int64_t n = l.n, m = l.m;
    const T s = buf[l.scalars];
    const T* w = weights[k].data_ptr<T>();
    Mat<T> v{const_cast<T*>(w) + n * n, m, n, n, 1};
    const T* m_inv = buf + l.m_inv;
    T* a_tilde = buf + l.out;  // n×n, then Bᵀ (m×n)
    T* b_t = a_tilde + n * n;
    for (int64_t i = 0; i < n * n; ++i) a_tilde[i] = T(2) * m_inv[i];
    for (int64_t i = 0; i < n; ++i) a_tilde[i * n + i] -= T(1);
    gemm(dense(b_t, m, n), v, dense(const_cast<T*>(m_inv), n, n), T(-2) * s, T(0));
    T* psi = buf + l.psi;
    T* d = buf + l.d;
    if (l.hidden) {
      const at::Tensor dc = log_psis_in[k].contiguous();
      TORCH_CHECK(dc.scalar_type() == dtype && dc.numel() == n, "lbdn_map: log ψ of layer ", k,
                  " must have ", n, " entries of dtype ", dtype);
      const T* dp = dc.data_ptr<T>();
      for (int64_t i = 0; i < n; ++i) {
        d[i] = dp[i];
        psi[i] = std::exp(std::min(std::max(dp[i], T(-clip)), T(clip)));
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        d[i] = T(0);
        psi[i] = T(1);
      }
    }
    const T factor = l.hidden ? sqrt2 : T(1);
    T* pre = buf + l.pre;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) pre[r * n + c] = b_t[r * n + c] * factor / psi[c];
    if (l.hidden) {
      T* post = buf + l.post;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) post[i * n + j] = sqrt2 * psi[i] * a_tilde[j * n + i];
    }
  }
  std::vector<at::Tensor> results;
  for (size_t j = 0; j < lay.result_shapes.size(); ++j) {
    const auto [rows, cols] = lay.result_shapes[j];
    at::Tensor r = at::empty({rows, cols}, opts);
    T* rp = r.data_ptr<T>();
    const T root = static_cast<T>(lay.root_power(static_cast<int64_t>(j), lg));
    if (j == 0) {
      const T* pre = buf + lay.layers[0].pre;
      for (int64_t i = 0; i < rows * cols; ++i) rp[i] = root * pre[i];
    } else if (static_cast<int64_t>(j) < count) {
      const LayerSlots& prev = lay.layers[j - 1];
      const LayerSlots& cur = lay.layers[j];
      gemm(dense(rp, rows, cols), dense(buf + prev.post, prev.n, prev.n),
           dense(buf + cur.pre, cur.m, cur.n), root, T(0));
    } else {  // the sandwich output layer's post
      const T* post = buf + lay.layers[count - 1].post;
      for (int64_t i = 0; i < rows * cols; ++i) rp[i] = root * post[i];
    }
    std::memcpy(buf + lay.results[j], rp, sizeof(T) * rows * cols);
    results.push_back(r);
  }
  return {results, saved};
}

template <typename T>
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor>
backward_impl(const std::vector<at::Tensor>& grads_in, const std::vector<at::Tensor>& weights_in,
              const at::Tensor& saved, int64_t hidden_count, double clip) {
  const auto dtype = weights_in[0].scalar_type();
  const auto shapes = layer_shapes(weights_in, dtype);
  const int64_t count = static_cast<int64_t>(shapes.size());
  const Layout lay(shapes, hidden_count);
  TORCH_CHECK(saved.numel() == lay.total && saved.scalar_type() == dtype && saved.is_contiguous(),
              "lbdn_map_backward: the saved buffer does not match the layers");
  TORCH_CHECK(grads_in.size() == lay.result_shapes.size(),
              "lbdn_map_backward: one gradient per explicit weight expected");
  const T* buf = saved.data_ptr<T>();
  const T lg = buf[0];
  const T sqrt2 = std::sqrt(T(2));
  const auto opts = weights_in[0].options();
  std::vector<at::Tensor> grads;
  for (size_t j = 0; j < grads_in.size(); ++j) {
    const auto [rows, cols] = lay.result_shapes[j];
    TORCH_CHECK(grads_in[j].scalar_type() == dtype && grads_in[j].numel() == rows * cols,
                "lbdn_map_backward: gradient ", j, " must have ", rows * cols,
                " entries of dtype ", dtype);
    grads.push_back(grads_in[j].contiguous());
  }
  // ∂L/∂log γ = ½ Σ_j power_j ⟨G_j, W_j⟩.
  T g_lg = T(0);
  for (size_t j = 0; j < grads.size(); ++j) {
    const T pw = static_cast<T>(lay.power(static_cast<int64_t>(j)));
    if (pw == T(0)) continue;
    const T* g = grads[j].data_ptr<T>();
    const T* r = buf + lay.results[j];
    T dot = T(0);
    for (int64_t i = 0; i < grads[j].numel(); ++i) dot += g[i] * r[i];
    g_lg += T(0.5) * pw * dot;
  }
  std::vector<at::Tensor> g_weights, g_scales, g_psis;
  std::vector<T> g_pre, g_post, g_out, g_r, g_z, g_zs;
  for (int64_t k = 0; k < count; ++k) {
    const LayerSlots& l = lay.layers[k];
    const int64_t n = l.n, m = l.m;
    const T root_k = static_cast<T>(lay.root_power(k, lg));
    const T* gk = grads[k].data_ptr<T>();
    // ḡ_pre (m×n): G₀√γ for the first layer, post_{k−1}ᵀ G_k (scaled) for the others.
    g_pre.assign(m * n, T(0));
    if (k == 0) {
      for (int64_t i = 0; i < m * n; ++i) g_pre[i] = root_k * gk[i];
    } else {
      const LayerSlots& prev = lay.layers[k - 1];
      gemm(dense(g_pre.data(), m, n), dense(const_cast<T*>(buf) + prev.post, m, m).t(),
           dense(const_cast<T*>(gk), m, n), root_k, T(0));
    }
    const T* psi = buf + l.psi;
    const T* d = buf + l.d;
    const T* pre = buf + l.pre;
    const T* a_tilde = buf + l.out;
    const T* b_t = a_tilde + n * n;
    const T* m_inv = buf + l.m_inv;
    // ḡ_post (n×n): G_{k+1} pre_{k+1}ᵀ, or the sandwich output's G (scaled).
    if (l.hidden) {
      g_post.assign(n * n, T(0));
      const int64_t j = k + 1;
      const T root_j = static_cast<T>(lay.root_power(j, lg));
      const T* gj = grads[j].data_ptr<T>();
      if (k < count - 1) {
        const LayerSlots& next = lay.layers[k + 1];
        gemm(dense(g_post.data(), n, n), dense(const_cast<T*>(gj), n, next.n),
             dense(const_cast<T*>(buf) + next.pre, next.m, next.n).t(), root_j, T(0));
      } else {
        for (int64_t i = 0; i < n * n; ++i) g_post[i] = root_j * gj[i];
      }
      at::Tensor g_d = at::empty({n}, opts);
      T* gd = g_d.data_ptr<T>();
      const T* post = buf + l.post;
      for (int64_t i = 0; i < n; ++i) gd[i] = T(0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t jj = 0; jj < n; ++jj) gd[i] += g_post[i * n + jj] * post[i * n + jj];
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) gd[c] -= g_pre[r * n + c] * pre[r * n + c];
      for (int64_t i = 0; i < n; ++i)
        if (!(std::abs(d[i]) <= T(clip))) gd[i] = T(0);
      g_psis.push_back(g_d);
    }
    // ḡ_O = [ḡ_Ã; ḡ_Bᵀ], ḡ_R = ḡ_O M⁻ᵀ.
    const T factor = l.hidden ? sqrt2 : T(1);
    g_out.assign((n + m) * n, T(0));
    if (l.hidden)
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < n; ++c) g_out[r * n + c] = sqrt2 * psi[c] * g_post[c * n + r];
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c)
        g_out[(n + r) * n + c] = g_pre[r * n + c] * factor / psi[c];
    g_r.assign((n + m) * n, T(0));
    const int64_t first_row = l.hidden ? 0 : n;  // a linear layer has ḡ_Ã = 0
    const int64_t rows = n + m - first_row;
    gemm(dense(g_r.data() + first_row * n, rows, n), dense(g_out.data() + first_row * n, rows, n),
         dense(const_cast<T*>(m_inv), n, n).t(), T(1), T(0));
    // ḡ_Z = −(Ãᵀ ḡ_R[:n] + B ḡ_R[n:] + ḡ_R[:n]).
    g_z.assign(n * n, T(0));
    gemm(dense(g_z.data(), n, n), dense(const_cast<T*>(b_t), m, n).t(),
         dense(g_r.data() + n * n, m, n), T(-1), T(0));
    if (l.hidden) {
      gemm(dense(g_z.data(), n, n), dense(const_cast<T*>(a_tilde), n, n).t(),
           dense(g_r.data(), n, n), T(-1), T(1));
      for (int64_t i = 0; i < n * n; ++i) g_z[i] -= g_r[i];
    }
    // ḡ_W̄ = [ḡ_Z − ḡ_Zᵀ; −2ḡ_R[n:] + V̄(ḡ_Z + ḡ_Zᵀ)], then through W̄ = (a/nrm) W.
    const T s = buf[l.scalars], nrm = buf[l.scalars + 1], sq = buf[l.scalars + 2];
    const at::Tensor wc = weights_in[k].contiguous();
    const T* w = wc.data_ptr<T>();
    at::Tensor g_w = at::empty({n + m, n}, opts);
    T* gw = g_w.data_ptr<T>();
    g_zs.assign(n * n, T(0));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        gw[i * n + j] = g_z[i * n + j] - g_z[j * n + i];
        g_zs[i * n + j] = g_z[i * n + j] + g_z[j * n + i];
      }
    T* gv = gw + n * n;
    for (int64_t i = 0; i < m * n; ++i) gv[i] = T(-2) * g_r[n * n + i];
    gemm(dense(gv, m, n), Mat<T>{const_cast<T*>(w) + n * n, m, n, n, 1},
         dense(g_zs.data(), n, n), s, T(1));
    T inner = T(0);
    for (int64_t i = 0; i < (n + m) * n; ++i) inner += gw[i] * w[i];
    at::Tensor g_a = at::empty({}, opts);
    g_a.data_ptr<T>()[0] = inner / nrm;
    g_scales.push_back(g_a);
    const T shift = inner / sq;
    for (int64_t i = 0; i < (n + m) * n; ++i) gw[i] = s * (gw[i] - shift * w[i]);
    g_weights.push_back(g_w);
  }
  at::Tensor g_log_gamma = at::empty({}, opts);
  g_log_gamma.data_ptr<T>()[0] = g_lg;
  return {g_weights, g_scales, g_psis, g_log_gamma};
}

std::tuple<std::vector<at::Tensor>, at::Tensor> lbdn_map_forward(
    std::vector<at::Tensor> weights, std::vector<at::Tensor> scales,
    std::vector<at::Tensor> log_psis, at::Tensor log_gamma, double eps, double clip) {
  TORCH_CHECK(!weights.empty(), "lbdn_map_forward: at least one layer expected");
  const auto dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "lbdn_map_forward supports float32 and float64, got ", dtype);
  c10::NoGradGuard no_grad;
  if (dtype == at::kFloat) return forward_impl<float>(weights, scales, log_psis, log_gamma, eps, clip);
  return forward_impl<double>(weights, scales, log_psis, log_gamma, eps, clip);
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor>
lbdn_map_backward(std::vector<at::Tensor> grads, std::vector<at::Tensor> weights, at::Tensor saved,
                  int64_t hidden_count, double clip) {
  TORCH_CHECK(!weights.empty(), "lbdn_map_backward: at least one layer expected");
  const auto dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "lbdn_map_backward supports float32 and float64, got ", dtype);
  c10::NoGradGuard no_grad;
  if (dtype == at::kFloat) return backward_impl<float>(grads, weights, saved, hidden_count, clip);
  return backward_impl<double>(grads, weights, saved, hidden_count, clip);
}


// ---------------------------------------------------------------------------------------------
// The contracting LTI map (r2dn_control/nn/_contracting_map.py), always in float64:
//   H = c XᵀX (c = p²/(ΣX² + ε), 1 without polar), E = ½(H₁₁ + C₁ᵀC₁ + (H₂₂ + B̂₁B̂₁ᵀ)/ᾱ²
//   + (1 + 1/ᾱ²)εI + Y − Yᵀ), [A  B₁] = E⁻¹[H₂₁  B̂₁].
// Saved (float64): [q, p, c], X, C₁, B̂₁, XᵀX, E⁻¹, [A  B₁].

struct LtiLayout {
  int64_t rows, nx, nv;
  int64_t x, c1, b1, xtx, e_inv, ab, total;
  LtiLayout(int64_t rows_, int64_t nx_, int64_t nv_) : rows(rows_), nx(nx_), nv(nv_) {
    const int64_t h = 2 * nx;
    x = 3;
    c1 = x + rows * h;
    b1 = c1 + nv * nx;
    xtx = b1 + nx * nv;
    e_inv = xtx + h * h;
    ab = e_inv + nx * nx;
    total = ab + nx * (nx + nv);
  }
};

// t (any float dtype) into dst as float64.
void copy_as_double(const at::Tensor& t, double* dst, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "contracting_lti: ", name, " must be on the CPU");
  const at::Tensor c = t.contiguous();
  if (c.scalar_type() == at::kDouble) {
    std::memcpy(dst, c.data_ptr<double>(), sizeof(double) * c.numel());
  } else {
    TORCH_CHECK(c.scalar_type() == at::kFloat, "contracting_lti: ", name,
                " must be float32 or float64, got ", c.scalar_type());
    const float* p = c.data_ptr<float>();
    for (int64_t i = 0; i < c.numel(); ++i) dst[i] = p[i];
  }
}

// A float64 matrix (row-major, rows×cols, row stride ``stride``) as a new tensor of ``dtype``.
at::Tensor from_double(const double* src, int64_t rows, int64_t cols, int64_t stride,
                       at::ScalarType dtype, std::vector<int64_t> shape) {
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (dtype == at::kDouble) {
    double* p = out.data_ptr<double>();
    for (int64_t i = 0; i < rows; ++i) std::memcpy(p + i * cols, src + i * stride, sizeof(double) * cols);
  } else {
    TORCH_CHECK(dtype == at::kFloat, "contracting_lti: float32 or float64 expected, got ", dtype);
    float* p = out.data_ptr<float>();
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) p[i * cols + j] = static_cast<float>(src[i * stride + j]);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contracting_lti_forward(
    at::Tensor X, std::optional<at::Tensor> polar, at::Tensor Y, at::Tensor C1, at::Tensor B1_hat,
    double rate, double eps, at::ScalarType dtype) {
  c10::NoGradGuard no_grad;
  const int64_t nx = Y.size(0), nv = C1.size(0), rows = X.size(0), h = 2 * nx;
  TORCH_CHECK(Y.dim() == 2 && Y.size(1) == nx, "contracting_lti: Y must be nx×nx, got ", Y.sizes());
  TORCH_CHECK(X.dim() == 2 && X.size(1) == h, "contracting_lti: X must have ", h,
              " columns, got ", X.sizes());
  TORCH_CHECK(C1.dim() == 2 && C1.size(1) == nx, "contracting_lti: C1 must be nv×nx, got ",
              C1.sizes());
  TORCH_CHECK(B1_hat.dim() == 2 && B1_hat.size(0) == nx && B1_hat.size(1) == nv,
              "contracting_lti: B1_hat must be ", nx, "×", nv, ", got ", B1_hat.sizes());
  const LtiLayout lay(rows, nx, nv);
  at::Tensor saved = at::empty({lay.total}, at::TensorOptions().dtype(at::kDouble));
  double* buf = saved.data_ptr<double>();
  double* x = buf + lay.x;
  double* c1 = buf + lay.c1;
  double* b1 = buf + lay.b1;
  copy_as_double(X, x, "X");
  copy_as_double(C1, c1, "C1");
  copy_as_double(B1_hat, b1, "B1_hat");
  std::vector<double> y(nx * nx);
  copy_as_double(Y, y.data(), "Y");
  double q = eps;
  for (int64_t i = 0; i < rows * h; ++i) q += x[i] * x[i];
  double p = 0.0, c = 1.0;
  if (polar.has_value()) {
    TORCH_CHECK(polar->numel() == 1, "contracting_lti: polar must hold one value");
    copy_as_double(*polar, &p, "polar");
    c = p * p / q;
  }
  buf[0] = q;
  buf[1] = p;
  buf[2] = c;
  double* xtx = buf + lay.xtx;
  const Mat<double> xm = dense(x, rows, h);
  gemm(dense(xtx, h, h), xm.t(), xm, 1.0, 0.0);
  // E in the E⁻¹ slot (inverted in place below).
  double* e = buf + lay.e_inv;
  const double r2 = rate * rate;
  std::vector<double> c1tc1(nx * nx), b1b1t(nx * nx);
  gemm(dense(c1tc1.data(), nx, nx), dense(c1, nv, nx).t(), dense(c1, nv, nx), 1.0, 0.0);
  gemm(dense(b1b1t.data(), nx, nx), dense(b1, nx, nv), dense(b1, nx, nv).t(), 1.0, 0.0);
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t j = 0; j < nx; ++j) {
      const double h11 = c * xtx[i * h + j] + c1tc1[i * nx + j];
      const double h22 = c * xtx[(nx + i) * h + nx + j] + b1b1t[i * nx + j];
      e[i * nx + j] = 0.5 * (h11 + h22 / r2 + y[i * nx + j] - y[j * nx + i] +
                             (i == j ? (1.0 + 1.0 / r2) * eps : 0.0));
    }
  invert_all(buf, {{lay.e_inv, nx}});
  // [A  B₁] = E⁻¹ [c (XᵀX)₂₁  B̂₁].
  std::vector<double> rhs(nx * (nx + nv));
  for (int64_t i = 0; i < nx; ++i) {
    for (int64_t j = 0; j < nx; ++j) rhs[i * (nx + nv) + j] = c * xtx[(nx + i) * h + j];
    for (int64_t j = 0; j < nv; ++j) rhs[i * (nx + nv) + nx + j] = b1[i * nv + j];
  }
  double* ab = buf + lay.ab;
  gemm(dense(ab, nx, nx + nv), dense(e, nx, nx), dense(rhs.data(), nx, nx + nv), 1.0, 0.0);
  at::Tensor a = from_double(ab, nx, nx, nx + nv, dtype, {nx, nx});
  at::Tensor b1_out = from_double(ab + nx, nx, nv, nx + nv, dtype, {nx, nv});
  return {a, b1_out, saved};
}

// Gradients with respect to X, p (undefined without polar), Y, C₁, B̂₁, each in the dtype of
// the corresponding ``like`` tensor.
std::tuple<at::Tensor, std::optional<at::Tensor>, at::Tensor, at::Tensor, at::Tensor>
contracting_lti_backward(at::Tensor g_a, at::Tensor g_b1, at::Tensor saved, at::Tensor X,
                         std::optional<at::Tensor> polar, at::Tensor Y, at::Tensor C1,
                         at::Tensor B1_hat, double rate) {
  c10::NoGradGuard no_grad;
  const int64_t nx = Y.size(0), nv = C1.size(0), rows = X.size(0), h = 2 * nx;
  const LtiLayout lay(rows, nx, nv);
  TORCH_CHECK(saved.scalar_type() == at::kDouble && saved.numel() == lay.total &&
                  saved.is_contiguous(),
              "contracting_lti_backward: the saved buffer does not match the shapes");
  TORCH_CHECK(g_a.numel() == nx * nx && g_b1.numel() == nx * nv,
              "contracting_lti_backward: gradients of shape nx×nx and nx×nv expected");
  const double* buf = saved.data_ptr<double>();
  const double q = buf[0], p = buf[1], c = buf[2];
  const double* x = buf + lay.x;
  const double* c1 = buf + lay.c1;
  const double* b1 = buf + lay.b1;
  const double* xtx = buf + lay.xtx;
  const double* e_inv = buf + lay.e_inv;
  const double* ab = buf + lay.ab;
  const int64_t w = nx + nv;
  std::vector<double> g(nx * w);
  {
    std::vector<double> ga(nx * nx), gb(nx * nv);
    copy_as_double(g_a, ga.data(), "g_A");
    copy_as_double(g_b1, gb.data(), "g_B1");
    for (int64_t i = 0; i < nx; ++i) {
      for (int64_t j = 0; j < nx; ++j) g[i * w + j] = ga[i * nx + j];
      for (int64_t j = 0; j < nv; ++j) g[i * w + nx + j] = gb[i * nv + j];
    }
  }
  auto cd = [](const double* p_) { return const_cast<double*>(p_); };
  // ḡ_rhs = E⁻ᵀ G, ḡ_E = −ḡ_rhs [A  B₁]ᵀ.
  std::vector<double> g_rhs(nx * w), g_e(nx * nx);
  gemm(dense(g_rhs.data(), nx, w), dense(cd(e_inv), nx, nx).t(), dense(g.data(), nx, w), 1.0, 0.0);
  gemm(dense(g_e.data(), nx, nx), dense(g_rhs.data(), nx, w), dense(cd(ab), nx, w).t(), -1.0, 0.0);
  // ḡ_H = [[½ḡ_E, 0], [ḡ_rhs[:, :nx], ḡ_E/(2ᾱ²)]] (2nx×2nx), symmetrised for ḡ_X.
  const double r2 = rate * rate;
  std::vector<double> g_h(h * h, 0.0);
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t j = 0; j < nx; ++j) {
      g_h[i * h + j] = 0.5 * g_e[i * nx + j];
      g_h[(nx + i) * h + j] = g_rhs[i * w + j];
      g_h[(nx + i) * h + nx + j] = g_e[i * nx + j] / (2.0 * r2);
    }
  double g_c = 0.0;
  for (int64_t i = 0; i < h * h; ++i) g_c += g_h[i] * xtx[i];
  std::vector<double> g_hs(h * h);
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < h; ++j) g_hs[i * h + j] = g_h[i * h + j] + g_h[j * h + i];
  std::vector<double> g_x(rows * h);
  gemm(dense(g_x.data(), rows, h), dense(cd(x), rows, h), dense(g_hs.data(), h, h), c, 0.0);
  std::optional<at::Tensor> g_p;
  if (polar.has_value()) {
    const double shift = 2.0 * c * g_c / q;
    for (int64_t i = 0; i < rows * h; ++i) g_x[i] -= shift * x[i];
    const double gp = 2.0 * p * g_c / q;
    g_p = from_double(&gp, 1, 1, 1, polar->scalar_type(), polar->sizes().vec());
  }
  // ḡ_C₁ = C₁(ḡ_H₁₁ + ḡ_H₁₁ᵀ), ḡ_B̂₁ = ḡ_rhs[:, nx:] + (ḡ_H₂₂ + ḡ_H₂₂ᵀ)B̂₁, ḡ_Y = ½(ḡ_E − ḡ_Eᵀ).
  std::vector<double> s11(nx * nx), s22(nx * nx), g_y(nx * nx), g_c1(nv * nx), g_b(nx * nv);
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t j = 0; j < nx; ++j) {
      s11[i * nx + j] = g_hs[i * h + j];
      s22[i * nx + j] = g_hs[(nx + i) * h + nx + j];
      g_y[i * nx + j] = 0.5 * (g_e[i * nx + j] - g_e[j * nx + i]);
    }
  gemm(dense(g_c1.data(), nv, nx), dense(cd(c1), nv, nx), dense(s11.data(), nx, nx), 1.0, 0.0);
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t j = 0; j < nv; ++j) g_b[i * nv + j] = g_rhs[i * w + nx + j];
  gemm(dense(g_b.data(), nx, nv), dense(s22.data(), nx, nx), dense(cd(b1), nx, nv), 1.0, 1.0);
  return {from_double(g_x.data(), rows, h, h, X.scalar_type(), {rows, h}), g_p,
          from_double(g_y.data(), nx, nx, nx, Y.scalar_type(), {nx, nx}),
          from_double(g_c1.data(), nv, nx, nx, C1.scalar_type(), {nv, nx}),
          from_double(g_b.data(), nx, nv, nv, B1_hat.scalar_type(), {nx, nv})};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(r2dn_control, m) {
  m.def("lbdn_map_forward(Tensor[] weights, Tensor[] scales, Tensor[] log_psis, "
        "Tensor log_gamma, float eps, float clip) -> (Tensor[], Tensor)");
  m.def("lbdn_map_backward(Tensor[] grads, Tensor[] weights, Tensor saved, int hidden_count, "
        "float clip) -> (Tensor[], Tensor[], Tensor[], Tensor)");
  m.def("contracting_lti_forward(Tensor X, Tensor? polar, Tensor Y, Tensor C1, Tensor B1_hat, "
        "float rate, float eps, ScalarType dtype) -> (Tensor, Tensor, Tensor)");
  m.def("contracting_lti_backward(Tensor g_a, Tensor g_b1, Tensor saved, Tensor X, "
        "Tensor? polar, Tensor Y, Tensor C1, Tensor B1_hat, float rate) "
        "-> (Tensor, Tensor?, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(r2dn_control, CPU, m) {
  m.impl("lbdn_map_forward", &lbdn_map_forward);
  m.impl("lbdn_map_backward", &lbdn_map_backward);
  m.impl("contracting_lti_forward", &contracting_lti_forward);
  m.impl("contracting_lti_backward", &contracting_lti_backward);
}

}  // namespace r2dn_kernels
