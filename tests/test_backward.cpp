// Every backward op of both back ends against central finite differences of a double-precision
// forward written here (each of which is first checked against the op's own forward), and the fast
// back end against the reference. Gradients are of L = Σ dy ⊙ f(x) for a random dy.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "model/quantize.h"
#include "ops/ops.h"
#include "test_numeric.h"
#include "util/dtype.h"

namespace glmlab {
namespace {

using test::nerr;
using test::randv;

using Vec = std::vector<double>;

Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// Normalized max error max|a − b| / max|b|.
double nerr(const std::vector<float>& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0, r = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs(a[i] - b[i]));
    r = std::max(r, std::fabs(b[i]));
  }
  return m / r;
}

// Central differences of a scalar function of x (double), step h.
Vec fd_grad(const std::function<double(const Vec&)>& f, Vec x, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}
double dotd(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

class Backward : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ref = make_ref_ops(), cpu = make_ops(Backend::Cpu, false);
  std::vector<Ops*> both() { return {ref.get(), cpu.get()}; }
};

constexpr double kFdTol = 1e-4;  // fp32 op vs double finite differences (normalized max error)

TEST_F(Backward, MatmulInputEveryDtype) {
  const int64_t N = 5, M = 37, K = 29;
  auto w = randv(size_t(M * K), 1);
  auto dy = randv(size_t(N * M), 2);
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<uint8_t> bytes(w.size() * dtype_size(dt));
    std::vector<double> wq(w.size());  // the weights as stored
    for (size_t i = 0; i < w.size(); ++i) {
      if (dt == DType::F32) std::memcpy(bytes.data() + 4 * i, &w[i], 4), wq[i] = w[i];
      if (dt == DType::F16) {
        uint16_t h = f32_to_f16(w[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2), wq[i] = f16_to_f32(h);
      }
      if (dt == DType::BF16) {
        uint16_t h = f32_to_bf16(w[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2), wq[i] = bf16_to_f32(h);
      }
    }
    Matrix W{dt, M, K, bytes.data()};
    auto f = [&](const Vec& x) {
      double L = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < M; ++o)
          for (int64_t i = 0; i < K; ++i) L += dy[size_t(n * M + o)] * wq[size_t(o * K + i)] * x[size_t(n * K + i)];
      return L;
    };
    auto x = to_d(randv(size_t(N * K), 3));
    Vec want = fd_grad(f, x);
    for (Ops* ops : both()) {
      std::vector<float> dx(size_t(N * K), 0.5f);  // accumulates onto what is there
      ops->matmul_backward_input(dy.data(), N, W, dx.data());
      for (auto& v : dx) v -= 0.5f;
      EXPECT_LT(nerr(dx, want), kFdTol) << ops->name() << " " << dtype_name(dt);
    }
  }
}

