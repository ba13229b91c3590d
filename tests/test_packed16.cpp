// The packed 16-bit layouts: bf16 for AVX512-BF16 (kernels/cpu/dpbf16_packed.h) and fp16 for AVX-512 FMA
// (kernels/cpu/f16_packed.h). For bf16:
// - pack() keeps every value where the layout says: Matrix::at and unpack_rows give back the row-major
//   matrix bit for bit; shapes it cannot take are refused;
// - packed_matmul against an fp64 reference fed the SAME bf16-rounded activations: bf16 products are
//   exact in fp32, so only fp32 summation order remains (< 1e-5 relative to the row's scale), for every
//   token count (1–8 in one pass, more in groups; 5–8 on fp32 FMAs on AMX CPUs), row counts that leave
//   tails of every tile, and inputs spanning several prefill chunks; a reference on unrounded activations,
//   or one that swaps the two inputs of a pair, is far outside;
// - only the CPU back end with approximate activations packs; exact activations on a packed matrix give
//   bit for bit what they give on the row-major one.
// For fp16 the same, with fp32 activations (nothing rounded): against the fp64 reference < 1e-5, a
// reference that reads the wrong row of a block or the wrong input is far outside; on AMX CPUs from 9
// rows, weights exact as two bf16 tiles and activations rounded to bf16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/dpbf16_packed.h"
#include "kernels/cpu/f16_packed.h"
#include "ops/ops.h"
#include "util/dtype.h"
#include "test_quant_util.h"
#include "util/error.h"

