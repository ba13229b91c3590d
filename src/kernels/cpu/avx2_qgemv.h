// GEMV for row-major Q8 / Q4 weights on AVX2 integer dot products, for CPUs without AVX512-VNNI (Zen 2/3,
// Haswell to Comet Lake). The same arithmetic as vnni_gemv.h on the same quantized activations
// (vnni::quantize_acts: int8 in blocks of 32 inputs): each 4-byte lane's exact int32 sum comes from
// VPMADDUBSW (u8 × s8 → pairs of int16) and VPMADDWD with ones (→ int32), as llama.cpp's Q4_0 × Q8_0
// dot product on AVX2 does, then is scaled by (activation block scale × weight group scale).
//   Q4: the unsigned nibble (q + 8, ≤ 15) is the u8 operand; two pair sums of ≤ 2·15·127 never saturate.
//   Q8: |w| (≤ 128) is the u8 operand and x with w's sign the s8 one (2·128·127 < 32767); x is stored
//   as int8 (no + 128 to take off per load, as VPDPBUSD's u8 operand needs on the VNNI kernels).
// Where a weight group holds whole chunks (group 128, ChatGLM3's default), a group's lane sums are added
// times the activation scales only, and the group's scale multiplies in once at its end.
// Q4's offset (8·Σx of each lane's activations) is taken off once per weight group and row, not per lane.
// Before it, a batch of tokens on such a CPU dequantized the whole matrix into fp32 tiles for sgemm at
// every decode step (2 Zen 2 cores, 27392 × 4096 int4 at 8 rows: 67 ms; 14 ms with this kernel in
// session 10, 10 ms in session 11; docs/BENCHMARKS.md).
// Compiled for AVX2 + FMA + F16C by target attributes; call only when available().
#pragma once
#include <cstdint>

#include "kernels/cpu/vnni_gemv.h"
#include "util/matrix.h"

namespace glmlab::avx2q {

// True when the CPU has AVX2, FMA and F16C.
bool available();
// y[t·ys + r] = Σ_i x[t, i] · W[r, i] for rows [r0, r1) of a row-major Q8/Q4 matrix that vnni::fits, tokens
// t < a.nt (a from vnni::quantize_acts for W's dtype and cols; Q8 with q8_signed, else it fails). Up to 4
// tokens share one pass over a weight row; more tokens pass in groups of 4 over blocks of 4 rows that stay
// in L1, so the weights are read from memory once per call whatever the batch. Q8 at one token reads 4
// rows side by side, one from each quarter of [r0, r1) (4 memory streams; give it ranges of ~1 MB).
// A row's result is the same bit for bit whatever [r0, r1) and the path that computed it.
// Call prepare(W, a) once before splitting W's rows over threads: it computes Q4's per-group offset terms
// (a.goff) that every call would otherwise compute again for itself.
void prepare(const Matrix& W, vnni::QuantizedActs& a);
void gemv(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, float* y, int64_t ys);

}  // namespace glmlab::avx2q
