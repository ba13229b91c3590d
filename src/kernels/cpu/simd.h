// SIMD kernels of the fast CPU back end (Highway: one code path compiled per ISA, chosen at run time).
// Single-threaded building blocks; cpu_ops.cpp threads them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "util/dtype.h"

namespace glmlab::simd {

// dst[n] = float(src[n]) for src in F32, F16 or BF16.
void to_f32(const void* src, DType dtype, float* dst, size_t n);
// y[t·ys + r] = Σ_i x[t·xs + i] · W[r, i] for rows r in [r0, r1) of W [*, K] (dtype F32/F16/BF16),
// tokens t < nt (nt ≤ 8): each weight row is read once for all nt tokens.
void gemv_rows(const void* W, DType dtype, int64_t K, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt,
               float* y, int64_t ys);
float dot(const float* a, const float* b, size_t n);
void axpy(float a, const float* x, float* y, size_t n);  // y += a·x
void scale(float a, float* y, size_t n);                 // y *= a
float sum_squares(const float* x, size_t n);
void mul3(const float* x, float s, const float* w, float* y, size_t n);  // y = x·s·w
// The first index of the largest of x[0, n), or -1 when a value is not finite (or n is 0).
int64_t argmax_finite(const float* x, size_t n);
const char* target_name();  // the ISA chosen at run time, e.g. "AVX3_SPR"

}  // namespace glmlab::simd
