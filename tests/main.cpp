// The test binary's main: the same OpenBLAS core selection as the glmlab CLI, so the fast path under
// test is the fast path users run.
#include <gtest/gtest.h>

#include "dist/comm.h"
#include "kernels/cpu/runtime.h"

int main(int argc, char** argv) {
  glmlab::prepare_cpu_runtime(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  glmlab::dist::finalize();  // MPI, when the binary runs under mpirun (test_dist.cpp)
  return rc;
}
