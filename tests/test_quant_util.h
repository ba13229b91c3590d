// Shared by the quantized- and 16-bit-kernel tests: error measures, a mutable copy of a matrix, the int8
// GEMVs' activations as fp32, random activations, and weights whose groups differ in magnitude
// (×1/8..×8), so that reading the scale of another group, or of another row, is a large error, not a
// small one.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/vnni_gemv.h"
#include "ops/ops.h"
#include "util/matrix.h"

namespace glmlab::test {

// y = x · Wᵀ for N rows of x, by the reference ops (make_ref_ops).
inline std::vector<float> ref_matmul(Ops& ref, const std::vector<float>& x, int64_t N, const Matrix& W) {
  std::vector<float> y(size_t(N * W.rows));
  ref.matmul(x.data(), N, W, nullptr, y.data());
  return y;
}

// Normalized max error of a against b: max|a − b| / max|b|.
inline double nmax(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, r = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i]))), r = std::max(r, double(std::fabs(b[i])));
  return m / r;
}

// max |y − ref| / (max |ref| of the token), over all outputs of N tokens × M rows (ref in fp64).
inline double token_nerr(const std::vector<float>& y, const std::vector<double>& ref, int64_t N, int64_t M) {
  double worst = 0;
  for (int64_t n = 0; n < N; ++n) {
    double scale = 1e-30, e = 0;
    for (int64_t r = 0; r < M; ++r) {
      scale = std::max(scale, std::fabs(ref[size_t(n * M + r)]));
      e = std::max(e, std::fabs(double(y[size_t(n * M + r)]) - ref[size_t(n * M + r)]));
    }
    worst = std::max(worst, e / scale);
  }
  return worst;
}

// N activation rows of K, uniform in [−2, 2].
inline std::vector<float> uniform_acts(int64_t N, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(size_t(N * K));
  for (auto& v : x) v = u(rng);
  return x;
}

// A quantized Matrix over a copy of another's bytes and scales, to mutate.
struct MatrixCopy {
  std::vector<uint8_t> data;
  std::vector<uint16_t> scales;
  Matrix m;
  explicit MatrixCopy(const Matrix& s)
      : data(static_cast<const uint8_t*>(s.data), static_cast<const uint8_t*>(s.data) + s.data_bytes()),
        scales(s.scales, s.scales + s.rows * s.groups()), m(s) {
    m.data = data.data();
    m.scales = scales.data();
  }
};

// The exact fp32 inputs the row-major int8 GEMVs (vnni_gemv.h, avx2_qgemv.h) multiply: each int8
// value × its block's scale.
inline std::vector<float> dequantize_acts(const vnni::QuantizedActs& a, int64_t K) {
  std::vector<float> x(size_t(a.nt * K));
  for (int64_t t = 0; t < a.nt; ++t)
    for (int64_t i = 0; i < K; ++i) {
      int v;
      float d;
      if (a.wtype == DType::Q8) {
        v = a.q8_signed ? int(int8_t(a.q[size_t(t * a.lanes * 4 + i)])) : int(a.q[size_t(t * a.lanes * 4 + i)]) - 128;
        d = a.scale[size_t(t * a.lanes + i / 4)];
      } else {
        v = int8_t(a.q[size_t(t * 2 * a.lanes * 4 + (i % 2) * a.lanes * 4 + i / 2)]);
        d = a.scale[size_t(t * a.lanes + i / 8)];
      }
      x[size_t(t * K + i)] = float(v) * d;
    }
  return x;
}

inline std::vector<float> group_weights(int64_t M, int64_t K, int64_t G, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> e(-3.0f, 3.0f);
  std::vector<float> w(size_t(M * K));
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c0 = 0; c0 < K; c0 += G) {
      const float f = std::exp2(e(g));
      for (int64_t c = c0; c < std::min(K, c0 + G); ++c) w[size_t(r * K + c)] = n(g) * f;
    }
  return w;
}

// N activation rows of K whose magnitude changes every 32 values (×1/4..×4), so that reading another
// block's activation scale is a large error.
inline std::vector<float> block_acts(int64_t N, int64_t K, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> e(-2.0f, 2.0f);
  std::vector<float> x(size_t(N * K));
  for (int64_t i = 0; i < N * K; i += 32) {
    const float f = std::exp2(e(g));
    for (int64_t j = i; j < std::min(N * K, i + 32); ++j) x[size_t(j)] = n(g) * f;
  }
  return x;
}

