// Error checking of the CUDA back end: every CUDA runtime call goes through GLMLAB_CUDA_CHECK, which
// throws glmlab's Error naming the call, file:line and CUDA's own message. Plain C++ (no nvcc needed).
#pragma once
#include <cuda_runtime_api.h>

#include <string>

namespace glmlab::cuda {
[[noreturn]] void cuda_fail(cudaError_t e, const char* expr, const char* file, int line);
// Throws glmlab::Error(msg): for the .cu files, which do not include util/error.h (fmt under nvcc).
[[noreturn]] void kernel_fail(const std::string& msg);
}  // namespace glmlab::cuda

#define GLMLAB_CUDA_CHECK(expr)                                                         \
  do {                                                                                  \
    const cudaError_t glmlab_e_ = (expr);                                               \
    if (glmlab_e_ != cudaSuccess) ::glmlab::cuda::cuda_fail(glmlab_e_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad launch configuration is reported here, naming the kernel.
#define GLMLAB_CUDA_LAUNCHED(name)                                                               \
  do {                                                                                           \
    const cudaError_t glmlab_e_ = cudaGetLastError();                                            \
    if (glmlab_e_ != cudaSuccess) ::glmlab::cuda::cuda_fail(glmlab_e_, "launch of " name, __FILE__, __LINE__); \
  } while (0)
