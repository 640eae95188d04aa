// The register-tiled micro-kernel of the weight gradients Σ_r x_rᵀ g_r (and the bias sums
// Σ_r g_r) over a chunk of rows: `gram_chunk`. Used by gram_kernels.cpp (the `gram_pairs`
// operator: all T·B rows after the adjoint) and by r2dn_kernels.cpp (the lane-loop adjoint,
// which feeds it the rows of a few time steps as it computes them). Design notes at the top of
// gram_kernels.cpp.

#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#ifndef R2DN_GRAM_VECTOR_BYTES
#if defined(__AVX512F__)
#define R2DN_GRAM_VECTOR_BYTES 64
#else
#define R2DN_GRAM_VECTOR_BYTES 32
#endif
#endif

namespace r2dn_kernels {
namespace {

constexpr int kVectorBytes = R2DN_GRAM_VECTOR_BYTES;
// Vector registers: 32 with AVX-512, 16 with AVX2 (the tile shapes below fit in them).
constexpr int kRegisters = kVectorBytes == 64 ? 32 : 16;

template <typename T>
struct Vec {
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(kVectorBytes)));
};

// n rounded up to whole vectors: the row length of `gram_chunk`'s accumulator (its column
// padding).
template <typename T>
constexpr int64_t padded_columns(int64_t n) {
  return (n + Vec<T>::kLanes - 1) / Vec<T>::kLanes * Vec<T>::kLanes;
}

// Tile heights: MI ≤ max_rows(NV) keeps (MI + 1)·NV accumulators (the +1: the bias sums),
// NV loaded G vectors and one broadcast in the registers.
constexpr int max_rows(int nv) {
  return std::min(12, (kRegisters - 1 - nv) / nv - 1);
}
constexpr int kMaxVectors = kRegisters == 32 ? 3 : 2;

// Where the NV vectors of a column tile come from, sample by sample: vector v of sample r
// (relative to the block) is at src[v] + r·stride[v].
template <typename T>
struct Columns {
  const T* src[kMaxVectors];
  int64_t stride[kMaxVectors];
};

// out[ii, v·L + lane] (row stride `so`) += Σ_{r < rows} x[r·sx + ii] · G_v(r)[lane] for
// ii < MI, v < NV; with SUMS also sums[v·L + lane] += Σ_r G_v(r)[lane]. Tiles with fewer than
// 8 accumulators (FMA latency × throughput) take U rows at a time into U accumulator sets.
template <typename T, int MI, int NV, bool SUMS>
void gram_tile(const T* __restrict__ x, int64_t sx, const Columns<T>& cols, int64_t rows,
               T* __restrict__ out, int64_t so, T* __restrict__ sums) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  constexpr int U = MI * NV >= 8 ? 1 : (MI * NV >= 4 ? 2 : 4);
  V acc[U][MI][NV];
  V tot[U][NV];
  for (int u = 0; u < U; ++u)
    for (int v = 0; v < NV; ++v) {
      for (int ii = 0; ii < MI; ++ii) acc[u][ii][v] = V{};
      tot[u][v] = V{};
    }
  const T* src[NV];
  int64_t stride[NV];
  for (int v = 0; v < NV; ++v) {
    src[v] = cols.src[v];
    stride[v] = cols.stride[v];
  }
  auto step = [&](int u, int64_t r) __attribute__((always_inline)) {
    V gv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&gv[v], src[v] + r * stride[v], sizeof(V));
    const T* __restrict__ xr = x + r * sx;
    for (int ii = 0; ii < MI; ++ii) {
      const T xi = xr[ii];
      for (int v = 0; v < NV; ++v) acc[u][ii][v] += xi * gv[v];
    }
    if (SUMS) {
      for (int v = 0; v < NV; ++v) tot[u][v] += gv[v];
    }
  };
  int64_t r = 0;
  for (; r + U <= rows; r += U)
    for (int u = 0; u < U; ++u) step(u, r + u);
  for (; r < rows; ++r) step(0, r);
  for (int u = 1; u < U; ++u)
    for (int v = 0; v < NV; ++v) {
      for (int ii = 0; ii < MI; ++ii) acc[0][ii][v] += acc[u][ii][v];
      tot[0][v] += tot[u][v];
    }
  for (int ii = 0; ii < MI; ++ii)
    for (int v = 0; v < NV; ++v) {
      V o;
      std::memcpy(&o, out + ii * so + v * L, sizeof(V));
      o += acc[0][ii][v];
      std::memcpy(out + ii * so + v * L, &o, sizeof(V));
    }
  if (SUMS) {
    for (int v = 0; v < NV; ++v) {
      V o;
      std::memcpy(&o, sums + v * L, sizeof(V));
      o += tot[0][v];
      std::memcpy(sums + v * L, &o, sizeof(V));
    }
  }
}

template <typename T>
using TileFn = void (*)(const T*, int64_t, const Columns<T>&, int64_t, T*, int64_t, T*);

template <typename T, int NV, bool SUMS, int... MI>
constexpr auto tile_table(std::integer_sequence<int, MI...>) {
  return std::array<TileFn<T>, sizeof...(MI)>{&gram_tile<T, MI + 1, NV, SUMS>...};
}

