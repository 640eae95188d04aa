// Time loops of the fused R2DN rollout (forward and adjoint) on the CPU.
//
// Math contract: r2dn_control/nn/fused_rollout.md. Python side: r2dn_control/nn/cpp/__init__.py
// (build and load) and r2dn_control/nn/fused_rollout.py (autograd wrapper; it keeps σ' and the
// weight gradients, which are a few large vectorised ops, in torch).
//
// Why C++ at all: at small widths a step is ~16 tiny matmuls and activations, and the Python
// loop spends its time in the interpreter and the dispatcher, not in arithmetic. Two loops:
//
// * Lane loops (every width ≤ max_loop_width): blocks of batch rows, each running all T steps
//   on its own thread with hand-written vectorised products (see "Lane loops" below).
// * ATen loops (wider layers, where BLAS beats hand loops): the pure-torch loop's kernels in
//   its order, called directly (at::cpu::*: the structured CPU kernels, no dispatcher, no
//   autograd bookkeeping) on views of the preallocated buffers.
//
// Both write the same (T+1)-step buffers in the same batch-major layout as the Python loop.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/leaky_relu_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/mul_cpu_dispatch.h>
#include <ATen/ops/relu_cpu_dispatch.h>
#include <ATen/ops/sigmoid_cpu_dispatch.h>
#include <ATen/ops/tanh_cpu_dispatch.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include "activation_math.h"
#include "gram_tile.h"

#include <algorithm>
#include <string>
#include <type_traits>
#include <tuple>
#include <vector>

namespace r2dn_kernels {
namespace {

// σ in place, with the same kernels as activations.INPLACE on the Python side.
void activate_(at::Tensor& h, Act act) {
  switch (act) {
    case Act::Relu: at::cpu::relu_(h); break;
    case Act::Tanh: at::cpu::tanh_(h); break;
    case Act::Sigmoid: at::cpu::sigmoid_(h); break;
    case Act::LeakyRelu: at::cpu::leaky_relu_(h, 0.01); break;
    case Act::Identity: break;
  }
}

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                  std::vector<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu(), "r2dn_control kernels run on CPU tensors only; ", name,
              " is on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "r2dn_control kernels: ", name, " has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "r2dn_control kernels: ", name,
              " has shape ", t.sizes(), ", expected ", at::IntArrayRef(shape));
}

// Checks the MLP's chain of shapes nv → widths… → nv; returns the hidden widths.
std::vector<int64_t> check_mlp(const std::vector<at::Tensor>& weights, int64_t nv,
                               at::ScalarType dtype) {
  TORCH_CHECK(!weights.empty(), "r2dn_control kernels: the MLP needs at least one weight");
  std::vector<int64_t> widths;
  int64_t fan_in = nv;
  for (size_t k = 0; k < weights.size(); ++k) {
    const std::string name = "W_" + std::to_string(k);
    TORCH_CHECK(weights[k].dim() == 2, "r2dn_control kernels: ", name, " must be 2-D");
    const int64_t fan_out = k + 1 == weights.size() ? nv : weights[k].size(1);
    check_tensor(weights[k], name.c_str(), dtype, {fan_in, fan_out});
    if (k + 1 < weights.size()) widths.push_back(fan_out);
    fan_in = fan_out;
  }
  return widths;
}


// ---------------------------------------------------------------------------------------------
// Lane loops (small widths)
//
// The batch rows are independent trajectories: the batch is cut into blocks of L lanes (128
// bytes: 32 float32 or 16 float64 rows) and each block runs all T steps on its own
// (at::parallel_for over blocks; no synchronisation inside the time loop). Inside a block every
// vector is feature-major, q[i * L + l], so each product below is, per output feature, an
// accumulator of L lanes kept in registers, and σ is applied over fixed-length lane loops
// (vectorised, no libm call).

// out (m × L) = init + M x for a row-major m × n matrix M and x (n × L), init (m × L); with
// init = nullptr, out = M x. init may be out itself (row i of init is read before row i of out
// is written, and no other row). R output rows at a time, each an accumulator of NV vectors
// (the L lanes) held in registers from init to out: per k, the NV vectors of x_k are loaded
// once and serve all R rows, and each broadcast of a matrix entry serves all L lanes, so a k
// step is NV + R loads for R·NV FMAs. R fills the vector registers (R·NV accumulators, NV for
// x_k, one broadcast), up to 8 rows: 8 with AVX-512's 32 registers, 2 with AVX2's 16 (where the
// 128-byte lane block is 4 vectors). Every lane's sum runs over k in order, as a scalar loop
// would: the result does not depend on R or the vector width.
template <typename T, int64_t L>
constexpr int64_t vectors_per_lane_block() {
  return L / Vec<T>::kLanes;
}

