// The CUDA back end's backward ops, adapter ops and AdamW held to the CPU reference on the device
// (training: model/device_trainer.h). Every test starts with SKIP_WITHOUT_GPU() and is skipped with
// CUDA's own reason where there is no usable GPU (CI). Tolerances: see cuda_test_util.h and test_cuda.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#ifdef GLMLAB_HAVE_CUDA
#include "cuda_test_util.h"
#include "model/adapters.h"
#include "model/optimizer.h"
#include "test_util.h"

namespace glmlab {
namespace {
using namespace cuda_test;
using test::error_of;

// ---- backward ops and the optimizer -------------------------------------------------------------------
// Every gradient output starts with values in it (gradients ACCUMULATE), and NaN-filled inputs of the
// right size catch reads past the end only where a NaN would reach an output.

TEST(CudaBackward, RmsnormRopeSwigluAccumulate) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  for (int64_t C : {4096, 100, 7}) {
    SCOPED_TRACE(C);
    const int64_t N = 6;
    auto x = random_floats(size_t(N * C), 51, -3, 3), w = random_floats(size_t(C), 52, 0.5f, 1.5f);
    auto dy = random_floats(x.size(), 53), dx = random_floats(x.size(), 54);
    std::vector<float> y(x.size()), r(N);
    ref->rmsnorm(x.data(), w.data(), N, C, 1e-5f, y.data(), r.data());
    auto want = dx;
    ref->rmsnorm_backward(dy.data(), x.data(), w.data(), r.data(), N, C, 1e-5f, want.data());
    auto d_dy = g.put(dy), d_x = g.put(x), d_w = g.put(w), d_r = g.put(r), d_dx = g.put(dx);
    g.ops->rmsnorm_backward(d_dy.f(), d_x.f(), d_w.f(), d_r.f(), N, C, 1e-5f, d_dx.f());
    EXPECT_LT(normalized_error(g.get<float>(d_dx, dx.size()), want), kTolF32);
  }
  for (int D : {128, 64, 16}) {
    SCOPED_TRACE(D);
    const int64_t N = 6, heads = 5, stride = heads * D + 8;
    auto x = random_floats(size_t(N * stride), 61);
    const std::vector<int32_t> pos = {0, 1, 17, 500, 4095, 8191};
    auto want = x;
    ref->rope_backward(want.data(), N, stride, int(heads), D, pos.data(), 10000.0f);
    auto dx = g.put(x), dp = g.put(pos);
    g.ops->rope_backward(dx.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    const auto got = g.get<float>(dx, x.size());
    EXPECT_LT(normalized_error(got, want), kTolF32);
    // rope then its backward is the identity (the transpose of a rotation is its inverse).
    auto fw = g.put(x);
    g.ops->rope(fw.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    g.ops->rope_backward(fw.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    EXPECT_LT(normalized_error(g.get<float>(fw, x.size()), x), 1e-5);
  }
  const int64_t N = 7, F = 300;
  auto u = random_floats(size_t(N * 2 * F), 71, -6, 6), dout = random_floats(size_t(N * F), 72);
  auto du = random_floats(u.size(), 73), want = du;
  ref->swiglu_backward(dout.data(), u.data(), N, F, want.data());
  auto d_u = g.put(u), d_dout = g.put(dout), d_du = g.put(du);
  g.ops->swiglu_backward(d_dout.f(), d_u.f(), N, F, d_du.f());
  EXPECT_LT(normalized_error(g.get<float>(d_du, du.size()), want), kTolF32);
}

TEST(CudaBackward, CrossEntropyLossGradientIgnoredRowsAndBadLabels) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const int64_t N = 9, V = 65024;
  auto z = random_floats(size_t(N * V), 81, -8, 8);
  z[size_t(3 * V + 77)] = 40.0f;  // a dominant logit: softmax ≈ onehot
  const std::vector<int32_t> labels = {0, 65023, -100, 77, 12345, -100, 5, 77, 40000};
  auto want = z;
  const double want_loss = make_ref_ops()->cross_entropy(want.data(), labels.data(), N, V, 0.25f);
  auto dz = g.put(z), dl = g.put(labels);
  const double got_loss = g.ops->cross_entropy(dz.f(), dl.get<int32_t>(), N, V, 0.25f);
  EXPECT_NEAR(got_loss, want_loss, 1e-6 * std::fabs(want_loss));
  const auto got = g.get<float>(dz, z.size());
  EXPECT_LT(normalized_error(got, want), kTolF32);
  for (int64_t v = 0; v < V; ++v) ASSERT_EQ(got[size_t(2 * V + v)], 0.0f) << "ignored row 2, logit " << v;
  // A label outside the vocabulary is an Error naming it and its row, as on the host.
  auto bad = labels;
  bad[4] = 65024;
  bad[6] = -7;
  auto db = g.put(bad), dz2 = g.put(z);
  const std::string e = error_of([&] { g.ops->cross_entropy(dz2.f(), db.get<int32_t>(), N, V, 1.0f); });
  EXPECT_CONTAINS(e, "label 65024 of row 4 is outside the vocabulary [0, 65024)");
}

const std::vector<MatmulCase> kGradCases = {{37, 203, 130, 32, false}, {1, 64, 64, 64, false},
                                            {130, 512, 1024, 128, false}, {33, 96, 160, 0, false}};

TEST(CudaBackward, MatmulInputGradientEveryDtypeBothPaths) {
  SKIP_WITHOUT_GPU();
  auto ref = make_ref_ops();
  for (bool bf16 : {false, true}) {
    Gpu g(bf16);
    SCOPED_TRACE(bf16 ? "bf16 activations" : "fp32 activations");
    std::vector<cuda::BackwardPath> paths = {cuda::BackwardPath::Simple, cuda::BackwardPath::Auto};
    if (g.ops->has_cublas()) paths.push_back(cuda::BackwardPath::Cublas);
    uint64_t seed = 1100;
    for (auto path : paths)
      for (DType dt : kAllDtypes)
        for (const auto& c : kGradCases) {
          SCOPED_TRACE(testing::Message() << "path " << int(path) << " " << dname(dt) << " N " << c.N << " M " << c.M
                                          << " K " << c.K << " group " << c.group);
          auto W = make_matrix(g, dt, c.M, c.K, c.group, seed);
          auto dy = random_floats(size_t(c.N * c.M), seed + 1), dx = random_floats(size_t(c.N * c.K), seed + 2);
          auto want = dx;
          ref->matmul_backward_input(dy.data(), c.N, W->host, want.data());
          auto d_dy = g.put(dy), d_dx = g.put(dx);
          g.ops->matmul_backward_input_with(path, d_dy.f(), c.N, W->dev, d_dx.f());
          const bool rounded = bf16 && dt != DType::F32 && path != cuda::BackwardPath::Simple && g.ops->has_cublas();
          EXPECT_LT(normalized_error(g.get<float>(d_dx, dx.size()), want), rounded ? kTolBf16 : kTolF32);
          seed += 3;
        }
  }
}

TEST(CudaBackward, MatmulWeightGradientBothPaths) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  std::vector<cuda::BackwardPath> paths = {cuda::BackwardPath::Simple, cuda::BackwardPath::Auto};
  if (g.ops->has_cublas()) paths.push_back(cuda::BackwardPath::Cublas);
  uint64_t seed = 1300;
  // LoRA's shapes (r 8 against 4096 and 13696) and odd ones.
  for (auto path : paths)
    for (auto [N, M, K] : std::vector<std::array<int64_t, 3>>{{37, 8, 203}, {130, 4608, 8}, {520, 8, 13696}, {1, 3, 5}}) {
      SCOPED_TRACE(testing::Message() << "path " << int(path) << " N " << N << " M " << M << " K " << K);
      auto dy = random_floats(size_t(N * M), seed), x = random_floats(size_t(N * K), seed + 1);
      auto dW = random_floats(size_t(M * K), seed + 2), want = dW;
      make_ref_ops()->matmul_backward_weight(dy.data(), x.data(), N, M, K, want.data());
      auto d_dy = g.put(dy), d_x = g.put(x), d_dW = g.put(dW);
      g.ops->matmul_backward_weight_with(path, d_dy.f(), d_x.f(), N, M, K, d_dW.f());
      EXPECT_LT(normalized_error(g.get<float>(d_dW, dW.size()), want), kTolF32);
      seed += 3;
    }
}

// The forward on the host (reference out and lse), the backward on both; every case of the forward's
// list: causal prefill, P > 0, GQA 4 and 16, D 16/64/128, key holes, a sequence without keys, segments.
TEST(CudaBackward, AttentionAgainstTheReference) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  uint64_t seed = 1500;
  for (const auto& c : kAttnCases) {
    SCOPED_TRACE(c.what);
    AttnData in(c, seed);
    const int64_t qstride = in.qstride, dqstride = int64_t(c.H) * c.D + 8;
    auto &q = in.q, &k = in.k, &v = in.v;
    auto &valid = in.valid;
    auto& seg = in.seg;
    const size_t kvn = k.size();
    KVView hk = in.host(c.S);
    const size_t rows = size_t(c.B) * c.T;
    std::vector<float> out(rows * c.H * c.D), lse(rows * c.H);
    ref->attention(q.data(), qstride, hk, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data());
    auto dout = random_floats(out.size(), seed + 3);
    auto dq = random_floats(rows * size_t(dqstride), seed + 4);
    auto dk = random_floats(kvn, seed + 5), dv = random_floats(kvn, seed + 6);
    auto want_dq = dq, want_dk = dk, want_dv = dv;
    ref->attention_backward(q.data(), qstride, hk, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data(), dout.data(),
                            want_dq.data(), dqstride, want_dk.data(), want_dv.data());
    auto d_q = g.put(q), d_k = g.put(k), d_v = g.put(v), d_valid = g.put(valid), d_seg = g.put(seg);
    auto d_out = g.put(out), d_lse = g.put(lse), d_dout = g.put(dout);
    auto d_dq = g.put(dq), d_dk = g.put(dk), d_dv = g.put(dv);
    KVView dkv{d_k.f(), d_v.f(), d_valid.get<uint8_t>(), c.S, c.segments ? d_seg.get<int32_t>() : nullptr};
    g.ops->attention_backward(d_q.f(), qstride, dkv, c.B, c.T, c.P, c.H, c.G, c.D, d_out.f(), d_lse.f(), d_dout.f(),
                              d_dq.f(), dqstride, d_dk.f(), d_dv.f());
    // Each gradient's error against the size of what the op added (the accumulated start values are O(1)).
    auto added = [](const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& start) {
      std::vector<float> a(got.size()), b(want.size());
      for (size_t i = 0; i < got.size(); ++i) a[i] = got[i] - start[i], b[i] = want[i] - start[i];
      return normalized_error(a, b);
    };
    EXPECT_LT(added(g.get<float>(d_dq, dq.size()), want_dq, dq), 1e-4) << "dq";
    EXPECT_LT(added(g.get<float>(d_dk, dk.size()), want_dk, dk), 1e-4) << "dk";
    EXPECT_LT(added(g.get<float>(d_dv, dv.size()), want_dv, dv), 1e-4) << "dv";
    seed += 10;
  }
}

// The adapters' helpers on a device trainer: dropout masks, VeRA's column scalings and λ gradients give
// the host's bits (the same hash, the same fp32 operations in the same order).
TEST(CudaOps, AdapterDropoutAndVeraScalingsGiveTheHostBits) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  const int64_t N = 37, M = 1001;
  auto x = random_floats(size_t(N * M), 301), v = random_floats(size_t(M), 302), b = random_floats(size_t(N * M), 303);
  for (float p : {0.1f, 0.5f}) {
    std::vector<float> want(x.size());
    ref->dropout(x.data(), N * M, 0x1234567890abcdefULL, p, want.data());
    auto dx = g.put(x);
    DeviceBuffer out(*g.dev, x.size() * 4, "out");
    g.ops->dropout(dx.f(), N * M, 0x1234567890abcdefULL, p, out.f());
    EXPECT_EQ(g.get<float>(out, x.size()), want) << "p " << p;
    g.ops->dropout(dx.f(), N * M, 0x1234567890abcdefULL, p, dx.f());  // in place
    EXPECT_EQ(g.get<float>(dx, x.size()), want) << "in place, p " << p;
  }
  auto want = x;
  ref->mul_cols(want.data(), N, M, v.data());
  auto dx = g.put(x), dv = g.put(v), db = g.put(b);
  g.ops->mul_cols(dx.f(), N, M, dv.f());
  EXPECT_EQ(g.get<float>(dx, x.size()), want);
  auto acc = random_floats(size_t(M), 304), want_acc = acc;
  ref->col_dot(x.data(), b.data(), N, M, want_acc.data());
  auto dx2 = g.put(x), dacc = g.put(acc);
  g.ops->col_dot(dx2.f(), db.f(), N, M, dacc.f());
  EXPECT_EQ(g.get<float>(dacc, size_t(M)), want_acc);
}

