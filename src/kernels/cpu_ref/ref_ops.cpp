// The fp32 CPU reference of every op: plain loops a reader can check against the facts page. It is the
// oracle every fast path is tested against, op by op. Not fast, and not meant to be.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu_ref/ref_backward.h"
#include "ops/ops.h"
#include "util/error.h"

namespace glmlab {
namespace {

class RefOps final : public Ops {
 public:
  explicit RefOps(RefMutation m) : mut_(m) {}
  std::string_view name() const override { return "cpu-ref"; }

  void embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) override {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < table.cols; ++c) out[n * table.cols + c] = table.at(ids[n], c);
  }

  void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms) override {
    for (int64_t n = 0; n < N; ++n) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += double(x[n * C + c]) * x[n * C + c];
      float r = 1.0f / std::sqrt(float(ss / double(C)) + eps);
      if (inv_rms) inv_rms[n] = r;
      for (int64_t c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] * r * w[c];
    }
  }

  void matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) override {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < W.rows; ++o) {
        double acc = bias ? bias[o] : 0.0;
        for (int64_t i = 0; i < W.cols; ++i) acc += double(x[n * W.cols + i]) * W.at(o, i);
        y[n * W.rows + o] = float(acc);
      }
  }

  void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) override {
    const int R = D / 2;
    for (int64_t n = 0; n < N; ++n)
      for (int h = 0; h < nheads; ++h) {
        float* v = x + n * stride + int64_t(h) * D;
        for (int i = 0; i < R / 2; ++i) {
          float theta = 1.0f / std::pow(base, float(2 * i) / float(R));
          float ang = float(pos[n]) * theta, c = std::cos(ang), s = std::sin(ang);
          // Interleaved pairs (2i, 2i+1); the mutation pairs (i, i + R/2) as LLaMA's rotate_half.
          int a = 2 * i, b = 2 * i + 1;
          if (mut_ == RefMutation::RopeHalfSplit) a = i, b = i + R / 2;
          float x0 = v[a], x1 = v[b];
          v[a] = x0 * c - x1 * s;
          v[b] = x1 * c + x0 * s;
        }
      }
  }

  void attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                 float* out, float* lse) override {
    const float scale = 1.0f / std::sqrt(float(D));
    std::vector<double> sc;
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
          const float* qv = q + int64_t(b * T + t) * q_stride + int64_t(h) * D;
          int g = mut_ == RefMutation::KvGroupModulo ? h % G : h / (H / G);
          int last = P + t;
          sc.assign(size_t(last + 1), -std::numeric_limits<double>::infinity());
          double mx = -std::numeric_limits<double>::infinity();
          for (int j = 0; j <= last; ++j) {
            if (!ref::key_visible(kv, b, last, j)) continue;
            const int64_t kj = ((int64_t(b) * kv.S + j) * G + g) * D;
            double d = 0;
            for (int i = 0; i < D; ++i) d += double(qv[i]) * ref::kv_at(kv.k, kv.k16, kj + i);
            sc[size_t(j)] = d * scale;
            mx = std::max(mx, sc[size_t(j)]);
          }
          float* o = out + int64_t(b * T + t) * H * D + int64_t(h) * D;
          if (mx == -std::numeric_limits<double>::infinity()) {  // no valid key
            for (int i = 0; i < D; ++i) o[i] = 0;
            if (lse) lse[int64_t(b * T + t) * H + h] = -std::numeric_limits<float>::infinity();
            continue;
          }
          double sum = 0;
          for (auto& s : sc) sum += (s = std::exp(s - mx));
          std::vector<double> acc(size_t(D), 0.0);
          for (int j = 0; j <= last; ++j) {
            if (sc[size_t(j)] == 0) continue;
            const int64_t vj = ((int64_t(b) * kv.S + j) * G + g) * D;
            for (int i = 0; i < D; ++i) acc[size_t(i)] += sc[size_t(j)] * ref::kv_at(kv.v, kv.v16, vj + i);
          }
          for (int i = 0; i < D; ++i) o[i] = float(acc[size_t(i)] / sum);
          if (lse) lse[int64_t(b * T + t) * H + h] = float(mx + std::log(sum));
        }
  }

  void swiglu(const float* u, int64_t N, int64_t F, float* out) override {
    const int64_t gate = mut_ == RefMutation::GateUpSwapped ? F : 0, up = F - gate;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t f = 0; f < F; ++f) {
        float g = u[n * 2 * F + gate + f];
        out[n * F + f] = g / (1.0f + std::exp(-g)) * u[n * 2 * F + up + f];
      }
  }

  void add(float* y, const float* x, int64_t count) override {
    for (int64_t i = 0; i < count; ++i) y[i] += x[i];
  }

  // Backward ops: ref_backward.cpp.
  void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) override {
    ref::matmul_backward_input(dy, N, W, dx);
  }
  void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) override {
    ref::matmul_backward_weight(dy, x, N, M, K, dW);
  }
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                        float, float* dx) override {
    ref::rmsnorm_backward(dy, x, w, inv_rms, N, C, dx);
  }
  void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos,
                     float base) override {
    ref::rope_backward(dx, N, stride, nheads, D, pos, base);
  }
  void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) override {
    ref::swiglu_backward(dout, u, N, F, du);
  }
  void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                          int D, const float*, const float*, const float* dout, float* dq, int64_t dq_stride,
                          float* dk, float* dv) override {
    ref::attention_backward(q, q_stride, kv, B, T, P, H, G, D, dout, dq, dq_stride, dk, dv);
  }
  double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) override {
    return ref::cross_entropy(z, labels, N, V, scale);
  }

 private:
  RefMutation mut_;
};

}  // namespace

std::unique_ptr<Ops> make_ref_ops(RefMutation mutation) { return std::make_unique<RefOps>(mutation); }

}  // namespace glmlab
