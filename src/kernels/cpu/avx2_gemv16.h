// GEMV for row-major bf16 / fp16 weights with fp32 activations on AVX2 + FMA, for CPUs without AVX-512
// (Zen 2/3, Haswell to Comet Lake), where bf16 weights cannot be packed for AVX512-BF16 and stay
// row-major. Each 32-byte load holds 16 weights, widened exactly to fp32 in two ymm registers — bf16 by
// a shift (even inputs) and a mask (odd inputs), fp16 by VCVTPH2PS (first and last 8) — and multiplied
// with the activations in fp32, so the result equals the fp32 reference up to summation order (no
// rounding of the activations). pack_acts puts the activations in the order the widened weights come in.
// Several tokens share each weight load; more than 4 tokens pass in groups over blocks of rows that
// stay in L2, so the weights are read from memory once per call.
// Each output is the same bit for bit whatever the number of tokens and the rows a call takes (a
// sequence's logits do not depend on its batch or the thread count).
// Before it, such a CPU ran these matrices through Highway's generic GEMV (whose 8-token pass spills
// AVX2's 16 registers) up to 8 rows and fp32 tiles + sgemm beyond (docs/BENCHMARKS.md, session 12).
// Compiled for AVX2 + FMA + F16C by target attributes; call only when available().
#pragma once
#include <cstdint>
#include <vector>

#include "util/matrix.h"

namespace glmlab::avx2w16 {

// True when the CPU has AVX2, FMA and F16C.
bool available();
// True when cpu_ops should take this kernel for row-major bf16/fp16 weights: available() and no AVX-512F
// (an AVX-512 CPU packs these matrices or runs Highway's AVX-512 GEMV; this kernel is measured on AVX2
// CPUs only).
bool preferred();
// True for the matrices the kernel takes: row-major BF16 or F16.
bool fits(const Matrix& W);
// The nt tokens' activations (token t at x + t·xs, W.cols each) in the kernel's order and alignment,
// stored in out; returns where they start.
const float* pack_acts(const Matrix& W, const float* x, int nt, int64_t xs, std::vector<float>& out);
// y[t·ys + r] = Σ_i x[t, i] · W[r, i] for rows [r0, r1), tokens t < nt, xp what pack_acts returned.
void gemv(const Matrix& W, int64_t r0, int64_t r1, const float* xp, int nt, float* y, int64_t ys);

}  // namespace glmlab::avx2w16
