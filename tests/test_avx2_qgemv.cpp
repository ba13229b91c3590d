// The AVX2 GEMV for row-major Q8/Q4 weights (kernels/cpu/avx2_qgemv.h) against the fp32 reference fed the
// SAME int8-rounded activations: its integer sums are exact, so what remains is fp32 summation order
// (normalized max error < 1e-5). Shapes: ChatGLM3's K = 4096 and 13696 and odd tails (a partial last
// chunk, Q4's padded nibble), groups 32/64/128/per row (a scale per chunk and scales gathered inside a
// chunk), 1–4 tokens in one pass and 5–19 in groups over row blocks. Extreme values (every weight and
// activation at ±127) would saturate a wrongly ordered VPMADDUBSW; mutated references (the next group's
// scale, unsigned or swapped nibbles, int8 with an offset) must be far outside the bound. Where the CPU
// has no AVX512-VNNI, quant_matmul must take this kernel for up to its row limit.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/avx2_qgemv.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant_matmul.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "test_quant_util.h"

namespace glmlab {
namespace {

using test::dequantize_acts;
using test::group_weights;
using test::nmax;
using test::ref_matmul;

#define SKIP_WITHOUT_AVX2_QGEMV() \
  if (!avx2q::available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: the AVX2 GEMV does not run here"

TEST(Avx2QGemv, MatchesReferenceOnTheSameInt8ActivationsWithTails) {
  SKIP_WITHOUT_AVX2_QGEMV();
  auto ref = make_ref_ops();
  const int64_t M = 21;  // blocks of 4 rows and a partial one
  double worst = 0;
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t K : {4096, 13696, 4097, 200})
      for (int64_t G : {32, 64, 128, 0}) {
        if (G > K) continue;
        auto w = group_weights(M, K, G ? G : K, uint32_t(K + G));
        QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, G);
        if (!vnni::fits(qm.m)) continue;
        for (int64_t N : {1, 3, 4, 5, 19}) {
          SCOPED_TRACE(fmt::format("{} K={} G={} N={}", dtype_name(q), K, G, N));
          auto x = test::block_acts(N, K, uint32_t(N + K));
          vnni::QuantizedActs qa;
          vnni::quantize_acts(x.data(), int(N), K, q, qa, /*q8_signed=*/true);
          const auto yr = ref_matmul(*ref, dequantize_acts(qa, K), N, qm.m);
          std::vector<float> y(yr.size(), NAN);
          avx2q::gemv(qm.m, 0, M, qa, y.data(), M);
          EXPECT_LT(nmax(y, yr), 1e-5);
          worst = std::max(worst, nmax(y, yr));
          // Rows [5, 14) alone: exactly those rows of the whole call, nothing else written.
          std::vector<float> y3(yr.size(), 0.0f);
          avx2q::gemv(qm.m, 5, 14, qa, y3.data(), M);
          EXPECT_EQ(test::row_range_error(y, y3, N, M, 5, 14), 0.0);
        }
      }
  std::printf("[ info ] worst normalized max error against the reference: %.3g (bound 1e-5)\n", worst);
}

TEST(Avx2QGemv, ExtremeValuesDoNotSaturateTheInt16Pairs) {
  SKIP_WITHOUT_AVX2_QGEMV();
  auto ref = make_ref_ops();
  const int64_t M = 4, K = 256, N = 2;
  const auto [w, x] = test::extreme_values(K, N);
  for (DType q : {DType::Q8, DType::Q4}) {
    SCOPED_TRACE(dtype_name(q));
    QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, 128);
    vnni::QuantizedActs qa;
    vnni::quantize_acts(x.data(), int(N), K, q, qa, /*q8_signed=*/true);
    const auto yr = ref_matmul(*ref, dequantize_acts(qa, K), N, qm.m);
    std::vector<float> y(yr.size(), NAN);
    avx2q::gemv(qm.m, 0, M, qa, y.data(), M);
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], yr[i], 1e-4 * K) << "output " << i;
    EXPECT_NEAR(yr[0], float(K), 0.02 * K);  // the reference itself: +1 · +1 over K inputs
  }
}

