// The VNNI prefill GEMM for Q8/Q4 weights (kernels/cpu/vnni_gemm.h) against the fp32 reference fed the
// SAME int8-rounded activations: the kernel's integer sums are exact, so what remains is fp32 summation
// order (normalized max error < 1e-5) — shapes with tails in tokens and rows, ChatGLM3's K = 4096 and
// 13696, groups 32/64/128/per row, Q8 and Q4. Mutated references (scales of the next group, nibbles read
// unsigned or swapped) and un-rounded activations must be far outside that bound, so a kernel with such
// a bug fails.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/vnni_gemm.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "test_quant_util.h"

namespace glmlab {
namespace {

using test::dequantize_acts;
using test::group_weights;
using test::nmax;
using test::ref_matmul;

// Activations whose magnitude changes from block to block of 32 (a wrong block's scale shows).

TEST(VnniGemm, MatchesReferenceOnTheSameInt8ActivationsWithTails) {
  if (!vnni::available()) GTEST_SKIP() << "no AVX512-VNNI on this CPU: the VNNI GEMM does not run here";
  auto ref = make_ref_ops();
  // M = 70: a partial block of 4 rows and (through quant_matmul) blocks of 64 rows; N = 9: a partial
  // block of 4 tokens; N = 101: several groups of tokens (48 for Q4, 96 for Q8) and a partial one.
  const int64_t M = 70;
  double worst = 0;
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t K : {4096, 13696})
      for (int64_t G : {32, 64, 128, 0}) {
        auto w = group_weights(M, K, G ? G : K, uint32_t(K + G));
        QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, G);
        ASSERT_TRUE(vnni::fits(qm.m));
        for (int64_t N : {9, 101}) {
          SCOPED_TRACE(fmt::format("{} K={} G={} N={}", dtype_name(q), K, G, N));
          auto x = test::block_acts(N, K, uint32_t(N + K));
          vnni::QuantizedActs qa;
          vnni::quantize_acts(x.data(), int(N), K, q, qa);
          const auto xd = dequantize_acts(qa, K);
          const auto yr = ref_matmul(*ref, xd, N, qm.m);
          std::vector<float> y(yr.size(), NAN), y2(yr.size(), NAN);
          vnni::gemm(qm.m, 0, M, qa, y.data(), M);
          quant_matmul(x.data(), N, qm.m, y2.data(), true, QuantPrefill::Vnni);
          EXPECT_LT(nmax(y, yr), 1e-5);
          EXPECT_LT(nmax(y2, yr), 1e-5);
          worst = std::max(worst, nmax(y, yr));
          // Rows [5, 38) alone: a range that starts inside a block of 4 rows and ends inside another.
          std::vector<float> y3(yr.size(), 0.0f);
          vnni::gemm(qm.m, 5, 38, qa, y3.data(), M);
          EXPECT_EQ(test::row_range_error(y, y3, N, M, 5, 38), 0.0)
              << "a row range must give exactly the rows of the whole call, and nothing else";
        }
      }
  std::printf("[ info ] worst normalized max error against the reference: %.3g (bound 1e-5)\n", worst);
}

TEST(VnniGemm, WrongScalesNibblesOrActivationsAreFarOutsideTheBound) {
  if (!vnni::available()) GTEST_SKIP() << "no AVX512-VNNI on this CPU: the VNNI GEMM does not run here";
  auto ref = make_ref_ops();
  const int64_t M = 37, K = 4096, N = 19;
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t G : {32, 128}) {
      SCOPED_TRACE(fmt::format("{} G={}", dtype_name(q), G));
      auto w = group_weights(M, K, G, 7);
      QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, G);
      auto x = test::block_acts(N, K, 3);
      vnni::QuantizedActs qa;
      vnni::quantize_acts(x.data(), int(N), K, q, qa);
      std::vector<float> y(size_t(N * M));
      vnni::gemm(qm.m, 0, M, qa, y.data(), M);
      const auto xd = dequantize_acts(qa, K);
      ASSERT_LT(nmax(y, ref_matmul(*ref, xd, N, qm.m)), 1e-5);
      // What the kernel would compute with each bug, as the reference computes it: all ≫ 1e-5.
      for (auto& [what, c] : test::mutations(qm.m)) {
        const double e = nmax(y, ref_matmul(*ref, xd, N, c.m));
        EXPECT_GT(e, 1e-2) << what;
        std::printf("[ info ] %s G=%ld: %s gives %.3g\n", std::string(dtype_name(q)).c_str(), long(G), what, e);
      }
      // The activations before int8 rounding: the rounding itself (≈ 0.3% RMS) is 100× the bound, so
      // the first test really compares against the rounded inputs (and a wrong activation scale shows).
      const double e = nmax(y, ref_matmul(*ref, x, N, qm.m));
      EXPECT_GT(e, 1e-4);
      EXPECT_LT(e, 5e-2);
    }
}

}  // namespace
}  // namespace glmlab
