// The test binary's main: the same OpenBLAS core selection as the glmlab CLI, so the fast path under
// test is the fast path users run.
#include <gtest/gtest.h>

#include "kernels/cpu/runtime.h"

int main(int argc, char** argv) {
  glmlab::prepare_cpu_runtime(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
