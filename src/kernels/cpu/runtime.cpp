#include "kernels/cpu/runtime.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace glmlab {

const char* blas_core_name() { return openblas_get_corename(); }

namespace {

const char* wanted_blas_core() {
  const char* core = openblas_get_corename();
  bool generic = core && (!std::strcmp(core, "Prescott") || !std::strcmp(core, "Nehalem") ||
                          !std::strcmp(core, "Core2") || !std::strcmp(core, "Penryn"));
  if (!generic) return nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) return "Cooperlake";
  if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

}  // namespace

void prepare_cpu_runtime(int argc, char** argv) {
  (void)argc;
  if (std::getenv("GLMLAB_RUNTIME_SET")) return;  // already re-executed once
  bool changed = false;
  if (!std::getenv("OPENBLAS_CORETYPE"))
    if (const char* core = wanted_blas_core()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      changed = true;
    }
  if (!std::getenv("GOMP_SPINCOUNT") && !std::getenv("OMP_WAIT_POLICY")) {
    setenv("GOMP_SPINCOUNT", "10000", 1);
    changed = true;
  }
  if (!changed) return;
  setenv("GLMLAB_RUNTIME_SET", "1", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the defaults
}

}  // namespace glmlab
