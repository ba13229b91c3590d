// Prefill GEMM for Q8 / Q4 weights on AVX512-VNNI: many activation rows (tokens), quantized once per
// call to int8 per block of 32 inputs by vnni::quantize_acts (the decode GEMV's layout, vnni_gemv.h),
// multiplied with VPDPBUSD into exact int32 sums per 4-byte lane, each lane converted to fp32 and
// scaled by (activation block scale × weight group scale) as the GEMV does. What differs from the GEMV
// is the blocking: a micro-kernel holds 4 weight rows × 4 tokens of zmm accumulators, so each 64-byte
// weight chunk (unpacked once) serves 4 tokens and each activation chunk serves 4 rows; the inputs are
// cut into slices of 32 chunks (Q4: 4096 inputs, Q8: 2048) so that a block of 4 tokens' slice stays in
// L1 while the rows of the caller's range pass under it from L2; tokens pass in groups whose slices fit
// in L2, so the weights are read from memory once per group of tokens (once per call up to 32–64 tokens).
// Compiled for AVX-512 with VNNI by target attributes; call only when vnni::available() and vnni::fits(W).
#pragma once
#include <cstdint>

#include "kernels/cpu/vnni_gemv.h"
#include "util/matrix.h"

namespace glmlab::vnni {

// y[t·ys + r] = Σ_i x[t, i] · W[r, i] for rows [r0, r1) and every token t < a.nt (a from quantize_acts
// for W's dtype and cols). Single-threaded: callers split the rows (blocks of 64 rows suit it).
void gemm(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, float* y, int64_t ys);

}  // namespace glmlab::vnni