template <typename T, int64_t L>
constexpr int64_t rows_per_block() {
  constexpr int64_t nv = vectors_per_lane_block<T, L>();
  return std::max<int64_t>(1, std::min<int64_t>(8, (kRegisters - nv - 1) / nv));
}

// R rows i … i+R−1 of out = init + M x (see matvec).
template <typename T, int64_t L, int64_t R>
inline void matvec_rows(const T* __restrict M, int64_t i, int64_t n, const T* __restrict x,
                        const T* init, T* out) {
  using V = typename Vec<T>::type;
  constexpr int64_t VL = Vec<T>::kLanes;
  constexpr int64_t NV = vectors_per_lane_block<T, L>();
  static_assert(NV * VL == L, "a lane block is a whole number of vectors");
  V acc[R][NV];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t v = 0; v < NV; ++v) {
      if (init)
        std::memcpy(&acc[r][v], init + (i + r) * L + v * VL, sizeof(V));
      else
        acc[r][v] = V{};
    }
  const T* __restrict mi = M + i * n;
  for (int64_t k = 0; k < n; ++k) {
    V xk[NV];
    for (int64_t v = 0; v < NV; ++v) std::memcpy(&xk[v], x + k * L + v * VL, sizeof(V));
    for (int64_t r = 0; r < R; ++r) {
      const T c = mi[r * n + k];
      for (int64_t v = 0; v < NV; ++v) acc[r][v] += c * xk[v];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t v = 0; v < NV; ++v)
      std::memcpy(out + (i + r) * L + v * VL, &acc[r][v], sizeof(V));
}

// One row i of out = init + M x with two accumulators (even and odd k), so that a single row
// (nx = 1: the rows of A, B₁ and C₁ᵀ) has twice the independent FMA chains of one.
template <typename T, int64_t L>
inline void matvec_row(const T* __restrict M, int64_t i, int64_t n, const T* __restrict x,
                       const T* init, T* out) {
  T acc[L], odd[L];
  for (int64_t l = 0; l < L; ++l) {
    acc[l] = init ? init[i * L + l] : T(0);
    odd[l] = T(0);
  }
  const T* __restrict mi = M + i * n;
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) {
    const T c0 = mi[k], c1 = mi[k + 1];
    const T* __restrict x0 = x + k * L;
    const T* __restrict x1 = x0 + L;
    for (int64_t l = 0; l < L; ++l) {
      acc[l] += c0 * x0[l];
      odd[l] += c1 * x1[l];
    }
  }
  if (k < n) {
    const T c = mi[k];
    for (int64_t l = 0; l < L; ++l) acc[l] += c * x[k * L + l];
  }
  for (int64_t l = 0; l < L; ++l) out[i * L + l] = acc[l] + odd[l];
}

// The last rows ≥ 2 of a matvec, in one block of Q rows (Q = R−1 … 2: its only run-time choice).
template <typename T, int64_t L, int64_t Q>
inline void matvec_tail(const T* __restrict M, int64_t i, int64_t rows, int64_t n,
                        const T* __restrict x, const T* init, T* out) {
  if constexpr (Q >= 2) {
    if (rows == Q)
      matvec_rows<T, L, Q>(M, i, n, x, init, out);
    else
      matvec_tail<T, L, Q - 1>(M, i, rows, n, x, init, out);
  }
}

template <typename T, int64_t L>
inline void matvec(const T* __restrict M, int64_t m, int64_t n, const T* __restrict x,
                   const T* init, T* out) {
  constexpr int64_t R = rows_per_block<T, L>();
  int64_t i = 0;
  for (; i + R <= m; i += R) matvec_rows<T, L, R>(M, i, n, x, init, out);
  // The last m mod R rows in one block; a single row with its k split in two (twice the
  // independent FMA chains of one accumulator).
  if (m - i >= 2)
    matvec_tail<T, L, R - 1>(M, i, m - i, n, x, init, out);
  else if (i < m)
    matvec_row<T, L>(M, i, n, x, init, out);
}

// out (m × L) = the vector b (m) on every lane.
template <typename T, int64_t L>
inline void broadcast(const T* __restrict b, int64_t m, T* __restrict out) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < L; ++l) out[i * L + l] = b[i];
}

// Contiguous copies of small matrices (kept alive here), with their shapes.
struct Mats {
  std::vector<at::Tensor> keep;
  std::vector<int64_t> rows, cols;
  void add(const at::Tensor& m) {
    keep.push_back(m.contiguous());
    rows.push_back(m.size(0));
    cols.push_back(m.size(1));
  }
  template <typename T>
  std::vector<const T*> ptrs() const {
    std::vector<const T*> out;
    for (const auto& k : keep) out.push_back(k.data_ptr<T>());
    return out;
  }
};

