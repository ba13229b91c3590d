// Every op of the fast CPU back end against the fp32 reference, on random inputs, for every weight
// dtype and both matmul paths (GEMV for ≤ 4 rows, sgemm beyond).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/bf16_gemm.h"
#include "kernels/cpu/dpbf16_gemm.h"
#include "kernels/cpu/f16_packed.h"
#include "kernels/cpu/simd_softmax.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "test_numeric.h"
#include "util/dtype.h"

namespace glmlab {
namespace {

using test::nerr;
using test::randv;

struct Stored {
  std::vector<uint8_t> bytes;
  Matrix m;
};
Stored store(const std::vector<float>& w, int64_t rows, int64_t cols, DType dt) {
  Stored s;
  s.bytes.resize(w.size() * dtype_size(dt));
  for (size_t i = 0; i < w.size(); ++i) {
    if (dt == DType::F32) std::memcpy(s.bytes.data() + 4 * i, &w[i], 4);
    uint16_t h = dt == DType::F16 ? f32_to_f16(w[i]) : f32_to_bf16(w[i]);
    if (dt != DType::F32) std::memcpy(s.bytes.data() + 2 * i, &h, 2);
  }
  s.m = Matrix{dt, rows, cols, s.bytes.data()};
  return s;
}

class OpsVsRef : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ref = make_ref_ops(), cpu = make_ops(Backend::Cpu);
};

TEST_F(OpsVsRef, MatmulEveryDtypeBothPaths) {
  const int64_t M = 301, K = 203;  // odd sizes exercise the SIMD tails
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t N : {1, 2, 3, 4, 5, 17}) {
      auto w = store(randv(size_t(M * K), 1), M, K, dt);
      auto x = randv(size_t(N * K), 2);
      auto bias = randv(size_t(M), 3);
      std::vector<float> a(size_t(N * M)), b(size_t(N * M));
      // bf16 from 9 rows runs on the bf16 units (zero-padded to whole blocks), activations rounded to bf16.
      auto xr = x;
      if (dt == DType::BF16 && N >= 9 && bf16gemm::available(M, K))
        for (auto& e : xr) e = bf16_to_f32(f32_to_bf16(e));
      ref->matmul(xr.data(), N, w.m, bias.data(), a.data());
      cpu->matmul(x.data(), N, w.m, bias.data(), b.data());
      EXPECT_LT(nerr(b, a), 1e-5) << dtype_name(dt) << " N=" << N;
    }
}

TEST_F(OpsVsRef, MatmulBF16PrefillPathRoundsActivationsOnly) {
  // bf16 weights go through AVX512-BF16 dot products (the GEMV up to 16 rows, AMX tiles or the AVX512-BF16 GEMM
  // beyond) with activations rounded to bf16: the result must equal the reference fed the same rounded
  // activations (only the summation order differs).
  const int64_t M = 96, K = 160;
  auto w = store(randv(size_t(M * K), 21), M, K, DType::BF16);
  for (int64_t N : {1, 3, 8, 16, 32, 45, 100}) {
    auto x = randv(size_t(N * K), 22);
    auto bias = randv(size_t(M), 23);
    std::vector<float> xr(x.size());
    for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    std::vector<float> a(size_t(N * M)), a_exact(size_t(N * M)), b(size_t(N * M));
    ref->matmul(xr.data(), N, w.m, bias.data(), a.data());
    ref->matmul(x.data(), N, w.m, bias.data(), a_exact.data());
    cpu->matmul(x.data(), N, w.m, bias.data(), b.data());
    if (amx::available() || dpbf16::available()) {  // AMX or AVX512-BF16: the reference on rounded activations
      EXPECT_LT(nerr(b, a), 1e-5) << "N=" << N;
      EXPECT_GT(nerr(b, a_exact), 1e-6) << "N=" << N << ": activations were not rounded, bf16 path not taken?";
    } else {
      EXPECT_LT(nerr(b, a_exact), 1e-5) << "N=" << N;
    }
  }
}

// Random bf16 weights [M, K], and a vector rounded to bf16 values (what the bf16 kernels multiply).
std::vector<uint16_t> bf16_weights(int64_t M, int64_t K, uint32_t seed) {
  const auto wf = randv(size_t(M * K), seed);
  std::vector<uint16_t> wb(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) wb[i] = f32_to_bf16(wf[i]);
  return wb;
}
std::vector<float> rounded(std::vector<float> v) {
  for (auto& e : v) e = bf16_to_f32(f32_to_bf16(e));
  return v;
}