TEST_F(Backward, MatmulInputFastMatchesRefLarge) {
  // Both widening paths of the fast version (tiles of rows), odd sizes.
  const int64_t N = 67, M = 301, K = 203;
  for (DType dt : {DType::F32, DType::BF16}) {
    auto w = randv(size_t(M * K), 4);
    std::vector<uint8_t> bytes(w.size() * dtype_size(dt));
    for (size_t i = 0; i < w.size(); ++i) {
      if (dt == DType::F32) std::memcpy(bytes.data() + 4 * i, &w[i], 4);
      uint16_t h = f32_to_bf16(w[i]);
      if (dt == DType::BF16) std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
    Matrix W{dt, M, K, bytes.data()};
    auto dy = randv(size_t(N * M), 5);
    std::vector<float> a(size_t(N * K), 0), b(size_t(N * K), 0);
    ref->matmul_backward_input(dy.data(), N, W, a.data());
    cpu->matmul_backward_input(dy.data(), N, W, b.data());
    EXPECT_LT(nerr(b, a), 1e-5) << dtype_name(dt);
  }
}

// With bf16 activations (the fast path of a 16-bit or quantized model), the input gradient of shapes
// whose M and K are multiples of 32 runs on AMX tiles (where the CPU has them): dy rounded to bf16,
// fp32 sums, W repacked pair-interleaved per chunk of rows (1024: M = 1088 takes two chunks). Held to
// the fp32 reference within bf16 rounding of dy; a wrong pair order or tile offset is an O(1) error.
TEST_F(Backward, MatmulInputBf16ActivationsMatchesRef) {
  auto fast = make_ops(Backend::Cpu, true);
  for (int64_t N : {8, 45})
    for (auto [M, K] : {std::pair<int64_t, int64_t>{96, 64}, {1088, 160}})
      for (DType dt : {DType::BF16, DType::F16, DType::Q8, DType::Q4}) {
        auto w = randv(size_t(M * K), 80);
        Matrix src{DType::F32, M, K, w.data()};
        std::vector<uint8_t> bytes;
        QuantizedMatrix qm;
        Matrix W;
        if (dt == DType::Q8 || dt == DType::Q4) {
          qm = quantize(src, dt, 32);
          W = qm.m;
        } else {
          bytes.resize(w.size() * 2);
          for (size_t i = 0; i < w.size(); ++i) {
            uint16_t h = dt == DType::F16 ? f32_to_f16(w[i]) : f32_to_bf16(w[i]);
            std::memcpy(bytes.data() + 2 * i, &h, 2);
          }
          W = Matrix{dt, M, K, bytes.data()};
        }
        auto dy = randv(size_t(N * M), 81);
        std::vector<float> a(size_t(N * K), 0.25f), b(size_t(N * K), 0.25f);  // accumulates
        ref->matmul_backward_input(dy.data(), N, W, a.data());
        fast->matmul_backward_input(dy.data(), N, W, b.data());
        EXPECT_LT(nerr(b, a), 1e-2) << dtype_name(dt) << " N " << N << " M " << M << " K " << K;
      }
}

TEST_F(Backward, MatmulWeight) {
  const int64_t N = 7, M = 6, K = 11;
  auto x = randv(size_t(N * K), 6);
  auto dy = randv(size_t(N * M), 7);
  auto f = [&](const Vec& w) {
    double L = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) L += dy[size_t(n * M + m)] * w[size_t(m * K + k)] * x[size_t(n * K + k)];
    return L;
  };
  Vec want = fd_grad(f, to_d(randv(size_t(M * K), 8)));
  for (Ops* ops : both()) {
    std::vector<float> dW(size_t(M * K), 0);
    ops->matmul_backward_weight(dy.data(), x.data(), N, M, K, dW.data());
    EXPECT_LT(nerr(dW, want), kFdTol) << ops->name();
  }
}

TEST_F(Backward, Rmsnorm) {
  const int64_t N = 4, C = 24;
  const float eps = 1e-5f;
  auto x = randv(size_t(N * C), 9, 2.0f);
  auto w = randv(size_t(C), 10, 1.5f);
  auto dy = randv(size_t(N * C), 11);
  auto fwd = [&](const Vec& xv, Vec& y) {
    y.assign(xv.size(), 0);
    for (int64_t n = 0; n < N; ++n) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += xv[size_t(n * C + c)] * xv[size_t(n * C + c)];
      double r = 1 / std::sqrt(ss / C + eps);
      for (int64_t c = 0; c < C; ++c) y[size_t(n * C + c)] = xv[size_t(n * C + c)] * r * w[size_t(c)];
    }
  };
  Vec want = fd_grad([&](const Vec& xv) { Vec y; fwd(xv, y); return dotd(to_d(dy), y); }, to_d(x));
  Vec yd;
  fwd(to_d(x), yd);
  for (Ops* ops : both()) {
    std::vector<float> y(x.size()), inv(static_cast<size_t>(N)), dx(x.size(), 0);
    ops->rmsnorm(x.data(), w.data(), N, C, eps, y.data(), inv.data());
    EXPECT_LT(nerr(y, yd), 1e-6) << ops->name();
    ops->rmsnorm_backward(dy.data(), x.data(), w.data(), inv.data(), N, C, eps, dx.data());
    EXPECT_LT(nerr(dx, want), kFdTol) << ops->name();
  }
}

