// Elementwise and row-wise kernels of the CUDA back end: embedding, RMSNorm, rotary, SwiGLU, adds,
// KV-cache stores, greedy argmax and 16-bit conversions. Each follows the CPU reference
// (kernels/cpu_ref/ref_ops.cpp, ops/ops.cpp) formula for formula; fp32 throughout.
#include <cfloat>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace glmlab::cuda::k {
namespace {

__global__ void embedding_kernel(WView table, const int32_t* ids, float* out) {
  const int64_t n = blockIdx.x, C = table.cols, id = ids[n];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[n * C + c] = load_w(table, id, c);
}

// One block of 256 threads per row: fp32 sum of squares, block reduction, then scale.
__global__ void rmsnorm_kernel(const float* x, const float* w, int64_t C, float eps, float* y, float* inv_rms) {
  __shared__ float part[32];
  const int64_t n = blockIdx.x;
  const float* xr = x + n * C;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float r = 1.0f / sqrtf(part[0] / float(C) + eps);
  if (inv_rms && threadIdx.x == 0) inv_rms[n] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[n * C + c] = xr[c] * r * w[c];
}

// One thread per (row, head, pair i < R/2): pairs (2i, 2i+1) of the first R = D/2 dims rotated by
// pos · base^(−2i/R). θ is base^(2i/R) computed in double and rounded (the CPU's correctly rounded
// powf), then the same fp32 steps as the reference.
// kBackward: the transpose of the rotation (rotation by −angle), rope's backward pass.
template <bool kBackward>
__global__ void rope_kernel(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) {
  const int R = D / 2, pairs = R / 2;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * nheads * pairs) return;
  const int i = int(idx % pairs);
  const int h = int((idx / pairs) % nheads);
  const int64_t n = idx / (int64_t(pairs) * nheads);
  const float p = float(pow(double(base), double(float(2 * i) / float(R))));
  const float theta = 1.0f / p;
  const float ang = float(pos[n]) * theta;
  const float c = cosf(ang), s = sinf(ang);
  float* v = x + n * stride + int64_t(h) * D;
  const float x0 = v[2 * i], x1 = v[2 * i + 1];
  if (kBackward) {
    v[2 * i] = x0 * c + x1 * s;
    v[2 * i + 1] = x1 * c - x0 * s;
  } else {
    v[2 * i] = x0 * c - x1 * s;
    v[2 * i + 1] = x1 * c + x0 * s;
  }
}

__global__ void swiglu_kernel(const float* u, int64_t N, int64_t F, float* out) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * F) return;
  const int64_t n = idx / F, f = idx % F;
  const float g = u[n * 2 * F + f];
  out[idx] = g / (1.0f + expf(-g)) * u[n * 2 * F + F + f];
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) y[i] += x[i];
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t N, int64_t M) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N * M) y[i] += bias[i % M];
}

// One block per (b, t) row; `start` is read on the device, so a recorded graph replays with a new slot.
__global__ void kv_store_kernel(const float* src, int64_t stride, int64_t offset, int T, int64_t W, float* dst,
                                int S, const int32_t* start) {
  const int b = blockIdx.x / T, t = blockIdx.x % T;
  const float* row = src + (int64_t(b) * T + t) * stride + offset;
  float* to = dst + (int64_t(b) * S + start[0] + t) * W;
  for (int64_t i = threadIdx.x; i < W; i += blockDim.x) to[i] = row[i];
}

// One block of 256 threads per row: (value, index) maxima, ties to the lower index; any NaN/Inf in the
// row gives 5 (0 when V ≤ 5), as the host Ops::argmax (the reference's InvalidScoreLogitsProcessor).
__global__ void argmax_kernel(const float* x, int64_t V, int32_t* out) {
  __shared__ float sv[256];
  __shared__ int64_t si[256];
  __shared__ int sbad[256];
  const float* row = x + int64_t(blockIdx.x) * V;
  float best = -INFINITY;
  int64_t bi = -1;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = row[i];
    bad |= !isfinite(v);
    if (bi < 0 || v > best) best = v, bi = i;  // i increases: the first of equal maxima stays
  }
  sv[threadIdx.x] = best;
  si[threadIdx.x] = bi;
  sbad[threadIdx.x] = bad;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const float v2 = sv[threadIdx.x + o];
      const int64_t i2 = si[threadIdx.x + o];
      const bool take = i2 >= 0 && (si[threadIdx.x] < 0 || v2 > sv[threadIdx.x] ||
                                    (v2 == sv[threadIdx.x] && i2 < si[threadIdx.x]));
      if (take) sv[threadIdx.x] = v2, si[threadIdx.x] = i2;
      sbad[threadIdx.x] |= sbad[threadIdx.x + o];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = sbad[0] ? (V > 5 ? 5 : 0) : int32_t(si[0] < 0 ? 0 : si[0]);
}