// The AVX512-BF16 kernels called directly (on an AMX machine the dispatcher prefers AMX, so this is
// where they are checked there): forward and input gradient against the fp32 reference fed the same
// bf16-rounded operands, with token counts that leave every tail (N % 32, N % 8), weight blocks that
// span several row blocks, and M = 4160 so that the backward walks two chunks of W rows.
TEST(Dpbf16Gemm, ForwardAndInputGradientMatchTheReferenceOnRoundedOperands) {
  if (!dpbf16::available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  auto ref = make_ref_ops();
  for (auto [M, K] : {std::pair<int64_t, int64_t>{96, 160}, {4160, 64}, {64, 4096}})
    for (int64_t N : {1, 7, 8, 45, 100}) {
      const auto wb = bf16_weights(M, K, 31);
      Matrix W{DType::BF16, M, K, wb.data()};
      auto x = randv(size_t(N * K), 32), bias = randv(size_t(M), 33), dy = randv(size_t(N * M), 34);
      std::vector<float> want(size_t(N * M)), got(size_t(N * M));
      ref->matmul(rounded(x).data(), N, W, bias.data(), want.data());
      dpbf16::gemm_bf16(wb.data(), M, K, x.data(), N, bias.data(), got.data());
      EXPECT_LT(nerr(got, want), 1e-5) << "forward M " << M << " K " << K << " N " << N;
      std::vector<float> dxw(size_t(N * K), 0.5f), dxg(size_t(N * K), 0.5f);  // both accumulate
      ref->matmul_backward_input(rounded(dy).data(), N, W, dxw.data());
      dpbf16::gemm_bf16_backward_input(
          M, K, [&](int64_t m0, int64_t, uint16_t*) -> const uint16_t* { return wb.data() + m0 * K; }, dy.data(), N,
          dxg.data());
      EXPECT_LT(nerr(dxg, dxw), 1e-5) << "backward M " << M << " K " << K << " N " << N;
    }
}

// The AMX GEMM on a row-major bf16 matrix (training's forward; shapes not packed at load): up to 224 tokens
// W's rows as A tiles, beyond that the cache-blocked kernel on B tiles transposed from W per chunk (and the
// next row pair's rows prefetched). Against
// the fp32 reference fed the same bf16-rounded activations, for token counts on both sides of 32, odd
// ones (tails of 16 and 32), more than one group of tokens (512, or 1024 here), several row pairs and a
// single one, chunk tails.
TEST(AmxGemm, RowMajorForwardMatchesTheReferenceOnRoundedOperands) {
  if (!amx::available()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  auto ref = make_ref_ops();
  for (auto [M, K] : {std::pair<int64_t, int64_t>{32, 32}, {96, 160}, {4160, 64}, {64, 4096}, {544, 512}})
    for (int64_t N : {1, 31, 32, 33, 47, 100, 225, 260, 530, 1100}) {
      if (M * K * N > (int64_t(1) << 26)) continue;  // the reference's time
      const auto wb = bf16_weights(M, K, 51);
      Matrix W{DType::BF16, M, K, wb.data()};
      auto x = randv(size_t(N * K), 52), bias = randv(size_t(M), 53);
      std::vector<float> want(size_t(N * M)), got(size_t(N * M), std::numeric_limits<float>::quiet_NaN());
      ref->matmul(rounded(x).data(), N, W, bias.data(), want.data());
      amx::gemm_bf16(wb.data(), M, K, x.data(), N, bias.data(), got.data());
      EXPECT_LT(nerr(got, want), 1e-5) << "M " << M << " K " << K << " N " << N;
      EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));  // all written
      std::fill(got.begin(), got.end(), std::numeric_limits<float>::quiet_NaN());
      amx::gemm_bf16(wb.data(), M, K, x.data(), N, nullptr, got.data());
      ref->matmul(rounded(x).data(), N, W, nullptr, want.data());
      EXPECT_LT(nerr(got, want), 1e-5) << "no bias: M " << M << " K " << K << " N " << N;
      EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
    }
}

