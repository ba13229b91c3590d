// Matrix products for fp16 weights repacked at load for AVX-512 (an fp16 model's matrices, and the
// fp16 output layer of an int8/int4 one): 16 weight rows interleaved one input at a time, so that one
// 32-byte load holds input k of 16 rows; VCVTPH2PS widens it to 16 fp32 lanes (exactly) and an FMA
// against the token's x[k] broadcast to every lane adds W[r][k]·x[k] to lane r. No horizontal sums, one
// weight stream per 16 rows, and up to 8 tokens' activations reused across 3–4 row blocks in registers:
// the row-major GEMV (simd.h) widens every weight row once per call but reduces each (row, token) pair
// horizontally, so at 8 tokens it ran 4.5× slower than at 1 (27392 × 4096: 20.6 against 4.6 ms).
// The activations stay fp32: fp16 × fp32 products in fp32, as the row-major kernels compute them.
//
// Packed layout (Matrix::layout == MatrixLayout::Rows16) of an fp16 matrix of `rows` × `cols`:
//   data: [rows/16 blocks][cols][16 rows] fp16 (element (r, c) at index (r/16 · cols + c) · 16 + r%16).
// It needs rows % 16 == 0 (every ChatGLM3 matrix; packable()). Any number of tokens: up to 8 share one
// pass over the weights; more pass in groups of 8 over tiles of rows × 1024 inputs that stay in L2.
#pragma once
#include <cstdint>

#include "util/large_pages.h"
#include "util/matrix.h"

namespace glmlab::f16p {

// True when the CPU has AVX512F and F16C.
bool available();

// An fp16 matrix in the packed layout and the storage it owns.
struct PackedMatrix {
  Matrix m;
  WeightBytes data;
};

// True when W (row-major fp16) has rows % 16 == 0 and the CPU runs the kernel.
bool packable(const Matrix& W);
// The packed copy (threaded). Precondition: packable(W).
PackedMatrix pack(const Matrix& W);
// Rows [r0, r1) of a packed matrix back as row-major fp16 [r1 − r0, cols] (exactly the packed bits).
void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint16_t* out);

// y[N, rows] = x[N, cols] · Pᵀ in fp32. Any N ≥ 1; OpenMP threads inside (they split the rows).
void packed_matmul(const Matrix& P, const float* x, int64_t N, float* y);

}  // namespace glmlab::f16p
