// The fast CPU back end's backward ops (OpenMP threads, OpenBLAS sgemm, Highway SIMD building blocks),
// as free functions CpuOps (cpu_ops.cpp) delegates to. Shapes and semantics: the backward section of
// ops/ops.h; each is tested against the reference (kernels/cpu_ref/ref_backward.cpp) in test_backward.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace glmlab::cpu {

// scratch: reused buffer for widened weight tiles. bf16_activations: 16-bit and int8/int4 weights with
// M, K multiples of 32 and N ≥ 8 go through AMX tiles or AVX512-BF16 (kernels/cpu/bf16_gemm.h) where the
// CPU has them, dy rounded to bf16 as the forward rounds its activations; otherwise fp32 sgemm.
void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx, std::vector<float>& scratch,
                           bool bf16_activations = false);
void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW);
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx);
void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base);
void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du);
void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                        int D, const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                        float* dk, float* dv);
double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale);

// Attention works on blocks: query tokens [t0, t1) of sequence b (at most kAttnBlockTokens) × the heads
// of KV group g, row r = (token t0 + r / HG, head g·HG + r % HG) with HG = H / G. Shared by the forward
// (CpuOps::attention) and attention_backward: packs the block's query rows into qp [rows, D] and writes
// the scores scale·Q·Kᵀ against keys 0 .. P + t1 − 1 into sc [rows, nk] with one sgemm; keys a row may
// not see (after its own slot, padding, another packed segment) get −∞. Returns nk. kb: key 0 of
// (b, g) in fp32, consecutive keys ldk floats apart (the cache itself, or a bf16 cache widened).
constexpr int kAttnBlockTokens = 16;
// qb: the query row of the sequence's token 0 (rows q_stride apart); b: its row of the cache (masks).
int attention_block_scores(const float* qb, int64_t q_stride, const KVView& kv, const float* kb, int64_t ldk, int b,
                           int P, int H, int G, int D, int g, int t0, int t1, float scale, float* qp,
                           std::vector<float>& sc);

}  // namespace glmlab::cpu
