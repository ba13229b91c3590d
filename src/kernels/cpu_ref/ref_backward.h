// The fp32 reference of every backward op (plain loops, double accumulation), as free functions that
// RefOps (ref_ops.cpp) delegates to. Shapes and semantics: the backward section of ops/ops.h.
#pragma once
#include <cstdint>

#include "ops/ops.h"
#include "util/dtype.h"

namespace glmlab::ref {

void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx);
void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW);
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx);
void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base);
void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du);
void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                        int D, const float* dout, float* dq, int64_t dq_stride, float* dk, float* dv);
double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale);

// Whether the query at cache slot i of sequence b may see key slot j (j ≤ i checked by the caller):
// the key is valid and, with packed sequences, in the same segment.
// Element i of a cache's keys or values: fp32, or a bf16 cache widened.
inline float kv_at(const float* f32, const uint16_t* b16, int64_t i) { return f32 ? f32[i] : bf16_to_f32(b16[i]); }
inline bool key_visible(const KVView& kv, int b, int i, int j) {
  const int64_t row = int64_t(b) * kv.S;
  return kv.key_valid[row + j] && (!kv.segment || kv.segment[row + j] == kv.segment[row + i]);
}

}  // namespace glmlab::ref
