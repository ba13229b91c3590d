// bf16 matrix products on AVX512-BF16 (VDPBF16PS: two bf16 products summed into each fp32 lane), for
// CPUs that have it but no AMX tiles: AMD Zen 4 / Zen 5, Intel Cooper Lake. The same contracts as
// amx_gemm.h, so the two are interchangeable:
//   gemm_bf16:                 y[N, M] = x[N, K] · Wᵀ (+ bias), W bf16 row-major [M, K], x rounded to bf16.
//   gemm_bf16_backward_input:  dx[N, K] += dy[N, M] · W[M, K], dy rounded to bf16, W read through `rows`.
// fp32 accumulation in both. One register micro-kernel (8 broadcast pairs × 32 lanes, 16 accumulators)
// serves both directions:
// - forward: lanes are tokens (x packed once as [16 tokens][k pair]), broadcasts are k pairs of a weight
//   row read straight from W (no copy of W);
// - backward: lanes are inputs k (a thread's job interleaves 4 groups of 32 columns of consecutive W row
//   pairs into L2-sized panels, interleave_row_pairs below), broadcasts are m pairs of a token's dy row,
//   accumulators are dx's own rows.
// Roughly 2× the fp32 sgemm of the same cores (twice the products per instruction).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/amx_gemm.h"  // RowSource

namespace glmlab::dpbf16 {

// True when the CPU (and OS) support AVX512F, AVX512BW and AVX512-BF16.
bool available();
// Shapes this kernel takes: M % 32 == 0 and K % 32 == 0 (every ChatGLM3 matrix qualifies).
inline bool fits(int64_t M, int64_t K) { return M % 32 == 0 && K % 32 == 0; }
// Both require available() and fits(M, K); OpenMP threads inside.
void gemm_bf16(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y);
void gemm_bf16_backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N,
                              float* dx);

// Decode GEMV on bf16 dot products (as llama.cpp's bf16 dot): the weights stay bf16 and are read in
// whole 64-byte chunks, each multiplied with VDPBF16PS against the activation rows rounded to bf16
// once per call (what a bf16 model does anyway; runs only where approximate activations are allowed).
// Several weight rows are read at once, each prefetched a fixed distance ahead, so that enough loads
// are in flight to reach the memory bandwidth with one thread per core.
struct Bf16Acts {
  int nt = 0;
  int64_t K = 0;
  std::vector<uint16_t> x;  // [nt, K] bf16, rounded to nearest even
  std::vector<float> xf;    // the same values as fp32, where a kernel multiplies with FMAs (dpbf16_packed.cpp)
};
// Requires available(); K % 32 == 0 (gemv_fits).
void pack_acts(const float* x, int nt, int64_t K, int64_t xs, Bf16Acts& out);
inline bool gemv_fits(int64_t K) { return K % 32 == 0; }
// y[t·ys + r] = Σ_k x[t, k] · W[r, k] for weight rows [r0, r1) of the bf16 [M, K] matrix W, tokens
// t < a.nt. Up to 8 tokens share one pass over a weight row; more tokens pass in groups over blocks of
// rows that stay in L2, so W is read from memory once per call whatever the batch. Single-threaded:
// callers split the rows between threads.
void gemv(const uint16_t* W, int64_t r0, int64_t r1, const Bf16Acts& a, float* y, int64_t ys);

// The layout both backward kernels read W in (AMX's B tiles, 16 pairs × 16 columns at a 128-byte
// stride, and this file's broadcast panels): word (j, q, c) of `out` is the bf16 pair
// (src[2q][(g0 + j)·32 + c], src[2q + 1][(g0 + j)·32 + c]), low half first, stored at
// out[(j·pairs + q)·32 + c] for column groups j < ng and row pairs q0 ≤ q < q1. src is bf16 [rows, K].
// Requires AVX512BW (every AVX512-BF16 or AMX CPU has it).
void interleave_row_pairs(const uint16_t* src, int64_t K, int64_t g0, int64_t ng, int64_t q0, int64_t q1,
                          int64_t pairs, uint32_t* out);

}  // namespace glmlab::dpbf16