template <typename T, int64_t L, Act ACT>
void forward_lanes(const at::Tensor& x0, const at::Tensor& dx, const at::Tensor& dv,
                   const at::Tensor& A, const at::Tensor& B1, const at::Tensor& C1,
                   const std::vector<at::Tensor>& weights,
                   const std::vector<at::Tensor>& biases, at::Tensor& states, at::Tensor& vs,
                   at::Tensor& ws, std::vector<at::Tensor>& acts, bool save) {
  const int64_t steps = dx.size(0), batch = dx.size(1), nx = dx.size(2), nv = dv.size(2);
  const int64_t hidden = static_cast<int64_t>(weights.size()) - 1;
  Mats mats;  // A, B1, C1, then W_kᵀ (so that h W_k is one matvec with rows = outputs)
  mats.add(A);
  mats.add(B1);
  mats.add(C1);
  for (const auto& w : weights) mats.add(w.t());
  Mats bias_c;
  for (const auto& b : biases) bias_c.add(b.view({-1, 1}));
  const std::vector<const T*> mp = mats.ptrs<T>(), bp = bias_c.ptrs<T>();
  const T *a = mp[0], *b1 = mp[1], *c1 = mp[2];
  const T *x0p = x0.data_ptr<T>(), *dxp = dx.data_ptr<T>(), *dvp = dv.data_ptr<T>();
  T *xp = states.data_ptr<T>(), *vp = vs.data_ptr<T>(), *wp = ws.data_ptr<T>();
  std::vector<T*> sp;
  int64_t widest = nv;
  for (auto& s : acts) {
    sp.push_back(s.data_ptr<T>());
    widest = std::max(widest, s.size(2));
  }
  for_each_block(batch, L, [&](int64_t b0, int64_t lanes) {
    std::vector<T> x(nx * L), xn(nx * L), d(std::max(nx, nv) * L), w(nv * L);
    std::vector<T> h0(widest * L), h1(widest * L);
    gather<T, L>(x0p + b0 * nx, nx, lanes, x.data());
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t row = t * batch + b0;  // first row of the block in a (T, B, ·) buffer
      gather<T, L>(dvp + row * nv, nv, lanes, d.data());
      matvec<T, L>(c1, nv, nx, x.data(), d.data(), h0.data());  // v = dv + C1 x
      if (save) scatter<T, L>(h0.data(), nv, lanes, vp + row * nv);
      int64_t fan_in = nv;
      for (int64_t k = 0; k < hidden; ++k) {                     // s = σ(W_kᵀ h + b_k)
        const int64_t width = mats.rows[3 + k];
        broadcast<T, L>(bp[k], width, h1.data());
        matvec<T, L>(mp[3 + k], width, fan_in, h0.data(), h1.data(), h1.data());
        for (int64_t i = 0; i < width * L; ++i) h1[i] = activate<T, ACT>(h1[i]);
        if (save) scatter<T, L>(h1.data(), width, lanes, sp[k] + row * width);
        std::swap(h0, h1);
        fan_in = width;
      }
      broadcast<T, L>(bp[hidden], nv, w.data());
      matvec<T, L>(mp[3 + hidden], nv, fan_in, h0.data(), w.data(), w.data());
      scatter<T, L>(w.data(), nv, lanes, wp + row * nv);
      gather<T, L>(dxp + row * nx, nx, lanes, d.data());
      matvec<T, L>(a, nx, nx, x.data(), d.data(), xn.data());    // x' = dx + A x + B1 w
      matvec<T, L>(b1, nx, nv, w.data(), xn.data(), xn.data());
      scatter<T, L>(xn.data(), nx, lanes, xp + (row + batch) * nx);
      std::swap(x, xn);
    }
  });
}

// The LBDN's weight gradients inside the lane-loop adjoint (fused_rollout.md, "Gradients"):
// ∂L/∂W_k = Σ_t (h^k_t)ᵀ g^{out,k}_t and ∂L/∂b_k = Σ_t g^{out,k}_t, with h^0 = v, h^k = s^{k−1}
// (the saved batch-major rows) and g^{out,k} = g^{z,k} (k < L), g^w (k = L), the blocks the
// adjoint has just computed (feature-major, in L1). Each pair stages the rows of a few steps
// (about `kFlushRows`: X copied, G transposed into rows padded to whole SIMD vectors) and adds
// them to a per-thread partial with the register-tiled `gram_chunk` of gram_tile.h. So
// g^{z,k} is never written to memory and read back (the separate `gram_pairs` pass read
// 2·T·B·Σ widths numbers after the loop).
template <typename T, int64_t L>
class FusedWeightGrads {
 public:
  // Rows staged per pair before they are added (the gram kernel's smallest K block).
  static constexpr int64_t kFlushRows = 64;

