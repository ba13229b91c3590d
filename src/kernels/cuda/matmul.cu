// Matrix products of the CUDA back end, y[N, M] = x[N, K] · Wᵀ (+ bias), W = [M, K] in its storage
// dtype (kernels.h's WView). Three kernels, all fp32 accumulation:
//   gemv          N ≤ 8 (decode): one warp per weight row, 16-byte loads of the stored bytes (F32, F16,
//                 BF16, Q8, Q4 read directly, never widened in memory), N accumulators per lane, warp
//                 shuffle sums. Memory-bound: the weights are read once for all N rows.
//   matmul_simple 16×16 shared-memory tiles, one element at a time through load_w: any dtype, shape or
//                 alignment. The GPU twin of the CPU reference and the fallback of the fast paths.
//   matmul_wmma   tensor cores (WMMA 16×16×16, fp32 accumulators) without cuBLAS: a 64×64 output tile
//                 a block, activations rounded to bf16 (fp16 for F16 weights) and weights dequantized
//                 to bf16 while staged in shared memory ("dequantize to tile" for Q8/Q4).
#include <mma.h>

#include "kernels/cuda/common.cuh"

namespace glmlab::cuda::k {
namespace {

// ---------------------------------------------------------------------------------------------------
// gemv

// Elements of each weight type in one 16-byte load.
__host__ __device__ constexpr int chunk_elems(WType t) {
  return t == WType::F32 ? 4 : t == WType::Q8 ? 16 : t == WType::Q4 ? 32 : 8;
}

// The E = chunk_elems(WT) weights of a 16-byte chunk as floats (Q8/Q4: the integers, unscaled).
template <WType WT>
__device__ __forceinline__ void decode_chunk(const uint4& raw, float* w) {
  const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (WT == WType::F32) {
      w[i] = __uint_as_float(u[i]);
    } else if constexpr (WT == WType::F16) {
      w[2 * i] = f16_bits_to_float(uint16_t(u[i] & 0xffffu));
      w[2 * i + 1] = f16_bits_to_float(uint16_t(u[i] >> 16));
    } else if constexpr (WT == WType::BF16) {
      w[2 * i] = __uint_as_float(u[i] << 16);
      w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    } else if constexpr (WT == WType::Q8) {
#pragma unroll
      for (int j = 0; j < 4; ++j) w[4 * i + j] = float(int(int8_t(uint8_t(u[i] >> (8 * j)))));
    } else {  // Q4: byte j of the chunk holds elements 2j (high nibble) and 2j + 1 (low nibble)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint8_t b = uint8_t(u[i] >> (8 * j));
        w[8 * i + 2 * j] = float(q4_even(b));
        w[8 * i + 2 * j + 1] = float(q4_odd(b));
      }
    }
  }
}

constexpr int kGemvWarps = 8;  // rows of W per block of 256 threads

// One warp per weight row; lane l reads chunks l, l + 32, ... of the row. NR = rows of x (1..8).
template <WType WT, int NR>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* __restrict__ x, WView W, const float* __restrict__ bias, float* __restrict__ y) {
  constexpr int E = chunk_elems(WT);
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (row >= W.rows) return;
  const int64_t K = W.cols, M = W.rows, chunks = K / E;
  const uint4* wr = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(W.data) + row * W.row_bytes);
  float acc[NR];
#pragma unroll
  for (int n = 0; n < NR; ++n) acc[n] = 0.0f;
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 raw = __ldg(wr + c);
    float w[E];
    decode_chunk<WT>(raw, w);
    const int64_t k0 = c * E;
    float scale = 1.0f;
    if constexpr (WT == WType::Q8 || WT == WType::Q4) scale = f16_bits_to_float(W.scales[row * W.groups + k0 / W.group_size]);