// quantize_acts quantizes whole blocks of 32 inputs with AVX2 (and a batch's tokens on several threads):
// every byte, scale and Q4 offset term must equal the scalar reference's, whatever K's tail (a partial
// block, Q4's padded nibble), with zero blocks, values exactly half a step apart (ties to even), a
// denormal and a NaN input among them (a NaN becomes −127 in both).
TEST(Avx2QGemv, QuantizedActivationsEqualTheScalarReferenceBitForBit) {
  if (!isa::avx2()) GTEST_SKIP() << "no AVX2 on this CPU: quantize_acts is the reference itself";
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t K : {4096, 13696, 4097, 200, 31, 1})
      for (int N : {1, 3, 8}) {
        SCOPED_TRACE(fmt::format("{} K={} N={}", dtype_name(q), K, N));
        auto x = test::block_acts(N, K, uint32_t(7 * K + N));
        if (K >= 96) {
          std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // a zero block
          for (int i = 0; i < 32; ++i) x[size_t(64 + i)] = 0.5f * float(i - 16);
          x[64] = -127.0f;  // d = 1: every other value of the block lies exactly on a half (a tie)
          x[70] = 1e-40f;   // a denormal
          x[71] = NAN;
        }
        for (bool q8_signed : {false, true}) {  // Q8 as int8 + 128 (VNNI) or as int8 (the AVX2 GEMV)
          vnni::QuantizedActs fast, ref;
          vnni::quantize_acts(x.data(), N, K, q, fast, q8_signed);
          vnni::quantize_acts_reference(x.data(), N, K, q, ref, q8_signed);
          ASSERT_EQ(fast.lanes, ref.lanes);
          ASSERT_EQ(fast.units, ref.units);
          EXPECT_EQ(fast.q8_signed, q8_signed && q == DType::Q8);
          EXPECT_EQ(fast.q, ref.q);
          EXPECT_EQ(fast.corr, ref.corr);
          ASSERT_EQ(fast.scale.size(), ref.scale.size());
          EXPECT_EQ(0, std::memcmp(fast.scale.data(), ref.scale.data(), ref.scale.size() * sizeof(float)));
          if (q == DType::Q8 && q8_signed) {  // the same values as the + 128 encoding
            vnni::QuantizedActs u;
            vnni::quantize_acts(x.data(), N, K, q, u);
            for (int t = 0; t < N; ++t)  // (the padding past K is 0 in both)
              for (int64_t i = 0; i < K; ++i) {
                const size_t j = size_t(t * u.lanes * 4 + i);
                ASSERT_EQ(uint8_t(fast.q[j] ^ 0x80), u.q[j]) << t << " " << i;
              }
          }
        }
      }
}

TEST(Avx2QGemv, WrongScalesNibblesOrOffsetsAreFarOutsideTheBound) {
  SKIP_WITHOUT_AVX2_QGEMV();
  auto ref = make_ref_ops();
  const int64_t M = 9, K = 4096, N = 6;
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t G : {32, 128}) {
      SCOPED_TRACE(fmt::format("{} G={}", dtype_name(q), G));
      auto w = group_weights(M, K, G, 11);
      QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, G);
      auto x = test::block_acts(N, K, 5);
      vnni::QuantizedActs qa;
      vnni::quantize_acts(x.data(), int(N), K, q, qa, /*q8_signed=*/true);
      std::vector<float> y(size_t(N * M));
      avx2q::gemv(qm.m, 0, M, qa, y.data(), M);
      test::expect_int8_kernel_result(y, *ref, x, dequantize_acts(qa, K), N, qm.m);
    }
}

// Q4's offset terms (8·Σx per lane, folded per weight group) prepared once per call by avx2q::prepare:
// the same result as computed inside gemv, and never reused for other activations or other groups.
TEST(Avx2QGemv, PreparedQ4OffsetsFollowTheActivationsAndTheGroups) {
  SKIP_WITHOUT_AVX2_QGEMV();
  auto ref = make_ref_ops();
  const int64_t M = 12, K = 4096, N = 3;
  auto w = group_weights(M, K, 128, 21);
  QuantizedMatrix q128 = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 128);
  QuantizedMatrix q32 = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 32);
  auto xa = test::block_acts(N, K, 1), xb = test::block_acts(N, K, 2);
  vnni::QuantizedActs qa;
  vnni::quantize_acts(xa.data(), int(N), K, DType::Q4, qa);
  std::vector<float> y0(size_t(N * M)), y1(size_t(N * M));
  avx2q::gemv(q128.m, 0, M, qa, y0.data(), M);
  avx2q::prepare(q128.m, qa);
  avx2q::gemv(q128.m, 0, M, qa, y1.data(), M);
  EXPECT_EQ(0, std::memcmp(y0.data(), y1.data(), y0.size() * 4)) << "prepared offsets must be the same numbers";
  // Prepared for groups of 128, used with groups of 32: still right.
  avx2q::gemv(q32.m, 0, M, qa, y1.data(), M);
  EXPECT_LT(nmax(y1, ref_matmul(*ref, dequantize_acts(qa, K), N, q32.m)), 1e-5);
  // New activations into the same struct: the old offsets must not be used.
  vnni::quantize_acts(xb.data(), int(N), K, DType::Q4, qa);
  avx2q::gemv(q128.m, 0, M, qa, y1.data(), M);
  EXPECT_LT(nmax(y1, ref_matmul(*ref, dequantize_acts(qa, K), N, q128.m)), 1e-5);
}