  FusedWeightGrads(const std::vector<int64_t>& fan_in, const std::vector<int64_t>& fan_out,
                   int64_t lanes, T* partial)
      : m_(fan_in), n_(fan_out), cap_(((kFlushRows + lanes - 1) / lanes) * lanes) {
    int64_t offset = 0;
    for (size_t k = 0; k < m_.size(); ++k) {
      np_.push_back(padded_columns<T>(n_[k]));
      acc_.push_back(partial + offset);
      offset += (m_[k] + 1) * np_[k];  // the product, then the bias sums
      xs_.emplace_back(static_cast<size_t>(cap_ * m_[k]), T(0));
      gs_.emplace_back(static_cast<size_t>(cap_ * np_[k]), T(0));
      used_.push_back(0);
    }
  }

  // Size of the partial one thread accumulates into: Σ_k (m_k + 1)·np_k.
  static int64_t partial_size(const std::vector<int64_t>& fan_in,
                              const std::vector<int64_t>& fan_out) {
    int64_t size = 0;
    for (size_t k = 0; k < fan_in.size(); ++k) size += (fan_in[k] + 1) * padded_columns<T>(fan_out[k]);
    return size;
  }

  // Pair k gets the lanes rows x_rows (lanes × m_k, contiguous) and the feature-major block
  // g (n_k × L) of one step.
  void add(size_t k, const T* x_rows, const T* g, int64_t lanes) {
    std::memcpy(xs_[k].data() + used_[k] * m_[k], x_rows,
                static_cast<size_t>(lanes * m_[k]) * sizeof(T));
    transpose<T>(g, L, n_[k], lanes, gs_[k].data() + used_[k] * np_[k], np_[k]);
    used_[k] += lanes;
    if (used_[k] + lanes > cap_) flush(k);
  }

  void flush_all() {
    for (size_t k = 0; k < m_.size(); ++k) flush(k);
  }

  // out_k (m_k × n_k) += the product of pair k in a partial, sums_k (n_k) += its bias sums.
  static void add_partial(const std::vector<int64_t>& fan_in,
                          const std::vector<int64_t>& fan_out, const T* partial,
                          std::vector<at::Tensor>& products, std::vector<at::Tensor>& sums) {
    for (size_t k = 0; k < fan_in.size(); ++k) {
      const int64_t m = fan_in[k], n = fan_out[k], np = padded_columns<T>(n);
      T* out = products[k].data_ptr<T>();
      T* total = sums[k].data_ptr<T>();
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) out[i * n + j] += partial[i * np + j];
      for (int64_t j = 0; j < n; ++j) total[j] += partial[m * np + j];
      partial += (m + 1) * np;
    }
  }

 private:
  void flush(size_t k) {
    const int64_t rows = used_[k];
    if (rows == 0) return;
    const T* x = xs_[k].data();
    const T* g = gs_[k].data();
    gram_chunk<T>(x, m_[k], x + rows * m_[k], g, np_[k], g + rows * np_[k], rows, m_[k],
                  n_[k], acc_[k], acc_[k] + m_[k] * np_[k], nullptr);
    used_[k] = 0;
  }

  std::vector<int64_t> m_, n_, np_;
  int64_t cap_;
  std::vector<T*> acc_;
  std::vector<std::vector<T>> xs_, gs_;
  std::vector<int64_t> used_;
};