// The input gradient on a row-major bf16 W read in place (training's backward from 225 tokens): accumulated
// onto a dx that holds values, against the fp32 reference on the same rounded dy, and through the back
// end, for token counts whose last tile holds 1, 4, 12 or 18 tokens, odd row-pair counts and chunk tails.
TEST(AmxGemm, RowMajorInputGradientMatchesTheReference) {
  if (!amx::available()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  auto ref = make_ref_ops();
  auto cpu = make_ops(Backend::Cpu, true);
  for (auto [M, K] : {std::pair<int64_t, int64_t>{32, 32}, {96, 160}, {4160, 64}, {64, 4096}, {544, 480}})
    for (int64_t N : {225, 260, 300, 530, 1100}) {
      if (M * K * N > (int64_t(1) << 26)) continue;  // the reference's time
      SCOPED_TRACE(testing::Message() << "M " << M << " K " << K << " N " << N);
      const auto wb = bf16_weights(M, K, 61);
      Matrix W{DType::BF16, M, K, wb.data()};
      auto dy = randv(size_t(N * M), 62), start = randv(size_t(N * K), 63);
      std::vector<float> want = start, got = start, via = start;
      ref->matmul_backward_input(rounded(dy).data(), N, W, want.data());
      amx::gemm_backward_input_rowmajor(W, dy.data(), N, got.data());
      EXPECT_LT(nerr(got, want), 1e-5);
      EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
      cpu->matmul_backward_input(dy.data(), N, W, via.data());
      EXPECT_EQ(via, got);  // the back end takes this kernel
    }
}

// Row-major Q8 / Q4 weights (training's QAT bases) in the blocked kernels from 225 tokens, forward and input
// gradient (and from 16 tokens, where the back end takes them): bit for bit the bf16 kernels' result on the
// same weights dequantized and rounded to bf16 (the
// dequantization is the only difference), near the fp32 reference on those rounded operands, and what the
// back end computes for these shapes (Ops::matmul, Ops::matmul_backward_input). Groups of 32 to 128 inputs,
// a 160-input row whose last group is partial, odd row-pair counts, token tails of 1 to 18. Row-major fp16
// (training's fp16 bases): the forward bit for bit the packed fp16 kernel's (hi + lo tiles), both near the
// reference on the exact fp16 weights and bf16-rounded activations.
TEST(AmxGemm, RowMajorQuantizedAndF16WeightsMatchTheirKernelsAndTheReference) {
  if (!amx::available()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  auto ref = make_ref_ops();
  auto cpu = make_ops(Backend::Cpu, true);
  struct Case { DType q; int64_t M, K, G; };
  for (const Case c : {Case{DType::Q8, 96, 160, 128}, Case{DType::Q4, 96, 160, 32}, Case{DType::Q4, 544, 512, 128},
                       Case{DType::Q8, 64, 4096, 128}, Case{DType::Q4, 4160, 64, 64}, Case{DType::F16, 96, 160, 0},
                       Case{DType::F16, 544, 512, 0}, Case{DType::F16, 64, 4096, 0}})
    for (int64_t N : {16, 100, 225, 260, 530, 1100}) {
      if (c.M * c.K * N > (int64_t(1) << 26)) continue;  // the reference's time
      SCOPED_TRACE(testing::Message() << dtype_name(c.q) << " M " << c.M << " K " << c.K << " group " << c.G << " N " << N);
      const auto wf = randv(size_t(c.M * c.K), 71);
      QuantizedMatrix qm;
      std::vector<uint16_t> wh;  // fp16
      Matrix W;
      if (c.q == DType::F16) {
        wh.resize(wf.size());
        for (size_t i = 0; i < wf.size(); ++i) wh[i] = f32_to_f16(wf[i]);
        W = Matrix{DType::F16, c.M, c.K, wh.data()};
      } else {
        qm = quantize(Matrix{DType::F32, c.M, c.K, wf.data()}, c.q, c.G);
        W = qm.m;
      }
      // the input gradients from 16 tokens; the forward from 32 (fp16) or 225 (Q8/Q4)
      EXPECT_EQ(amx::rowmajor_blocked(W, N, false), N > (c.q == DType::F16 ? 31 : amx::kBlockedFromTokens));
      EXPECT_TRUE(amx::rowmajor_blocked(W, N, true));
      EXPECT_FALSE(amx::rowmajor_blocked(W, amx::kConvertedFromTokens - 1, true));
      EXPECT_FALSE(amx::rowmajor_blocked(W, amx::kF16ForwardFromTokens - 1, false));
      // The weights the kernel multiplies: bf16-rounded dequantized values, or the fp16 values themselves.
      std::vector<uint16_t> wb(size_t(c.M * c.K));
      for (int64_t r = 0; r < c.M; ++r)
        for (int64_t k = 0; k < c.K; ++k) wb[size_t(r * c.K + k)] = f32_to_bf16(W.at(r, k));
      const Matrix B = c.q == DType::F16 ? W : Matrix{DType::BF16, c.M, c.K, wb.data()};
      auto x = randv(size_t(N * c.K), 72), dy = randv(size_t(N * c.M), 73), start = randv(size_t(N * c.K), 74);
      auto bias = randv(size_t(c.M), 75);
      std::vector<float> got(size_t(N * c.M), std::numeric_limits<float>::quiet_NaN()), want(got.size()),
          refy(got.size()), via(got.size());
      amx::gemm_rowmajor(W, x.data(), N, bias.data(), got.data());
      if (c.q == DType::F16) {
        const auto packed = f16p::pack(W);
        amx::gemm_f16_packed(static_cast<const uint16_t*>(packed.m.data), c.M, c.K, x.data(), N, bias.data(), want.data());
      } else {
        amx::gemm_rowmajor(Matrix{DType::BF16, c.M, c.K, wb.data()}, x.data(), N, bias.data(), want.data());
      }
      EXPECT_EQ(got, want);
      ref->matmul(rounded(x).data(), N, B, bias.data(), refy.data());
      EXPECT_LT(nerr(got, refy), 1e-5);
      cpu->matmul(x.data(), N, W, bias.data(), via.data());
      // The back end: this kernel (Q8/Q4 add the bias after it) or the bf16 tiles — not at 16 tokens for Q4
      // (the VNNI GEMV on int8 activations) or fp16 (fp32 sgemm on the exact activations).
      if (c.q == DType::Q8 || N > 16) EXPECT_LT(nerr(via, got), 1e-6);
      if (c.q == DType::F16 && N >= amx::kF16ForwardFromTokens) EXPECT_EQ(via, got);
      std::vector<float> dgot = start, dwant = start, dref = start, dvia = start;
      amx::gemm_backward_input_rowmajor(W, dy.data(), N, dgot.data());
      if (c.q != DType::F16) {
        amx::gemm_backward_input_rowmajor(Matrix{DType::BF16, c.M, c.K, wb.data()}, dy.data(), N, dwant.data());
        EXPECT_EQ(dgot, dwant);
      }
      ref->matmul_backward_input(rounded(dy).data(), N, B, dref.data());
      EXPECT_LT(nerr(dgot, dref), 1e-5);
      cpu->matmul_backward_input(dy.data(), N, W, dvia.data());
      EXPECT_EQ(dvia, dgot);  // the back end takes this kernel
    }
}

// Shapes the bf16 kernels do not take whole (random:small's MLP: 2736 rows, 1368 inputs) run on
// zero-padded copies through the back end, forward and input gradient: the result is the product of the
// bf16-rounded operands (the fp32 reference fed them), not the fp32 product of the unrounded activations
// that the fp32 sgemm fallback gave before.
TEST(Bf16Gemm, ShapesOffTheBlocksRunPaddedOnBf16Units) {
  if (!bf16gemm::available(32, 32)) GTEST_SKIP() << "no AMX or AVX512-BF16 on this CPU";
  auto ref = make_ref_ops();
  auto cpu = make_ops(Backend::Cpu, true);
  for (auto [M, K] : {std::pair<int64_t, int64_t>{80, 72}, {48, 1368}, {2736, 40}, {17, 33}})
    for (int64_t N : {9, 40}) {
      SCOPED_TRACE(testing::Message() << "M " << M << " K " << K << " N " << N);
      const auto wb = bf16_weights(M, K, 41);
      Matrix W{DType::BF16, M, K, wb.data()};
      auto x = randv(size_t(N * K), 42), bias = randv(size_t(M), 43), dy = randv(size_t(N * M), 44);
      std::vector<float> want(size_t(N * M)), exact(want.size()), got(want.size());
      ref->matmul(rounded(x).data(), N, W, bias.data(), want.data());
      ref->matmul(x.data(), N, W, bias.data(), exact.data());
      cpu->matmul(x.data(), N, W, bias.data(), got.data());
      EXPECT_LT(nerr(got, want), 1e-5);
      EXPECT_GT(nerr(got, exact), 1e-4);  // the activations were rounded: the bf16 unit ran
      std::vector<float> dxw(size_t(N * K), 0.5f), dxe(dxw), dxg(dxw);  // all accumulate onto 0.5
      ref->matmul_backward_input(rounded(dy).data(), N, W, dxw.data());
      ref->matmul_backward_input(dy.data(), N, W, dxe.data());
      cpu->matmul_backward_input(dy.data(), N, W, dxg.data());
      EXPECT_LT(nerr(dxg, dxw), 1e-5);
      EXPECT_GT(nerr(dxg, dxe), 1e-4);
    }
}

// The AVX512-BF16 decode GEMV called directly: every token count up to 8 (one pass) and beyond (groups of
// 8 over L2 blocks of rows), row ranges that start and end off the 4-row tiles, and K up to ChatGLM3's
// 13696, against the fp32 reference fed the same bf16-rounded activations.
TEST(Dpbf16Gemv, MatchesTheReferenceOnRoundedActivations) {
  if (!dpbf16::available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  auto ref = make_ref_ops();
  for (auto [M, K] : {std::pair<int64_t, int64_t>{37, 64}, {70, 4096}, {9, 13696}})
    for (int N : {1, 2, 3, 4, 5, 7, 8, 9, 16, 23, 64}) {
      auto wf = randv(size_t(M * K), 41);
      std::vector<uint16_t> wb(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) wb[i] = f32_to_bf16(wf[i]);
      Matrix W{DType::BF16, M, K, wb.data()};
      auto x = randv(size_t(N) * size_t(K), 42);
      std::vector<float> xr(x.size());
      for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
      std::vector<float> want(size_t(N * M)), got(size_t(N * M), std::nanf(""));
      ref->matmul(xr.data(), N, W, nullptr, want.data());
      dpbf16::Bf16Acts a;
      dpbf16::pack_acts(x.data(), N, K, K, a);
      const int64_t cut = M / 3 + 1;  // two calls, as two threads would split the rows
      dpbf16::gemv(wb.data(), 0, cut, a, got.data(), M);
      dpbf16::gemv(wb.data(), cut, M, a, got.data(), M);
      EXPECT_LT(nerr(got, want), 1e-5) << "M " << M << " K " << K << " N " << N;
    }
}

// The packing both backward kernels read W in (AMX B tiles and the AVX512-BF16 panels), word by word
// against its definition: pair q of column c in group g0 + j = (row 2q, row 2q + 1), low half first.
TEST(Dpbf16Gemm, InterleavesRowPairsInTheTileLayout) {
  if (!dpbf16::available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  const int64_t rows = 12, K = 160, pairs = rows / 2, g0 = 1, ng = 3, q0 = 2, q1 = 5;
  std::vector<uint16_t> src(size_t(rows * K));
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint16_t(i * 2654435761u >> 7);
  std::vector<uint32_t> out(size_t(ng * pairs * 32), 0xdeadbeefu);
  dpbf16::interleave_row_pairs(src.data(), K, g0, ng, q0, q1, pairs, out.data());
  for (int64_t j = 0; j < ng; ++j)
    for (int64_t q = 0; q < pairs; ++q)
      for (int64_t c = 0; c < 32; ++c) {
        const uint32_t got = out[size_t((j * pairs + q) * 32 + c)];
        const int64_t col = (g0 + j) * 32 + c;
        const uint32_t want = q < q0 || q >= q1 ? 0xdeadbeefu
                                                : uint32_t(src[size_t(2 * q * K + col)]) |
                                                      uint32_t(src[size_t((2 * q + 1) * K + col)]) << 16;
        ASSERT_EQ(got, want) << "group " << j << " pair " << q << " column " << c;
      }
}

TEST_F(OpsVsRef, MatmulReadsTheStoredDtypeExactly) {
  // A wrong fp16/bf16 widening (e.g. treating bf16 as fp16) must not pass: compare with hand values.
  std::vector<float> w = {1.5f, -2.25f, 0.0078125f, 65504.0f};
  for (DType dt : {DType::F16, DType::BF16}) {
    auto s = store(w, 1, 4, dt);
    std::vector<float> x = {1, 1, 1, 1}, y(1);
    cpu->matmul(x.data(), 1, s.m, nullptr, y.data());
    float want = 0;
    for (int i = 0; i < 4; ++i) want += s.m.at(0, i);
    EXPECT_EQ(y[0], want) << dtype_name(dt);
  }
  EXPECT_EQ(f16_to_f32(f32_to_f16(65504.0f)), 65504.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(5.96e-8f)), 5.9604645e-8f);  // fp16 subnormal
}

TEST_F(OpsVsRef, EmbeddingRmsnormSwigluAdd) {
  const int64_t V = 50, C = 37, N = 6, F = 29;
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    auto t = store(randv(size_t(V * C), 4), V, C, dt);
    std::vector<int32_t> ids = {0, 49, 3, 3, 17, 22};
    std::vector<float> a(size_t(N * C)), b(size_t(N * C));
    ref->embedding(t.m, ids.data(), N, a.data());
    cpu->embedding(t.m, ids.data(), N, b.data());
    EXPECT_EQ(a, b) << dtype_name(dt);
  }
  auto x = randv(size_t(N * C), 5, 3.0f), w = randv(size_t(C), 6);
  std::vector<float> a(size_t(N * C)), b(size_t(N * C)), ra(static_cast<size_t>(N)), rb(static_cast<size_t>(N));
  ref->rmsnorm(x.data(), w.data(), N, C, 1e-5f, a.data(), ra.data());
  cpu->rmsnorm(x.data(), w.data(), N, C, 1e-5f, b.data(), rb.data());
  EXPECT_LT(nerr(b, a), 1e-6);
  EXPECT_LT(nerr(rb, ra), 1e-6);
  auto u = randv(size_t(N * 2 * F), 7, 4.0f);
  std::vector<float> sa(size_t(N * F)), sb(size_t(N * F));
  ref->swiglu(u.data(), N, F, sa.data());
  cpu->swiglu(u.data(), N, F, sb.data());
  EXPECT_LT(nerr(sb, sa), 1e-6);
  auto y1 = randv(100, 8), y2 = y1, d = randv(100, 9);
  ref->add(y1.data(), d.data(), 100);
  cpu->add(y2.data(), d.data(), 100);
  EXPECT_EQ(y1, y2);
}

// SwiGLU forward and backward on the SIMD path against the reference element by element: every width
// from 1 to 40 (whole vectors and tails), ordinary gates and gates far outside exp's range (±90, ±110,
// ±1e30, ±inf: where exp(−g) overflows the reference's g/(1 + exp(−g)) is still exact), NaN kept.
TEST_F(OpsVsRef, SwigluForwardAndBackwardEqualTheReferenceForAnyGate) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> special = {-inf, -1e30f, -110.0f, -90.0f, -20.0f, -0.0f, 0.0f, 1e-20f, 20.0f, 90.0f,
                                      110.0f, 1e30f, inf, nan};
  auto close = [](float got, float want, double tol) {
    if (std::isnan(want)) return std::isnan(got);
    if (std::isinf(want)) return got == want;
    return std::fabs(double(got) - want) <= tol * std::max(1.0, std::fabs(double(want)));
  };
  for (int64_t F = 1; F <= 40; ++F) {
    const int64_t N = 2;
    auto u = randv(size_t(N * 2 * F), uint32_t(100 + F), 4.0f);
    for (int64_t f = 0; f < F; ++f) u[size_t(f)] = special[size_t(f) % special.size()];  // row 0's gates
    auto d = randv(size_t(N * F), uint32_t(200 + F));
    std::vector<float> ya(size_t(N * F)), yb(size_t(N * F));
    ref->swiglu(u.data(), N, F, ya.data());
    cpu->swiglu(u.data(), N, F, yb.data());
    std::vector<float> ga = randv(u.size(), uint32_t(300 + F)), gb = ga;  // the backward accumulates
    ref->swiglu_backward(d.data(), u.data(), N, F, ga.data());
    cpu->swiglu_backward(d.data(), u.data(), N, F, gb.data());
    for (size_t i = 0; i < ya.size(); ++i)
      ASSERT_TRUE(close(yb[i], ya[i], 2e-6)) << "F " << F << " out " << i << ": " << yb[i] << " vs " << ya[i];
    for (size_t i = 0; i < ga.size(); ++i)
      ASSERT_TRUE(close(gb[i], ga[i], 2e-6)) << "F " << F << " du " << i << ": " << gb[i] << " vs " << ga[i];
  }
}

// Greedy decoding's argmax: the first of equal maxima, anywhere in a row of any length (the SIMD pass
// and its scalar tail), +0/-0 equal, and a row with Inf or NaN anywhere mapped to id 5 as the reference.
TEST_F(OpsVsRef, ArgmaxIsTheFirstMaximumAndNonFiniteRowsGiveFive) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t V : {1, 2, 3, 5, 6, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 65024}) {
    std::vector<std::vector<float>> rows;
    for (int64_t at : {int64_t(0), V / 3, V - 1, std::max<int64_t>(0, V - 17)}) {
      auto r = randv(size_t(V), uint32_t(V * 7 + at), 2.0f);
      r[size_t(at)] = 3.0f;  // the maximum at the start, inside, in the SIMD tail
      rows.push_back(r);
      if (at + 1 < V) {  // and twice: the first one wins
        r[size_t(V - 1)] = 3.0f;
        rows.push_back(r);
      }
      for (float bad : {inf, -inf, nan}) {  // anywhere in the row
        auto b = r;
        b[size_t(at)] = bad;
        rows.push_back(b);
      }
    }
    rows.push_back(std::vector<float>(size_t(V), -1.5f));  // all equal: index 0
    auto z = std::vector<float>(size_t(V), -1.0f);
    z[size_t(V / 2)] = -0.0f;
    z[size_t(V - 1)] = 0.0f;  // +0 after -0: equal, the first stays
    rows.push_back(z);
    std::vector<float> x;
    for (auto& r : rows) x.insert(x.end(), r.begin(), r.end());
    const int64_t R = int64_t(rows.size());
    std::vector<int32_t> a(size_t(R), -7), b(size_t(R), -7);
    ref->argmax(x.data(), R, V, a.data());
    cpu->argmax(x.data(), R, V, b.data());
    EXPECT_EQ(b, a) << "V = " << V;
    for (int64_t r = 0; r < R; ++r) {  // one row at a time too (no threads)
      int32_t one = -7;
      cpu->argmax(x.data() + r * V, 1, V, &one);
      EXPECT_EQ(one, a[size_t(r)]) << "V = " << V << ", row " << r;
    }
  }
}

