// glmlab probe: this machine's memory read bandwidth and fp32 GEMM throughput (the limits that decode
// and prefill are measured against).
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

RegisterCommand reg([](CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("probe", "measure memory bandwidth (GB/s) and GEMM throughput (GFLOP/s)");
  cmd->add_option("--threads", *threads, "threads (0 = all cores)")->check(IntIn(0, kMaxThreads));
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([threads, json] {
    apply_threads(*threads);
    ProbeResult bw = probe_memory_bandwidth(), gm = probe_gemm();
    if (*json) {
      nlohmann::json j = {{"memory_gbs", {{"median", bw.median}, {"min", bw.min}, {"max", bw.max}}},
                          {"gemm_gflops", {{"median", gm.median}, {"min", gm.min}, {"max", gm.max}}},
                          {"simd", simd::target_name()}, {"blas_core", blas_core_name()}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("memory read bandwidth  %8.2f GB/s     (min %.2f, max %.2f)\n", bw.median, bw.min, bw.max);
    std::printf("fp32 sgemm 2048³       %8.1f GFLOP/s  (min %.1f, max %.1f; OpenBLAS %s, SIMD %s)\n", gm.median, gm.min,
                gm.max, blas_core_name(), simd::target_name());
  });
});

}  // namespace
}  // namespace glmlab::cli