// The adjoint over lane blocks; with the LBDN's weight gradients fused in (`FusedWeightGrads`:
// d_weights[k] = ∂L/∂W_k, d_biases[k] = ∂L/∂b_k, zero-initialised by the caller), so g^{z,k}
// is not stored (g_z stays empty). Threads take chunks of blocks, each with its own partial,
// summed in block order at the end (deterministic for a given thread count).
template <typename T, int64_t L, Act ACT>
void adjoint_lanes(const at::Tensor& g_xs, const at::Tensor& g_ws, const at::Tensor& g_final,
                   const at::Tensor& A, const at::Tensor& B1, const at::Tensor& C1,
                   const std::vector<at::Tensor>& weights, const at::Tensor& vs,
                   const std::vector<at::Tensor>& acts, at::Tensor& lams, at::Tensor& g_w,
                   at::Tensor& g_v, std::vector<at::Tensor>& d_weights,
                   std::vector<at::Tensor>& d_biases) {
  const int64_t steps = g_xs.size(0), batch = g_xs.size(1), nx = g_xs.size(2);
  const int64_t nv = g_ws.size(2);
  const int64_t hidden = static_cast<int64_t>(weights.size()) - 1;
  Mats mats;  // Aᵀ, B1ᵀ, C1ᵀ, then W_k (row-major, rows = inputs: g W_kᵀ is W_k g)
  mats.add(A.t());
  mats.add(B1.t());
  mats.add(C1.t());
  for (const auto& w : weights) mats.add(w);
  const std::vector<const T*> mp = mats.ptrs<T>();
  const T *a_t = mp[0], *b1_t = mp[1], *c1_t = mp[2];
  const T *gxp = g_xs.data_ptr<T>(), *gwsp = g_ws.data_ptr<T>();
  const T* gfp = g_final.data_ptr<T>();
  T *lp = lams.data_ptr<T>(), *gwp = g_w.data_ptr<T>(), *gvp = g_v.data_ptr<T>();
  // Pair k: input rows ins[k] (v for k = 0, else s^{k−1}), fan-in, fan-out. σ' of layer k
  // comes from the saved outputs s^k = ins[k + 1], lane block by block.
  std::vector<const T*> ins{vs.data_ptr<T>()};
  std::vector<int64_t> fan_in{nv}, fan_out;
  int64_t widest = nv;
  for (const auto& s : acts) {
    ins.push_back(s.data_ptr<T>());
    fan_in.push_back(s.size(2));
    fan_out.push_back(s.size(2));
    widest = std::max(widest, s.size(2));
  }
  fan_out.push_back(nv);
  using Grads = FusedWeightGrads<T, L>;
  const int64_t blocks = (batch + L - 1) / L;
  const int64_t part_size = Grads::partial_size(fan_in, fan_out);
  std::vector<std::vector<T>> partials(static_cast<size_t>(blocks));  // by a chunk's first block
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    std::vector<T>& partial = partials[first];
    partial.assign(static_cast<size_t>(part_size), T(0));
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t b0 = blk * L, lanes = std::min(L, batch - b0);
      Grads grads(fan_in, fan_out, lanes, partial.data());
      std::vector<T> lam(nx * L), lam_new(nx * L), d(std::max(nx, nv) * L);
      std::vector<T> g0(widest * L), g1(widest * L), s_blk(widest * L);
      gather<T, L>(gfp + b0 * nx, nx, lanes, lam.data());
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t row = t * batch + b0;
        gather<T, L>(gwsp + row * nv, nv, lanes, d.data());
        matvec<T, L>(b1_t, nv, nx, lam.data(), d.data(), g0.data());  // g^w = G^w + B1ᵀ λ
        scatter<T, L>(g0.data(), nv, lanes, gwp + row * nv);
        grads.add(hidden, ins[hidden] + row * fan_in[hidden], g0.data(), lanes);
        int64_t fan_out_k = nv;
        for (int64_t k = hidden - 1; k >= 0; --k) {  // g^{z,k} = (W_{k+1} g) ⊙ σ'
          const int64_t width = mats.rows[3 + k + 1];
          matvec<T, L>(mp[3 + k + 1], width, fan_out_k, g0.data(), nullptr, g1.data());
          gather<T, L>(ins[k + 1] + row * width, width, lanes, s_blk.data());
          for (int64_t i = 0; i < width * L; ++i) g1[i] *= slope_from_output<T, ACT>(s_blk[i]);
          grads.add(k, ins[k] + row * fan_in[k], g1.data(), lanes);
          std::swap(g0, g1);
          fan_out_k = width;
        }
        matvec<T, L>(mp[3], nv, fan_out_k, g0.data(), nullptr, g1.data());  // g^v = W_0 g
        scatter<T, L>(g1.data(), nv, lanes, gvp + row * nv);
        gather<T, L>(gxp + row * nx, nx, lanes, d.data());  // λ_t = G^x + Aᵀλ + C1ᵀ g^v
        matvec<T, L>(a_t, nx, nx, lam.data(), d.data(), lam_new.data());
        matvec<T, L>(c1_t, nx, nv, g1.data(), lam_new.data(), lam_new.data());
        scatter<T, L>(lam_new.data(), nx, lanes, lp + row * nx);
        std::swap(lam, lam_new);
      }
      grads.flush_all();
    }
  });
  for (const auto& partial : partials)
    if (!partial.empty()) Grads::add_partial(fan_in, fan_out, partial.data(), d_weights, d_biases);
}

// ---------------------------------------------------------------------------------------------
// ATen loops (wide layers)