#pragma unroll
    for (int n = 0; n < NR; ++n) {
      const float4* xv = reinterpret_cast<const float4*>(x + n * K + k0);
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < E / 4; ++i) {
        const float4 a = __ldg(xv + i);
        s = fmaf(a.x, w[4 * i], s);
        s = fmaf(a.y, w[4 * i + 1], s);
        s = fmaf(a.z, w[4 * i + 2], s);
        s = fmaf(a.w, w[4 * i + 3], s);
      }
      acc[n] = fmaf(s, scale, acc[n]);
    }
  }
#pragma unroll
  for (int n = 0; n < NR; ++n) {
    const float v = warp_sum(acc[n]);
    if (lane == 0) y[n * M + row] = v + (bias ? bias[row] : 0.0f);
  }
}

template <WType WT>
void launch_gemv(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t s) {
  const unsigned blocks = blocks_for(W.rows, kGemvWarps);
  const unsigned threads = kGemvWarps * 32;
  switch (N) {
    case 1: gemv_kernel<WT, 1><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 2: gemv_kernel<WT, 2><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 3: gemv_kernel<WT, 3><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 4: gemv_kernel<WT, 4><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 5: gemv_kernel<WT, 5><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 6: gemv_kernel<WT, 6><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    case 7: gemv_kernel<WT, 7><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
    default: gemv_kernel<WT, 8><<<blocks, threads, 0, s>>>(x, W, bias, y); break;
  }
  GLMLAB_CUDA_LAUNCHED("gemv_kernel");
}

// ---------------------------------------------------------------------------------------------------
// matmul_simple

constexpr int kSimpleTile = 16;

__global__ void simple_kernel(const float* __restrict__ x, int64_t N, WView W, const float* __restrict__ bias,
                              float* __restrict__ y) {
  __shared__ float xs[kSimpleTile][kSimpleTile + 1];
  __shared__ float ws[kSimpleTile][kSimpleTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t M = W.rows, K = W.cols;
  const int64_t m0 = int64_t(blockIdx.x) * kSimpleTile, n0 = int64_t(blockIdx.y) * kSimpleTile;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kSimpleTile) {
    const int64_t k = k0 + tx;
    xs[ty][tx] = (n0 + ty < N && k < K) ? x[(n0 + ty) * K + k] : 0.0f;
    ws[ty][tx] = (m0 + ty < M && k < K) ? load_w(W, m0 + ty, k) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimpleTile; ++kk) acc = fmaf(xs[ty][kk], ws[tx][kk], acc);
    __syncthreads();
  }
  const int64_t n = n0 + ty, m = m0 + tx;
  if (n < N && m < M) y[n * M + m] = acc + (bias ? bias[m] : 0.0f);
}

// ---------------------------------------------------------------------------------------------------
// matmul_wmma

constexpr int kWmmaBM = 64;  // rows of x (N) per block
constexpr int kWmmaBN = 64;  // rows of W (M) per block
constexpr int kWmmaBK = 32;  // inputs per stage
constexpr int kWmmaLd = kWmmaBK + 8;   // 16-bit elements a staged row (a multiple of 8, as WMMA needs)
constexpr int kWmmaLdC = kWmmaBN + 4;  // floats a row of the output tile (a multiple of 4)
constexpr int kWmmaThreads = 128;      // 4 warps, each 32×32 of the output (2×2 fragments)

