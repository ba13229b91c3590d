// The bf16 GEMMs of the fast CPU back end, on whichever unit the CPU has: AMX tiles (amx_gemm.h),
// else AVX512-BF16 (dpbf16_gemm.h). Both keep the same contracts (activations rounded to bf16, fp32
// accumulation) and shape rule, so the callers (prefill, quantized prefill, the training backward)
// ask one question and make one call.
#pragma once
#include <cstdint>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/dpbf16_gemm.h"

namespace glmlab::bf16gemm {

inline bool use_amx(int64_t M, int64_t K) { return amx::fits(M, K) && amx::available(); }
// True when one of the two runs an [M, K] weight matrix on this CPU.
inline bool available(int64_t M, int64_t K) {
  return use_amx(M, K) || (dpbf16::fits(M, K) && dpbf16::available());
}
// y[N, M] = x[N, K] · Wᵀ (+ bias); requires available(M, K).
inline void forward(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  if (use_amx(M, K))
    amx::gemm_bf16(W, M, K, x, N, bias, y);
  else
    dpbf16::gemm_bf16(W, M, K, x, N, bias, y);
}
// dx[N, K] += dy[N, M] · W[M, K], W's rows through `rows`; requires available(M, K).
inline void backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N, float* dx) {
  if (use_amx(M, K))
    amx::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
  else
    dpbf16::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
}

}  // namespace glmlab::bf16gemm