void forward_aten(const at::Tensor& dx, const at::Tensor& dv, const at::Tensor& A,
                  const at::Tensor& B1, const at::Tensor& C1,
                  const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
                  Act act, at::Tensor& states, at::Tensor& vs, at::Tensor& ws,
                  std::vector<at::Tensor>& acts, bool save) {
  const int64_t steps = dx.size(0);
  const int64_t hidden = static_cast<int64_t>(weights.size()) - 1;
  const at::Tensor a_t = A.t(), b1_t = B1.t(), c1_t = C1.t();
  for (int64_t t = 0; t < steps; ++t) {
    const at::Tensor x = states.select(0, t);
    const int64_t slot = save ? t : 0;  // without saving, one step of scratch, reused
    at::Tensor h = vs.select(0, slot);
    at::cpu::addmm_out(h, dv.select(0, t), x, c1_t);           // v = x C1ᵀ + dv
    for (int64_t k = 0; k < hidden; ++k) {
      at::Tensor s = acts[k].select(0, slot);
      at::cpu::addmm_out(s, biases[k], h, weights[k]);          // s = σ(h W_k + b_k)
      activate_(s, act);
      h = s;
    }
    at::Tensor w = ws.select(0, t);
    at::cpu::addmm_out(w, biases[hidden], h, weights[hidden]);  // w = h W_L + b_L
    at::Tensor x_next = states.select(0, t + 1);
    at::cpu::addmm_out(x_next, dx.select(0, t), x, a_t);        // x' = x Aᵀ + dx + w B1ᵀ
    at::cpu::addmm_(x_next, w, b1_t);
  }
}

void adjoint_aten(const at::Tensor& g_xs, const at::Tensor& g_ws, const at::Tensor& A,
                  const at::Tensor& B1, const at::Tensor& C1,
                  const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& slopes,
                  at::Tensor& lams, at::Tensor& g_w, at::Tensor& g_v,
                  std::vector<at::Tensor>& g_z) {
  const int64_t steps = g_xs.size(0);
  const int64_t hidden = static_cast<int64_t>(weights.size()) - 1;
  std::vector<at::Tensor> weights_t;
  for (const auto& w : weights) weights_t.push_back(w.t());
  for (int64_t t = steps - 1; t >= 0; --t) {
    const at::Tensor lam = lams.select(0, t + 1);
    at::Tensor g = g_w.select(0, t);
    at::cpu::addmm_out(g, g_ws.select(0, t), lam, B1);         // g^w = G^w + λ_{t+1} B1
    for (int64_t k = hidden - 1; k >= 0; --k) {
      at::Tensor z = g_z[k].select(0, t);
      at::cpu::mm_out(z, g, weights_t[k + 1]);                  // g^{z,k} = (g W_{k+1}ᵀ) ⊙ σ'
      at::cpu::mul_(z, slopes[k].select(0, t));
      g = z;
    }
    at::Tensor gv = g_v.select(0, t);
    at::cpu::mm_out(gv, g, weights_t[0]);                       // g^v = g^{z,0} W_0ᵀ
    at::Tensor lam_t = lams.select(0, t);
    at::cpu::addmm_out(lam_t, g_xs.select(0, t), lam, A);       // λ_t = G^x + λ A + g^v C1
    at::cpu::addmm_(lam_t, gv, C1);
  }
}

// ---------------------------------------------------------------------------------------------
// Operators

bool use_lanes(int64_t nv, const std::vector<int64_t>& widths, int64_t max_loop_width) {
  if (nv > max_loop_width) return false;
  for (int64_t w : widths)
    if (w > max_loop_width) return false;
  return true;
}

