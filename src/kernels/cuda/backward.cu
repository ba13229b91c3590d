// The backward kernels of the CUDA back end (fine-tuning): RMSNorm, SwiGLU, the fused softmax
// cross-entropy, attention with recomputation from the forward's log-sum-exp, the simple twins of the
// two matrix-product gradients, and the AdamW update with the gradient-norm helpers. Each follows the
// CPU reference (kernels/cpu_ref/ref_backward.cpp, model/optimizer.cpp) formula for formula; gradients
// accumulate (+=) into their outputs as ops.h says. (Rotary's backward is elementwise.cu's rope kernel, transposed.)
#include <cfloat>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace glmlab::cuda::k {
namespace {

// Sum of v over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the total.
template <class T>
__device__ T block_sum(T v, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T u = lane < nw ? red[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) u += __shfl_xor_sync(0xffffffffu, u, o);
    if (lane == 0) red[0] = u;
  }
  __syncthreads();
  return red[0];
}

__device__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float u = lane < nw ? red[lane] : -INFINITY;
    u = warp_max(u);
    if (lane == 0) red[0] = u;
  }
  __syncthreads();
  return red[0];
}

// ---- RMSNorm: one block of 256 threads per row.
// dx_c += r·w_c·dy_c − x_c·r³/C·Σ_j dy_j w_j x_j  (r = inv_rms of the row)
__global__ void rmsnorm_backward_kernel(const float* dy, const float* x, const float* w, const float* inv_rms,
                                        int64_t C, float* dx) {
  __shared__ double red[32];
  const int64_t n = blockIdx.x;
  const float* g = dy + n * C;
  const float* xr = x + n * C;
  double dot = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += double(g[c]) * w[c] * xr[c];
  dot = block_sum(dot, red);
  const double r = inv_rms[n];
  const double kk = r * r * r * dot / double(C);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[n * C + c] += float(r * w[c] * g[c] - xr[c] * kk);
}

// ---- SwiGLU: out = silu(g)·p; du_g += d·p·σ(g)·(1 + g·(1 − σ(g))), du_p += d·silu(g).
__global__ void swiglu_backward_kernel(const float* dout, const float* u, int64_t N, int64_t F, float* du) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * F) return;
  const int64_t n = idx / F, f = idx % F;
  const float g = u[n * 2 * F + f], p = u[n * 2 * F + F + f], d = dout[idx];
  const float sig = 1.0f / (1.0f + expf(-g));
  du[n * 2 * F + f] += d * p * sig * (1.0f + g * (1.0f - sig));
  du[n * 2 * F + F + f] += d * g * sig;
}

// ---- fused softmax cross-entropy: one block of 256 threads per row. loss[n] = lse − z[label] (0 for an
// ignored row); the row becomes scale·(softmax − onehot). A label outside [0, V) other than −100 sets
// bad_row to the lowest such row (atomicMin) and leaves the row as it was.
__global__ void cross_entropy_kernel(float* z, const int32_t* labels, int64_t V, float scale, double* loss,
                                     int* bad_row) {
  __shared__ double red_d[32];
  __shared__ float red_f[32];
  const int64_t n = blockIdx.x;
  float* row = z + n * V;
  const int32_t y = labels[n];
  if (y == -100) {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) row[v] = 0.0f;
    if (threadIdx.x == 0) loss[n] = 0.0;
    return;
  }
  if (y < 0 || y >= V) {
    if (threadIdx.x == 0) {
      atomicMin(bad_row, int(n));
      loss[n] = 0.0;
    }
    return;
  }
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
  mx = block_max(mx, red_f);
  double sum = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += exp(double(row[v]) - double(mx));
  sum = block_sum(sum, red_d);  // its barriers also order every read of z[y] below before the writes
  const double lse = double(mx) + log(sum);
  if (threadIdx.x == 0) loss[n] = lse - double(row[y]);
  __syncthreads();
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    row[v] = float(double(scale) * (exp(double(row[v]) - lse) - (v == y ? 1.0 : 0.0)));
}