TEST_F(Backward, Rope) {
  const int64_t N = 3, H = 3, D = 16, stride = H * D + 5;  // a row wider than the heads it rotates
  const float base = 500.0f;
  std::vector<int32_t> pos = {0, 7, 130};
  auto x = randv(size_t(N * stride), 12);
  auto dy = randv(size_t(N * stride), 13);
  auto fwd = [&](const Vec& xv) {
    Vec y = xv;
    const int R = D / 2;
    for (int64_t n = 0; n < N; ++n)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < R / 2; ++i) {
          // the angle exactly as the ops compute it (fp32), the rotation in double
          float theta = 1.0f / std::pow(base, float(2 * i) / float(R));
          float ang = float(pos[size_t(n)]) * theta;
          double c = std::cos(ang), s = std::sin(ang);
          size_t a = size_t(n * stride + h * D + 2 * i);
          y[a] = xv[a] * c - xv[a + 1] * s;
          y[a + 1] = xv[a + 1] * c + xv[a] * s;
        }
    return y;
  };
  Vec want = fd_grad([&](const Vec& xv) { return dotd(to_d(dy), fwd(xv)); }, to_d(x));
  for (Ops* ops : both()) {
    std::vector<float> y = x;
    ops->rope(y.data(), N, stride, int(H), int(D), pos.data(), base);
    EXPECT_LT(nerr(y, fwd(to_d(x))), 1e-5) << ops->name();
    std::vector<float> g = dy;
    ops->rope_backward(g.data(), N, stride, int(H), int(D), pos.data(), base);
    EXPECT_LT(nerr(g, want), kFdTol) << ops->name();
  }
}

TEST_F(Backward, Swiglu) {
  const int64_t N = 3, F = 10;
  auto u = randv(size_t(N * 2 * F), 14, 4.0f);
  auto dy = randv(size_t(N * F), 15);
  auto fwd = [&](const Vec& uv) {
    Vec y(size_t(N * F));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t f = 0; f < F; ++f) {
        double g = uv[size_t(n * 2 * F + f)];
        y[size_t(n * F + f)] = g / (1 + std::exp(-g)) * uv[size_t(n * 2 * F + F + f)];
      }
    return y;
  };
  Vec want = fd_grad([&](const Vec& uv) { return dotd(to_d(dy), fwd(uv)); }, to_d(u));
  for (Ops* ops : both()) {
    std::vector<float> y(size_t(N * F)), du(u.size(), 0);
    ops->swiglu(u.data(), N, F, y.data());
    EXPECT_LT(nerr(y, fwd(to_d(u))), 1e-6) << ops->name();
    ops->swiglu_backward(dy.data(), u.data(), N, F, du.data());
    EXPECT_LT(nerr(du, want), kFdTol) << ops->name();
  }
}

// Attention setup: B sequences of T new tokens after P cached ones, cache capacity S = P + T.
struct AttnCase {
  int B, T, P, H, G, D;
  std::vector<uint8_t> valid;   // [B, S]
  std::vector<int32_t> seg;     // [B, S] or empty
  int S() const { return P + T; }
};

// Double forward: q [B·T, H·D] (stride H·D), k/v [B, S, G, D] → out [B·T, H·D].
Vec attn_fwd(const AttnCase& c, const Vec& q, const Vec& k, const Vec& v) {
  const int S = c.S();
  Vec out(size_t(c.B * c.T * c.H * c.D), 0.0);
  for (int b = 0; b < c.B; ++b)
    for (int t = 0; t < c.T; ++t)
      for (int h = 0; h < c.H; ++h) {
        const int g = h / (c.H / c.G), i = c.P + t;
        std::vector<double> s(size_t(i + 1), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= i; ++j) {
          if (!c.valid[size_t(b * S + j)]) continue;
          if (!c.seg.empty() && c.seg[size_t(b * S + j)] != c.seg[size_t(b * S + i)]) continue;
          double d = 0;
          for (int x = 0; x < c.D; ++x)
            d += q[size_t(((b * c.T + t) * c.H + h) * c.D + x)] * k[size_t(((b * S + j) * c.G + g) * c.D + x)];
          s[size_t(j)] = d / std::sqrt(double(c.D));
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int j = 0; j <= i; ++j)
          for (int x = 0; x < c.D; ++x)
            out[size_t(((b * c.T + t) * c.H + h) * c.D + x)] +=
                s[size_t(j)] / sum * v[size_t(((b * S + j) * c.G + g) * c.D + x)];
      }
  return out;
}

