// Weight gradients of the fused rollouts: ∂L/∂W = Σ_r x_rᵀ g_r over all K = T·B samples, for
// several (X, G) pairs in one call (r2dn_control/nn/fused_rollout.md, "Gradients").
//
// X is K×m, G is K×n (rows with unit column stride, any row stride), K in the thousands and
// m, n up to a few hundred: a transposed tall-skinny product with a small output, which BLAS
// runs as a general GEMM at about half its peak. Here a GEMM micro-kernel needs no packing,
// because the operands of the K-loop are already rows: out[i0:i0+MI, j0:j0+NV·L] +=
// Σ_r x[r, i0:i0+MI]ᵀ g[r, j0:j0+NV·L] keeps its MI×NV vector accumulators in registers, and
// each sample adds NV vector loads of G times MI broadcasts of X (L = lanes of one SIMD vector:
// 512-bit with AVX-512, else 256-bit; tile shapes sized to the 32 or 16 vector registers).
//
// * K blocks: the samples are taken in blocks of about 128 KiB of X and G rows (they stay in
//   L2 while every output tile passes over them); the tiles' accumulators are loaded from and
//   added to a per-thread partial output padded to whole vectors, once per block.
// * Row tiles of near-equal height (no one-row remainder tile); tiles with fewer than 8
//   accumulators take several samples at a time into separate accumulator sets (FMA latency).
// * Ragged n: the last, partly filled vector of a G row is loaded whole (its lanes past n land
//   in padding columns of the partial output, never read) wherever that load stays inside G's
//   memory; only the tensor's last rows have their tail copied into a zero-padded buffer.
// * Swapped roles (G's columns broadcast, X's rows the vectors, out = (GᵀX)ᵀ) when that pads
//   fewer lanes: 16×1, 64×1, 16×24 in float32.
// * The bias sums Σ_r g_r come in the same pass over the block: one more accumulator row of
//   the first row tile of each column tile (g added with weight one), or, swapped, a vector
//   pass over the block's G rows. m = n = 1 (contiguous) is a dot product along the lanes.
// * Samples are split into chunks across at::parallel_for threads, each with its own partial,
//   summed at the end in chunk order (deterministic for a given thread count).
//
// Accumulation is in the tensors' dtype, as in torch.mm. Without AVX the same code compiles
// to the target's vectors or scalars (GCC/Clang vector extensions).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "gram_tile.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

