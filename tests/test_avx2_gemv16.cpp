// The AVX2 GEMV for row-major bf16/fp16 weights (kernels/cpu/avx2_gemv16.h) against an fp64 reference on
// the same widened weights and the same fp32 activations: nothing is rounded, so only fp32 summation
// order remains (< 1e-5 of the token's largest output). Shapes: ChatGLM3's K = 4096, a K of one chunk,
// tails of 1–15 inputs after whole chunks, K below one chunk; row counts that leave rows after the
// kernel's 4- and 2-row blocks; 1–4 tokens in one pass and 5–33 in groups over row blocks; a row range
// inside the matrix (threads split rows) leaves every other output untouched, and every output is the
// same bit for bit whatever the token count and the split of the rows (batch invariance). References that read bf16
// pairs the wrong way round, or fp16's two halves of a chunk swapped, are far outside the bound. Where
// the CPU has AVX2 but no AVX-512, the CPU back end's matmul must be this kernel up to its row limit,
// for both settings of bf16_activations (the kernel never rounds activations).
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/avx2_gemv16.h"
#include "ops/ops.h"
#include "test_quant_util.h"
#include "util/dtype.h"

namespace glmlab {
namespace {

struct W16 {
  DType dt;
  int64_t M, K;
  std::vector<uint16_t> w;
  Matrix m() const { return Matrix{dt, M, K, w.data()}; }
  float at(int64_t r, int64_t k) const {
    const uint16_t h = w[size_t(r * K + k)];
    return dt == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
};

W16 make(DType dt, int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  W16 b{dt, M, K, std::vector<uint16_t>(size_t(M * K))};
  for (auto& v : b.w) v = dt == DType::BF16 ? f32_to_bf16(u(rng)) : f32_to_f16(u(rng));
  return b;
}

// A layout bug to show the bound catches it: input k read where the kernel would put k's neighbour.
enum class Bug { None, PairSwapped, HalvesSwapped };

// y[n, r] = Σ_k x[n, k] · W[r, k] in fp64.
std::vector<double> reference(const W16& b, const std::vector<float>& x, int64_t N, Bug bug = Bug::None) {
  std::vector<double> y(size_t(N * b.M));
  const int64_t full = b.K / 16 * 16;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = 0; r < b.M; ++r) {
      double s = 0;
      for (int64_t k = 0; k < b.K; ++k) {
        int64_t kx = k;
        if (k < full && bug == Bug::PairSwapped) kx = k ^ 1;
        if (k < full && bug == Bug::HalvesSwapped) kx = k ^ 8;
        s += double(x[size_t(n * b.K + kx)]) * double(b.at(r, k));
      }
      y[size_t(n * b.M + r)] = s;
    }
  return y;
}

std::vector<float> run(const W16& b, const std::vector<float>& x, int64_t N) {
  std::vector<float> xp, y(size_t(N * b.M), NAN);
  const float* p = avx2w16::pack_acts(b.m(), x.data(), int(N), b.K, xp);
  avx2w16::gemv(b.m(), 0, b.M, p, int(N), y.data(), b.M);
  return y;
}

#define SKIP_WITHOUT_AVX2_GEMV16() \
  if (!avx2w16::available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: the AVX2 16-bit GEMV does not run here"

TEST(Avx2Gemv16, MatchesTheReferenceOnEveryShapeAndTokenCount) {
  SKIP_WITHOUT_AVX2_GEMV16();
  struct Shape { int64_t M, K; };
  for (DType dt : {DType::BF16, DType::F16})
    for (Shape s : {Shape{70, 4096}, Shape{13, 16}, Shape{9, 50}, Shape{6, 95}, Shape{5, 7}, Shape{1, 33}}) {
      const W16 b = make(dt, s.M, s.K, uint32_t(s.M * 131 + s.K));
      for (int64_t N : {1, 2, 3, 4, 5, 7, 8, 13, 33}) {
        SCOPED_TRACE(fmt::format("{} M={} K={} N={}", dtype_name(dt), s.M, s.K, N));
        const auto x = test::uniform_acts(N, s.K, uint32_t(N + s.K));
        EXPECT_LT(test::token_nerr(run(b, x, N), reference(b, x, N), N, s.M), 1e-5);
      }
    }
}

TEST(Avx2Gemv16, WrongInputOrderIsFarOutsideTheBound) {
  SKIP_WITHOUT_AVX2_GEMV16();
  for (DType dt : {DType::BF16, DType::F16}) {
    const W16 b = make(dt, 24, 4096, 5);
    for (int64_t N : {1, 3, 8}) {
      SCOPED_TRACE(fmt::format("{} N={}", dtype_name(dt), N));
      const auto x = test::uniform_acts(N, b.K, 6);
      const auto y = run(b, x, N);
      EXPECT_LT(test::token_nerr(y, reference(b, x, N), N, b.M), 1e-5);
      EXPECT_GT(test::token_nerr(y, reference(b, x, N, Bug::PairSwapped), N, b.M), 1e-2);
      EXPECT_GT(test::token_nerr(y, reference(b, x, N, Bug::HalvesSwapped), N, b.M), 1e-2);
    }
  }
}

TEST(Avx2Gemv16, ARowRangeWritesOnlyItsOwnOutputs) {
  SKIP_WITHOUT_AVX2_GEMV16();
  const W16 b = make(DType::BF16, 37, 200, 7);
  for (int64_t N : {1, 6}) {
    const auto x = test::uniform_acts(N, b.K, 8);
    std::vector<float> xp, y(size_t(N * b.M), -7.0f);
    const float* p = avx2w16::pack_acts(b.m(), x.data(), int(N), b.K, xp);
    avx2w16::gemv(b.m(), 11, 30, p, int(N), y.data(), b.M);
    const auto ref = reference(b, x, N);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t r = 0; r < b.M; ++r) {
        const float v = y[size_t(n * b.M + r)];
        if (r < 11 || r >= 30)
          EXPECT_EQ(v, -7.0f) << n << "," << r;
        else
          EXPECT_NEAR(v, ref[size_t(n * b.M + r)], 1e-4) << n << "," << r;
      }
  }
}

TEST(Avx2Gemv16, EachOutputIsTheSameWhateverTheBatchAndTheRowSplit) {
  // Batch invariance: a sequence's logits must not depend on what else runs in its decode step.
  SKIP_WITHOUT_AVX2_GEMV16();
  for (DType dt : {DType::BF16, DType::F16}) {
    const W16 b = make(dt, 37, 1000, 21);
    const int64_t N = 9;
    const auto x = test::uniform_acts(N, b.K, 22);
    const auto all = run(b, x, N);
    for (int64_t n = 1; n < N; ++n) {
      SCOPED_TRACE(fmt::format("{} N={}", dtype_name(dt), n));
      const auto y = run(b, x, n);
      EXPECT_EQ(0, std::memcmp(y.data(), all.data(), y.size() * 4));
    }
    // One token reads a range's rows from 4 parts of it, more tokens 3 or 5 adjacent rows at a time: both
    // split differently.
    for (int64_t n : {int64_t(1), N}) {
      std::vector<float> xp, y(size_t(n * b.M), NAN);
      const float* p = avx2w16::pack_acts(b.m(), x.data(), int(n), b.K, xp);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 13}, {13, 14}, {14, 37}})
        avx2w16::gemv(b.m(), r0, r1, p, int(n), y.data(), b.M);
      EXPECT_EQ(0, std::memcmp(y.data(), all.data(), y.size() * 4))
          << dtype_name(dt) << " N=" << n << ": rows split 13 / 1 / 23";
    }
  }
}