void check_attention(Ops* ref, Ops* cpu, const AttnCase& c, uint32_t seed) {
  const int S = c.S();
  auto q = randv(size_t(c.B * c.T * c.H * c.D), seed, 1.5f);
  auto k = randv(size_t(c.B * S * c.G * c.D), seed + 1, 1.5f);
  auto v = randv(size_t(c.B * S * c.G * c.D), seed + 2);
  auto dy = randv(q.size(), seed + 3);
  KVView kv{k.data(), v.data(), c.valid.data(), S, c.seg.empty() ? nullptr : c.seg.data()};
  const Vec qd = to_d(q), kd = to_d(k), vd = to_d(v), dyd = to_d(dy);
  Vec out_d = attn_fwd(c, qd, kd, vd);
  Vec gq = fd_grad([&](const Vec& x) { return dotd(dyd, attn_fwd(c, x, kd, vd)); }, qd);
  Vec gk = fd_grad([&](const Vec& x) { return dotd(dyd, attn_fwd(c, qd, x, vd)); }, kd);
  Vec gv = fd_grad([&](const Vec& x) { return dotd(dyd, attn_fwd(c, qd, kd, x)); }, vd);
  std::vector<float> dq_ref, dk_ref, dv_ref;
  for (Ops* ops : {ref, cpu}) {
    std::vector<float> out(q.size()), lse(size_t(c.B * c.T * c.H));
    ops->attention(q.data(), c.H * c.D, kv, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data());
    EXPECT_LT(nerr(out, out_d), 1e-5) << ops->name() << " forward";
    std::vector<float> dq(q.size(), 0), dk(k.size(), 0), dv(v.size(), 0);
    ops->attention_backward(q.data(), c.H * c.D, kv, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data(), dy.data(),
                            dq.data(), c.H * c.D, dk.data(), dv.data());
    EXPECT_LT(nerr(dq, gq), kFdTol) << ops->name() << " dq";
    EXPECT_LT(nerr(dk, gk), kFdTol) << ops->name() << " dk";
    EXPECT_LT(nerr(dv, gv), kFdTol) << ops->name() << " dv";
    if (ops == ref) {
      dq_ref = dq, dk_ref = dk, dv_ref = dv;
    } else {
      EXPECT_LT(nerr(dq, dq_ref), 1e-5) << "fast vs ref dq";
      EXPECT_LT(nerr(dk, dk_ref), 1e-5) << "fast vs ref dk";
      EXPECT_LT(nerr(dv, dv_ref), 1e-5) << "fast vs ref dv";
    }
  }
}

TEST_F(Backward, AttentionGqaWithPadding) {
  AttnCase c{2, 6, 0, 4, 2, 8, {}, {}};
  c.valid = {0, 0, 1, 1, 1, 1,   // left padding: 2 pads
             1, 1, 1, 1, 1, 1};
  check_attention(ref.get(), cpu.get(), c, 20);
}

TEST_F(Backward, AttentionPackedSegments) {
  // Row 0 packs three samples (lengths 2, 3, 2) and one trailing pad; row 1 one sample.
  AttnCase c{2, 8, 0, 6, 3, 4, {}, {}};
  c.valid = {1, 1, 1, 1, 1, 1, 1, 0,
             1, 1, 1, 1, 1, 1, 1, 1};
  c.seg = {0, 0, 1, 1, 1, 2, 2, 3,
           0, 0, 0, 0, 0, 0, 0, 0};
  check_attention(ref.get(), cpu.get(), c, 30);
}

TEST_F(Backward, AttentionAfterCache) {
  AttnCase c{1, 3, 4, 2, 1, 8, {}, {}};
  c.valid = {0, 1, 1, 1, 1, 1, 1};
  check_attention(ref.get(), cpu.get(), c, 40);
}

TEST_F(Backward, AttentionAcrossQueryBlocks) {
  // 37 new tokens after a 3-slot cache: the fast path's blocks of 16 query tokens (three of them, the
  // last partial), two packed samples with a pad between them, a pad in the cache, 2 heads a group.
  AttnCase c{1, 37, 3, 4, 2, 4, {}, {}};
  c.valid.assign(40, 1);
  c.valid[1] = c.valid[24] = 0;
  c.seg.assign(40, 0);
  for (int j = 24; j < 40; ++j) c.seg[size_t(j)] = j < 25 ? 1 : 2;
  check_attention(ref.get(), cpu.get(), c, 45);
}