// gram_tile<T, mi, nv, sums> for 1 ≤ mi ≤ max_rows(nv), 1 ≤ nv ≤ kMaxVectors.
template <typename T>
TileFn<T> tile_fn(int mi, int nv, bool sums) {
  static const auto t1 = tile_table<T, 1, false>(std::make_integer_sequence<int, max_rows(1)>{});
  static const auto s1 = tile_table<T, 1, true>(std::make_integer_sequence<int, max_rows(1)>{});
  static const auto t2 = tile_table<T, 2, false>(std::make_integer_sequence<int, max_rows(2)>{});
  static const auto s2 = tile_table<T, 2, true>(std::make_integer_sequence<int, max_rows(2)>{});
#if R2DN_GRAM_VECTOR_BYTES == 64
  static_assert(kMaxVectors == 3, "three-vector tiles with 32 registers");
  static const auto t3 = tile_table<T, 3, false>(std::make_integer_sequence<int, max_rows(3)>{});
  static const auto s3 = tile_table<T, 3, true>(std::make_integer_sequence<int, max_rows(3)>{});
  if (nv == 3) return (sums ? s3 : t3)[mi - 1];
#endif
  if (nv == 2) return (sums ? s2 : t2)[mi - 1];
  return (sums ? s1 : t1)[mi - 1];
}

// K rows per block: X's and G's rows of one block fill about 128 KiB (they stay in L2 while
// every tile passes over them; 24–512 KiB measured alike), at least 64 rows (the tiles' loads
// and stores amortised).
#ifndef R2DN_GRAM_BLOCK_BYTES
#define R2DN_GRAM_BLOCK_BYTES (128 * 1024)
#endif
int64_t block_rows(int64_t m, int64_t n, int64_t elem) {
  return std::max<int64_t>(64, R2DN_GRAM_BLOCK_BYTES / ((m + n) * elem));
}

// out[i] += Σ_{r < rows} a[r·sa + i] for the ma columns of a, a vector of columns at a time;
// the last, partly filled one is read whole (lanes past ma discarded) while that read ends
// before a_end, the rows after that scalar.
template <typename T>
void column_sums(const T* a, int64_t sa, const T* a_end, int64_t rows, int64_t ma, T* out) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  for (int64_t j0 = 0; j0 < ma; j0 += L) {
    const int64_t jw = std::min<int64_t>(L, ma - j0);
    V s[4] = {V{}, V{}, V{}, V{}};
    int64_t r = 0;
    for (; r + 4 <= rows && a + (r + 3) * sa + j0 + L <= a_end; r += 4) {
      for (int u = 0; u < 4; ++u) {
        V row;
        std::memcpy(&row, a + (r + u) * sa + j0, sizeof(V));
        s[u] += row;
      }
    }
    V total = (s[0] + s[1]) + (s[2] + s[3]);
    for (; r < rows; ++r)
      for (int64_t j = 0; j < jw; ++j) total[j] += a[r * sa + j0 + j];
    for (int64_t j = 0; j < jw; ++j) out[j0 + j] += total[j];
  }
}

// One chunk of rows [0, k) of X (k×m, row stride sx) and G (k×n, row stride sg):
// acc[i·np + j] += Σ_r x[r, i] g[r, j] (np = n rounded up to whole vectors) and, when
// ``sums`` is non-null, sums[j] += Σ_r g[r, j] (or, with ``xsums`` set, xsums[i] += Σ_r x[r, i]:
// the swapped call's bias sums are over its broadcast side). ``x_end``, ``g_end`` are one
// past X's and G's last elements: the last, partly filled vector of a G row is loaded whole
// (its lanes past n land in padding columns of acc, never read) while that load ends by g_end;
// the rows where it would not (the tensor's last few) have their tail copied into a
// zero-padded buffer first.
template <typename T>
void gram_chunk(const T* x, int64_t sx, const T* x_end, const T* g, int64_t sg, const T* g_end,
                int64_t k, int64_t m, int64_t n, T* acc, T* sums, T* xsums) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t full = n / L;                // whole vectors of G's columns
  const int64_t tail = n - full * L;         // columns in the padded last vector
  const int64_t vectors = full + (tail > 0);
  const int64_t np = vectors * L;
  const int64_t kb = block_rows(m, n, sizeof(T));
  std::vector<T> padded;
  for (int64_t r0 = 0; r0 < k; r0 += kb) {
    const int64_t rows = std::min(kb, k - r0);
    const T* xb = x + r0 * sx;
    const T* gb = g + r0 * sg;
    const bool pad = tail > 0 && gb + (rows - 1) * sg + full * L + L > g_end;
    if (pad) {
      padded.assign(static_cast<size_t>(rows * L), T(0));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < tail; ++j) padded[r * L + j] = gb[r * sg + full * L + j];
    }
    if (xsums != nullptr) column_sums<T>(xb, sx, x_end, rows, m, xsums);
    for (int64_t v0 = 0; v0 < vectors;) {
      // Column tiles of up to kMaxVectors vectors; four as two pairs (taller tiles).
      const int64_t left = vectors - v0;
      const int nv = static_cast<int>(left <= kMaxVectors ? left : (left == 4 ? 2 : kMaxVectors));
      Columns<T> cols{};
      for (int v = 0; v < nv; ++v) {
        const int64_t vec = v0 + v;
        const bool padded_vector = pad && vec == full;
        cols.src[v] = padded_vector ? padded.data() : gb + vec * L;
        cols.stride[v] = padded_vector ? L : sg;
      }
      // Row tiles of near-equal height (no one-row remainder tile).
      const int cap = max_rows(nv);
      const int64_t tiles = (m + cap - 1) / cap;
      int64_t i0 = 0;
      for (int64_t t = 0; t < tiles; ++t) {
        const int mi = static_cast<int>((m - i0) / (tiles - t));
        const bool with_sums = t == 0 && sums != nullptr;
        tile_fn<T>(mi, nv, with_sums)(xb + i0, sx, cols, rows, acc + i0 * np + v0 * L, np,
                                      with_sums ? sums + v0 * L : nullptr);
        i0 += mi;
      }
      v0 += nv;
    }
  }
}

}  // namespace
}  // namespace r2dn_kernels
