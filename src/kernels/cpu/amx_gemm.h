// bf16 matrix products on Intel AMX tiles (Sapphire/Emerald/Granite Rapids), for prefill:
// y[N, M] = x[N, K] · Wᵀ (+ bias), W bf16 row-major [M, K], x fp32 rounded to bf16 (as a bf16 model's
// activations are), fp32 accumulation. The weight tiles are read straight from W (row stride K), the
// activations are packed once into the tile layout AMX wants for its second operand (pairs of k per
// column). ~10× the AVX-512 fp32 sgemm on this hardware.
#pragma once
#include <cstdint>
#include <functional>

#include "util/matrix.h"

namespace glmlab::amx {

// True when the CPU has AMX-BF16 and the kernel granted this process the tile state.
bool available();
// True when the CPU also has AMX-INT8 (TDPBSUD and its kin; amx_int8.h) and the tile state is granted.
bool int8_available();
// Loads the tile configuration every AMX kernel here uses: 8 tiles of 16 rows × 64 bytes (this thread).
void configure_tiles();
// Shapes this kernel takes: M % 32 == 0 and K % 32 == 0 (every ChatGLM3 matrix qualifies).
// The probe's register-resident peak: `iters` rounds of 4 independent TDPBF16PS (16 × 16 outputs × 32
// products each) on tiles that stay loaded. Returns the flops done (a multiply-add counts 2); requires available().
double peak_bf16(int64_t iters, float* sink);
// The same with TDPBSUD (16 × 16 outputs × 64 byte products each); the int ops done. Requires int8_available().
double peak_int8(int64_t iters, float* sink);
inline bool fits(int64_t M, int64_t K) { return M % 32 == 0 && K % 32 == 0; }
// From more tokens than this, gemm_bf16 and the back end's row-major input gradient run the cache-blocked
// kernel on B tiles converted from a row-major W per chunk (below, the conversions cost more than the
// blocking gains; measured in amx_gemm.cpp's gemm_bf16).
inline constexpr int64_t kBlockedFromTokens = 224;
// Requires available() and fits(M, K). Threads with OpenMP over blocks of 32 weight rows.
void gemm_bf16(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y);

// The same product on a bf16 matrix packed at load (dpbf16_packed.h, [M/16][K/2 pairs][16][2]): 16 input
// pairs of a block of 16 rows are one B tile as they lie, so the weights are read without a copy.
// Requires available(), M % 16 == 0, K % 32 == 0.
void gemm_bf16_packed(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                      float* y);
// The same on an fp16 matrix packed at load for AVX-512 (f16_packed.h, [M/16][K][16 rows]): each chunk of a
// row pair is split into bf16 tiles hi + lo that sum to the fp16 weights exactly and multiplied twice, so
// only the activations are rounded (to bf16, as for a bf16 matrix). Requires available(), M % 16 == 0,
// K % 32 == 0. The CPU back end takes it from 32 rows on (below, converting the weights costs more than
// the AVX-512 fp16 kernel's whole product).
void gemm_f16_packed(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                     float* y);

// The input gradient of the same product, for training: dx[N, K] += dy[N, M] · W[M, K], dy rounded to
// bf16, fp32 accumulation (onto what dx holds). W is read in chunks of rows through `rows`: given
// (m0, count, scratch of count·K bf16) it returns rows [m0, m0 + count) of W as bf16 [count, K] — W
// itself for a bf16 matrix, or `scratch` filled from a wider or quantized one (dequantize to tile).
// Each chunk is repacked once into AMX's pair-interleaved layout, so W needs no transposed copy.
// Requires available() and fits(M, K).
using RowSource = std::function<const uint16_t*(int64_t m0, int64_t count, uint16_t* scratch)>;
void gemm_bf16_backward_input(int64_t M, int64_t K, const RowSource& rows, const float* dy, int64_t N, float* dx);
// Row-major matrices read in place by the cache-blocked GEMM of the packed weights (training's frozen bases,
// which stay row-major for the backward): each chunk of a row pair is converted into B tiles in registers,
// so no converted copy of W is written. bf16 as it lies; fp16 as hi + lo bf16 tiles multiplied twice
// (exact weights, as gemm_f16_packed); Q8 / Q4 dequantized (q · scale rounded to bf16: the bits
// simd::dequant_rows_bf16 gives). Activations rounded to bf16, fp32 accumulation.
// rowmajor_blocked: the back end takes these for W at N tokens, for the forward or the input gradient —
// AMX, a row-major bf16, fp16, Q8 or Q4 matrix with fits(rows, cols) (Q8/Q4: groups of a multiple of 32
// inputs), and more than kBlockedFromTokens tokens (below, the conversions cost more than the blocking
// gains: bf16, and the Q8/Q4 forward, whose tile path stays ahead up to ~160 tokens), or from
// kConvertedFromTokens for the fp16 and Q8/Q4 input gradients and from kF16ForwardFromTokens for the fp16
// forward: their other paths (fp32 sgemm on widened rows; rows dequantized by a scalar loop, then
// repacked) were slower at every count measured from 16 (glmlab_kernel_bench BM_TrainBase,
// docs/BENCHMARKS.md session 22: fp16 27392 × 4096 forward at 110 tokens 159 → 54 ms, Q4 input gradient
// 167 → 42). The fp16 forward starts where the packed fp16 prefill does (32 rows, cpu_ops.cpp): below, an
// fp16 model's activations stay exact fp32, as its parity test against the fp16 oracle wants.
inline constexpr int64_t kConvertedFromTokens = 16;
inline constexpr int64_t kF16ForwardFromTokens = 32;
bool rowmajor_blocked(const Matrix& W, int64_t N, bool input_gradient);
// y[N, rows] = x[N, cols] · Wᵀ (+ bias). Requires rowmajor_blocked(W, n, ·) for some n (any N works).
void gemm_rowmajor(const Matrix& W, const float* x, int64_t N, const float* bias, float* y);
// The input gradient dx[N, cols] += dy[N, rows] · W: the same kernel with Wᵀ as its weights, B tiles
// interleaved from pairs of W's rows per chunk, C starting from dx. Requires as gemm_rowmajor.
void gemm_backward_input_rowmajor(const Matrix& W, const float* dy, int64_t N, float* dx);

// Kernel helpers shared by the AMX GEMMs. An output larger than L2 goes to memory with non-temporal
// stores: written through the cache each of its lines is read first (512 tokens × 27392 rows: 7.4 against
// 3.3 ms a thread for the copy on an AMX Xeon).
inline bool stream_output(int64_t bytes) { return bytes > (int64_t(4) << 20); }
// y[0, n) = src[0, n). With `stream`, the 64-byte lines wholly inside y's run are written with
// non-temporal stores, the partial ones at its ends with ordinary stores (they share their line with
// another run); the caller fences (_mm_sfence) before the output is read. Requires AVX-512 (available()).
void copy_run(const float* src, int64_t n, float* y, bool stream);

}  // namespace glmlab::amx