// Q8 at one token reads 4 rows side by side from 4 parts of the range (rows_parts); a row alone goes
// through the one-stream loop. Both must give every row the same bits, whatever the range (tails, groups
// of 1 and 2 chunks, one per row), and the right rows: a part mixed up would be far off the reference.
TEST(Avx2QGemv, Q8OneTokenStreamsGiveEachRowTheBitsOfARowAlone) {
  SKIP_WITHOUT_AVX2_QGEMV();
  auto ref = make_ref_ops();
  const int64_t M = 71;
  for (int64_t K : {4096, 13696, 200})
    for (int64_t G : {64, 128, 0}) {
      SCOPED_TRACE(fmt::format("K={} G={}", K, G));
      auto w = group_weights(M, K, G ? G : K, uint32_t(K + G + 1));
      QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q8, G);
      auto x = test::block_acts(1, K, uint32_t(K));
      vnni::QuantizedActs qa;
      vnni::quantize_acts(x.data(), 1, K, DType::Q8, qa, /*q8_signed=*/true);
      std::vector<float> all(size_t(M), NAN), one(size_t(M), NAN);
      avx2q::gemv(qm.m, 0, M, qa, all.data(), M);
      for (int64_t r = 0; r < M; ++r) avx2q::gemv(qm.m, r, r + 1, qa, one.data(), M);
      EXPECT_EQ(0, std::memcmp(all.data(), one.data(), all.size() * 4));
      EXPECT_LT(nmax(all, ref_matmul(*ref, dequantize_acts(qa, K), 1, qm.m)), 1e-5);
    }
}

TEST(Avx2QGemv, QuantMatmulTakesItWithoutVnniUpToItsRowLimit) {
  SKIP_WITHOUT_AVX2_QGEMV();
  if (vnni::available()) GTEST_SKIP() << "this CPU has AVX512-VNNI: quant_matmul takes the VNNI kernels instead";
  auto ref = make_ref_ops();
  const int64_t M = 70, K = 4096;
  for (DType q : {DType::Q8, DType::Q4}) {
    auto w = group_weights(M, K, 128, 3);
    QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, 128);
    const int64_t limit = q == DType::Q4 ? 64 : 32;
    for (int64_t N : {int64_t(1), int64_t(8), limit, limit + 1}) {
      SCOPED_TRACE(fmt::format("{} N={}", dtype_name(q), N));
      auto x = test::block_acts(N, K, 9);
      vnni::QuantizedActs qa;
      vnni::quantize_acts(x.data(), int(N), K, q, qa, /*q8_signed=*/true);
      std::vector<float> y(size_t(N * M), NAN), y2(size_t(N * M), NAN);
      if (q == DType::Q8) {  // the VNNI kernels' int8 + 128 encoding is refused, not misread
        vnni::QuantizedActs unsigned_acts;
        vnni::quantize_acts(x.data(), int(N), K, q, unsigned_acts);
        EXPECT_ANY_THROW(avx2q::gemv(qm.m, 0, M, unsigned_acts, y.data(), M));
      }
      avx2q::gemv(qm.m, 0, M, qa, y.data(), M);
      quant_matmul(x.data(), N, qm.m, y2.data(), true);
      if (N <= limit)
        EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * 4)) << "quant_matmul must be this kernel here";
      else  // Q8: the fp32 tiles; Q4: the AVX2 GEMM (test_avx2_qgemm.cpp). Within the activations' int8
            // rounding of this kernel, but not bit-equal
        EXPECT_NE(0, std::memcmp(y.data(), y2.data(), y.size() * 4));
      EXPECT_LT(nmax(y2, ref_matmul(*ref, x, N, qm.m)), 5e-2);
    }
  }
}

}  // namespace
}  // namespace glmlab