namespace glmlab {
namespace {

struct Bf16 {
  int64_t M, K;
  std::vector<uint16_t> w;
  Matrix m() const { return Matrix{DType::BF16, M, K, w.data()}; }
};

Bf16 make(int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Bf16 b{M, K, std::vector<uint16_t>(size_t(M * K))};
  for (auto& v : b.w) v = f32_to_bf16(u(rng));
  return b;
}

// y[n, r] = Σ_k x'[n, k] · W[r, k] in fp64, x' = x rounded to bf16 (round) or not; `swap` reads the two
// inputs of each pair the wrong way round (a layout bug).
std::vector<double> reference(const Bf16& b, const std::vector<float>& x, int64_t N, bool round, bool swap) {
  std::vector<double> y(size_t(N * b.M));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = 0; r < b.M; ++r) {
      double s = 0;
      for (int64_t k = 0; k < b.K; ++k) {
        const float xv = x[size_t(n * b.K + (swap ? k ^ 1 : k))];
        s += double(round ? bf16_to_f32(f32_to_bf16(xv)) : xv) * double(bf16_to_f32(b.w[size_t(r * b.K + k)]));
      }
      y[size_t(n * b.M + r)] = s;
    }
  return y;
}

TEST(Dpbf16Packed, PackKeepsEveryValueAndRefusesOtherShapes) {
  const Bf16 b = make(48, 96, 1);
  if (!dpbf16::packable(b.m())) GTEST_SKIP() << "no AVX512-BF16 on this CPU: the packed bf16 kernels never run";
  const auto p = dpbf16::pack(b.m());
  EXPECT_EQ(p.m.layout, MatrixLayout::Pairs16);
  EXPECT_EQ(p.m.nbytes(), b.m().nbytes());
  for (int64_t r = 0; r < b.M; ++r)
    for (int64_t c = 0; c < b.K; ++c) ASSERT_EQ(p.m.at(r, c), b.m().at(r, c)) << r << "," << c;
  std::vector<uint16_t> back(size_t(20 * b.K));
  dpbf16::unpack_rows(p.m, 17, 37, back.data());
  EXPECT_TRUE(std::equal(back.begin(), back.end(), b.w.begin() + 17 * b.K));
  // The documented layout: (r, c) = (21, 7) is pair 3 of block 1, lane 5, high half.
  EXPECT_EQ(static_cast<const uint16_t*>(p.m.data)[((1 * 48 + 3) * 16 + 5) * 2 + 1], b.w[size_t(21 * b.K + 7)]);
  EXPECT_FALSE(dpbf16::packable(make(40, 96, 2).m()));   // rows not a multiple of 16
  EXPECT_FALSE(dpbf16::packable(make(48, 80, 2).m()));   // inputs not a multiple of 32
  EXPECT_FALSE(dpbf16::packable(p.m));                   // never twice
  Matrix f16 = b.m();
  f16.dtype = DType::F16;
  EXPECT_FALSE(dpbf16::packable(f16));
  EXPECT_THROW(dpbf16::pack(make(40, 96, 2).m()), Error);
}

TEST(Dpbf16Packed, ProductsMatchTheReferenceOnTheSameRoundedActivations) {
  // 7 and 13 row blocks leave tails after tiles of 3, 4 and 6 blocks; 2112 inputs span two prefill
  // chunks of 2048.
  struct Shape { int64_t M, K; };
  for (Shape s : {Shape{112, 2112}, Shape{208, 64}}) {
    const Bf16 b = make(s.M, s.K, uint32_t(s.M + s.K));
    if (!dpbf16::packable(b.m())) GTEST_SKIP() << "no AVX512-BF16 on this CPU: the packed bf16 kernels never run";
    const auto p = dpbf16::pack(b.m());
    dpbf16::Bf16Acts a;
    for (int64_t N : {1, 2, 3, 4, 5, 7, 8, 9, 16, 19}) {
      SCOPED_TRACE(testing::Message() << s.M << "x" << s.K << " N " << N);
      const auto x = test::uniform_acts(N, s.K, uint32_t(N));
      std::vector<float> y(size_t(N * s.M), -1.0f);
      dpbf16::packed_matmul(p.m, x.data(), N, y.data(), a);
      EXPECT_LT(test::token_nerr(y, reference(b, x, N, true, false), N, s.M), 1e-5);
      // Unrounded activations (bf16 keeps 8 bits: ~2e-3 per product) and swapped pairs are far outside.
      EXPECT_GT(test::token_nerr(y, reference(b, x, N, false, false), N, s.M), 1e-4);
      EXPECT_GT(test::token_nerr(y, reference(b, x, N, true, true), N, s.M), 1e-2);
    }
  }
}

// AMX reads the packed layout as its B tiles (amx::gemm_bf16_packed): against the reference on the same
// rounded activations, with a bias, for row blocks and token counts around the tiles' 16 and 32; the back
// end takes it from 9 rows on and the packed AVX512-BF16 kernel below.
TEST(Dpbf16Packed, AmxReadsThePackedLayout) {
  if (!amx::available()) GTEST_SKIP() << "no AMX on this CPU";
  struct Shape { int64_t M, K; };
  // 560 x 288: 35 row blocks (an odd one at the end) over several jobs, 9 steps (a chunk of 8 and one
  // more); with 530 tokens, two groups of token blocks, the last block 18 tokens. 2064 x 64 at 530 tokens:
  // an output over 4 MB, written with non-temporal stores (and 129 row blocks).
  for (Shape s : {Shape{16, 32}, Shape{48, 96}, Shape{64, 2112}, Shape{560, 288}, Shape{2064, 64}}) {
    const Bf16 b = make(s.M, s.K, uint32_t(3 * s.M + s.K));
    ASSERT_TRUE(dpbf16::packable(b.m()));
    const auto p = dpbf16::pack(b.m());
    std::vector<float> bias(size_t(s.M));
    for (int64_t r = 0; r < s.M; ++r) bias[size_t(r)] = 0.01f * float(r % 7) - 0.03f;
    std::vector<int64_t> Ns = {1, 9, 15, 16, 17, 32, 33, 40};
    if (s.M == 560) Ns = {9, 40, 530};
    if (s.M == 2064) Ns = {530};
    for (int64_t N : Ns) {
      SCOPED_TRACE(testing::Message() << s.M << "x" << s.K << " N " << N);
      const auto x = test::uniform_acts(N, s.K, uint32_t(7 * N));
      std::vector<float> y(size_t(N * s.M), -1.0f);
      amx::gemm_bf16_packed(static_cast<const uint16_t*>(p.m.data), s.M, s.K, x.data(), N, bias.data(), y.data());
      auto ref = reference(b, x, N, true, false);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t r = 0; r < s.M; ++r) ref[size_t(n * s.M + r)] += bias[size_t(r)];
      EXPECT_LT(test::token_nerr(y, ref, N, s.M), 1e-5);
      EXPECT_GT(test::token_nerr(y, reference(b, x, N, true, true), N, s.M), 1e-2);  // pairs swapped
      // The back end: AMX from 9 rows, bit for bit the kernel above.
      std::vector<float> yo(y.size());
      make_ops(Backend::Cpu, true)->matmul(x.data(), N, p.m, bias.data(), yo.data());
      if (N >= 9) EXPECT_EQ(yo, y);
    }
  }
}

