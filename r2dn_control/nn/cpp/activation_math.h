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

// exp(x) without a libm call, so that loops over lanes vectorise. Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2/2, then a Taylor polynomial (degree 13 in double: truncation
// ~4e-18 relative; degree 7 in float: ~5e-9), then scaling by 2^n built in the exponent bits.
// Rounding to n uses the 1.5·2^mantissa trick: the bits of (y + magic) minus the bits of magic
// are exactly round(y) as an integer, with only integer adds and shifts (vectorisable on any
// x86-64, unlike a float-to-int64 conversion). The caller keeps |x| below the overflow limit.
template <typename T>
inline T exp_nolibm(T x) {
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
    p = T(1.0 / 5040);
    p = p * r + T(1.0 / 720);
    p = p * r + T(1.0 / 120);
    p = p * r + T(1.0 / 24);
    p = p * r + T(1.0 / 6);
    p = p * r + T(0.5);
    p = p * r + T(1);
    p = p * r + T(1);
  } else {
    p = T(1.0 / 6227020800.0);
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
    p = p * r + T(1);
  }
  Bits shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(T));
  const T magic_copy = magic;
  std::memcpy(&magic_bits, &magic_copy, sizeof(T));
  const Bits scale_bits = (shifted_bits - magic_bits + bias) << mantissa;
  T scale;
  std::memcpy(&scale, &scale_bits, sizeof(T));
  return p * scale;
}

template <typename T>
inline T tanh_nolibm(T x) {
  // tanh|x| = 1 − 2/(e^{2|x|} + 1): absolute error ~1 ulp of 1. Beyond the clamp tanh rounds
  // to ±1 in T anyway.
  constexpr T limit = std::is_same_v<T, float> ? T(9) : T(19.5);
  const T a = std::min(x < T(0) ? -x : x, limit);
  const T t = T(1) - T(2) / (exp_nolibm(T(2) * a) + T(1));
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


// dst (n × L, feature-major) ← rows b0 … b0+lanes−1 of a row-major (·, n) matrix;
// zero padding.
template <typename T, int64_t L>
inline void gather(const T* src, int64_t n, int64_t lanes, T* dst) {
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t i = 0; i < n; ++i) dst[i * L + l] = src[l * n + i];
  for (int64_t l = lanes; l < L; ++l)
    for (int64_t i = 0; i < n; ++i) dst[i * L + l] = T(0);
}

template <typename T, int64_t L>
inline void scatter(const T* src, int64_t n, int64_t lanes, T* dst) {
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t i = 0; i < n; ++i) dst[l * n + i] = src[i * L + l];
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