TEST(Avx2Gemv16, OnlyRowMajorSixteenBitMatricesFit) {
  const W16 b = make(DType::BF16, 4, 32, 1);
  EXPECT_TRUE(avx2w16::fits(b.m()));
  Matrix m = b.m();
  m.dtype = DType::F16;
  EXPECT_TRUE(avx2w16::fits(m));
  m.dtype = DType::F32;
  EXPECT_FALSE(avx2w16::fits(m));
  m.dtype = DType::BF16;
  m.layout = MatrixLayout::Pairs16;
  EXPECT_FALSE(avx2w16::fits(m));
}

TEST(Avx2Gemv16, CpuMatmulTakesItWithoutAvx512UpToItsRowLimit) {
  SKIP_WITHOUT_AVX2_GEMV16();
  if (!avx2w16::preferred()) GTEST_SKIP() << "this CPU has AVX-512: its 16-bit matrices take other kernels";
  const int64_t limit = 64;
  for (bool bf16_acts : {true, false}) {
    auto ops = make_ops(Backend::Cpu, bf16_acts);
    for (DType dt : {DType::BF16, DType::F16}) {
      const W16 b = make(dt, 70, 4096, 11);
      for (int64_t N : {int64_t(1), int64_t(8), limit, limit + 1}) {
        SCOPED_TRACE(fmt::format("{} N={} bf16_activations={}", dtype_name(dt), N, bf16_acts));
        const auto x = test::uniform_acts(N, b.K, 12);
        const auto y = run(b, x, N);
        std::vector<float> y2(y.size(), NAN);
        ops->matmul(x.data(), N, b.m(), nullptr, y2.data());
        if (N <= limit)
          EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * 4)) << "the CPU matmul must be this kernel here";
        else  // fp32 tiles and sgemm: the same products summed in another order
          EXPECT_NE(0, std::memcmp(y.data(), y2.data(), y.size() * 4));
        EXPECT_LT(test::token_nerr(y2, reference(b, x, N), N, b.M), 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace glmlab
