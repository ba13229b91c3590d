// Matmul with Q8 / Q4 weights for the fast CPU back end (cpu_ops.cpp calls it for quantized W).
// - Weights packed at load for inference (vnni_packed.h; with `approx`, the back end's bf16_activations,
//   the default, and AVX512-VNNI): up to 8 token rows run the packed VNNI GEMV, activations quantized to
//   int8 per 128 inputs, the weights read once per call; more rows run the same sums on AMX-INT8 tiles
//   where the CPU has them (amx_int8.h: the same bits), else the VNNI GEMV in groups of 8 tokens.
//   QuantPrefill::Vnni keeps the VNNI GEMV at every row count.
// - Row-major weights: ≤ 16 (Q4) / 8 (Q8) rows with `approx` and VNNI, the row-major VNNI GEMV
//   (vnni_gemv.h, int8 activations per 32 inputs); ≤ 4 rows otherwise, the exact fp32 kernels of
//   simd_quant.h. More rows (prefill): a tile of weight rows is dequantized and multiplied — with
//   `approx` as bf16 (AMX or AVX512-BF16, bf16_gemm.h), else as fp32 with OpenBLAS sgemm. The row-major
//   VNNI GEMM (vnni_gemm.h) runs only when forced (QuantPrefill::Vnni). Without AVX512-VNNI but with
//   AVX2, int4 beyond the AVX2 GEMV's rows runs the AVX2 GEMM on int8 activations (avx2_qgemm.h). Q4 activations are first split
//   into even / odd inputs (simd_quant.h) for the tile and fp32 paths.
// - A packed matrix on any other path (exact activations, QuantPrefill::Tiles) is unpacked a block of
//   rows at a time into the row-major kernels, which then give exactly what they give on row-major W.
#pragma once
#include <cstdint>

#include "util/matrix.h"

namespace glmlab {

// The path with `approx`: the back end's choice, or forced (tests and benchmarks) to the bf16 tiles (any
// layout, beyond the row-major GEMV's rows) or to the row-major VNNI GEMM (where the CPU and W allow it).
enum class QuantPrefill { Auto, Tiles, Vnni };

// y[N, W.rows] = x[N, W.cols] · Wᵀ (no bias) for a Q8/Q4 W.
void quant_matmul(const float* x, int64_t N, const Matrix& W, float* y, bool approx,
                  QuantPrefill path = QuantPrefill::Auto);

}  // namespace glmlab
