// The probe kernels (kernels/cpu/probe_kernels.h) and the probes (lab/probe.h): every access pattern
// reads every byte exactly once, the peak loops do the work they count, and the probe reports the
// best of what it measured.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/amx_int8.h"
#include "kernels/cpu/probe_kernels.h"
#include "lab/probe.h"

namespace glmlab {
namespace {

TEST(ProbeKernels, EveryReadPatternSumsEveryByteOnce) {
  // Small integers in fp32 sum exactly in any order: the sum tells whether a byte was skipped or read twice.
  const size_t n = 16 * 8192 / 4 * 4;  // 4 passes of 8 rows of 8 KiB (and whole 64-byte units of 16 streams)
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::aligned_alloc(64, n * 4)), &std::free);
  double want = 0;
  for (size_t i = 0; i < n; ++i) {
    buf.get()[i] = float(i % 7);
    want += double(i % 7);
  }
  struct P {
    int streams;
    size_t row, prefetch;
  };
  for (P p : {P{1, 0, 0}, P{1, 0, 4096}, P{2, 0, 4096}, P{4, 0, 1024}, P{8, 0, 512}, P{16, 0, 0}, P{4, 8192, 2048},
              P{8, 8192, 1024}})
    EXPECT_EQ(double(probek::read(buf.get(), n * 4, p.streams, p.row, p.prefetch)), want)
        << p.streams << " streams, rows of " << p.row << " bytes";
}

TEST(ProbeKernels, PeakLoopsDoTheWorkTheyCount) {
  float sink = 0;
  if (probek::avx512_available()) {
    // 16 chains × 16 lanes, each adding 1.0 · 1.0 per iteration: 100 iterations → 16 · 16 · 100 (rounded inputs aside).
    EXPECT_EQ(probek::fma_f32(100, &sink), 100.0 * 16 * 32);
    EXPECT_NEAR(sink, 16 * 16 * 100, 1.0);
  } else if (probek::avx2_available()) {
    EXPECT_STREQ(probek::fma_unit(), "AVX2");
    EXPECT_EQ(probek::fma_f32(100, &sink), 100.0 * 12 * 16);  // 12 chains × 8 lanes
    EXPECT_NEAR(sink, 12 * 8 * 100, 1.0);
  }
  if (probek::dpbf16_available()) {
    EXPECT_EQ(probek::dot_bf16(100, &sink), 100.0 * 16 * 64);
    // 1.0 · 0.99609375 (bf16 0x3f7f) twice per lane per step.
    EXPECT_NEAR(sink, 16 * 16 * 100 * 2 * 0.99609375, 0.5);
  }
  if (probek::vnni_available()) {
    EXPECT_EQ(probek::dot_u8s8_variants(), 1);
    EXPECT_EQ(probek::dot_u8s8(0, 100, &sink), 100.0 * 16 * 128);
    EXPECT_EQ(sink, float(16 * 16 * 100 * 4 * (3 * -2)));
  } else if (probek::avx2_available()) {
    EXPECT_STREQ(probek::int8_dot_unit(), "AVX2");
    ASSERT_EQ(probek::dot_u8s8_variants(), 3);
    // Chain c multiplies bytes 3 + c by −2 in pairs: −4·(3 + c) per int16 lane and step. The sink is the
    // xor of lanes 0, 5 and 15 of the xor over the chains, all lanes equal: the xor over the chains' sums.
    const int chains[3] = {4, 5, 6};
    for (int v = 0; v < 3; ++v) {
      EXPECT_EQ(probek::dot_u8s8(v, 100, &sink), 100.0 * chains[v] * 64);
      int16_t x = 0;
      for (int c = 0; c < chains[v]; ++c) x = int16_t(x ^ int16_t(100 * -4 * (3 + c)));
      EXPECT_EQ(sink, float(int16_t(x ^ x ^ x))) << chains[v] << " chains";
    }
  }
  if (amx::available()) {
    EXPECT_EQ(amx::peak_bf16(10, &sink), 10.0 * 4 * 16 * 16 * 32 * 2);
    EXPECT_EQ(sink, 2 * 10 * 32.0f);  // c[0] of tile 0 + c[255] of tile 3: 10 steps of 32 products of 1 · 1 each
  }
  if (amx::int8_available()) {
    EXPECT_EQ(amx::peak_int8(10, &sink), 10.0 * 4 * 16 * 16 * 64 * 2);
    EXPECT_EQ(sink, 2 * 10 * 64.0f);  // as above, 64 byte products of 1 · 1 per step
  }
}

TEST(Probe, MemoryProbeReportsTheBestOfItsRows) {
  const MemoryProbe m = probe_memory(16ull << 20, 2, 1);
  ASSERT_EQ(m.rows.size(), 18u);  // 9 patterns × (4 KiB, huge pages) × 1 allocation
  EXPECT_GT(m.threads, 0);
  double best = 0;
  for (const auto& r : m.rows) {
    EXPECT_GT(r.gbs.median, 0) << r.pattern;
    EXPECT_EQ(r.gbs.samples.size(), 2u);
    best = std::max(best, r.gbs.median);
  }
  EXPECT_EQ(m.best.median, best);
  EXPECT_EQ(m.spread_high, best);
  EXPECT_LE(m.spread_low, m.spread_high);
  EXPECT_FALSE(m.best_pattern.empty());
  const ComputeProbe c = probe_compute(1);
  EXPECT_EQ(c.fp32_fma.median > 0, probek::avx512_available() || probek::avx2_available());
  EXPECT_EQ(c.fma_unit, probek::avx512_available() ? "AVX-512" : probek::avx2_available() ? "AVX2" : "");
  EXPECT_EQ(c.int8_dot.median > 0, probek::vnni_available() || probek::avx2_available());
  EXPECT_EQ(c.int8_unit, amx::int8_available() ? "AMX"
                         : probek::vnni_available() ? "AVX512-VNNI"
                         : probek::avx2_available() ? "AVX2"
                                                     : "");
  EXPECT_EQ(c.bf16_unit, amx::available() ? "AMX" : probek::dpbf16_available() ? "AVX512-BF16" : "");
}

}  // namespace
}  // namespace glmlab
