// The AVX2 int4 GEMM (kernels/cpu/avx2_qgemm.h) against the fp32 reference fed the SAME int8-rounded
// activations: its integer sums are exact, so what remains is fp32 summation order (normalized max error
// < 1e-5). Shapes: ChatGLM3's K = 4096 and 13696, odd tails (a partial last chunk, the padded nibble),
// groups 32/64/128/256/per row (a group per block, per two blocks, per chunk, per two chunks), an odd
// number of rows (the last row paired with itself), token counts that fill and do not fill the passes of
// 4 and the L2 blocks. Each row's bits must not depend on the rows it is computed with nor on the other
// tokens of the call; mutated references (the next group's scale, unsigned or swapped nibbles) must be far
// outside the bound; every weight and activation at its extreme must not saturate. Where the CPU has no
// AVX512-VNNI, quant_matmul must take it for int4 beyond the GEMV's rows.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/avx2_qgemm.h"
#include "kernels/cpu/avx2_qgemv.h"
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

#define SKIP_WITHOUT_AVX2_QGEMM() \
  if (!avx2q::available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: the AVX2 GEMM does not run here"

// Int4 activations of x, prepared for W as quant_matmul prepares them, with the GEMM's scales.
struct Acts {
  vnni::QuantizedActs qa;
  std::vector<float> s8;
  Acts(const std::vector<float>& x, int64_t N, const Matrix& W) {
    vnni::quantize_acts(x.data(), int(N), W.cols, DType::Q4, qa);
    avx2q::prepare(W, qa);
    avx2q::gemm_scales(qa, s8);
  }
};

std::vector<float> gemm(const Matrix& W, const Acts& a, int64_t r0, int64_t r1, float fill = NAN) {
  std::vector<float> y(size_t(a.qa.nt * W.rows), fill);
  avx2q::gemm_q4(W, r0, r1, a.qa, a.s8.data(), y.data(), W.rows);
  return y;
}

TEST(Avx2QGemm, MatchesReferenceOnTheSameInt8ActivationsWithTails) {
  SKIP_WITHOUT_AVX2_QGEMM();
  auto ref = make_ref_ops();
  const int64_t M = 21;  // ten row pairs and a row alone
  double worst = 0;
  for (int64_t K : {4096, 13696, 4097, 200})
    for (int64_t G : {32, 64, 128, 256, 0}) {
      if (G > K) continue;
      auto w = group_weights(M, K, G ? G : K, uint32_t(K + G));
      QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, G);
      ASSERT_TRUE(avx2q::gemm_fits(qm.m)) << "K=" << K << " G=" << G;
      for (int64_t N : {1, 3, 4, 6, 70}) {
        SCOPED_TRACE(fmt::format("K={} G={} N={}", K, G, N));
        auto x = test::block_acts(N, K, uint32_t(N + K));
        const Acts a(x, N, qm.m);
        const auto yr = ref_matmul(*ref, dequantize_acts(a.qa, K), N, qm.m);
        const auto y = gemm(qm.m, a, 0, M);
        EXPECT_LT(nmax(y, yr), 1e-5);
        worst = std::max(worst, nmax(y, yr));
        // Rows [5, 14) alone (other partners: 5 pairs with 6, not with 4): those rows' bits, nothing else written.
        const auto y3 = gemm(qm.m, a, 5, 14, 0.0f);
        EXPECT_EQ(test::row_range_error(y, y3, N, M, 5, 14), 0.0);
      }
    }
  std::printf("[ info ] worst normalized max error against the reference: %.3g (bound 1e-5)\n", worst);
}

// A row's result whatever it is paired with and whatever else the call holds: one row at a time, and the
// first tokens of a call on their own (a different pass of 4 and L2 block for the rest), bit for bit.
TEST(Avx2QGemm, EachRowAndTokenHasTheSameBitsAloneAsInABatch) {
  SKIP_WITHOUT_AVX2_QGEMM();
  const int64_t M = 9, K = 13696, N = 45;  // 17 KB of activations a token: several L2 blocks of tokens
  auto w = group_weights(M, K, 128, 4);
  QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 128);
  auto x = test::block_acts(N, K, 8);
  const Acts all(x, N, qm.m);
  const auto y = gemm(qm.m, all, 0, M);
  std::vector<float> one(y.size(), NAN);
  for (int64_t r = 0; r < M; ++r) avx2q::gemm_q4(qm.m, r, r + 1, all.qa, all.s8.data(), one.data(), M);
  EXPECT_EQ(0, std::memcmp(y.data(), one.data(), y.size() * 4));
  for (int64_t n : {1, 3, 5}) {
    const Acts first(std::vector<float>(x.begin(), x.begin() + n * K), n, qm.m);
    const auto yn = gemm(qm.m, first, 0, M);
    EXPECT_EQ(0, std::memcmp(y.data(), yn.data(), yn.size() * 4)) << n << " tokens";
  }
  // Token 17 alone (the middle of a pass of 4 in the batch).
  const Acts t17(std::vector<float>(x.begin() + 17 * K, x.begin() + 18 * K), 1, qm.m);
  const auto y17 = gemm(qm.m, t17, 0, M);
  EXPECT_EQ(0, std::memcmp(y.data() + 17 * M, y17.data(), size_t(M) * 4));
}

