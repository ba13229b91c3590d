// The bf16 GEMMs of the fast CPU back end, on whichever unit the CPU has: AMX tiles (amx_gemm.h),
// else AVX512-BF16 (dpbf16_gemm.h). Both keep the same contracts (activations rounded to bf16, fp32
// accumulation), so the callers (prefill, quantized prefill, the training backward) ask one question
// and make one call. The kernels take whole blocks of 32 rows and 32 inputs; other shapes (random:small's
// MLP: 2736 rows, 1368 inputs) run on zero-padded copies (bf16_gemm.cpp) instead of fp32 sgemm.
#pragma once
#include <cstdint>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/dpbf16_gemm.h"

namespace glmlab::bf16gemm {

inline bool use_amx(int64_t M, int64_t K) { return amx::fits(M, K) && amx::available(); }
// True when one of the two units is there (any shape).
inline bool available(int64_t M, int64_t K) { return M > 0 && K > 0 && (amx::available() || dpbf16::available()); }
// y[N, M] = x[N, K] · Wᵀ (+ bias); requires available(M, K).
void forward(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y);
// dx[N, K] += dy[N, M] · W[M, K], W's rows through `rows`; requires available(M, K). (A row-major W that
// amx::rowmajor_blocked takes is read in place by amx::gemm_backward_input_rowmajor instead.)
void backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N, float* dx);

}  // namespace glmlab::bf16gemm