__global__ void to_half_kernel(const float* x, int64_t count, bool bf16, uint16_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x[i])) : __half_as_ushort(__float2half_rn(x[i]));
}

__global__ void dequant_bf16_kernel(WView W, int64_t r0, int64_t rows, uint16_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * W.cols) return;
  const int64_t r = i / W.cols, c = i % W.cols;
  out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(load_w(W, r0 + r, c)));
}

__global__ void dequant_f32_kernel(WView W, int64_t r0, int64_t rows, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * W.cols) return;
  out[i] = load_w(W, r0 + i / W.cols, i % W.cols);
}

}  // namespace

void embedding(const WView& table, const int32_t* ids, int64_t N, float* out, cudaStream_t stream) {
  if (N == 0) return;
  embedding_kernel<<<unsigned(N), 256, 0, stream>>>(table, ids, out);
  GLMLAB_CUDA_LAUNCHED("embedding_kernel");
}

void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms,
             cudaStream_t stream) {
  if (N == 0) return;
  rmsnorm_kernel<<<unsigned(N), 256, 0, stream>>>(x, w, C, eps, y, inv_rms);
  GLMLAB_CUDA_LAUNCHED("rmsnorm_kernel");
}

void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base, cudaStream_t stream) {
  const int64_t n = N * nheads * (D / 4);
  if (n == 0) return;
  rope_kernel<false><<<blocks_for(n, 256), 256, 0, stream>>>(x, N, stride, nheads, D, pos, base);
  GLMLAB_CUDA_LAUNCHED("rope_kernel");
}

void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base,
                   cudaStream_t stream) {
  const int64_t n = N * nheads * (D / 4);
  if (n == 0) return;
  rope_kernel<true><<<blocks_for(n, 256), 256, 0, stream>>>(dx, N, stride, nheads, D, pos, base);
  GLMLAB_CUDA_LAUNCHED("rope_kernel<backward>");
}

void swiglu(const float* u, int64_t N, int64_t F, float* out, cudaStream_t stream) {
  if (N * F == 0) return;
  swiglu_kernel<<<blocks_for(N * F, 256), 256, 0, stream>>>(u, N, F, out);
  GLMLAB_CUDA_LAUNCHED("swiglu_kernel");
}

void add(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  add_kernel<<<blocks_for(count, 256), 256, 0, stream>>>(y, x, count);
  GLMLAB_CUDA_LAUNCHED("add_kernel");
}

void add_bias(float* y, const float* bias, int64_t N, int64_t M, cudaStream_t stream) {
  if (N * M == 0) return;
  add_bias_kernel<<<blocks_for(N * M, 256), 256, 0, stream>>>(y, bias, N, M);
  GLMLAB_CUDA_LAUNCHED("add_bias_kernel");
}

void kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
              const int32_t* start, cudaStream_t stream) {
  if (B * T == 0) return;
  kv_store_kernel<<<unsigned(B * T), 128, 0, stream>>>(src, stride, offset, T, W, dst, S, start);
  GLMLAB_CUDA_LAUNCHED("kv_store_kernel");
}

void argmax(const float* x, int64_t rows, int64_t V, int32_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  argmax_kernel<<<unsigned(rows), 256, 0, stream>>>(x, V, out);
  GLMLAB_CUDA_LAUNCHED("argmax_kernel");
}

void to_half(const float* x, int64_t count, bool bf16, uint16_t* out, cudaStream_t stream) {
  if (count == 0) return;
  to_half_kernel<<<blocks_for(count, 256), 256, 0, stream>>>(x, count, bf16, out);
  GLMLAB_CUDA_LAUNCHED("to_half_kernel");
}

void dequant_bf16(const WView& W, int64_t r0, int64_t rows, uint16_t* out, cudaStream_t stream) {
  if (rows * W.cols == 0) return;
  dequant_bf16_kernel<<<blocks_for(rows * W.cols, 256), 256, 0, stream>>>(W, r0, rows, out);
  GLMLAB_CUDA_LAUNCHED("dequant_bf16_kernel");
}

void dequant_f32(const WView& W, int64_t r0, int64_t rows, float* out, cudaStream_t stream) {
  if (rows * W.cols == 0) return;
  dequant_f32_kernel<<<blocks_for(rows * W.cols, 256), 256, 0, stream>>>(W, r0, rows, out);
  GLMLAB_CUDA_LAUNCHED("dequant_f32_kernel");
}

}  // namespace glmlab::cuda::k
