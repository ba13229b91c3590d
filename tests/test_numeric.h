// Numeric helpers shared by the tests that compare a fast path with the fp32 reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace glmlab::test {

// Normalized max error max|a − b| / max|b|; infinite where either side holds a NaN (std::max would
// silently skip it), so a NaN can never pass a tolerance.
inline double nerr(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0, r = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    m = std::max(m, double(std::fabs(a[i] - b[i])));
    r = std::max(r, double(std::fabs(b[i])));
  }
  return m / r;
}

// n floats uniform in [−scale, scale] from mt19937(seed).
inline std::vector<float> randv(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace glmlab::test