TEST(Dpbf16Packed, OnlyTheApproximateCpuBackEndPacksAndExactActivationsReadItRowMajor) {
  const Bf16 b = make(64, 128, 5);
  if (!dpbf16::packable(b.m())) GTEST_SKIP() << "no AVX512-BF16 on this CPU: the packed bf16 kernels never run";
  PackedWeights pw;
  auto exact = make_ops(Backend::Cpu, false);
  EXPECT_FALSE(exact->pack_weights(b.m(), pw));
  EXPECT_FALSE(make_ops(Backend::CpuRef, true)->pack_weights(b.m(), pw));
  auto ops = make_ops(Backend::Cpu, true);
  ASSERT_TRUE(ops->pack_weights(b.m(), pw));
  EXPECT_EQ(pw.m.layout, MatrixLayout::Pairs16);
  EXPECT_EQ(ops->matmul_unit(pw.m), "bf16");
  EXPECT_FALSE(ops->pack_weights(pw.m, pw));
  // The back end's matmul on the packed matrix is the packed kernel (bit for bit; on an AMX CPU from 9
  // rows the AMX kernel on the same layout)...
  for (int64_t N : {3, 12}) {
    const auto x = test::uniform_acts(N, b.K, 9);
    std::vector<float> y(size_t(N * b.M)), yk(y.size()), ye(y.size()), yr(y.size());
    ops->matmul(x.data(), N, pw.m, nullptr, y.data());
    dpbf16::Bf16Acts a;
    if (N >= 9 && amx::available())
      amx::gemm_bf16_packed(static_cast<const uint16_t*>(pw.m.data), b.M, b.K, x.data(), N, nullptr, yk.data());
    else
      dpbf16::packed_matmul(pw.m, x.data(), N, yk.data(), a);
    EXPECT_EQ(y, yk) << N;
    // ...and exact activations give on it what they give on the row-major matrix.
    exact->matmul(x.data(), N, pw.m, nullptr, ye.data());
    exact->matmul(x.data(), N, b.m(), nullptr, yr.data());
    EXPECT_EQ(ye, yr) << N;
  }
}

// fp16 weights: W[r, k] = f16(values of make()), the reference on unrounded activations; `shift`
// reads row (r + 1) % M's weights for odd rows (a lane mix-up inside a block).
struct F16 {
  int64_t M, K;
  std::vector<uint16_t> w;
  Matrix m() const { return Matrix{DType::F16, M, K, w.data()}; }
};
F16 make_f16(int64_t M, int64_t K, uint32_t seed) {
  Bf16 b = make(M, K, seed);
  F16 f{M, K, std::vector<uint16_t>(b.w.size())};
  for (size_t i = 0; i < b.w.size(); ++i) f.w[i] = f32_to_f16(bf16_to_f32(b.w[i]) * 0.75f + 0.001f * float(i % 7));
  return f;
}
std::vector<double> reference_f16(const F16& f, const std::vector<float>& x, int64_t N, bool shift) {
  std::vector<double> y(size_t(N * f.M));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = 0; r < f.M; ++r) {
      const int64_t wr = shift && r % 2 ? (r + 1) % f.M : r;
      double s = 0;
      for (int64_t k = 0; k < f.K; ++k) s += double(x[size_t(n * f.K + k)]) * double(f16_to_f32(f.w[size_t(wr * f.K + k)]));
      y[size_t(n * f.M + r)] = s;
    }
  return y;
}

