// The kernels of the CUDA back end as host functions (defined in the .cu files beside this one, called by
// cuda_ops.cpp and the tests). Plain C++: every pointer is a device pointer, every launch goes on
// `stream`, and nothing here allocates memory (scratch is passed in, sized by the *_scratch functions).
// Activations are fp32 row-major; the KV cache is fp32 [B, S, G, D] (ops.h's KVView).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace glmlab::cuda::k {

// A weight matrix [rows, cols] as the kernels see it (util/matrix.h, device pointers):
// F32/F16/BF16 row-major; Q8 int8 [rows, cols]; Q4 two signed nibbles a byte, even element in the
// HIGH nibble, [rows, ceil(cols/2)] bytes; Q8/Q4 scales fp16 [rows, groups], group_size inputs each.
enum class WType : int { F32, F16, BF16, Q8, Q4 };
struct WView {
  WType type = WType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  const uint16_t* scales = nullptr;  // Q8/Q4: fp16 bits
  int64_t group_size = 0, groups = 0;
  int64_t row_bytes = 0;
};

// ---- elementwise (elementwise.cu)
// rope_backward (below, with the backward ops) is rope's kernel with the rotation transposed.
void embedding(const WView& table, const int32_t* ids, int64_t N, float* out, cudaStream_t stream);
void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms,
             cudaStream_t stream);
void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base, cudaStream_t stream);
void swiglu(const float* u, int64_t N, int64_t F, float* out, cudaStream_t stream);
void add(float* y, const float* x, int64_t count, cudaStream_t stream);
void add_bias(float* y, const float* bias, int64_t N, int64_t M, cudaStream_t stream);  // y[N, M] += bias[M]
void kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
              const int32_t* start, cudaStream_t stream);
void argmax(const float* x, int64_t rows, int64_t V, int32_t* out, cudaStream_t stream);
// out[count] = x rounded to bf16 (bf16 = true) or fp16 bits, round to nearest even.
void to_half(const float* x, int64_t count, bool bf16, uint16_t* out, cudaStream_t stream);
// Rows [r0, r0 + rows) of W dequantized (Q8/Q4: q · scale in fp32, then rounded) to bf16 out[rows, cols].
void dequant_bf16(const WView& W, int64_t r0, int64_t rows, uint16_t* out, cudaStream_t stream);
// The same rows widened / dequantized to fp32 out[rows, cols] (exact: the fp32-activation GEMM path).
void dequant_f32(const WView& W, int64_t r0, int64_t rows, float* out, cudaStream_t stream);

// ---- matrix products y[N, W.rows] = x[N, W.cols] · Wᵀ (+ bias) (matmul.cu)
constexpr int64_t kGemvMaxRows = 8;
// The GEMV kernel: N ≤ 8 rows, each weight row streamed once with 16-byte loads (several rows per
// block, warp-shuffle reductions, Q8/Q4 read directly); fp32 activations, exact up to fp32 sums.
// Needs 16-byte aligned rows of W and x (row bytes, K a multiple of 16 / element size), and for Q8/Q4
// group_size a multiple of the elements in 16 bytes (16 for Q8, 32 for Q4).
bool gemv_supported(const WView& W, const float* x, int64_t N);
void gemv(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream);
// The simple twin: a 16×16 shared-memory tiled GEMM reading one element at a time (any dtype, shape,
// alignment or group); fp32 activations. The oracle of the fast kernels on the GPU, and their fallback.
void matmul_simple(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream);
// Tensor cores without cuBLAS (WMMA, fp32 accumulation): activations rounded to fp16 (F16 weights) or
// bf16 (every other dtype) while staged in shared memory; Q8/Q4 tiles dequantized to bf16 there
// ("dequantize to tile"). F32 weights are not supported; any shape (tile edges are zero-filled).
bool wmma_supported(const WView& W);
void matmul_wmma(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream);

