// Shared by the quantized-kernel tests: weights whose groups differ in magnitude (×1/8..×8), so that
// reading the scale of another group, or of another row, is a large error, not a small one.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace glmlab::test {

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

}  // namespace glmlab::test