TEST(F16Packed, PackKeepsEveryValueAndRefusesOtherShapes) {
  const F16 f = make_f16(48, 40, 3);
  if (!f16p::packable(f.m())) GTEST_SKIP() << "no AVX-512 on this CPU: the packed fp16 kernels never run";
  const auto p = f16p::pack(f.m());
  EXPECT_EQ(p.m.layout, MatrixLayout::Rows16);
  EXPECT_EQ(p.m.nbytes(), f.m().nbytes());
  for (int64_t r = 0; r < f.M; ++r)
    for (int64_t c = 0; c < f.K; ++c) ASSERT_EQ(p.m.at(r, c), f.m().at(r, c)) << r << "," << c;
  std::vector<uint16_t> back(size_t(20 * f.K));
  f16p::unpack_rows(p.m, 17, 37, back.data());
  EXPECT_TRUE(std::equal(back.begin(), back.end(), f.w.begin() + 17 * f.K));
  // The documented layout: (r, c) = (21, 7) is input 7 of block 1, lane 5.
  EXPECT_EQ(static_cast<const uint16_t*>(p.m.data)[(1 * 40 + 7) * 16 + 5], f.w[size_t(21 * f.K + 7)]);
  EXPECT_FALSE(f16p::packable(make_f16(40, 40, 2).m()));  // rows not a multiple of 16
  EXPECT_FALSE(f16p::packable(p.m));                      // never twice
  EXPECT_FALSE(f16p::packable(make(48, 64, 2).m()));      // bf16
  EXPECT_THROW(f16p::pack(make_f16(40, 40, 2).m()), Error);
}

TEST(F16Packed, ProductsMatchTheFp32Reference) {
  // 7 and 13 row blocks leave tails after tiles of 3, 4 and 6 blocks; 2100 inputs span three prefill
  // chunks of 1024, the last one partial.
  struct Shape { int64_t M, K; };
  for (Shape s : {Shape{112, 2100}, Shape{208, 24}}) {
    const F16 f = make_f16(s.M, s.K, uint32_t(s.M * 3 + s.K));
    if (!f16p::packable(f.m())) GTEST_SKIP() << "no AVX-512 on this CPU: the packed fp16 kernels never run";
    const auto p = f16p::pack(f.m());
    for (int64_t N : {1, 2, 3, 4, 5, 7, 8, 9, 16, 19}) {
      SCOPED_TRACE(testing::Message() << s.M << "x" << s.K << " N " << N);
      const auto x = test::uniform_acts(N, s.K, uint32_t(N + 40));
      std::vector<float> y(size_t(N * s.M), -1.0f);
      f16p::packed_matmul(p.m, x.data(), N, y.data());
      EXPECT_LT(test::token_nerr(y, reference_f16(f, x, N, false), N, s.M), 1e-5);
      EXPECT_GT(test::token_nerr(y, reference_f16(f, x, N, true), N, s.M), 1e-2);
    }
  }
}

