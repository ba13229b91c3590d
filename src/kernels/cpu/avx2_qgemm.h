// GEMM for row-major int4 weights on AVX2 integer dot products (CPUs without AVX512-VNNI: Zen 2/3, Haswell
// to Comet Lake): prefill's many tokens against one matrix, on the int8 activations of vnni::quantize_acts
// (blocks of 32 inputs) that the AVX2 GEMV (avx2_qgemv.h) reads, in the same integer arithmetic per 4-byte
// lane (VPMADDUBSW of the unsigned nibbles q + 8 against the int8 activations, VPMADDWD with ones), but
// register-blocked: 2 weight rows × up to 4 tokens per pass over a row pair, so that each activation load
// serves two rows and each unpacked weight chunk four tokens, and two VPHADDD levels fold the two rows'
// lane sums of a chunk into one vector of whole 32-input blocks,
//     [r0 b0, r1 b0, r0 b2, r1 b2 | r0 b1, r1 b1, r0 b3, r1 b3],
// which one conversion and one FMA per chunk and token scale by (activation block scale × weight group
// scale). Q4's unsigned-nibble offset (8·Σx per lane) comes off once per row and token from the per-group
// terms avx2q::prepare computes (a.goff), as in the GEMV. Rows go in blocks of 64, tokens in blocks of 64,
// inputs in slices of 4096: 4 tokens' slice of activations stays in L1 while the block's row pairs pass
// under it, the block's slice of weights in L2; partial sums wait in memory between slices.
// A row's result is the same bit for bit whatever [r0, r1), the row it is paired with and the other tokens
// of the call (each lane of the folded vector belongs to one row; the block order is fixed).
// Compiled for AVX2 + FMA + F16C by target attributes; call only when avx2q::available().
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/vnni_gemv.h"
#include "util/matrix.h"

namespace glmlab::avx2q {

// True where gemm_q4 takes W: row-major Q4 that vnni::fits, with groups of 32 inputs or more (a whole
// block of activations under one weight scale).
bool gemm_fits(const Matrix& W);
// The activation scales in the folded order: [nt, chunks, 8] = (s0, s0, s2, s2, s1, s1, s3, s3) per
// 128-input chunk of each token (s_b: block b's scale). Once per call, before splitting rows over threads.
void gemm_scales(const vnni::QuantizedActs& a, std::vector<float>& s8);
// y[t·ys + r] = Σ_i x[t, i] · W[r, i] for rows [r0, r1) of W (gemm_fits) and every token t < a.nt; a from
// vnni::quantize_acts for Q4 and W's cols, prepared by avx2q::prepare(W, a); s8 from gemm_scales(a).
void gemm_q4(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, const float* s8, float* y,
             int64_t ys);

}  // namespace glmlab::avx2q