// ---- matrix-product gradients, simple twins: 16×16 shared-memory tiles, fp32, one element at a time.
constexpr int kTile = 16;

// dx[n, k] += Σ_m dy[n, m]·W[m, k]: block (k tile, n tile).
__global__ void backward_input_simple_kernel(const float* __restrict__ dy, int64_t N, WView W, float* __restrict__ dx) {
  __shared__ float gs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t M = W.rows, K = W.cols;
  const int64_t k0 = int64_t(blockIdx.x) * kTile, n0 = int64_t(blockIdx.y) * kTile;
  float acc = 0.0f;
  for (int64_t m0 = 0; m0 < M; m0 += kTile) {
    gs[ty][tx] = (n0 + ty < N && m0 + tx < M) ? dy[(n0 + ty) * M + m0 + tx] : 0.0f;
    ws[ty][tx] = (m0 + ty < M && k0 + tx < K) ? load_w(W, m0 + ty, k0 + tx) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int mm = 0; mm < kTile; ++mm) acc = fmaf(gs[ty][mm], ws[mm][tx], acc);
    __syncthreads();
  }
  const int64_t n = n0 + ty, k = k0 + tx;
  if (n < N && k < K) dx[n * K + k] += acc;
}

// dW[m, k] += Σ_n dy[n, m]·x[n, k]: block (k tile, m tile).
__global__ void backward_weight_simple_kernel(const float* __restrict__ dy, const float* __restrict__ x, int64_t N,
                                              int64_t M, int64_t K, float* __restrict__ dW) {
  __shared__ float gs[kTile][kTile + 1];  // [n][m]
  __shared__ float xs[kTile][kTile + 1];  // [n][k]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t k0 = int64_t(blockIdx.x) * kTile, m0 = int64_t(blockIdx.y) * kTile;
  float acc = 0.0f;
  for (int64_t n0 = 0; n0 < N; n0 += kTile) {
    gs[ty][tx] = (n0 + ty < N && m0 + tx < M) ? dy[(n0 + ty) * M + m0 + tx] : 0.0f;
    xs[ty][tx] = (n0 + ty < N && k0 + tx < K) ? x[(n0 + ty) * K + k0 + tx] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int nn = 0; nn < kTile; ++nn) acc = fmaf(gs[nn][ty], xs[nn][tx], acc);
    __syncthreads();
  }
  const int64_t m = m0 + ty, k = k0 + tx;
  if (m < M && k < K) dW[m * K + k] += acc;
}

// ---- attention backward, recomputing the probabilities from the forward's lse:
//   p_j = exp(s_j − lse), s_j = scale·q·k_j;  Δ = dout·out (= Σ_j p_j dp_j);  dp_j = dout·v_j;
//   ds_j = p_j·(dp_j − Δ)·scale;  dq += Σ_j ds_j k_j;  dk_j += Σ ds_j q;  dv_j += Σ p_j dout.
constexpr int kAttnThreads = 128;

__device__ __forceinline__ bool visible(const AttnBwdArgs& a, int b, int slot_i, int j) {
  const int64_t row = int64_t(b) * a.S;
  return j <= slot_i && a.key_valid[row + j] && (!a.segment || a.segment[row + j] == a.segment[row + slot_i]);
}

__device__ __forceinline__ float dot(const float* a, const float* b, int D) {
  float s = 0.0f;
  for (int i = 0; i < D; ++i) s = fmaf(a[i], b[i], s);
  return s;
}