// Returns (states x_0..x_T (T+1,B,nx), vs (T,B,nv), ws (T,B,nv), [s^k (T,B,width_k)]); with
// save = false only states and ws are results (see below).
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> r2dn_forward(
    const at::Tensor& x0, const at::Tensor& dx_in, const at::Tensor& dv_in, const at::Tensor& A,
    const at::Tensor& B1, const at::Tensor& C1, std::vector<at::Tensor> weights,
    std::vector<at::Tensor> biases, std::string activation, int64_t max_loop_width, bool save) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(dx_in.dim() == 3 && dv_in.dim() == 3, "r2dn_forward: drives must be (T, batch, n)");
  const int64_t steps = dx_in.size(0), batch = dx_in.size(1), nx = dx_in.size(2);
  const int64_t nv = dv_in.size(2);
  const auto dtype = dx_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "r2dn_control kernels support float32 and float64, got ", dtype);
  check_tensor(dx_in, "dx", dtype, {steps, batch, nx});
  check_tensor(x0, "x0", dtype, {batch, nx});
  check_tensor(dv_in, "dv", dtype, {steps, batch, nv});
  check_tensor(A, "A", dtype, {nx, nx});
  check_tensor(B1, "B1", dtype, {nx, nv});
  check_tensor(C1, "C1", dtype, {nv, nx});
  const std::vector<int64_t> widths = check_mlp(weights, nv, dtype);
  TORCH_CHECK(biases.size() == weights.size(), "r2dn_forward: one bias per weight expected");
  for (size_t k = 0; k < biases.size(); ++k)
    check_tensor(biases[k], ("b_" + std::to_string(k)).c_str(), dtype, {weights[k].size(1)});
  // Plain numbers out: no graph is recorded inside (the Python Function owns the autograd).
  c10::NoGradGuard no_grad;
  const at::Tensor dx = dx_in.contiguous(), dv = dv_in.contiguous();
  const auto opts = dx.options();
  at::Tensor states = at::empty({steps + 1, batch, nx}, opts);
  // save = false (inference: nothing to differentiate): v and the hidden outputs are not kept;
  // the lane loops write none, the ATen loops one reused step. vs and acts come back with a
  // first dimension of 1 (ATen loops) or as unwritten scratch: callers must not read them.
  const int64_t kept = save ? steps : 1;
  at::Tensor vs = at::empty({kept, batch, nv}, opts);
  at::Tensor ws = at::empty({steps, batch, nv}, opts);
  std::vector<at::Tensor> acts;
  for (int64_t width : widths) acts.push_back(at::empty({kept, batch, width}, opts));
  states.select(0, 0).copy_(x0);
  if (use_lanes(nv, widths, max_loop_width)) {
    const at::Tensor x0c = x0.contiguous();
    auto run = [&](auto zero) {
      using T = decltype(zero);
      constexpr int64_t L = std::is_same_v<T, float> ? 32 : 16;  // 128 bytes of lanes
      auto go = [&](auto tag) {
        forward_lanes<T, L, decltype(tag)::value>(x0c, dx, dv, A, B1, C1, weights, biases,
                                                  states, vs, ws, acts, save);
      };
      switch (act) {
        case Act::Relu: go(std::integral_constant<Act, Act::Relu>{}); break;
        case Act::Tanh: go(std::integral_constant<Act, Act::Tanh>{}); break;
        case Act::Sigmoid: go(std::integral_constant<Act, Act::Sigmoid>{}); break;
        case Act::LeakyRelu: go(std::integral_constant<Act, Act::LeakyRelu>{}); break;
        case Act::Identity: go(std::integral_constant<Act, Act::Identity>{}); break;
      }
    };
    if (dtype == at::kFloat) run(float(0));
    else run(double(0));
  } else {
    forward_aten(dx, dv, A, B1, C1, weights, biases, act, states, vs, ws, acts, save);
  }
  return {states, vs, ws, acts};
}

// σ'(s) for every element of the contiguous s (the ATen loop's slopes, one pass per layer).
template <typename T, Act ACT>
at::Tensor slopes_of(const at::Tensor& s) {
  at::Tensor out = at::empty(s.sizes(), s.options());
  const T* src = s.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  const int64_t n = s.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = slope_from_output<T, ACT>(src[i]);
  return out;
}

// Calls fn(T{}, std::integral_constant<Act, act>{}) for the run-time dtype and activation.
template <typename F>
void dispatch_dtype_act(at::ScalarType dtype, Act act, const F& fn) {
  auto with_act = [&](auto zero) {
    switch (act) {
      case Act::Relu: fn(zero, std::integral_constant<Act, Act::Relu>{}); break;
      case Act::Tanh: fn(zero, std::integral_constant<Act, Act::Tanh>{}); break;
      case Act::Sigmoid: fn(zero, std::integral_constant<Act, Act::Sigmoid>{}); break;
      case Act::LeakyRelu: fn(zero, std::integral_constant<Act, Act::LeakyRelu>{}); break;
      case Act::Identity: fn(zero, std::integral_constant<Act, Act::Identity>{}); break;
    }
  };
  if (dtype == at::kFloat) with_act(float(0));
  else with_act(double(0));
}

// Returns (λ_0..λ_T (T+1,B,nx), g^w (T,B,nv), g^v (T,B,nv), [g^{z,k} (T,B,width_k)],
// [∂L/∂W_k], [∂L/∂b_k]). vs and acts[k] hold v and the hidden outputs s^k of the forward pass;
// σ'(s^k) is evaluated here (in the lane loops block by block, as the adjoint reaches it; no
// slope tensors are stored). The lane loops form the LBDN's weight gradients themselves
// (`FusedWeightGrads`) and return no g^{z,k}; the ATen loops return g^{z,k} and no weight
// gradients (the caller forms them from g^{z,k}, vs, acts and g^w).
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>,
           std::vector<at::Tensor>>
