// Process-wide settings of the CPU back end's libraries, which they read from the environment once,
// when they load — so prepare_cpu_runtime() runs first thing in main() and, when it has to change one,
// re-executes the program once with the new environment (never when the user set the variable):
// - OpenBLAS picks kernels from the CPU model. Builds older than the CPU (Debian 12's 0.3.21 on
//   Emerald Rapids, say) fall back to the SSE3 "Prescott" kernels: 8× slower sgemm. We set
//   OPENBLAS_CORETYPE to the core matching the CPU's AVX-512 / AVX2 features.
// - OpenMP threads spin after a parallel region (GOMP_SPINCOUNT 300,000 by default). On a busy
//   machine with more runnable threads than cores that spin starves the threads doing work (decode
//   fell from 46 to 3.5 tokens/s); a short spin keeps the fast hand-off without the collapse.
#pragma once

namespace glmlab {

void prepare_cpu_runtime(int argc, char** argv);
const char* blas_core_name();  // e.g. "Cooperlake"

}  // namespace glmlab