// grid (B·T, H): the query side. Writes Δ of the row (delta[row·H + h], −inf-lse rows: 0) and adds dq.
__global__ void __launch_bounds__(kAttnThreads) attention_dq_kernel(AttnBwdArgs a, float* delta) {
  __shared__ float qs[kAttnMaxD], gos[kAttnMaxD];
  __shared__ float ds[kAttnThreads];
  __shared__ float red[32];
  const int row = blockIdx.x, h = blockIdx.y, b = row / a.T, t = row % a.T, D = a.D;
  const int g = h / (a.H / a.G), last = a.P + t;
  const float scale = 1.0f / sqrtf(float(D));
  const float* qv = a.q + int64_t(row) * a.q_stride + int64_t(h) * D;
  const float* go = a.dout + (int64_t(row) * a.H + h) * D;
  const float* ov = a.out + (int64_t(row) * a.H + h) * D;
  float part = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    qs[i] = qv[i];
    gos[i] = go[i];
    part += go[i] * ov[i];
  }
  const float dlt = block_sum(part, red);  // its barriers also publish qs and gos
  const float lse = a.lse[int64_t(row) * a.H + h];
  if (lse == -INFINITY) {  // no visible key: the forward gave zeros, nothing flows back
    if (threadIdx.x == 0) delta[int64_t(row) * a.H + h] = 0.0f;
    return;
  }
  if (threadIdx.x == 0) delta[int64_t(row) * a.H + h] = dlt;
  float acc = 0.0f;  // dq[i] for i = threadIdx.x (D ≤ kAttnThreads)
  for (int j0 = 0; j0 <= last; j0 += kAttnThreads) {
    const int j = j0 + int(threadIdx.x);
    float d = 0.0f;
    if (j <= last && visible(a, b, last, j)) {
      const int64_t kvo = ((int64_t(b) * a.S + j) * a.G + g) * D;
      const float p = expf(dot(qs, a.k + kvo, D) * scale - lse);
      d = p * (dot(gos, a.v + kvo, D) - dlt) * scale;
    }
    ds[threadIdx.x] = d;
    __syncthreads();
    const int n = min(kAttnThreads, last + 1 - j0);
    if (int(threadIdx.x) < D)
      for (int jj = 0; jj < n; ++jj)
        if (ds[jj] != 0.0f) acc = fmaf(ds[jj], a.k[((int64_t(b) * a.S + j0 + jj) * a.G + g) * D + threadIdx.x], acc);
    __syncthreads();
  }
  if (int(threadIdx.x) < D) a.dq[int64_t(row) * a.dq_stride + int64_t(h) * D + threadIdx.x] += acc;
}

// grid (B·(P + T), G): the key side, one block per key slot j and KV group g, over every (query t, head of
// the group) that sees the key. Each block owns its dk/dv row: no atomics.
__global__ void __launch_bounds__(kAttnThreads) attention_dkv_kernel(AttnBwdArgs a, const float* delta) {
  __shared__ float ks[kAttnMaxD], vs[kAttnMaxD];
  __shared__ float ps[kAttnThreads], ds[kAttnThreads];
  __shared__ int rows[kAttnThreads];  // row·H + h of each pair, −1 = contributes nothing
  const int span = a.P + a.T;
  const int b = blockIdx.x / span, j = blockIdx.x % span, g = blockIdx.y, D = a.D;
  const int HG = a.H / a.G, pairs = a.T * HG;
  if (!a.key_valid[int64_t(b) * a.S + j]) return;
  const float scale = 1.0f / sqrtf(float(D));
  const int64_t kvo = ((int64_t(b) * a.S + j) * a.G + g) * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    ks[i] = a.k[kvo + i];
    vs[i] = a.v[kvo + i];
  }
  __syncthreads();
  // Queries before slot j do not see it: start at t = j − P.
  const int t0 = max(0, j - a.P);
  float dk = 0.0f, dv = 0.0f;  // for i = threadIdx.x
  for (int e0 = t0 * HG; e0 < pairs; e0 += kAttnThreads) {
    const int e = e0 + int(threadIdx.x);
    int r = -1;
    float p = 0.0f, d = 0.0f;
    if (e < pairs) {
      const int t = e / HG, h = g * HG + e % HG, row = b * a.T + t;
      const float lse = a.lse[int64_t(row) * a.H + h];
      if (lse != -INFINITY && visible(a, b, a.P + t, j)) {
        const float* qv = a.q + int64_t(row) * a.q_stride + int64_t(h) * D;
        const float* go = a.dout + (int64_t(row) * a.H + h) * D;
        p = expf(dot(qv, ks, D) * scale - lse);
        d = p * (dot(go, vs, D) - delta[int64_t(row) * a.H + h]) * scale;
        r = row * a.H + h;
      }
    }
    ps[threadIdx.x] = p;
    ds[threadIdx.x] = d;
    rows[threadIdx.x] = r;
    __syncthreads();
    const int n = min(kAttnThreads, pairs - e0);
    if (int(threadIdx.x) < D)
      for (int ee = 0; ee < n; ++ee) {
        const int rh = rows[ee];
        if (rh < 0) continue;
        const int row = rh / a.H, h = rh % a.H;
        dk = fmaf(ds[ee], a.q[int64_t(row) * a.q_stride + int64_t(h) * D + threadIdx.x], dk);
        dv = fmaf(ps[ee], a.dout[int64_t(rh) * D + threadIdx.x], dv);
      }
    __syncthreads();
  }
  if (int(threadIdx.x) < D) {
    a.dk[kvo + threadIdx.x] += dk;
    a.dv[kvo + threadIdx.x] += dv;
  }
}

