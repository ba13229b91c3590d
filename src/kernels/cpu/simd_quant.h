// SIMD kernels that read Q8 / Q4 weights directly (docs/QUANTIZATION.md), Highway-dispatched per ISA.
// Single-threaded building blocks; quant_matmul.cpp threads them.
//
// Q4 kernels take the activations "split": a row x[K] becomes xs[2·Kh] = [x0 x2 x4 … | x1 x3 x5 …]
// (Kh = ceil(K/2), odd K padded with a 0), so the high nibbles (even inputs) and low nibbles (odd
// inputs) of a byte run each against a contiguous vector; dequant_rows writes Q4 rows in the same
// split order. split_q4 makes that layout.
#pragma once
#include <cstdint>

#include "util/matrix.h"

namespace glmlab::simd {

// y[t·ys + r] = Σ_i x[t·xs + i] · W[r, i] for rows r in [r0, r1) of a Q8/Q4 W, tokens t < nt (nt ≤ 4):
// each weight row is read once for all nt tokens; one scale multiply per group. Q4: x split.
void gemv_q_rows(const Matrix& W, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt, float* y, int64_t ys);
// Rows [r0, r1) of a Q8/Q4 W dequantized to fp32 into out (row stride ld): Q4 rows in split order.
void dequant_rows(const Matrix& W, int64_t r0, int64_t r1, float* out, int64_t ld);
// The same rounded to bf16 (nearest even), for AMX tiles.
void dequant_rows_bf16(const Matrix& W, int64_t r0, int64_t r1, uint16_t* out, int64_t ld);
// out[2·ceil(K/2)] = x[K] split into even and odd inputs (see above).
void split_q4(const float* x, int64_t K, float* out);

}  // namespace glmlab::simd
