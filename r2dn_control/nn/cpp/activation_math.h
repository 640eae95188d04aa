// Activations, lane-block transposes and the batch-block loop shared by the C++ kernels (REN: ren_kernels.cpp,
// R2DN: r2dn_kernels.cpp).
//
// σ is evaluated without libm calls so that loops over lanes or features vectorise; σ' is
// recovered from the output s = σ(v), matching torch's autograd at kinks.

#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace r2dn_kernels {

enum class Act { Relu, Tanh, Sigmoid, LeakyRelu, Identity };

inline Act parse_activation(const std::string& name) {
  if (name == "relu") return Act::Relu;
  if (name == "tanh") return Act::Tanh;
  if (name == "sigmoid") return Act::Sigmoid;
  if (name == "leaky_relu") return Act::LeakyRelu;
  if (name == "identity") return Act::Identity;
  TORCH_CHECK(false, "r2dn_control kernels: unknown activation '", name,
              "' (expected relu, tanh, sigmoid, leaky_relu or identity)");
}

// e^x − 1 without a libm call, so that loops over lanes vectorise, returned as the pair
// (q, 2^n) with e^x − 1 = 2^n·q + (2^n − 1) and e^x = 2^n·(q + 1). Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2/2, then q = e^r − 1 as a Taylor polynomial without its constant
// term (degree 14 in double: truncation ~4e-18 relative; degree 8 in float: ~5e-9), so q keeps
// its relative accuracy for tiny r (no 1 + r − 1 cancellation); 2^n is built in the exponent
// bits. Rounding to n uses the 1.5·2^mantissa trick: the bits of (y + magic) minus the bits of
// magic are exactly round(y) as an integer, with only integer adds and shifts (vectorisable on
// any x86-64, unlike a float-to-int64 conversion). The caller keeps |x| below the overflow limit.
template <typename T>
inline T expm1_parts(T x, T& scale) {
  constexpr bool is_float = std::is_same_v<T, float>;
  using Bits = std::conditional_t<is_float, int32_t, int64_t>;
  constexpr int mantissa = is_float ? 23 : 52;
  constexpr Bits bias = is_float ? 127 : 1023;
  constexpr T magic = is_float ? T(12582912.0) : T(6755399441055744.0);  // 1.5·2^mantissa
  constexpr T log2e = T(1.4426950408889634074);
  constexpr T ln2_hi = is_float ? T(0.693145751953125) : T(0.693147180369123816490);
  constexpr T ln2_lo = is_float ? T(1.428606765330187e-06) : T(1.90821492927058770002e-10);
  const T shifted = x * log2e + magic;
  const T n = shifted - magic;
  const T r = (x - n * ln2_hi) - n * ln2_lo;
  T p;
  if constexpr (is_float) {
    p = T(1.0 / 40320);
    p = p * r + T(1.0 / 5040);
    p = p * r + T(1.0 / 720);
    p = p * r + T(1.0 / 120);
    p = p * r + T(1.0 / 24);
    p = p * r + T(1.0 / 6);
    p = p * r + T(0.5);
    p = p * r + T(1);
  } else {
    p = T(1.0 / 87178291200.0);
    p = p * r + T(1.0 / 6227020800.0);
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
    p = p * r + T(1);
  }
  Bits shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(T));
  const T magic_copy = magic;
  std::memcpy(&magic_bits, &magic_copy, sizeof(T));
  const Bits scale_bits = (shifted_bits - magic_bits + bias) << mantissa;
  std::memcpy(&scale, &scale_bits, sizeof(T));
  return p * r;
}

template <typename T>
inline T exp_nolibm(T x) {
  T scale;
  const T q = expm1_parts(x, scale);
  return (q + T(1)) * scale;
}

template <typename T>
inline T tanh_nolibm(T x) {
  // tanh|x| = m/(m + 2) with m = e^{2|x|} − 1 >= 0: a few ulp relative everywhere, tiny |x|
  // included (the form 1 − 2/(e^{2|x|} + 1) is accurate only to ~1 ulp of 1, i.e. relative
  // error ~eps/|x| below 1). Beyond the clamp tanh rounds to ±1 in T anyway.
  constexpr T limit = std::is_same_v<T, float> ? T(9) : T(19.5);
  const T a = std::min(x < T(0) ? -x : x, limit);
  T scale;
  const T q = expm1_parts(T(2) * a, scale);
  const T m = scale * q + (scale - T(1));
  const T t = m / (m + T(2));
  return x < T(0) ? -t : t;
}

template <typename T>
inline T sigmoid_nolibm(T x) {
  constexpr T limit = std::is_same_v<T, float> ? T(80) : T(700);
  const T c = std::max(std::min(x, limit), -limit);
  return T(1) / (T(1) + exp_nolibm(-c));
}