r2dn_adjoint(const at::Tensor& g_xs_in, const at::Tensor& g_ws_in, const at::Tensor& g_final,
             const at::Tensor& A, const at::Tensor& B1, const at::Tensor& C1,
             std::vector<at::Tensor> weights, const at::Tensor& vs_in,
             std::vector<at::Tensor> acts_in, std::string activation, int64_t max_loop_width) {
  const Act act = parse_activation(activation);
  TORCH_CHECK(g_xs_in.dim() == 3 && g_ws_in.dim() == 3,
              "r2dn_adjoint: gradients must be (T, batch, n)");
  const int64_t steps = g_xs_in.size(0), batch = g_xs_in.size(1), nx = g_xs_in.size(2);
  const int64_t nv = g_ws_in.size(2);
  const auto dtype = g_xs_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "r2dn_control kernels support float32 and float64, got ", dtype);
  check_tensor(g_xs_in, "g_xs", dtype, {steps, batch, nx});
  check_tensor(g_ws_in, "g_ws", dtype, {steps, batch, nv});
  check_tensor(g_final, "g_final", dtype, {batch, nx});
  check_tensor(A, "A", dtype, {nx, nx});
  check_tensor(B1, "B1", dtype, {nx, nv});
  check_tensor(C1, "C1", dtype, {nv, nx});
  const std::vector<int64_t> widths = check_mlp(weights, nv, dtype);
  const int64_t hidden = static_cast<int64_t>(widths.size());
  TORCH_CHECK(static_cast<int64_t>(acts_in.size()) == hidden,
              "r2dn_adjoint: one activation tensor per hidden layer expected");
  std::vector<at::Tensor> acts;
  for (int64_t k = 0; k < hidden; ++k) {
    check_tensor(acts_in[k], ("act_" + std::to_string(k)).c_str(), dtype,
                 {steps, batch, widths[k]});
    acts.push_back(acts_in[k].contiguous());
  }
  check_tensor(vs_in, "vs", dtype, {steps, batch, nv});
  c10::NoGradGuard no_grad;
  const at::Tensor g_xs = g_xs_in.contiguous(), g_ws = g_ws_in.contiguous();
  const auto opts = g_xs.options();
  at::Tensor lams = at::empty({steps + 1, batch, nx}, opts);
  at::Tensor g_w = at::empty({steps, batch, nv}, opts);
  at::Tensor g_v = at::empty({steps, batch, nv}, opts);
  std::vector<at::Tensor> g_z, d_weights, d_biases;
  lams.select(0, steps).copy_(g_final);
  if (use_lanes(nv, widths, max_loop_width)) {
    const at::Tensor gfc = g_final.contiguous(), vs = vs_in.contiguous();
    for (const auto& w : weights) {
      d_weights.push_back(at::zeros(w.sizes(), opts));
      d_biases.push_back(at::zeros({w.size(1)}, opts));
    }
    dispatch_dtype_act(dtype, act, [&](auto zero, auto tag) {
      using T = decltype(zero);
      constexpr int64_t L = std::is_same_v<T, float> ? 32 : 16;  // 128 bytes of lanes
      adjoint_lanes<T, L, decltype(tag)::value>(g_xs, g_ws, gfc, A, B1, C1, weights, vs, acts,
                                                lams, g_w, g_v, d_weights, d_biases);
    });
  } else {
    for (int64_t width : widths) g_z.push_back(at::empty({steps, batch, width}, opts));
    std::vector<at::Tensor> slopes;
    dispatch_dtype_act(dtype, act, [&](auto zero, auto tag) {
      for (const auto& s : acts) slopes.push_back(slopes_of<decltype(zero), decltype(tag)::value>(s));
    });
    adjoint_aten(g_xs, g_ws, A, B1, C1, weights, slopes, lams, g_w, g_v, g_z);
  }
  return {lams, g_w, g_v, g_z, d_weights, d_biases};
}

}  // namespace

// The REN operators own TORCH_LIBRARY(r2dn_control); these join the same namespace.
// max_loop_width: the widest layer (nv or hidden) for which the hand-written lane loops run;
// wider networks take the ATen loops (BLAS matmuls).
TORCH_LIBRARY_FRAGMENT(r2dn_control, m) {
  m.def("r2dn_forward(Tensor x0, Tensor dx, Tensor dv, Tensor A, Tensor B1, Tensor C1, "
        "Tensor[] weights, Tensor[] biases, str activation, int max_loop_width, bool save) "
        "-> (Tensor, Tensor, Tensor, Tensor[])");
  m.def("r2dn_adjoint(Tensor g_xs, Tensor g_ws, Tensor g_final, Tensor A, Tensor B1, "
        "Tensor C1, Tensor[] weights, Tensor vs, Tensor[] acts, str activation, "
        "int max_loop_width) -> (Tensor, Tensor, Tensor, Tensor[], Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(r2dn_control, CPU, m) {
  m.impl("r2dn_forward", &r2dn_forward);
  m.impl("r2dn_adjoint", &r2dn_adjoint);
}

}  // namespace r2dn_kernels
