// Per-row arithmetic of the low-rank Bradley-Terry loss, shared by the CPU and
// CUDA kernels so that the CPU tests exercise the same formulas the GPU runs.
// No torch headers: it compiles as plain C++17 and as CUDA (__host__ __device__).
//
// For row m of user u (docs/architecture.md, "The op"):
//   margin = z_m . h_u                  with the user's reward head h_u = V S_u
//   y      = -tau * margin
//   loss_m = c_m * softplus(y)          g_m = -c_m * tau * sigmoid(y)
// softplus and sigmoid share one exp(-|y|), which never overflows.
//
// With label noise eps > 0 (each label flipped with probability eps whatever
// the margin) the likelihood is p = eps + (1 - 2 eps) sigmoid(-y), so
//   loss_m = -c_m log p                 g_m = -c_m tau (1 - 2 eps) e / ((1 + e) q)
// with e = exp(-|y|) and q = p (1 + e) = eps + (1 - eps) e when y > 0, else
// 1 - eps + eps e; q >= eps, so the log is finite. A mislabelled pair costs at
// most -log eps instead of growing with the margin.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LORE_HD __host__ __device__ __forceinline__
#define LORE_HD_COLD __host__ __device__
#else
#define LORE_HD inline
// Kept out of line on CPU so the plain path's tile loops compile as before.
#define LORE_HD_COLD __attribute__((noinline, cold))
#endif

namespace lore {

LORE_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

LORE_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}

// bf16 is the top half of an fp32: widening is a shift, exact.
LORE_HD float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// IEEE half -> float, exact, branch-free (vectorises on CPU). Moving the 15
// exponent+mantissa bits into float position and scaling by 2^112 re-biases
// normals and turns half subnormals into float subnormals of the same value;
// inf/nan get the all-ones float exponent.
LORE_HD float half_to_float(uint16_t h) {
  const uint32_t em = uint32_t(h & 0x7fffu) << 13;
  const float scaled = bits_to_float(em) * 0x1p112f;
  const uint32_t mag = (h & 0x7fffu) >= 0x7c00u ? (em | 0x7f800000u) : float_to_bits(scaled);
  return bits_to_float(mag | (uint32_t(h & 0x8000u) << 16));
}

template <typename T>
struct RowTerms {
  T loss;  // c * softplus(-tau * margin)
  T g;     // d loss / d margin
};

// Overloads rather than std:: so the same names resolve in device code.
LORE_HD float lore_exp(float x) { return expf(x); }
LORE_HD double lore_exp(double x) { return exp(x); }
LORE_HD float lore_log1p(float x) { return log1pf(x); }
LORE_HD double lore_log1p(double x) { return log1p(x); }
LORE_HD float lore_log(float x) { return logf(x); }
LORE_HD double lore_log(double x) { return log(x); }

template <typename T>
LORE_HD_COLD RowTerms<T> noisy_row_terms(T margin, T c, T tau, T noise) {
  const T y = -tau * margin;
  const T e = lore_exp(y > T(0) ? -y : y);  // exp(-|y|) in (0, 1]
  const T q = y > T(0) ? noise + (T(1) - noise) * e : T(1) - noise + noise * e;
  const T loss = lore_log1p(e) - lore_log(q);
  return {c * loss, -c * tau * (T(1) - T(2) * noise) * e / ((T(1) + e) * q)};
}

template <typename T>
LORE_HD RowTerms<T> row_terms(T margin, T c, T tau, T noise) {
  if (noise > T(0)) return noisy_row_terms(margin, c, tau, noise);
  const T y = -tau * margin;
  const T e = lore_exp(y > T(0) ? -y : y);  // exp(-|y|) in (0, 1]
  const T softplus = (y > T(0) ? y : T(0)) + lore_log1p(e);
  const T sigmoid = y >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  return {c * softplus, -c * tau * sigmoid};
}

#if !defined(__CUDACC__)
// The CPU kernels' tiles are 4 rows: four scalar exp and log1p calls per tile
// were a third of the bf16 step at d = 384. For the plain float case of a full
// tile the same formulas run on 4-lane vectors (GCC/Clang vector extensions:
// SSE or AVX encodings, no libm call), with exp and log1p as polynomials good
// to ~2e-7 relative; everything else goes through `row_terms`.
typedef float Lanes4 __attribute__((vector_size(16)));
typedef int32_t Ints4 __attribute__((vector_size(16)));

// exp(x) for x <= 0: Cody-Waite reduction x = n ln2 + r and Cephes' degree-6
// polynomial for e^r; below -87 it gives e^-87 (~1.6e-38), which only ever
// meets 1 + e.
inline Lanes4 exp_nonpositive4(Lanes4 x) {
  x = x < -87.0f ? Lanes4{} - 87.0f : x;
  const Lanes4 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  const Lanes4 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  Lanes4 p = Lanes4{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Ints4 two_n = (__builtin_convertvector(n, Ints4) + 127) << 23;  // 2^n, n in [-126, 0]
  return p * (Lanes4)two_n;
}

// log(1 + e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) <= 1/3, by its
// series to s^13 (truncation below 2e-8 relative).
inline Lanes4 log1p_unit4(Lanes4 e) {
  const Lanes4 s = e / (2.0f + e);
  const Lanes4 s2 = s * s;
  Lanes4 p = Lanes4{} + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// loss[q] and g[q] of `row_terms` for the n <= 4 rows of a CPU tile.
template <typename T>
inline void tile_terms(const T* margin, const T* c, int n, T tau, T noise, T* loss, T* g) {
  for (int q = 0; q < n; ++q) {
    const RowTerms<T> t = row_terms<T>(margin[q], c[q], tau, noise);
    loss[q] = t.loss;
    g[q] = t.g;
  }
}

template <>
inline void tile_terms<float>(const float* margin, const float* c, int n, float tau,
                              float noise, float* loss, float* g) {
  if (n != 4 || noise > 0.0f) {
    for (int q = 0; q < n; ++q) {
      const RowTerms<float> t = row_terms<float>(margin[q], c[q], tau, noise);
      loss[q] = t.loss;
      g[q] = t.g;
    }
    return;
  }
  Lanes4 m, w;
  std::memcpy(&m, margin, sizeof m);
  std::memcpy(&w, c, sizeof w);
  const Lanes4 y = -tau * m;
  const Lanes4 e = exp_nonpositive4(y > 0.0f ? -y : y);  // exp(-|y|) in (0, 1]
  const Lanes4 softplus = (y > 0.0f ? y : Lanes4{}) + log1p_unit4(e);
  const Lanes4 inv = 1.0f / (1.0f + e);
  const Lanes4 sigmoid = y >= 0.0f ? inv : e * inv;
  const Lanes4 out_loss = w * softplus, out_g = -w * tau * sigmoid;
  std::memcpy(loss, &out_loss, sizeof out_loss);
  std::memcpy(g, &out_g, sizeof out_g);
}
#endif

}  // namespace lore
