// The fp32 reference of the backward ops: plain loops with double accumulation, written from the
// chain rule of each forward in ref_ops.cpp. The oracle the fast back end (kernels/cpu/cpu_backward.cpp)
// and the finite-difference tests (tests/test_backward.cpp) check against.
#include "kernels/cpu_ref/ref_backward.h"

#include <cmath>
#include <limits>
#include <vector>

#include "util/error.h"

namespace glmlab::ref {

void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) {
  // dx[n, i] += Σ_o dy[n, o] · W[o, i]
  std::vector<double> acc(size_t(W.cols));
  for (int64_t n = 0; n < N; ++n) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t o = 0; o < W.rows; ++o) {
      const double g = dy[n * W.rows + o];
      if (g == 0) continue;
      for (int64_t i = 0; i < W.cols; ++i) acc[size_t(i)] += g * W.at(o, i);
    }
    for (int64_t i = 0; i < W.cols; ++i) dx[n * W.cols + i] += float(acc[size_t(i)]);
  }
}

void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) {
  // dW[m, k] += Σ_n dy[n, m] · x[n, k]
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += double(dy[n * M + m]) * x[n * K + k];
      dW[m * K + k] += float(acc);
    }
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx) {
  // y_c = x_c · r · w_c with r = (mean(x²) + eps)^(−1/2), ∂r/∂x_c = −r³ x_c / C:
  // dx_c = r · w_c · dy_c − x_c · r³ / C · Σ_j dy_j w_j x_j
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* g = dy + n * C;
    const double r = inv_rms[n];
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += double(g[c]) * w[c] * xr[c];
    const double k = r * r * r * dot / double(C);
    for (int64_t c = 0; c < C; ++c) dx[n * C + c] += float(r * w[c] * g[c] - xr[c] * k);
  }
}

void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) {
  // The forward rotates each pair by [[c, −s], [s, c]]; its transpose is the rotation by −angle.
  // Angles exactly as ref_ops.cpp computes them.
  const int R = D / 2;
  for (int64_t n = 0; n < N; ++n)
    for (int h = 0; h < nheads; ++h) {
      float* v = dx + n * stride + int64_t(h) * D;
      for (int i = 0; i < R / 2; ++i) {
        float theta = 1.0f / std::pow(base, float(2 * i) / float(R));
        float ang = float(pos[n]) * theta, c = std::cos(ang), s = std::sin(ang);
        float g0 = v[2 * i], g1 = v[2 * i + 1];
        v[2 * i] = g0 * c + g1 * s;
        v[2 * i + 1] = g1 * c - g0 * s;
      }
    }
}

void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) {
  // out = silu(g) · p, silu(g) = g·σ(g), silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const double g = u[n * 2 * F + f], p = u[n * 2 * F + F + f], d = dout[n * F + f];
      const double sig = 1.0 / (1.0 + std::exp(-g));
      du[n * 2 * F + f] += float(d * p * sig * (1.0 + g * (1.0 - sig)));
      du[n * 2 * F + F + f] += float(d * g * sig);
    }
}

void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                        int D, const float* dout, float* dq, int64_t dq_stride, float* dk, float* dv) {
  // Recomputes the softmax from scratch in double (independent of the forward's out and lse):
  // p_j = softmax(s)_j, dp_j = dout·v_j, ds_j = p_j (dp_j − Σ_i p_i dp_i);
  // dq = scale Σ_j ds_j k_j, dk_j += scale ds_j q, dv_j += p_j dout.
  if (kv.bf16()) fail("attention backward: the KV cache must be fp32 (a bf16 cache is for inference)");
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> p, dp;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const int g = h / (H / G), last = P + t;
        const float* qv = q + int64_t(b * T + t) * q_stride + int64_t(h) * D;
        const float* go = dout + int64_t(b * T + t) * H * D + int64_t(h) * D;
        p.assign(size_t(last + 1), 0.0);
        dp.assign(size_t(last + 1), 0.0);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= last; ++j) {
          if (!key_visible(kv, b, last, j)) continue;
          const float* kj = kv.k + ((int64_t(b) * kv.S + j) * G + g) * D;
          double s = 0;
          for (int i = 0; i < D; ++i) s += double(qv[i]) * kj[i];
          p[size_t(j)] = s * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // no visible key: output was 0
        double sum = 0;
        for (int j = 0; j <= last; ++j)
          if (key_visible(kv, b, last, j)) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        double pdp = 0;
        for (int j = 0; j <= last; ++j) {
          if (!key_visible(kv, b, last, j)) continue;
          p[size_t(j)] /= sum;
          const float* vj = kv.v + ((int64_t(b) * kv.S + j) * G + g) * D;
          double d = 0;
          for (int i = 0; i < D; ++i) d += double(go[i]) * vj[i];
          dp[size_t(j)] = d;
          pdp += p[size_t(j)] * d;
        }
        float* dqv = dq + int64_t(b * T + t) * dq_stride + int64_t(h) * D;
        for (int j = 0; j <= last; ++j) {
          if (!key_visible(kv, b, last, j)) continue;
          const double ds = p[size_t(j)] * (dp[size_t(j)] - pdp) * scale;
          const int64_t kvo = ((int64_t(b) * kv.S + j) * G + g) * D;
          for (int i = 0; i < D; ++i) {
            dqv[i] += float(ds * kv.k[kvo + i]);
            dk[kvo + i] += float(ds * qv[i]);
            dv[kvo + i] += float(p[size_t(j)] * go[i]);
          }
        }
      }
}

double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) {
  double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    float* row = z + n * V;
    const int32_t y = labels[n];
    if (y == -100) {
      std::fill(row, row + V, 0.0f);
      continue;
    }
    if (y < 0 || y >= V) fail("cross-entropy: label {} of row {} is outside the vocabulary [0, {})", y, n, V);
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
    const double lse = mx + std::log(sum);
    loss += lse - row[y];
    for (int64_t v = 0; v < V; ++v) row[v] = float(scale * (std::exp(double(row[v]) - lse) - (v == y ? 1.0 : 0.0)));
  }
  return loss;
}

}  // namespace glmlab::ref