template <typename T>
__device__ __forceinline__ T to_t(float v);
template <>
__device__ __forceinline__ __half to_t<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_t<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__global__ void __launch_bounds__(kWmmaThreads)
    wmma_kernel(const float* __restrict__ x, int64_t N, WView W, const float* __restrict__ bias, float* __restrict__ y) {
  namespace wm = nvcuda::wmma;
  __shared__ __align__(32) T as[kWmmaBM][kWmmaLd];
  __shared__ __align__(32) T bs[kWmmaBN][kWmmaLd];
  __shared__ __align__(32) float cs[kWmmaBM][kWmmaLdC];
  const int tid = threadIdx.x, warp = tid >> 5;
  const int64_t M = W.rows, K = W.cols;
  const int64_t n0 = int64_t(blockIdx.y) * kWmmaBM, m0 = int64_t(blockIdx.x) * kWmmaBN;
  const int wr = (warp / 2) * 32, wc = (warp % 2) * 32;

  wm::fragment<wm::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wm::fill_fragment(c[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < K; k0 += kWmmaBK) {
    // Stage: x rounded to T, W dequantized to T (zeros past the edges).
    for (int idx = tid; idx < kWmmaBM * kWmmaBK; idx += kWmmaThreads) {
      const int r = idx / kWmmaBK, kk = idx % kWmmaBK;
      const int64_t k = k0 + kk;
      as[r][kk] = to_t<T>((n0 + r < N && k < K) ? x[(n0 + r) * K + k] : 0.0f);
      bs[r][kk] = to_t<T>((m0 + r < M && k < K) ? load_w(W, m0 + r, k) : 0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kWmmaBK; ks += 16) {
      wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> a[2];
      wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::col_major> b[2];  // B[k][m] = W[m][k] = bs[m][k]
#pragma unroll
      for (int i = 0; i < 2; ++i) wm::load_matrix_sync(a[i], &as[wr + 16 * i][ks], kWmmaLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wm::load_matrix_sync(b[j], &bs[wc + 16 * j][ks], kWmmaLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wm::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wm::store_matrix_sync(&cs[wr + 16 * i][wc + 16 * j], c[i][j], kWmmaLdC, wm::mem_row_major);
  __syncthreads();
  for (int idx = tid; idx < kWmmaBM * kWmmaBN; idx += kWmmaThreads) {
    const int r = idx / kWmmaBN, cc = idx % kWmmaBN;
    const int64_t n = n0 + r, m = m0 + cc;
    if (n < N && m < M) y[n * M + m] = cs[r][cc] + (bias ? bias[m] : 0.0f);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool gemv_supported(const WView& W, const float* x, int64_t N) {
  if (N < 1 || N > kGemvMaxRows || W.rows < 1 || W.cols < 1) return false;
  const int E = chunk_elems(W.type);
  if (W.cols % E != 0 || W.row_bytes % 16 != 0 || !aligned16(W.data) || !aligned16(x)) return false;
  if (W.type == WType::Q8 || W.type == WType::Q4) return W.scales && W.group_size > 0 && W.group_size % E == 0;
  return true;
}

void gemv(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream) {
  switch (W.type) {
    case WType::F32: launch_gemv<WType::F32>(x, N, W, bias, y, stream); break;
    case WType::F16: launch_gemv<WType::F16>(x, N, W, bias, y, stream); break;
    case WType::BF16: launch_gemv<WType::BF16>(x, N, W, bias, y, stream); break;
    case WType::Q8: launch_gemv<WType::Q8>(x, N, W, bias, y, stream); break;
    case WType::Q4: launch_gemv<WType::Q4>(x, N, W, bias, y, stream); break;
  }
}

void matmul_simple(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream) {
  if (N == 0 || W.rows == 0) return;
  const dim3 grid(blocks_for(W.rows, kSimpleTile), blocks_for(N, kSimpleTile));
  simple_kernel<<<grid, dim3(kSimpleTile, kSimpleTile), 0, stream>>>(x, N, W, bias, y);
  GLMLAB_CUDA_LAUNCHED("simple_kernel");
}

bool wmma_supported(const WView& W) { return W.type != WType::F32 && W.rows > 0 && W.cols > 0; }

void matmul_wmma(const float* x, int64_t N, const WView& W, const float* bias, float* y, cudaStream_t stream) {
  if (N == 0 || W.rows == 0) return;
  const dim3 grid(blocks_for(W.rows, kWmmaBN), blocks_for(N, kWmmaBM));
  if (W.type == WType::F16)
    wmma_kernel<__half><<<grid, kWmmaThreads, 0, stream>>>(x, N, W, bias, y);
  else
    wmma_kernel<__nv_bfloat16><<<grid, kWmmaThreads, 0, stream>>>(x, N, W, bias, y);
  GLMLAB_CUDA_LAUNCHED("wmma_kernel");
}

}  // namespace glmlab::cuda::k
