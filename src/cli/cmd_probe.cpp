// glmlab probe: this machine's limits — memory read bandwidth (the best of several access patterns and
// allocations), the register-resident peaks of the instructions the kernels use, and the fp32 sgemm.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "kernels/cpu/runtime.h"
#include "kernels/cpu/simd.h"
#include "lab/probe.h"

namespace glmlab::cli {
namespace {

nlohmann::json spread(const ProbeResult& r) { return {{"median", r.median}, {"min", r.min}, {"max", r.max}}; }

RegisterCommand register_probe([](CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "probe", "measure this machine's limits: memory read bandwidth (GB/s, best of several patterns and allocations), "
               "instruction peaks (fp32 FMA, bf16 and int8 dot products) and fp32 sgemm (GFLOP/s)");
  cmd->add_option("--threads", *threads, "threads (0 = all cores)")->check(IntIn(0, kMaxThreads));
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([threads, json] {
    apply_threads(*threads);
    const MemoryProbe mem = probe_memory();
    const ComputeProbe cp = probe_compute();
    const ProbeResult gm = probe_gemm();
    if (*json) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& r : mem.rows)
        rows.push_back({{"pattern", r.pattern}, {"huge_pages", r.huge_pages}, {"allocation", r.allocation + 1},
                        {"gbs", spread(r.gbs)}});
      nlohmann::json j = {{"threads", mem.threads},
                          {"memory_gbs", spread(mem.best)},
                          {"memory_best_pattern", mem.best_pattern},
                          {"memory_patterns", rows},
                          {"fp32_fma_gflops", spread(cp.fp32_fma)},
                          {"bf16_dot_gflops", spread(cp.bf16_dot)},
                          {"bf16_unit", cp.bf16_unit},
                          {"int8_dot_gops", spread(cp.int8_dot)},
                          {"int8_unit", cp.int8_unit},
                          {"fma_unit", cp.fma_unit},
                          {"gemm_gflops", spread(gm)},
                          {"simd", simd::target_name()},
                          {"blas_core", blas_core_name()}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("threads %d\n\nmemory read, GB/s (median of 5, min-max):\n", mem.threads);
    for (const auto& r : mem.rows)
      std::printf("  %-36s %-6s pages, allocation %d  %7.2f  (%.2f-%.2f)\n", r.pattern.c_str(),
                  r.huge_pages ? "huge" : "4 KiB", r.allocation + 1, r.gbs.median, r.gbs.min, r.gbs.max);
    std::printf("memory read bandwidth  %8.2f GB/s     best: %s (medians over patterns and allocations: %.2f-%.2f)\n",
                mem.best.median, mem.best_pattern.c_str(), mem.spread_low, mem.spread_high);
    auto peak = [](const char* name, const ProbeResult& r, const char* unit) {
      if (r.median > 0)
        std::printf("%-22s %8.1f %s  (min %.1f, max %.1f)\n", name, r.median, unit, r.min, r.max);
      else
        std::printf("%-22s      n/a (this CPU lacks the instruction)\n", name);
    };
    peak(cp.fma_unit == "AVX2" ? "fp32 FMA peak (AVX2)" : "fp32 FMA peak", cp.fp32_fma, "GFLOP/s");
    peak(cp.bf16_unit == "AMX" ? "bf16 AMX peak" : "bf16 dot peak", cp.bf16_dot, "GFLOP/s");
    peak(cp.int8_unit == "AVX2" ? "int8 AVX2 peak" : cp.int8_unit == "AMX" ? "int8 AMX peak" : "int8 VNNI peak", cp.int8_dot,
         "GOP/s  ");
    std::printf("fp32 sgemm 2048³       %8.1f GFLOP/s  (min %.1f, max %.1f; OpenBLAS %s, SIMD %s)\n", gm.median, gm.min,
                gm.max, blas_core_name(), simd::target_name());
  });
});

}  // namespace
}  // namespace glmlab::cli
