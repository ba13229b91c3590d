// The fast CPU back end's backward ops (OpenMP threads, OpenBLAS sgemm, Highway SIMD building blocks),
// as free functions CpuOps (cpu_ops.cpp) delegates to. Shapes and semantics: the backward section of
// ops/ops.h; each is tested against the reference (kernels/cpu_ref/ref_backward.cpp) in test_backward.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace glmlab::cpu {

// scratch: reused buffer for widened weight tiles. bf16_activations: 16-bit and int8/int4 weights with
// M, K multiples of 32 and N ≥ 8 go through AMX tiles (kernels/cpu/amx_gemm.h) where the CPU has them,
// dy rounded to bf16 as the forward rounds its activations; otherwise fp32 sgemm.
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

}  // namespace glmlab::cpu
