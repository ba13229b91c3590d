// Host implementations of the Ops helpers that every back end on host memory shares.
#include <algorithm>
#include <cmath>

#include "ops/ops.h"

namespace glmlab {

KVView kv_row(const KVView& kv, int b, int G, int D) {
  const int64_t off = int64_t(b) * kv.S * G * D;
  KVView r = kv;
  if (kv.k) r.k = kv.k + off, r.v = kv.v + off;
  if (kv.k16) r.k16 = kv.k16 + off, r.v16 = kv.v16 + off;
  r.key_valid = kv.key_valid + int64_t(b) * kv.S;
  if (kv.segment) r.segment = kv.segment + int64_t(b) * kv.S;
  return r;
}

void Ops::attention_seqs(const float* q, int64_t q_stride, const KVView& kv, const AttnSeq* seqs, int n, int H, int G,
                         int D, float* out, float* lse) {
  for (int i = 0; i < n; ++i) {
    const AttnSeq& s = seqs[i];
    attention(q + s.first * q_stride, q_stride, kv_row(kv, s.row, G, D), 1, s.T, s.P, H, G, D,
              out + s.first * int64_t(H) * D, lse ? lse + s.first * H : nullptr);
  }
}

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

void adamw_update(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    value[i] *= s.decay;
    m[i] += s.w1 * (g - m[i]);  // torch: exp_avg.lerp_(grad, 1 − β1)
    v[i] = v[i] * s.b2 + s.w2 * g * g;
    const float denom = std::sqrt(v[i]) / s.bc2_sqrt + s.eps;
    value[i] -= s.step_size * (m[i] / denom);
  }
}

void Ops::adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s) {
  adamw_update(value, grad, m, v, n, s);
}

double Ops::sum_squares(const float* x, int64_t n) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  return ss;
}

void Ops::scale(float* x, int64_t n, double c) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(double(x[i]) * c);
}

void Ops::dropout(const float* x, int64_t n, uint64_t key, float p, float* out) {
  const float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; ++i) out[i] = dropout_kept(key, i, p) ? x[i] * keep : 0.0f;
}

void Ops::mul_cols(float* x, int64_t N, int64_t M, const float* v) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) x[n * M + m] *= v[m];
}

void Ops::col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) out[m] += a[n * M + m] * b[n * M + m];
}

bool cuda_built() {
#ifdef GLMLAB_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace glmlab