TEST_F(OpsVsRef, RopeInterleavedFirstHalf) {
  const int D = 16, heads = 3;
  const int64_t N = 4, stride = heads * D + 5;
  auto x = randv(size_t(N * stride), 10);
  std::vector<int32_t> pos = {0, 1, 7, 300};
  auto a = x, b = x;
  ref->rope(a.data(), N, stride, heads, D, pos.data(), 10000.0f);
  cpu->rope(b.data(), N, stride, heads, D, pos.data(), 10000.0f);
  EXPECT_LT(nerr(b, a), 1e-6);
  // Position 0 is the identity; dims D/2..D-1 and the row's tail are untouched; pairs rotate by pos·θ_i.
  for (int i = 0; i < heads * D; ++i) EXPECT_EQ(a[size_t(i)], x[size_t(i)]);
  const int64_t r = 3;
  for (int h = 0; h < heads; ++h)
    for (int d = D / 2; d < D; ++d) EXPECT_EQ(a[size_t(r * stride + h * D + d)], x[size_t(r * stride + h * D + d)]);
  for (int64_t k = heads * D; k < stride; ++k) EXPECT_EQ(a[size_t(r * stride + k)], x[size_t(r * stride + k)]);
  float th = 1.0f / std::pow(10000.0f, 2.0f / 8.0f), ang = 300 * th;  // pair i = 1 of head 0
  float x0 = x[size_t(r * stride + 2)], x1 = x[size_t(r * stride + 3)];
  EXPECT_NEAR(a[size_t(r * stride + 2)], x0 * std::cos(ang) - x1 * std::sin(ang), 1e-5);
  EXPECT_NEAR(a[size_t(r * stride + 3)], x1 * std::cos(ang) + x0 * std::sin(ang), 1e-5);
}