// On AMX CPUs the back end takes fp16 from 32 rows (K a multiple of 32) to amx::gemm_f16_packed: the
// weights split into bf16 tiles hi + lo that sum to them exactly, the activations rounded to bf16. Against
// the fp64 reference on the same rounded activations and the exact fp16 weights, with a bias: < 1e-5
// (one bf16 tile, hi alone, is ~1e-3 off); on unrounded activations it is far outside. Shapes as the
// bf16 AMX test: odd row blocks, chunk tails, two groups of token blocks, an output over 4 MB.
TEST(F16Packed, AmxSplitsTheWeightsExactlyAndRoundsTheActivations) {
  if (!amx::available()) GTEST_SKIP() << "no AMX on this CPU";
  struct Shape { int64_t M, K; };
  for (Shape s : {Shape{16, 32}, Shape{48, 96}, Shape{64, 2112}, Shape{560, 288}, Shape{2064, 64}}) {
    const F16 f = make_f16(s.M, s.K, uint32_t(5 * s.M + s.K));
    ASSERT_TRUE(f16p::packable(f.m()));
    const auto p = f16p::pack(f.m());
    std::vector<float> bias(size_t(s.M));
    for (int64_t r = 0; r < s.M; ++r) bias[size_t(r)] = 0.02f * float(r % 5) - 0.04f;
    std::vector<int64_t> Ns = {9, 15, 16, 17, 32, 33, 40};
    if (s.M == 560) Ns = {9, 40, 530};
    if (s.M == 2064) Ns = {530};
    for (int64_t N : Ns) {
      SCOPED_TRACE(testing::Message() << s.M << "x" << s.K << " N " << N);
      const auto x = test::uniform_acts(N, s.K, uint32_t(11 * N));
      auto xr = x;
      for (auto& v : xr) v = bf16_to_f32(f32_to_bf16(v));
      std::vector<float> y(size_t(N * s.M), -1.0f);
      amx::gemm_f16_packed(static_cast<const uint16_t*>(p.m.data), s.M, s.K, x.data(), N, bias.data(), y.data());
      auto with_bias = [&](std::vector<double> ref) {
        for (int64_t n = 0; n < N; ++n)
          for (int64_t r = 0; r < s.M; ++r) ref[size_t(n * s.M + r)] += bias[size_t(r)];
        return ref;
      };
      EXPECT_LT(test::token_nerr(y, with_bias(reference_f16(f, xr, N, false)), N, s.M), 1e-5);
      EXPECT_GT(test::token_nerr(y, with_bias(reference_f16(f, x, N, false)), N, s.M), 1e-4);  // unrounded
      EXPECT_GT(test::token_nerr(y, with_bias(reference_f16(f, xr, N, true)), N, s.M), 1e-2);  // rows mixed
      std::vector<float> yo(y.size());
      make_ops(Backend::Cpu, true)->matmul(x.data(), N, p.m, bias.data(), yo.data());
      if (N >= 32) EXPECT_EQ(yo, y);  // the back end from 32 rows: this kernel, bit for bit
    }
  }
}

TEST(F16Packed, OnlyTheApproximateCpuBackEndPacksAndExactActivationsReadItRowMajor) {
  const F16 f = make_f16(64, 72, 5);  // 72 inputs: not AMX's multiple of 32, the AVX-512 kernel at every N
  if (!f16p::packable(f.m())) GTEST_SKIP() << "no AVX-512 on this CPU: the packed fp16 kernels never run";
  PackedWeights pw;
  auto exact = make_ops(Backend::Cpu, false);
  EXPECT_FALSE(exact->pack_weights(f.m(), pw));
  EXPECT_FALSE(make_ops(Backend::CpuRef, true)->pack_weights(f.m(), pw));
  auto ops = make_ops(Backend::Cpu, true);
  ASSERT_TRUE(ops->pack_weights(f.m(), pw));
  EXPECT_EQ(pw.m.layout, MatrixLayout::Rows16);
  EXPECT_FALSE(ops->pack_weights(pw.m, pw));
  for (int64_t N : {3, 12}) {
    const auto x = test::uniform_acts(N, f.K, 9);
    std::vector<float> y(size_t(N * f.M)), yk(y.size()), ye(y.size()), yr(y.size());
    ops->matmul(x.data(), N, pw.m, nullptr, y.data());
    f16p::packed_matmul(pw.m, x.data(), N, yk.data());
    EXPECT_EQ(y, yk) << N;
    exact->matmul(x.data(), N, pw.m, nullptr, ye.data());
    exact->matmul(x.data(), N, f.m(), nullptr, yr.data());
    EXPECT_EQ(ye, yr) << N;
  }
}

}  // namespace
}  // namespace glmlab
