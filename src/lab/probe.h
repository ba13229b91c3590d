// Machine limits measured in the same run as a benchmark, so every speed reads as a fraction of the
// possible: read bandwidth of main memory (what decode is bound by) and fp32 GEMM throughput (what
// prefill is bound by). Each is the median of several repetitions after a warm-up.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace glmlab {

struct ProbeResult {
  double median = 0, min = 0, max = 0;  // GB/s or GFLOP/s
  std::vector<double> samples;
};

// Streams `bytes` (default 1 GiB, far beyond the caches) with all threads, `reps` times.
ProbeResult probe_memory_bandwidth(uint64_t bytes = 1ull << 30, int reps = 7);
// sgemm of n×n×n through the same BLAS the engine uses.
ProbeResult probe_gemm(int n = 2048, int reps = 5);
ProbeResult summarize(std::vector<double> samples);

}  // namespace glmlab