TEST(Avx2QGemm, WrongScalesOrNibblesAreFarOutsideTheBound) {
  SKIP_WITHOUT_AVX2_QGEMM();
  auto ref = make_ref_ops();
  const int64_t M = 9, K = 4096, N = 6;
  for (int64_t G : {32, 128}) {
    SCOPED_TRACE(fmt::format("G={}", G));
    auto w = group_weights(M, K, G, 11);
    QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, G);
    auto x = test::block_acts(N, K, 5);
    const Acts a(x, N, qm.m);
    const auto y = gemm(qm.m, a, 0, M);
    test::expect_int8_kernel_result(y, *ref, x, dequantize_acts(a.qa, K), N, qm.m);
  }
}

TEST(Avx2QGemm, ExtremeValuesDoNotSaturate) {
  SKIP_WITHOUT_AVX2_QGEMM();
  auto ref = make_ref_ops();
  const int64_t M = 4, K = 512, N = 5;
  const auto [w, x] = test::extreme_values(K, N);
  QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 128);
  const Acts a(x, N, qm.m);
  const auto yr = ref_matmul(*ref, dequantize_acts(a.qa, K), N, qm.m);
  const auto y = gemm(qm.m, a, 0, M);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], yr[i], 1e-4 * K) << "output " << i;
  EXPECT_NEAR(yr[0], float(K), 0.02 * K);  // the reference itself: +1 · +1 over K inputs
}

TEST(Avx2QGemm, RefusesWhatItCannotRead) {
  SKIP_WITHOUT_AVX2_QGEMM();
  const int64_t M = 4, K = 256;
  auto w = group_weights(M, K, 128, 1);
  QuantizedMatrix q4 = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 128);
  QuantizedMatrix q8 = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q8, 128);
  QuantizedMatrix q4g16 = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 16);
  EXPECT_TRUE(avx2q::gemm_fits(q4.m));
  EXPECT_FALSE(avx2q::gemm_fits(q8.m));
  EXPECT_FALSE(avx2q::gemm_fits(q4g16.m));  // a weight scale inside a block of activations
  auto x = test::block_acts(2, K, 3);
  vnni::QuantizedActs qa;
  vnni::quantize_acts(x.data(), 2, K, DType::Q4, qa);
  std::vector<float> s8, y(size_t(2 * M));
  avx2q::gemm_scales(qa, s8);
  EXPECT_ANY_THROW(avx2q::gemm_q4(q4.m, 0, M, qa, s8.data(), y.data(), M));  // offsets not prepared
  avx2q::prepare(q4.m, qa);
  EXPECT_NO_THROW(avx2q::gemm_q4(q4.m, 0, M, qa, s8.data(), y.data(), M));
  EXPECT_ANY_THROW(avx2q::gemm_q4(q8.m, 0, M, qa, s8.data(), y.data(), M));
}

TEST(Avx2QGemm, QuantMatmulTakesItForInt4BeyondTheGemvsRows) {
  SKIP_WITHOUT_AVX2_QGEMM();
  if (vnni::available()) GTEST_SKIP() << "this CPU has AVX512-VNNI: quant_matmul takes the VNNI kernels instead";
  auto ref = make_ref_ops();
  const int64_t M = 70, K = 4096;
  auto w = group_weights(M, K, 128, 3);
  QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, DType::Q4, 128);
  for (int64_t N : {65, 130}) {
    SCOPED_TRACE(fmt::format("N={}", N));
    auto x = test::block_acts(N, K, 9);
    const Acts a(x, N, qm.m);
    const auto y = gemm(qm.m, a, 0, M);
    std::vector<float> y2(y.size(), NAN), yt(y.size(), NAN);
    quant_matmul(x.data(), N, qm.m, y2.data(), true);
    EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * 4)) << "quant_matmul must be this kernel here";
    quant_matmul(x.data(), N, qm.m, yt.data(), true, QuantPrefill::Tiles);  // forced: the fp32 tiles
    EXPECT_NE(0, std::memcmp(y.data(), yt.data(), y.size() * 4));
    EXPECT_LT(nmax(y2, ref_matmul(*ref, x, N, qm.m)), 5e-2);
    EXPECT_LT(nmax(yt, ref_matmul(*ref, x, N, qm.m)), 1e-5);
  }
}

}  // namespace
}  // namespace glmlab