TEST_F(OpsVsRef, AttentionWithPaddingCacheAndGroups) {
  const int B = 2, T = 3, P = 4, S = 9, H = 4, G = 2, D = 8;
  auto q = randv(size_t(B * T * H * D), 11, 2.0f);
  auto k = randv(size_t(B * S * G * D), 12, 2.0f), v = randv(size_t(B * S * G * D), 13);
  std::vector<uint8_t> valid(size_t(B * S), 1);
  valid[0] = valid[1] = 0;          // sequence 0: two left pads
  valid[size_t(S + 0)] = 0;         // sequence 1: one
  valid[size_t(P + 1)] = 0;         // a pad query/key among the new tokens of sequence 0
  KVView kv{k.data(), v.data(), valid.data(), S};
  std::vector<float> a(size_t(B * T * H * D)), b(a.size()), la(size_t(B * T * H)), lb(la.size());
  ref->attention(q.data(), H * D, kv, B, T, P, H, G, D, a.data(), la.data());
  cpu->attention(q.data(), H * D, kv, B, T, P, H, G, D, b.data(), lb.data());
  EXPECT_LT(nerr(b, a), 1e-5);
  EXPECT_LT(nerr(lb, la), 1e-5);
  // Causality: changing a key after slot P must not change query t = 0's output.
  auto k2 = k;
  for (int i = 0; i < G * D; ++i) k2[size_t((0 * S + P + 2) * G * D + i)] += 5.0f;
  KVView kv2{k2.data(), v.data(), valid.data(), S};
  std::vector<float> c(a.size());
  ref->attention(q.data(), H * D, kv2, B, T, P, H, G, D, c.data(), nullptr);
  for (int i = 0; i < H * D; ++i) EXPECT_EQ(c[size_t(i)], a[size_t(i)]);
}

