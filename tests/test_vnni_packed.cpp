// The packed VNNI layout and decode GEMV (kernels/cpu/vnni_packed.h):
// - pack() keeps every value: Matrix::at and unpack_rows give back the row-major matrix exactly, for row
//   counts that are not multiples of 16 and every group size it takes;
// - the GEMV against the fp32 reference fed the SAME int8 activations (read back from PackedActs in
//   the documented layout): its integer sums are exact, so only fp32 summation order remains (< 1e-5);
//   a reference that reads the next group's scale, or activations not rounded, is far outside;
// - quantize_acts rounds each input to within half a step of its block's scale;
// - quant_matmul on a packed matrix: every path that is not the packed GEMV (tiles, the fp32 GEMV)
//   gives bit for bit what it gives on the row-major matrix, and the packed GEMV (taken at every number
//   of rows) stays close to exact.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/amx_int8.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/vnni_packed.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "test_quant_util.h"

namespace glmlab {
namespace {

using test::group_weights;

// Activations whose magnitude changes from block to block of 32 (a wrong block's scale shows).

// The fp32 inputs the kernel multiplies, read from PackedActs' documented layout.
std::vector<float> dequantize_acts(const vnni::PackedActs& a, int64_t K) {
  const bool q4 = a.wtype == DType::Q4;
  const int64_t ui = q4 ? 8 : 4, kS = q4 ? 8 : 4;
  std::vector<float> x(size_t(a.nt * K));
  for (int64_t t = 0; t < a.nt; ++t)
    for (int64_t i = 0; i < K; ++i) {
      const int64_t u = i / ui, j = i % ui;
      const int v = a.q[size_t((t * a.units + u) * kS + (q4 ? (j % 2) * 4 + j / 2 : j))];
      x[size_t(t * K + i)] = float(v) * a.scale[size_t(t * a.blocks + i / a.block)];
    }
  return x;
}

// y[t, r] = Σ x[t, i] · W[r, i] in double, W read through `w(r, i)`.
template <class F>
std::vector<float> reference(const std::vector<float>& x, int64_t N, int64_t M, int64_t K, F&& w) {
  std::vector<float> y(size_t(N * M));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < M; ++r) {
      double s = 0;
      for (int64_t i = 0; i < K; ++i) s += double(x[size_t(t * K + i)]) * w(r, i);
      y[size_t(t * M + r)] = float(s);
    }
  return y;
}

using test::nmax;

struct Shape {
  DType q;
  int64_t M, K, G;
};
std::string name(const Shape& s) {
  return fmt::format("{} {}x{} group {}", s.q == DType::Q4 ? "Q4" : "Q8", s.M, s.K, s.G);
}

const Shape kShapes[] = {
    {DType::Q4, 37, 264, 128}, {DType::Q4, 48, 136, 32}, {DType::Q4, 33, 200, 0},  {DType::Q4, 64, 512, 64},
    {DType::Q8, 37, 260, 128}, {DType::Q8, 16, 132, 32}, {DType::Q8, 50, 196, 0},  {DType::Q8, 64, 384, 256},
};

QuantizedMatrix make(const Shape& s, uint32_t seed) {
  const auto w = group_weights(s.M, s.K, s.G ? s.G : s.K, seed);
  return quantize(Matrix{DType::F32, s.M, s.K, w.data()}, s.q, s.G);
}

TEST(VnniPacked, PackKeepsEveryValueAndUnpacksExactly) {
  if (!vnni::packable(make(kShapes[0], 1).m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  for (const auto& s : kShapes) {
    SCOPED_TRACE(name(s));
    const auto qm = make(s, 2);
    ASSERT_TRUE(vnni::packable(qm.m));
    const auto p = vnni::pack(qm.m);
    EXPECT_EQ(p.m.layout, MatrixLayout::Vnni16);
    EXPECT_EQ(p.m.stored_rows() % 16, 0);
    for (int64_t r = 0; r < s.M; ++r)
      for (int64_t c = 0; c < s.K; ++c) ASSERT_EQ(p.m.at(r, c), qm.m.at(r, c)) << r << "," << c;
    std::vector<uint8_t> data(qm.m.data_bytes());
    std::vector<uint16_t> scales(size_t(s.M * qm.m.groups()));
    vnni::unpack_rows(p.m, 0, s.M, data.data(), scales.data());
    EXPECT_EQ(0, std::memcmp(data.data(), qm.m.data, data.size()));
    EXPECT_EQ(0, std::memcmp(scales.data(), qm.m.scales, scales.size() * 2));
  }
}

TEST(VnniPacked, NotPackableShapesAreRefused) {
  const auto qm = make({DType::Q4, 16, 132, 4}, 3);  // 132 % 8 != 0; group 4 < a unit
  EXPECT_FALSE(vnni::packable(qm.m));
  EXPECT_THROW(vnni::pack(qm.m), std::exception);
}

TEST(VnniPacked, QuantizedActivationsAreWithinHalfAStep) {
  if (!vnni::packable(make(kShapes[0], 1).m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  for (const auto& s : kShapes) {
    SCOPED_TRACE(name(s));
    const auto p = vnni::pack(make(s, 4).m);
    const int64_t N = 3;
    const auto x = test::block_acts(N, s.K, 5);
    vnni::PackedActs a;
    vnni::quantize_acts(x.data(), int(N), p.m, a);
    EXPECT_EQ(a.block, (s.G == 0 || s.G % 128 == 0) ? 128 : s.G);
    const auto xd = dequantize_acts(a, s.K);
    for (int64_t t = 0; t < N; ++t)
      for (int64_t i = 0; i < s.K; ++i) {
        const float d = a.scale[size_t(t * a.blocks + i / a.block)];
        ASSERT_LE(std::fabs(xd[size_t(t * s.K + i)] - x[size_t(t * s.K + i)]), 0.5f * d * 1.0001f) << t << "," << i;
      }
  }
}

TEST(VnniPacked, GemvIsExactOnTheSameInt8Activations) {
  if (!vnni::packable(make(kShapes[0], 1).m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  for (const auto& s : kShapes)
    for (int N : {1, 2, 3, 5, 8, 9, 17}) {
      SCOPED_TRACE(fmt::format("{} N={}", name(s), N));
      const auto qm = make(s, 6);
      const auto p = vnni::pack(qm.m);
      const auto x = test::block_acts(N, s.K, 7 + N);
      vnni::PackedActs a;
      vnni::quantize_acts(x.data(), N, p.m, a);
      std::vector<float> y(size_t(N * s.M), -1.0f);
      // Two calls on 16-row-aligned halves, as the threads split the rows.
      const int64_t mid = s.M > 16 ? 16 : s.M;
      vnni::gemv(p.m, 0, mid, a, y.data(), s.M);
      if (mid < s.M) vnni::gemv(p.m, mid, s.M, a, y.data(), s.M);
      const auto xd = dequantize_acts(a, s.K);
      const auto ref = reference(xd, N, s.M, s.K, [&](int64_t r, int64_t i) { return double(qm.m.at(r, i)); });
      EXPECT_LT(nmax(y, ref), 1e-5);
      // A kernel that read the next group's scale, or the activations before rounding, would be far off.
      const int64_t G = qm.m.group_size, ng = qm.m.groups();
      if (ng > 1) {
        const auto bad = reference(xd, N, s.M, s.K, [&](int64_t r, int64_t i) {
          const int64_t g = std::min(ng - 1, i / G + 1);
          return double(quantized_value(qm.m, r, i)) * quantized_scale(qm.m, r, g * G);
        });
        EXPECT_GT(nmax(bad, ref), 1e-2);
      }
      const auto unrounded = reference(x, N, s.M, s.K, [&](int64_t r, int64_t i) { return double(qm.m.at(r, i)); });
      EXPECT_GT(nmax(unrounded, ref), 1e-4);
      EXPECT_LT(nmax(y, unrounded), 3e-2);  // int8 activations: close to exact, not exact
    }
}

TEST(VnniPacked, QuantMatmulOnPackedWeights) {
  if (!vnni::packable(make(kShapes[0], 1).m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  for (const Shape& s : {kShapes[0], kShapes[4], Shape{DType::Q4, 64, 256, 128}})
    for (int N : {1, 3, 16, 17, 40}) {
      SCOPED_TRACE(fmt::format("{} N={}", name(s), N));
      const auto qm = make(s, 8);
      const auto p = vnni::pack(qm.m);
      const auto x = test::block_acts(N, s.K, 9);
      const auto exact = reference(x, N, s.M, s.K, [&](int64_t r, int64_t i) { return double(qm.m.at(r, i)); });
      std::vector<float> yp(size_t(N * s.M)), yr(size_t(N * s.M));
      // fp32 activations (no packed GEMV): the same kernels on unpacked rows, bit for bit.
      quant_matmul(x.data(), N, p.m, yp.data(), false);
      quant_matmul(x.data(), N, qm.m, yr.data(), false);
      EXPECT_EQ(yp, yr);
      // Approximate activations, tiles forced: the bf16 tiles on unpacked rows, bit for bit beyond the
      // row-major VNNI GEMV's 16 rows.
      quant_matmul(x.data(), N, p.m, yp.data(), true, QuantPrefill::Tiles);
      quant_matmul(x.data(), N, qm.m, yr.data(), true, QuantPrefill::Tiles);
      if (N > 16) EXPECT_EQ(yp, yr);
      EXPECT_LT(nmax(yp, exact), 3e-2);
      // The back end's choice on packed weights: the packed GEMV at every N, equal to calling it directly.
      quant_matmul(x.data(), N, p.m, yp.data(), true);
      vnni::PackedActs a;
      vnni::quantize_acts(x.data(), N, p.m, a);
      vnni::gemv(p.m, 0, s.M, a, yr.data(), s.M);
      EXPECT_EQ(yp, yr);
      EXPECT_LT(nmax(yp, exact), 3e-2);
    }
}

// AMX-INT8 tiles on the packed layout (amx_int8.h): the same int8 activations and the same fold as the
// packed GEMV, so the same bits, for odd numbers of row blocks, a last partial row block, token counts
// around the tiles' 16 and 32, a last activation block of 64 inputs, groups of 64, 128, 256 and one per row.
TEST(VnniPacked, AmxInt8GivesThePackedGemvsBits) {
  const Shape shapes[] = {
      {DType::Q4, 64, 512, 64}, {DType::Q4, 48, 320, 128}, {DType::Q4, 33, 192, 0},
      {DType::Q8, 64, 384, 256}, {DType::Q8, 37, 320, 0}, {DType::Q8, 80, 448, 128}, {DType::Q4, 2072, 128, 128},
  };
  if (!vnni::packable(make(shapes[0], 1).m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU (so no AMX-INT8 either)";
  {
    const auto p = vnni::pack(make(shapes[0], 1).m);
    vnni::PackedActs a;
    const auto x = test::block_acts(1, shapes[0].K, 1);
    vnni::quantize_acts(x.data(), 1, p.m, a);
    if (!amx::int8_fits(p.m, a)) GTEST_SKIP() << "no AMX-INT8 on this CPU";
  }
  // The last shape only at 530 tokens: an output over 4 MB, written with non-temporal stores, and a
  // partial last block of rows.
  for (const auto& s : shapes)
    for (int N : {1, 15, 16, 17, 32, 33, 40, 64, 530}) {
      if ((N == 530) != (s.M == 2072)) continue;
      SCOPED_TRACE(fmt::format("{} N={}", name(s), N));
      const auto qm = make(s, 11);
      const auto p = vnni::pack(qm.m);
      const auto x = test::block_acts(N, s.K, 12 + N);
      vnni::PackedActs a;
      vnni::quantize_acts(x.data(), N, p.m, a);
      ASSERT_TRUE(amx::int8_fits(p.m, a));
      std::vector<float> ya(size_t(N * s.M), -1.0f), yv(size_t(N * s.M), -2.0f);
      amx::packed_gemm(p.m, a, ya.data(), s.M);
      vnni::gemv(p.m, 0, s.M, a, yv.data(), s.M);
      EXPECT_EQ(ya, yv);
      const auto ref = reference(dequantize_acts(a, s.K), N, s.M, s.K,
                                 [&](int64_t r, int64_t i) { return double(qm.m.at(r, i)); });
      EXPECT_LT(nmax(ya, ref), 1e-5);
    }
  // Shapes it does not take: inputs not a multiple of 64, activation blocks of 32.
  for (const Shape& s : {Shape{DType::Q8, 16, 132, 32}, Shape{DType::Q4, 37, 264, 128}}) {
    const auto p = vnni::pack(make(s, 13).m);
    vnni::PackedActs a;
    const auto x = test::block_acts(16, s.K, 14);
    vnni::quantize_acts(x.data(), 16, p.m, a);
    EXPECT_FALSE(amx::int8_fits(p.m, a)) << name(s);
  }
}

TEST(VnniPacked, OnlyTheApproximateCpuBackEndPacksAndItsPrefillIsSetAgainstTheInt8Peak) {
  const auto qm = make(kShapes[0], 10);
  if (!vnni::packable(qm.m)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  PackedWeights pw;
  EXPECT_FALSE(make_ops(Backend::Cpu, false)->pack_weights(qm.m, pw));  // exact activations: row-major kernels
  EXPECT_FALSE(make_ops(Backend::CpuRef, true)->pack_weights(qm.m, pw));
  auto ops = make_ops(Backend::Cpu, true);
  ASSERT_TRUE(ops->pack_weights(qm.m, pw));
  EXPECT_EQ(pw.m.layout, MatrixLayout::Vnni16);
  EXPECT_EQ(ops->matmul_unit(pw.m), "int8");
  EXPECT_NE(ops->matmul_unit(qm.m), "int8");
  EXPECT_FALSE(ops->pack_weights(pw.m, pw));  // never twice
}

}  // namespace
}  // namespace glmlab