// What a kernel with each classic bug would compute, as copies of m for the reference to multiply: the
// next group's scale; Q4: nibbles without their offset of 8, even / odd nibbles swapped; Q8: the +128
// offset left on the weights.
inline std::vector<std::pair<const char*, MatrixCopy>> mutations(const Matrix& m) {
  std::vector<std::pair<const char*, MatrixCopy>> bad;
  MatrixCopy shift(m);
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t g = 0; g < m.groups(); ++g)
      shift.scales[size_t(r * m.groups() + g)] = m.scales[r * m.groups() + (g + 1) % m.groups()];
  bad.emplace_back("scale of the next group", std::move(shift));
  if (m.dtype == DType::Q4) {
    MatrixCopy us(m), sw(m);
    for (auto& b : us.data) b ^= 0x88;
    for (auto& b : sw.data) b = uint8_t((b << 4) | (b >> 4));
    bad.emplace_back("unsigned nibbles", std::move(us));
    bad.emplace_back("swapped nibbles", std::move(sw));
  } else {
    MatrixCopy off(m);
    for (auto& b : off.data) b ^= 0x80;
    bad.emplace_back("offset int8", std::move(off));
  }
  return bad;
}

// The largest difference between `part` (a call on rows [r0, r1) into a zeroed [N, M] output) and the
// whole call's rows there (0 elsewhere): 0 when the range gives exactly those rows and nothing else.
inline double row_range_error(const std::vector<float>& whole, const std::vector<float>& part, int64_t N, int64_t M,
                              int64_t r0, int64_t r1) {
  double e = 0;
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < M; ++r) {
      const size_t i = size_t(t * M + r);
      e = std::max(e, double(std::fabs((r >= r0 && r < r1 ? whole[i] : 0.0f) - part[i])));
    }
  return e;
}

// Extreme values for the integer kernels (int16 pair sums that a wrong operand order would saturate): 4 rows
// of K, +1, −1, alternating ±1 and +1/−1 halves — every weight at its largest code (Q8 ±127, Q4 ±7) — and
// N activation rows of ±1 (int8 ±127), all +1 for even n, alternating for odd n, so that every pair
// product is at its limit in the same and the opposite sign pattern.
inline std::pair<std::vector<float>, std::vector<float>> extreme_values(int64_t K, int64_t N) {
  std::vector<float> w(size_t(4 * K)), x(size_t(N * K));
  for (int64_t c = 0; c < K; ++c) {
    w[size_t(c)] = 1.0f;
    w[size_t(K + c)] = -1.0f;
    w[size_t(2 * K + c)] = c % 2 ? -1.0f : 1.0f;
    w[size_t(3 * K + c)] = c < K / 2 ? 1.0f : -1.0f;
    for (int64_t n = 0; n < N; ++n) x[size_t(n * K + c)] = n % 2 && c % 2 ? -1.0f : 1.0f;
  }
  return {w, x};
}

// What a kernel on int8 activations must give for W (y: its output for N tokens; x: the inputs; xd: their
// int8 rounding as fp32, dequantize_acts): within 1e-5 of the reference fed xd (exact integer sums, fp32
// order only); more than 1e-2 from the reference on each classic bug's matrix (mutations); and within the
// int8 rounding (≈ 0.3% RMS: above 1e-4, below 5e-2) of the reference fed x.
inline void expect_int8_kernel_result(const std::vector<float>& y, Ops& ref, const std::vector<float>& x,
                                      const std::vector<float>& xd, int64_t N, const Matrix& W) {
  EXPECT_LT(nmax(y, ref_matmul(ref, xd, N, W)), 1e-5);
  for (auto& [what, c] : mutations(W)) EXPECT_GT(nmax(y, ref_matmul(ref, xd, N, c.m)), 1e-2) << what;
  const double e = nmax(y, ref_matmul(ref, x, N, W));
  EXPECT_GT(e, 1e-4);
  EXPECT_LT(e, 5e-2);
}

}  // namespace glmlab::test