TEST_F(Backward, AttentionSegmentsChangeTheForward) {
  // The segment mask must matter: the same inputs with and without it give different outputs, and
  // a packed row equals its samples run separately.
  const int T = 5, H = 2, G = 1, D = 4;
  auto q = randv(size_t(T * H * D), 50), k = randv(size_t(T * G * D), 51), v = randv(size_t(T * G * D), 52);
  std::vector<uint8_t> valid(T, 1);
  std::vector<int32_t> seg = {0, 0, 0, 1, 1};
  for (Ops* ops : both()) {
    std::vector<float> packed(q.size()), plain(q.size()), second(size_t(2 * H * D));
    ops->attention(q.data(), H * D, KVView{k.data(), v.data(), valid.data(), T, seg.data()}, 1, T, 0, H, G, D,
                   packed.data(), nullptr);
    ops->attention(q.data(), H * D, KVView{k.data(), v.data(), valid.data(), T}, 1, T, 0, H, G, D, plain.data(),
                   nullptr);
    ops->attention(q.data() + 3 * H * D, H * D, KVView{k.data() + 3 * D, v.data() + 3 * D, valid.data(), 2}, 1, 2, 0,
                   H, G, D, second.data(), nullptr);
    EXPECT_GT(nerr(packed, plain), 1e-3) << ops->name();
    std::vector<float> tail(packed.begin() + 3 * H * D, packed.end());
    EXPECT_LT(nerr(tail, second), 1e-6) << ops->name();
  }
}

TEST_F(Backward, CrossEntropyMaskedMean) {
  const int64_t N = 5, V = 13;
  auto z = randv(size_t(N * V), 60, 3.0f);
  std::vector<int32_t> labels = {3, -100, 0, 12, -100};
  const double count = 3;
  auto loss_of = [&](const Vec& zv) {
    double L = 0;
    for (int64_t n = 0; n < N; ++n) {
      if (labels[size_t(n)] == -100) continue;
      double mx = -1e300, s = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, zv[size_t(n * V + v)]);
      for (int64_t v = 0; v < V; ++v) s += std::exp(zv[size_t(n * V + v)] - mx);
      L += mx + std::log(s) - zv[size_t(n * V + labels[size_t(n)])];
    }
    return L / count;
  };
  Vec want = fd_grad(loss_of, to_d(z));
  const double want_loss = loss_of(to_d(z));
  std::vector<float> g_ref;
  for (Ops* ops : both()) {
    std::vector<float> g = z;
    double sum = ops->cross_entropy(g.data(), labels.data(), N, V, float(1 / count));
    EXPECT_NEAR(sum / count, want_loss, 1e-5 * want_loss) << ops->name();
    EXPECT_LT(nerr(g, want), kFdTol) << ops->name();
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(g[size_t(1 * V + v)], 0.0f) << "ignored rows get no gradient";
    if (ops == ref.get()) g_ref = g;
    else EXPECT_LT(nerr(g, g_ref), 1e-5);
  }
}

TEST_F(Backward, CrossEntropyRejectsLabelsOutsideTheVocabulary) {
  std::vector<float> z(8, 0.0f);
  std::vector<int32_t> labels = {8};
  for (Ops* ops : both()) EXPECT_THROW(ops->cross_entropy(z.data(), labels.data(), 1, 8, 1.0f), std::exception);
}

// Quantized weights (QAT: the adapter trains on an int8/int4 base): the input gradient reads the
// dequantized weights, q · scale, in both back ends.
TEST_F(Backward, MatmulInputQuantizedWeights) {
  const int64_t N = 19, M = 70, K = 96;
  auto w = randv(size_t(M * K), 70);
  Matrix src{DType::F32, M, K, w.data()};
  auto dy = randv(size_t(N * M), 71);
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t group : {int64_t(0), int64_t(32)}) {
      QuantizedMatrix qm = quantize(src, q, group);
      std::vector<float> dense(w.size());
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < K; ++c) dense[size_t(r * K + c)] = qm.m.at(r, c);
      Matrix D{DType::F32, M, K, dense.data()};
      std::vector<float> want(size_t(N * K), 0), a(size_t(N * K), 0), b(size_t(N * K), 0);
      ref->matmul_backward_input(dy.data(), N, D, want.data());
      ref->matmul_backward_input(dy.data(), N, qm.m, a.data());
      cpu->matmul_backward_input(dy.data(), N, qm.m, b.data());
      EXPECT_LT(nerr(a, want), 1e-6) << dtype_name(q) << " group " << group;
      EXPECT_LT(nerr(b, want), 1e-5) << dtype_name(q) << " group " << group;
      std::vector<float> exact(size_t(N * K), 0);  // with the unquantized weights: must differ
      ref->matmul_backward_input(dy.data(), N, src, exact.data());
      EXPECT_GT(nerr(b, exact), 1e-4) << dtype_name(q);
    }
}
}  // namespace
}  // namespace glmlab