// ---- attention (attention.cu): ops.h's attention() with the cache of one layer.
struct AttnArgs {
  const float* q = nullptr;
  int64_t q_stride = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  const uint8_t* key_valid = nullptr;
  const int32_t* segment = nullptr;
  int S = 0, B = 0, T = 0, P = 0, H = 0, G = 0, D = 0;
  float* out = nullptr;
  float* lse = nullptr;
};
constexpr int kAttnMaxD = 128;
// The fused online-softmax kernel: a block takes 16 query rows of one (sequence, KV group) (heads of a
// group share each K/V tile in shared memory) and a range of keys; `splits` > 1 splits the keys into
// ranges whose partial results (max, sum, unnormalized output) a combine kernel merges (flash-decoding).
// Needs D ≤ 128, D and q_stride multiples of 4.
bool flash_supported(const AttnArgs& a);
int attention_splits(const AttnArgs& a, int sm_count);               // the automatic choice
size_t attention_scratch_floats(const AttnArgs& a, int splits);      // 0 when splits == 1
void attention_flash(const AttnArgs& a, int splits, float* scratch, cudaStream_t stream);
// The simple twin: one block per (row, head), three passes over the keys (max, sum, weighted values).
void attention_naive(const AttnArgs& a, cudaStream_t stream);


// ---- backward passes and the optimizer (backward.cu): ops.h's backward ops, gradients ACCUMULATE.
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx, cudaStream_t stream);
void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base,
                   cudaStream_t stream);
void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du, cudaStream_t stream);
// The fused softmax cross-entropy of N rows: loss[n] (device, double) = lse − z[label] (0 for label −100),
// z overwritten with scale·(softmax − onehot). A label outside [0, V) other than −100 lowers *bad_row
// (device int, set above N − 1 by the caller) to that row's index and leaves the row unchanged.
void cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale, double* loss, int* bad_row,
                   cudaStream_t stream);
// dx[N, W.cols] += dy[N, W.rows] · W and dW[M, K] += dyᵀ · x, fp32, 16×16 shared-memory tiles, any dtype,
// shape or alignment: the twins of the cuBLAS paths (cuda_ops.cpp) and their fallback without cuBLAS.
void matmul_backward_input_simple(const float* dy, int64_t N, const WView& W, float* dx, cudaStream_t stream);
void matmul_backward_weight_simple(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW,
                                   cudaStream_t stream);
// ops.h's attention_backward with the cache of one layer (fp32 [B, S, G, D]), recomputing each
// probability from the forward's lse (no [T, S] matrix is stored): a query-side kernel (dq, and
// Δ = dout·out per row and head into `delta`, B·T·H floats of scratch), then a key-side kernel, one block
// per (key slot, KV group), that sums dk and dv over the queries and heads that see the key (no atomics).
struct AttnBwdArgs : AttnArgs {  // q … lse as the forward's (out and lse its results, read here)
  const float* dout = nullptr;  // [B·T, H·D]
  float* dq = nullptr;
  int64_t dq_stride = 0;
  float* dk = nullptr;
  float* dv = nullptr;
};
bool attention_backward_supported(const AttnBwdArgs& a);  // D ≤ 128
void attention_backward(const AttnBwdArgs& a, float* delta, cudaStream_t stream);

// torch.optim.AdamW's update of n values with the step's scalars (model/optimizer.h's adamw_step), each
// operation rounded as the host loop rounds it.
struct AdamWStep {
  float decay, w1, b2, w2, step_size, bc2_sqrt, eps;
};
void adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s, cudaStream_t stream);
// *out += Σ x² (double) through kSumSquaresBlocks partials in `part`; the gradient norm for clipping.
constexpr int kSumSquaresBlocks = 256;
void sum_squares(const float* x, int64_t n, double* part, double* out, cudaStream_t stream);
void scale(float* x, int64_t n, double c, cudaStream_t stream);  // x = float(double(x) · c)
// ops.h's dropout (the same mask bits as the host), mul_cols and col_dot (rows summed in order, fp32).
void dropout(const float* x, int64_t n, uint64_t key, float p, float* out, cudaStream_t stream);
void mul_cols(float* x, int64_t N, int64_t M, const float* v, cudaStream_t stream);
void col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out, cudaStream_t stream);

}  // namespace glmlab::cuda::k