template <typename T, Act A>
inline T activate(T v) {
  if constexpr (A == Act::Relu) return v > T(0) ? v : T(0);
  else if constexpr (A == Act::Tanh) return tanh_nolibm(v);
  else if constexpr (A == Act::Sigmoid) return sigmoid_nolibm(v);
  else if constexpr (A == Act::LeakyRelu) return v > T(0) ? v : T(0.01) * v;
  else return v;
}

// σ'(v) from s = σ(v), matching torch's autograd at kinks (relu'(0) = 0, leaky_relu'(0) = 0.01).
template <typename T, Act A>
inline T slope_from_output(T s) {
  if constexpr (A == Act::Relu) return s > T(0) ? T(1) : T(0);
  else if constexpr (A == Act::Tanh) return T(1) - s * s;
  else if constexpr (A == Act::Sigmoid) return s * (T(1) - s);
  else if constexpr (A == Act::LeakyRelu) return s > T(0) ? T(1) : T(0.01);
  else return T(1);
}


// Lane-block transposes. A lane block is feature-major, q[i * L + l]; the (T, B, n) buffers
// are row-major, one batch row after the other. Moving between the two is a transpose: with
// AVX it runs in V×V tiles (V = one vector: 8 float32 or 4 float64) held in registers (8 or 4
// loads, unpack/shuffle/permute, 8 or 4 stores), the ragged edges and builds without AVX one
// element at a time. Measured at 6×96 (perf): the scalar loops were ~22 % of the forward and
// ~30 % of the adjoint kernel time (strided loads, one element per instruction).

// dst[j * dst_stride + k] = src[k * src_stride + j] for j, k < V (one V×V tile).
template <typename T>
inline void transpose_tile(const T* src, int64_t src_stride, T* dst, int64_t dst_stride) {
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    __m256 r[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * src_stride);
    __m256 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
      t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
      t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
      u[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(dst + j * dst_stride, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
      _mm256_storeu_ps(dst + (j + 4) * dst_stride, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
    }
  } else {
    __m256d r[4];
    for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_pd(src + k * src_stride);
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + dst_stride, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * dst_stride, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * dst_stride, _mm256_permute2f128_pd(t1, t3, 0x31));
  }
#else
  (void)src, (void)src_stride, (void)dst, (void)dst_stride;  // never called: tile_size() is 0
#endif
}

// Elements per transpose tile side (0: no vector tiles in this build).
template <typename T>
constexpr int64_t tile_size() {
#if defined(__AVX__)
  return std::is_same_v<T, float> ? 8 : 4;
#else
  return 0;
#endif
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: V×V tiles where
// both fit, single elements at the ragged edges.
template <typename T>
inline void transpose(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                      int64_t dst_stride) {
  constexpr int64_t V = tile_size<T>();
  int64_t i0 = 0;
  if constexpr (V > 0) {
    const int64_t cols_tiled = cols - cols % V;
    for (; i0 + V <= rows; i0 += V) {
      for (int64_t j0 = 0; j0 < cols_tiled; j0 += V)
        transpose_tile<T>(src + i0 * src_stride + j0, src_stride, dst + j0 * dst_stride + i0,
                          dst_stride);
      for (int64_t i = i0; i < i0 + V; ++i)
        for (int64_t j = cols_tiled; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
    }
  }
  for (int64_t i = i0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// dst (n × L, feature-major) ← rows b0 … b0+lanes−1 of a row-major (·, n) matrix;
// zero padding.
template <typename T, int64_t L>
inline void gather(const T* src, int64_t n, int64_t lanes, T* dst) {
  transpose<T>(src, n, lanes, n, dst, L);
  for (int64_t l = lanes; l < L; ++l)
    for (int64_t i = 0; i < n; ++i) dst[i * L + l] = T(0);
}

// Rows b0 … b0+lanes−1 of a row-major (·, n) matrix ← src (n × L, feature-major).
template <typename T, int64_t L>
inline void scatter(const T* src, int64_t n, int64_t lanes, T* dst) {
  transpose<T>(src, L, n, lanes, dst, n);
}

// Runs body(first_row, rows) over the batch in blocks of lanes_per_block rows, blocks in
// parallel: each block is independent through all time steps.
template <typename F>
void for_each_block(int64_t batch, int64_t lanes_per_block, const F& body) {
  const int64_t blocks = (batch + lanes_per_block - 1) / lanes_per_block;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t b0 = blk * lanes_per_block;
      body(b0, std::min(lanes_per_block, batch - b0));
    }
  });
}

}  // namespace r2dn_kernels