// ---- optimizer: torch.optim.AdamW's single-tensor update with the scalars computed on the host, each
// operation rounded as the host loop's (no contraction into FMAs), so both give the same bits.
__global__ void adamw_kernel(float* value, const float* grad, float* m, float* v, int64_t n, AdamWStep s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = grad[i];
  float p = __fmul_rn(value[i], s.decay);
  const float mi = __fadd_rn(m[i], __fmul_rn(s.w1, __fsub_rn(g, m[i])));
  const float vi = __fadd_rn(__fmul_rn(v[i], s.b2), __fmul_rn(__fmul_rn(s.w2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
  p = __fsub_rn(p, __fmul_rn(s.step_size, __fdiv_rn(mi, denom)));
  m[i] = mi;
  v[i] = vi;
  value[i] = p;
}

// ---- adapters: dropout masks (ops/ops.h's splitmix64 and dropout_kept, the same bits), VeRA's scalings.
__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__global__ void dropout_kernel(const float* x, int64_t n, uint64_t key, float p, float keep, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool kept = double(splitmix64(key + uint64_t(i)) >> 11) * 0x1.0p-53 >= double(p);
  out[i] = kept ? __fmul_rn(x[i], keep) : 0.0f;
}

__global__ void mul_cols_kernel(float* x, int64_t N, int64_t M, const float* v) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N * M) x[i] = __fmul_rn(x[i], v[i % M]);
}

// One thread per column, rows in order (the host's summation order).
__global__ void col_dot_kernel(const float* a, const float* b, int64_t N, int64_t M, float* out) {
  const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m >= M) return;
  float s = out[m];
  for (int64_t n = 0; n < N; ++n) s = __fadd_rn(s, __fmul_rn(a[n * M + m], b[n * M + m]));
  out[m] = s;
}

// Σ x² of blocks of 256 in double, one partial a block (summed in order by sum_squares_final_kernel).
__global__ void sum_squares_kernel(const float* x, int64_t n, double* part) {
  __shared__ double red[32];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * x[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void accumulate_kernel(const double* part, int parts, double* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0;
  for (int i = 0; i < parts; ++i) s += part[i];
  *out += s;
}

__global__ void scale_kernel(float* x, int64_t n, double c) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = float(double(x[i]) * c);
}

}  // namespace

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx, cudaStream_t stream) {
  if (N * C == 0) return;
  rmsnorm_backward_kernel<<<unsigned(N), 256, 0, stream>>>(dy, x, w, inv_rms, C, dx);
  GLMLAB_CUDA_LAUNCHED("rmsnorm_backward_kernel");
}

void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du, cudaStream_t stream) {
  if (N * F == 0) return;
  swiglu_backward_kernel<<<blocks_for(N * F, 256), 256, 0, stream>>>(dout, u, N, F, du);
  GLMLAB_CUDA_LAUNCHED("swiglu_backward_kernel");
}

void cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale, double* loss, int* bad_row,
                   cudaStream_t stream) {
  if (N == 0) return;
  cross_entropy_kernel<<<unsigned(N), 256, 0, stream>>>(z, labels, V, scale, loss, bad_row);
  GLMLAB_CUDA_LAUNCHED("cross_entropy_kernel");
}

void matmul_backward_input_simple(const float* dy, int64_t N, const WView& W, float* dx, cudaStream_t stream) {
  if (N == 0 || W.rows == 0 || W.cols == 0) return;
  const dim3 grid(blocks_for(W.cols, kTile), blocks_for(N, kTile)), block(kTile, kTile);
  backward_input_simple_kernel<<<grid, block, 0, stream>>>(dy, N, W, dx);
  GLMLAB_CUDA_LAUNCHED("backward_input_simple_kernel");
}

void matmul_backward_weight_simple(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW,
                                   cudaStream_t stream) {
  if (N == 0 || M == 0 || K == 0) return;
  const dim3 grid(blocks_for(K, kTile), blocks_for(M, kTile)), block(kTile, kTile);
  backward_weight_simple_kernel<<<grid, block, 0, stream>>>(dy, x, N, M, K, dW);
  GLMLAB_CUDA_LAUNCHED("backward_weight_simple_kernel");
}

bool attention_backward_supported(const AttnBwdArgs& a) { return a.D > 0 && a.D <= kAttnMaxD; }

void attention_backward(const AttnBwdArgs& a, float* delta, cudaStream_t stream) {
  if (a.B == 0 || a.T == 0) return;
  if (!attention_backward_supported(a)) kernel_fail("cuda attention backward: head dim above 128");
  attention_dq_kernel<<<dim3(unsigned(a.B * a.T), unsigned(a.H)), kAttnThreads, 0, stream>>>(a, delta);
  GLMLAB_CUDA_LAUNCHED("attention_dq_kernel");
  attention_dkv_kernel<<<dim3(unsigned(a.B * (a.P + a.T)), unsigned(a.G)), kAttnThreads, 0, stream>>>(a, delta);
  GLMLAB_CUDA_LAUNCHED("attention_dkv_kernel");
}

void adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(value, grad, m, v, n, s);
  GLMLAB_CUDA_LAUNCHED("adamw_kernel");
}

void sum_squares(const float* x, int64_t n, double* part, double* out, cudaStream_t stream) {
  if (n == 0) return;
  sum_squares_kernel<<<kSumSquaresBlocks, 256, 0, stream>>>(x, n, part);
  GLMLAB_CUDA_LAUNCHED("sum_squares_kernel");
  accumulate_kernel<<<1, 32, 0, stream>>>(part, kSumSquaresBlocks, out);
  GLMLAB_CUDA_LAUNCHED("accumulate_kernel");
}

void dropout(const float* x, int64_t n, uint64_t key, float p, float* out, cudaStream_t stream) {
  if (n == 0) return;
  dropout_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, n, key, p, 1.0f / (1.0f - p), out);
  GLMLAB_CUDA_LAUNCHED("dropout_kernel");
}

void mul_cols(float* x, int64_t N, int64_t M, const float* v, cudaStream_t stream) {
  if (N * M == 0) return;
  mul_cols_kernel<<<blocks_for(N * M, 256), 256, 0, stream>>>(x, N, M, v);
  GLMLAB_CUDA_LAUNCHED("mul_cols_kernel");
}

void col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out, cudaStream_t stream) {
  if (M == 0) return;
  col_dot_kernel<<<blocks_for(M, 128), 128, 0, stream>>>(a, b, N, M, out);
  GLMLAB_CUDA_LAUNCHED("col_dot_kernel");
}

void scale(float* x, int64_t n, double c, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, n, c);
  GLMLAB_CUDA_LAUNCHED("scale_kernel");
}

}  // namespace glmlab::cuda::k