// Three AdamW steps on the device give the host's bits (the same fp32 operations in the same order), and
// the norm and scale helpers give the host's clipping.
TEST(CudaOptimizer, AdamWGivesTheHostBitsAndTheNormClips) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const int64_t n = 100003;
  auto p = random_floats(size_t(n), 91), m = std::vector<float>(size_t(n), 0.0f), v = m;
  auto d_p = g.put(p), d_m = g.put(m), d_v = g.put(v);
  AdamWConfig cfg;
  cfg.weight_decay = 0.01;
  for (int t = 1; t <= 3; ++t) {
    auto grad = random_floats(size_t(n), 92 + uint64_t(t), -0.1f, 0.1f);
    const AdamWStep s = adamw_step(cfg, t, 1e-2 * t);
    adamw_update(p.data(), grad.data(), m.data(), v.data(), n, s);
    auto d_g = g.put(grad);
    g.ops->adamw(d_p.f(), d_g.f(), d_m.f(), d_v.f(), n, s);
  }
  EXPECT_EQ(g.get<float>(d_p, size_t(n)), p);
  EXPECT_EQ(g.get<float>(d_m, size_t(n)), m);
  EXPECT_EQ(g.get<float>(d_v, size_t(n)), v);

  auto x = random_floats(size_t(n), 99, -3, 3);
  auto d_x = g.put(x);
  const double want = make_ref_ops()->sum_squares(x.data(), n);
  EXPECT_NEAR(g.ops->sum_squares(d_x.f(), n), want, 1e-12 * want);
  EXPECT_NEAR(g.ops->sum_squares(d_x.f(), 5), make_ref_ops()->sum_squares(x.data(), 5), 1e-12);
  g.ops->scale(d_x.f(), n, 0.3);
  make_ref_ops()->scale(x.data(), n, 0.3);
  EXPECT_EQ(g.get<float>(d_x, size_t(n)), x);
}

}  // namespace
}  // namespace glmlab
#endif  // GLMLAB_HAVE_CUDA