// The blocked attention (16 query tokens a job, two sgemm calls, masks between): token blocks that end
// mid-sequence (T = 37), a cache before them (P = 5), grouped heads (8 over 2 groups), packed segments,
// padding holes, and a query whose segment has no visible key (all its keys are pads): zeros, lse −∞.
TEST_F(OpsVsRef, AttentionBlocksSegmentsAndEmptyRows) {
  const int B = 2, T = 37, P = 5, S = 50, H = 8, G = 2, D = 16;
  auto q = randv(size_t(B * T * H * D), 14, 2.0f);
  auto k = randv(size_t(B * S * G * D), 15, 2.0f), v = randv(size_t(B * S * G * D), 16);
  std::vector<uint8_t> valid(size_t(B * S), 1);
  std::vector<int32_t> seg(size_t(B * S), 0);
  for (int j = 0; j < S; ++j) seg[size_t(S + j)] = j < P + 20 ? 0 : (j < P + 30 ? 1 : 2);  // sequence 1: 3 samples
  for (int j = P + 30; j < P + 33; ++j) valid[size_t(S + j)] = 0;  // sample 2 starts with three pads
  valid[3] = valid[size_t(P + 17)] = 0;                               // holes in sequence 0
  KVView kv{k.data(), v.data(), valid.data(), S, seg.data()};
  std::vector<float> a(size_t(B * T * H * D)), b(a.size()), la(size_t(B * T * H)), lb(la.size());
  ref->attention(q.data(), H * D, kv, B, T, P, H, G, D, a.data(), la.data());
  cpu->attention(q.data(), H * D, kv, B, T, P, H, G, D, b.data(), lb.data());
  EXPECT_LT(nerr(b, a), 1e-5);
  // Token 30 of sequence 1 (slot P + 30) is a pad whose own segment holds no valid key before it.
  const int64_t empty = int64_t(1 * T + 30) * H;
  for (int h = 0; h < H; ++h) {
    EXPECT_EQ(la[size_t(empty + h)], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(lb[size_t(empty + h)], -std::numeric_limits<float>::infinity());
    for (int d = 0; d < D; ++d) EXPECT_EQ(b[size_t((empty + h) * D + d)], 0.0f);
  }
  for (size_t i = 0; i < la.size(); ++i)
    if (std::isfinite(la[i])) EXPECT_NEAR(lb[i], la[i], 1e-5 * std::max(1.0f, std::fabs(la[i]))) << i;
}

// The softmax's exp and sum must not depend on how many masked (−∞) keys follow a row: the device engine
// attends over a whole decode bucket, the host engine over the cached length, and both must give the same
// bits (a tail computed with another exp than the vector body once made sampled tokens part between them).
TEST(SimdSoftmax, ExpShiftSumIgnoresTrailingMaskedKeys) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t n = 1; n <= 70; ++n) {
    std::vector<float> x(n);
    for (auto& e : x) e = nd(rng);
    if (n > 4) x[1] = ninf;  // a masked key inside the row (a left pad)
    const float mx = simd::max_of(x.data(), n);
    for (size_t pad : {size_t(1), size_t(16), 128 - n % 64}) {
      std::vector<float> a = x, b = x;
      b.resize(n + pad, ninf);
      const double sa = simd::exp_shift_sum(a.data(), n, mx);
      const double sb = simd::exp_shift_sum(b.data(), n + pad, mx);
      EXPECT_EQ(sa, sb) << "n " << n << " + " << pad << " masked";
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(a[i], b[i]) << "n " << n << " + " << pad << ", element " << i;
      for (size_t i = n; i < n + pad; ++i) ASSERT_EQ(b[i], 0.0f);
      double want = 0;
      for (size_t i = 0; i < n; ++i) {
        const double e = std::exp(double(x[i]) - mx);
        EXPECT_NEAR(a[i], e, 2e-6 * e + 1e-30) << "n " << n << ", element " << i;
        want += e;
      }
      EXPECT_NEAR(sa, want, 1e-5 * want);
    }
  }
}

}  // namespace
}  // namespace glmlab
