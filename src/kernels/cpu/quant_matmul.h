// Matmul with Q8 / Q4 weights for the fast CPU back end (cpu_ops.cpp calls it for quantized W).
// ≤ 4 token rows (decode): threads split the weight rows and stream them once. With `approx` (the
// back end's bf16_activations, the default) and AVX512-VNNI the activations are quantized to int8 per
// 32 inputs and multiplied in integers (vnni_gemv.h); otherwise the fp32 kernels of simd_quant.h
// (exact: the activations stay fp32). More rows (prefill): a tile of weight rows is dequantized and
// multiplied — with `approx` and AMX as bf16 on AMX tiles (amx_gemm.h), else as fp32 with OpenBLAS
// sgemm. The VNNI GEMM (vnni_gemm.h) runs only when forced (QuantPrefill::Vnni): see quant_matmul.cpp. Q4 activations are first split into even / odd inputs (simd_quant.h) for every path.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace glmlab {

// The prefill path (more token rows than the decode GEMVs take) with `approx`: the back end's choice,
// or forced (tests and benchmarks) to the bf16 tiles or to the VNNI GEMM (where the CPU and W allow it).
enum class QuantPrefill { Auto, Tiles, Vnni };

// y[N, W.rows] = x[N, W.cols] · Wᵀ (no bias) for a Q8/Q4 W.
void quant_matmul(const float* x, int64_t N, const Matrix& W, float* y, bool approx,
                  QuantPrefill path = QuantPrefill::Auto);

}  // namespace glmlab
