// Weight gradients of the fused rollouts: ∂L/∂W = Σ_r x_rᵀ g_r over all K = T·B samples, for
// several (X, G) pairs in one call (r2dn_control/nn/fused_rollout.md, "Gradients").
//
// X is K×m, G is K×n, both row-major with K in the thousands and m, n small: BLAS takes such
// transposed tall-skinny products with tiny M, N at 2–10 GFLOP/s. Here the output is cut into
// tiles of up to 8 rows × one 32-byte vector of columns whose accumulators stay in registers
// for a whole pass over the samples (each sample: one vector load of G, up to 8 broadcast
// multiply-adds); the column sums Σ_r g_r (the bias gradients) come from the first pass of each
// column tile. Every tile re-reads the samples, so this is for small m·n only (the caller sends
// larger products to torch.mm). Rows are split into chunks across at::parallel_for
// threads, each with its own accumulator, summed at the end in chunk order (deterministic for a
// given thread count). Accumulation is in the tensors' dtype, as in torch.mm.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

namespace r2dn_kernels {
namespace {

// 32-byte vectors (GCC/Clang vector extension; AVX registers with -march=native).
template <typename T>
struct Vec {
  static constexpr int kLanes = 32 / sizeof(T);
  typedef T type __attribute__((vector_size(32)));
};

// One tile of out[i0 : i0+MI, j0 : j0+jw] (jw ≤ kLanes) += Σ_{r in [r0, r1)} x[r, i]·g[r, j]:
// MI accumulator registers, each sample row adds one broadcast x[r, i] times the G vector. With
// ``sums``, also sums[j0 : j0+jw] += Σ_r g[r, j].
template <typename T, int MI>
void gram_tile(const T* __restrict__ x, const T* __restrict__ g, int64_t r0, int64_t r1,
               int64_t m, int64_t n, int64_t i0, int64_t j0, int64_t jw, T* __restrict__ out,
               T* __restrict__ sums) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kLanes;
  V acc[MI];
  for (int ii = 0; ii < MI; ++ii) acc[ii] = V{};
  V total = V{};
  for (int64_t r = r0; r < r1; ++r) {
    V gv = V{};
    if (jw == W) {
      std::memcpy(&gv, g + r * n + j0, sizeof(V));
    } else {
      for (int64_t jj = 0; jj < jw; ++jj) gv[jj] = g[r * n + j0 + jj];
    }
    const T* __restrict__ xr = x + r * m + i0;
    for (int ii = 0; ii < MI; ++ii) acc[ii] += xr[ii] * gv;
    total += gv;
  }
  for (int ii = 0; ii < MI; ++ii) {
    T* row = out + (i0 + ii) * n + j0;
    for (int64_t jj = 0; jj < jw; ++jj) row[jj] += acc[ii][jj];
  }
  if (sums != nullptr) {
    for (int64_t jj = 0; jj < jw; ++jj) sums[j0 + jj] += total[jj];
  }
}

template <typename T>
void gram_rows(const T* x, const T* g, int64_t r0, int64_t r1, int64_t m, int64_t n, T* acc,
               T* sums) {
  constexpr int W = Vec<T>::kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += W) {
    const int64_t jw = std::min<int64_t>(W, n - j0);
    for (int64_t i0 = 0; i0 < m; i0 += 8) {
      T* s = i0 == 0 ? sums : nullptr;  // the column sums once per column tile
      switch (std::min<int64_t>(8, m - i0)) {
        case 1: gram_tile<T, 1>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 2: gram_tile<T, 2>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 3: gram_tile<T, 3>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 4: gram_tile<T, 4>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 5: gram_tile<T, 5>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 6: gram_tile<T, 6>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        case 7: gram_tile<T, 7>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
        default: gram_tile<T, 8>(x, g, r0, r1, m, n, i0, j0, jw, acc, s); break;
      }
    }
  }
}

template <typename T>
void gram_one(const at::Tensor& x, const at::Tensor& g, at::Tensor& out, at::Tensor& sums) {
  const int64_t k = x.size(0), m = x.size(1), n = g.size(1);
  const T* xp = x.const_data_ptr<T>();
  const T* gp = g.const_data_ptr<T>();
  // Chunks of at least 1024 rows: one per thread at most.
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), k / 1024));
  const int64_t per = (k + chunks - 1) / chunks;
  std::vector<T> partial(static_cast<size_t>(chunks * (m * n + n)), T(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T* acc = partial.data() + c * (m * n + n);
      gram_rows<T>(xp, gp, c * per, std::min(k, (c + 1) * per), m, n, acc, acc + m * n);
    }
  });
  T* op = out.data_ptr<T>();
  T* sp = sums.data_ptr<T>();
  for (int64_t c = 0; c < chunks; ++c) {
    const T* acc = partial.data() + c * (m * n + n);
    for (int64_t e = 0; e < m * n; ++e) op[e] += acc[e];
    for (int64_t j = 0; j < n; ++j) sp[j] += acc[m * n + j];
  }
}

// For each k: (xs[k]ᵀ gs[k], Σ_rows gs[k]). All tensors 2-D, contiguous, CPU, one float dtype,
// xs[k] and gs[k] with the same number of rows.
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> gram_pairs(
    const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& gs) {
  TORCH_CHECK(xs.size() == gs.size(), "gram_pairs: as many xs as gs expected, got ", xs.size(),
              " and ", gs.size());
  std::vector<at::Tensor> products, sums;
  for (size_t p = 0; p < xs.size(); ++p) {
    const at::Tensor& x = xs[p];
    const at::Tensor& g = gs[p];
    TORCH_CHECK(x.dim() == 2 && g.dim() == 2 && x.size(0) == g.size(0),
                "gram_pairs: 2-D X (K×m) and G (K×n) with the same K expected, got ",
                x.sizes(), " and ", g.sizes());
    TORCH_CHECK(x.is_contiguous() && g.is_contiguous() && x.device().is_cpu() &&
                    g.device().is_cpu() && x.scalar_type() == g.scalar_type(),
                "gram_pairs: contiguous CPU tensors of one dtype expected");
    at::Tensor out = at::zeros({x.size(1), g.size(1)}, x.options());
    at::Tensor sum = at::zeros({g.size(1)}, g.options());
    if (x.scalar_type() == at::kFloat) {
      gram_one<float>(x, g, out, sum);
    } else {
      TORCH_CHECK(x.scalar_type() == at::kDouble, "gram_pairs: float32 or float64 expected");
      gram_one<double>(x, g, out, sum);
    }
    products.push_back(out);
    sums.push_back(sum);
  }
  return {products, sums};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(r2dn_control, m) {
  m.def("gram_pairs(Tensor[] xs, Tensor[] gs) -> (Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(r2dn_control, CPU, m) { m.impl("gram_pairs", &gram_pairs); }

}  // namespace r2dn_kernels
