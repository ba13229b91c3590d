#include "lab/probe.h"

#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/amx_int8.h"
#include "kernels/cpu/probe_kernels.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {

ProbeResult summarize(std::vector<double> s) {
  ProbeResult r;
  r.samples = s;
  if (s.empty()) return r;
  std::sort(s.begin(), s.end());
  r.min = s.front();
  r.max = s.back();
  r.median = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  return r;
}

namespace {

using Clock = std::chrono::steady_clock;

struct ReadPattern {
  const char* name;
  int streams;
  size_t row_bytes, prefetch;
};
// One sequential stream per thread, alone and prefetched 4 KiB ahead (the int8/int4 VNNI GEMV's
// pattern); several long streams with and without software prefetch (the bf16 GEMV reads 4 prefetched
// 2 KiB ahead); and rows of 8 KiB (a ChatGLM3 row of 4096 bf16 inputs) side by side. On 2 Zen 5 cores the
// int4 GEMV once read 2% more than the best of the first six patterns: the 4 KiB ones were added.
constexpr ReadPattern kPatterns[] = {
    {"1 stream", 1, 0, 0},
    {"1 stream, prefetch 4 KiB", 1, 0, 4096},
    {"2 streams, prefetch 4 KiB", 2, 0, 4096},
    {"4 streams, prefetch 2 KiB", 4, 0, 2048},
    {"4 streams", 4, 0, 0},
    {"4 streams, prefetch 1 KiB", 4, 0, 1024},
    {"8 streams, prefetch 512 B", 8, 0, 512},
    {"GEMV rows 8 KiB x4, prefetch 2 KiB", 4, 8192, 2048},
    {"GEMV rows 8 KiB x8, prefetch 1 KiB", 8, 8192, 1024},
};

// An anonymous mapping, on transparent huge pages when asked (madvise: the kernel's default here), its
// pages touched by the threads that will read them.
struct Mapping {
  void* p = MAP_FAILED;
  size_t bytes = 0;
  Mapping(size_t b, bool huge) : bytes(b) {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw Error(fmt::format("memory probe: cannot map {} MiB", bytes >> 20));
    if (huge) ::madvise(p, bytes, MADV_HUGEPAGE);
    auto* f = static_cast<float*>(p);
    const size_t n = bytes / sizeof(float);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) f[i] = 1.0f;
  }
  ~Mapping() {
    if (p != MAP_FAILED) ::munmap(p, bytes);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

// Runs `work(sink)` on every thread at once, `reps` times after a warm-up. Each call returns how much it
// did (bytes read, operations) and writes a value derived from its work to *sink, so that nothing is
// optimized away. Result: 10⁹ units per second, all threads together.
template <class F>
ProbeResult time_all_threads(int reps, F work) {
  std::vector<double> rates;
  volatile float sink = 0;
  for (int r = 0; r <= reps; ++r) {
    double done = 0;
    float s = 0;
    const auto t0 = Clock::now();
#pragma omp parallel reduction(+ : done, s)
    {
      float k = 0;
      done += work(&k);
      s += k;
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    sink = sink + s;
    if (r > 0) rates.push_back(done / sec / 1e9);  // r = 0 is the warm-up
  }
  return summarize(rates);
}

// GB/s of one read pattern: each thread reads whole units of the pattern (streams × row, or × 64 KiB).
ProbeResult time_reads(const Mapping& m, const ReadPattern& pat, int reps) {
  return time_all_threads(reps, [&](float* sink) {
    const int nth = omp_get_num_threads(), id = omp_get_thread_num();
    const size_t unit = size_t(pat.streams) * (pat.row_bytes ? pat.row_bytes : 64 * 1024);
    const size_t per = m.bytes / size_t(nth) / unit * unit;
    *sink = probek::read(static_cast<const char*>(m.p) + per * size_t(id), per, pat.streams, pat.row_bytes,
                         pat.prefetch);
    return double(per);
  });
}

// GFLOP/s (or 10⁹ int ops/s) of a register-resident peak loop `one(iters, sink)` on every thread.
template <class F>
ProbeResult time_peak(F one, int64_t iters, int reps) {
  return time_all_threads(reps, [&](float* sink) { return one(iters, sink); });
}

}  // namespace

MemoryProbe probe_memory(uint64_t bytes, int reps, int allocations) {
  check_memory(bytes, "the memory probe's buffer");
  MemoryProbe out;
  out.threads = omp_get_max_threads();
  for (int a = 0; a < allocations; ++a)
    for (bool huge : {false, true}) {
      Mapping m(size_t(bytes), huge);
      for (const auto& pat : kPatterns) out.rows.push_back({pat.name, huge, a, time_reads(m, pat, reps)});
    }
  const MemoryPattern* best = nullptr;
  out.spread_low = 1e300;
  for (const auto& r : out.rows) {
    if (!best || r.gbs.median > best->gbs.median) best = &r;
    out.spread_low = std::min(out.spread_low, r.gbs.median);
    out.spread_high = std::max(out.spread_high, r.gbs.median);
  }
  if (best) {
    out.best = best->gbs;
    out.best_pattern = fmt::format("{}, {} pages, allocation {}", best->pattern, best->huge_pages ? "huge" : "4 KiB",
                                   best->allocation + 1);
  }
  return out;
}

ProbeResult probe_memory_bandwidth(uint64_t bytes, int reps) { return probe_memory(bytes, reps).best; }

ComputeProbe probe_compute(int reps) {
  ComputeProbe c;
  c.threads = omp_get_max_threads();
  // About 0.1–0.4 s per repetition at each unit's throughput on a ~3 GHz core.
  c.fma_unit = probek::fma_unit();
  if (!c.fma_unit.empty()) c.fp32_fma = time_peak(probek::fma_f32, 40'000'000, reps);
  if (amx::available()) {
    c.bf16_unit = "AMX";
    c.bf16_dot = time_peak(amx::peak_bf16, 5'000'000, reps);
  } else if (probek::dpbf16_available()) {
    c.bf16_unit = "AVX512-BF16";
    c.bf16_dot = time_peak(probek::dot_bf16, 40'000'000, reps);
  }
  c.int8_unit = probek::int8_dot_unit();
  if (amx::int8_available()) {
    // The int8 prefill runs on AMX tiles where the CPU has them (amx_int8.h): their peak is the limit.
    c.int8_unit = "AMX";
    c.int8_dot = time_peak(amx::peak_int8, 5'000'000, reps);
  } else if (!c.int8_unit.empty())
    for (int v = 0; v < probek::dot_u8s8_variants(); ++v) {
      const ProbeResult r =
          time_peak([v](int64_t iters, float* sink) { return probek::dot_u8s8(v, iters, sink); }, 40'000'000, reps);
      if (r.median > c.int8_dot.median) c.int8_dot = r;
    }
  return c;
}

ComputeLimit compute_limit(const ComputeProbe& c, const ProbeResult& sgemm, std::string_view unit) {
  if (unit == "bf16" && c.bf16_dot.median > 0) return {c.bf16_dot.median, fmt::format("bf16 dot peak ({})", c.bf16_unit)};
  if (unit == "int8" && c.int8_dot.median > 0) return {c.int8_dot.median, fmt::format("int8 dot peak ({})", c.int8_unit)};
  if (unit == "fp32" && c.fp32_fma.median > 0) return {c.fp32_fma.median, "fp32 FMA peak"};
  return {sgemm.median, "fp32 sgemm"};
}

ProbeResult probe_gemm(int n, int reps) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  std::vector<double> gf;
  for (int r = 0; r <= reps; ++r) {
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) gf.push_back(2.0 * n * n * double(n) / s / 1e9);
  }
  return summarize(gf);
}

}  // namespace glmlab