namespace r2dn_kernels {
namespace {

// m = n = 1 with unit row strides: out += Σ_r x[r] g[r], sums += Σ_r g[r] along the lanes.
template <typename T>
void dot_and_sum(const T* x, const T* g, int64_t k, T* out, T* sums) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  V d[2] = {V{}, V{}}, s[2] = {V{}, V{}};
  int64_t r = 0;
  for (; r + 2 * L <= k; r += 2 * L) {
    for (int u = 0; u < 2; ++u) {
      V xv, gv;
      std::memcpy(&xv, x + r + u * L, sizeof(V));
      std::memcpy(&gv, g + r + u * L, sizeof(V));
      d[u] += xv * gv;
      s[u] += gv;
    }
  }
  T dot = T(0), sum = T(0);
  for (int lane = 0; lane < L; ++lane) {
    dot += d[0][lane] + d[1][lane];
    sum += s[0][lane] + s[1][lane];
  }
  for (; r < k; ++r) {
    dot += x[r] * g[r];
    sum += g[r];
  }
  *out += dot;
  *sums += sum;
}

// out = XᵀG (m×n), sums = Σ_r G (n) for one pair, rows split across threads.
template <typename T>
void gram_one(const at::Tensor& x, const at::Tensor& g, at::Tensor& out, at::Tensor& sums) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t k = x.size(0), m = x.size(1), n = g.size(1);
  if (k == 0 || m == 0 || n == 0) {
    if (k > 0 && n > 0) sums.copy_(g.sum(0));
    return;
  }
  if (m == 1 && n == 1 && x.stride(0) == 1 && g.stride(0) == 1) {
    dot_and_sum<T>(x.const_data_ptr<T>(), g.const_data_ptr<T>(), k, out.data_ptr<T>(),
                   sums.data_ptr<T>());
    return;
  }
  // Swapped (vectors along X's rows: out = (GᵀX)ᵀ) when that pads fewer lanes, e.g. 16×1,
  // 16×24 in float32 with 16 lanes: m·⌈n/L⌉ vectors per sample against n·⌈m/L⌉.
  const bool swap = n * ((m + L - 1) / L) < m * ((n + L - 1) / L);
  const T* a = swap ? g.const_data_ptr<T>() : x.const_data_ptr<T>();
  const T* b = swap ? x.const_data_ptr<T>() : g.const_data_ptr<T>();
  const int64_t sa = swap ? g.stride(0) : x.stride(0), sb = swap ? x.stride(0) : g.stride(0);
  const int64_t ma = swap ? n : m, nb = swap ? m : n;
  const int64_t np = padded_columns<T>(nb);
  // One past the last element of each side.
  const T* a_end = a + (k - 1) * sa + ma;
  const T* b_end = b + (k - 1) * sb + nb;
  const int64_t size = ma * np + np + ma;  // product, column sums, broadcast-side sums
  // Chunks of at least 1024 rows: one per thread at most.
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), k / 1024));
  const int64_t per = (k + chunks - 1) / chunks;
  std::vector<T> partial(static_cast<size_t>(chunks * size), T(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T* part = partial.data() + c * size;
      const int64_t r0 = c * per, r1 = std::min(k, (c + 1) * per);
      if (r1 <= r0) continue;
      gram_chunk<T>(a + r0 * sa, sa, a_end, b + r0 * sb, sb, b_end, r1 - r0, ma, nb, part,
                    swap ? nullptr : part + ma * np, swap ? part + ma * np + np : nullptr);
    }
  });
  T* op = out.data_ptr<T>();
  T* sp = sums.data_ptr<T>();
  for (int64_t c = 0; c < chunks; ++c) {
    const T* part = partial.data() + c * size;
    for (int64_t i = 0; i < ma; ++i)
      for (int64_t j = 0; j < nb; ++j) {
        if (swap) {
          op[j * n + i] += part[i * np + j];
        } else {
          op[i * n + j] += part[i * np + j];
        }
      }
    const T* s = swap ? part + ma * np + np : part + ma * np;
    for (int64_t j = 0; j < n; ++j) sp[j] += s[j];
  }
}

// For each k: (xs[k]ᵀ gs[k], Σ_rows gs[k]). All tensors 2-D, CPU, one float dtype, unit column
// stride (any row stride), xs[k] and gs[k] with the same number of rows.
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
    TORCH_CHECK(x.device().is_cpu() && g.device().is_cpu() &&
                    x.scalar_type() == g.scalar_type(),
                "gram_pairs: CPU tensors of one dtype expected, got ", x.scalar_type(), " on ",
                x.device(), " and ", g.scalar_type(), " on ", g.device());
    TORCH_CHECK((x.stride(1) == 1 || x.size(1) <= 1) && (g.stride(1) == 1 || g.size(1) <= 1) &&
                    x.stride(0) >= 0 && g.stride(0) >= 0,
                "gram_pairs: rows with unit column stride expected (e.g. .contiguous()), got "
                "strides ", x.strides(), " and ", g.strides());
    at::Tensor out = at::zeros({x.size(1), g.size(1)}, x.options());
    at::Tensor sum = at::zeros({g.size(1)}, g.options());
    if (x.scalar_type() == at::kFloat) {
      gram_one<float>(x, g, out, sum);
    } else {
      TORCH_CHECK(x.scalar_type() == at::kDouble, "gram_pairs: float32 or float64 expected, "
                  "got ", x.scalar_type());
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
