// Machine limits measured in the same run as a benchmark, so every speed reads as a fraction of the
// best this machine does (docs/BENCH.md, "Limits"):
// - memory: the read bandwidth of main memory (what decode is bound by), the best of several access
//   patterns (one stream per thread; several streams with software prefetch; the bf16 GEMV's rows side
//   by side) on several allocations, on 4 KiB pages and on transparent huge pages;
// - compute: the register-resident peak of each instruction the matrix kernels use (fp32 FMA,
//   AVX512-BF16 or AMX bf16 dot products, AVX512-VNNI int8 dot products; on AVX2 CPUs the ymm FMA and
//   VPMADDUBSW) and the fp32 sgemm of the BLAS beside them.
// Every figure is the median of several repetitions after a warm-up, all threads at once.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace glmlab {

struct ProbeResult {
  double median = 0, min = 0, max = 0;  // GB/s or GFLOP/s
  std::vector<double> samples;
};
ProbeResult summarize(std::vector<double> samples);

// One access pattern on one allocation.
struct MemoryPattern {
  std::string pattern;  // e.g. "4 streams, prefetch 1 KiB"
  bool huge_pages = false;
  int allocation = 0;
  ProbeResult gbs;
};
struct MemoryProbe {
  ProbeResult best;          // the pattern and allocation with the highest median
  std::string best_pattern;  // "<pattern>, <4 KiB|huge> pages, allocation <i>"
  std::vector<MemoryPattern> rows;
  int threads = 0;
  double spread_low = 0, spread_high = 0;  // lowest and highest median over all rows
};
// Reads `bytes` per allocation (default 1 GiB, far beyond the caches) with all threads, `reps` times
// per pattern, on `allocations` fresh allocations of each page kind.
MemoryProbe probe_memory(uint64_t bytes = 1ull << 30, int reps = 5, int allocations = 2);
// The best median of probe_memory (what a decode is measured against).
ProbeResult probe_memory_bandwidth(uint64_t bytes = 1ull << 30, int reps = 5);

// Register-resident instruction peaks, GFLOP/s (int8: 10⁹ int ops/s), all threads; 0 where the CPU
// lacks the instruction.
struct ComputeProbe {
  ProbeResult fp32_fma;   // VFMADD231PS zmm (ymm on AVX2 CPUs)
  std::string fma_unit;   // "AVX-512" | "AVX2" | ""
  ProbeResult bf16_dot;   // AMX TDPBF16PS where the CPU has AMX, else VDPBF16PS zmm
  std::string bf16_unit;  // "AMX" | "AVX512-BF16" | ""
  ProbeResult int8_dot;   // AMX TDPBSUD where the CPU has AMX-INT8, else VPDPBUSD zmm; VPMADDUBSW ymm on
                          // AVX2 CPUs without AVX512-VNNI
  std::string int8_unit;  // "AMX" | "AVX512-VNNI" | "AVX2" | ""
  int threads = 0;
};
ComputeProbe probe_compute(int reps = 5);

// The peak a matrix product on `unit` (Ops::matmul_unit: "bf16", "int8", "fp32") is set against: the
// probed peak of that instruction, else the fp32 sgemm (a CPU without it, or no unit).
struct ComputeLimit {
  double gflops = 0;
  std::string name;  // e.g. "bf16 dot peak (AVX512-BF16)", "fp32 FMA peak", "fp32 sgemm"
};
ComputeLimit compute_limit(const ComputeProbe& c, const ProbeResult& sgemm, std::string_view unit);
// sgemm of n×n×n through the same BLAS the engine uses.
ProbeResult probe_gemm(int n = 2048, int reps = 5);

}  // namespace glmlab
