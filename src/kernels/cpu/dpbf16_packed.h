// Matrix products for bf16 weights repacked at load for AVX512-BF16 (the bf16 counterpart of
// vnni_packed.h): 16 weight rows interleaved one input pair at a time, so that one 64-byte load holds
// the same two inputs of 16 rows, one row per fp32 lane. VDPBF16PS multiplies it with the activation
// pair broadcast to every lane, so each lane sums its own row: no horizontal sums, one weight stream per
// 16 rows, and the activation pairs of up to 8 tokens are reused across 3–4 row blocks held in registers
// (the row-major GEMV, dpbf16_gemm.h, re-reads every token's activations for every pair of rows).
//
// Packed layout (Matrix::layout == MatrixLayout::Pairs16) of a bf16 matrix of `rows` × `cols`:
//   data: [rows/16 blocks][cols/2 pairs][16 rows][2 bf16], the even input in the low half
//         (element (r, c) at bf16 index ((r/16 · cols/2 + c/2) · 16 + r%16) · 2 + c%2).
// It needs rows % 16 == 0 and cols % 32 == 0 (every ChatGLM3 matrix; packable()). For every batch
// size, decode and prefill alike: up to 8 tokens share one pass over the weights; more tokens pass in
// groups of 8 over tiles of rows × 2048 inputs that stay in L2, so the weights are read from memory
// once per call.
#pragma once
#include <cstdint>

#include "kernels/cpu/dpbf16_gemm.h"  // Bf16Acts
#include "util/large_pages.h"
#include "util/matrix.h"

namespace glmlab::dpbf16 {

// A bf16 matrix in the packed layout and the storage it owns.
struct PackedMatrix {
  Matrix m;
  WeightBytes data;
};

// True when W (row-major bf16) has the shape above and the CPU has AVX512-BF16.
bool packable(const Matrix& W);
// The packed copy (threaded). Precondition: packable(W).
PackedMatrix pack(const Matrix& W);
// Rows [r0, r1) of a packed matrix back as row-major bf16 [r1 − r0, cols] (exactly the packed bits).
void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint16_t* out);

// y[N, rows] = x[N, cols] · Pᵀ with x rounded to bf16 (nearest even) into `acts`, fp32 accumulation.
// Any N ≥ 1; OpenMP threads inside (they split the rows).
void packed_matmul(const Matrix& P, const float* x, int64_t N, float* y, Bf16Acts& acts);

}  // namespace glmlab::dpbf16
