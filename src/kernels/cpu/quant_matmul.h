// Matmul with Q8 / Q4 weights for the fast CPU back end (cpu_ops.cpp calls it for quantized W).
// ≤ 4 token rows (decode): threads split the weight rows and stream them once through the quantized
// GEMV (memory-bound). More rows (prefill): a tile of weight rows is dequantized to fp32 and
// multiplied with OpenBLAS sgemm. Q4 activations are first split into even / odd inputs
// (simd_quant.h), for both paths.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace glmlab {

// y[N, W.rows] = x[N, W.cols] · Wᵀ (no bias) for a Q8/Q4 W.
void quant_matmul(const float* x, int64_t N, const Matrix& W, float* y);

}  // namespace glmlab
