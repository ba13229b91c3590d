// Attention of the CUDA back end: ops.h's attention() over one layer's fp32 KV cache [B, S, G, D].
//
// attention_flash: the fused kernel (online softmax, never a [T, S] score matrix). The query rows of one
//   (sequence b, KV group g) are the T × H/G pairs (token t, head of the group), t-major; a block takes 16
//   of them, so the heads of a group (all 16 of ChatGLM3-6B's at decode) share every K/V tile it loads.
//   Keys go through shared memory 32 at a time; a warp owns 4 rows, lane j scores key j, then the
//   row's running max m, sum l and unnormalized output (D/32 dims a lane) are rescaled and updated.
//   Masks: key j is seen by the query at slot i = P + t when j ≤ i, key_valid[b, j] is 1 and (segment
//   given) segment[b, j] == segment[b, i]. A row with no visible key gets zeros and lse −inf.
//   Split-K (flash-decoding): grid.z = splits, each split a range of keys writing its (m, l, output)
//   to scratch; combine_kernel merges them. Decode at batch 1 has only B·G blocks without it.
// attention_naive: the twin for the tests, one block per (row, head): scores of every key in shared
//   memory, then max, sum and the weighted values in three passes (double dot products).
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cuda/common.cuh"

namespace glmlab::cuda::k {
namespace {

constexpr int kRows = 16;         // query rows a block
constexpr int kTile = 32;         // keys a tile (= lanes of a warp)
constexpr int kWarps = 4;         // 128 threads
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr int kDimsPerLane = kAttnMaxD / 32;
constexpr int kKeyLd = kAttnMaxD + 4;  // padded rows of the K tile: lanes reading float4s hit distinct banks
constexpr int kMinKeysPerSplit = 2 * kTile;

__device__ __forceinline__ bool visible(const AttnArgs& a, int b, int slot_i, int j) {
  const int64_t row = int64_t(b) * a.S;
  return j <= slot_i && a.key_valid[row + j] && (!a.segment || a.segment[row + j] == a.segment[row + slot_i]);
}

// part (splits > 1): [splits][B·T·H][D + 2] = m, l, unnormalized output.
__global__ void __launch_bounds__(kWarps * 32) flash_kernel(AttnArgs a, int keys_per_split, float* part) {
  __shared__ __align__(16) float qs[kRows][kAttnMaxD];
  __shared__ __align__(16) float ks[kTile][kKeyLd];
  __shared__ __align__(16) float vs[kTile][kAttnMaxD];
  __shared__ uint8_t kvalid[kTile];
  __shared__ int32_t kseg[kTile];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int HG = a.H / a.G, D = a.D, rows_bg = a.T * HG;
  const int b = blockIdx.y / a.G, g = blockIdx.y % a.G;
  const int r0 = blockIdx.x * kRows;
  const float scale = 1.0f / sqrtf(float(D));

  for (int idx = tid; idx < kRows * D; idx += blockDim.x) {
    const int r = idx / D, i = idx % D, rr = r0 + r;
    float v = 0.0f;
    if (rr < rows_bg) {
      const int t = rr / HG, h = g * HG + rr % HG;
      v = a.q[(int64_t(b) * a.T + t) * a.q_stride + int64_t(h) * D + i];
    }
    qs[r][i] = v;
  }

  // This warp's rows: their slot (causal limit) and segment.
  bool active[kRowsPerWarp];
  int slot[kRowsPerWarp], seg[kRowsPerWarp];
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int w = 0; w < kRowsPerWarp; ++w) {
    const int rr = r0 + warp * kRowsPerWarp + w;
    active[w] = rr < rows_bg;
    slot[w] = a.P + (active[w] ? rr / HG : 0);
    seg[w] = (a.segment && active[w]) ? a.segment[int64_t(b) * a.S + slot[w]] : 0;
    m[w] = -INFINITY;
    l[w] = 0.0f;
#pragma unroll
    for (int d = 0; d < kDimsPerLane; ++d) acc[w][d] = 0.0f;
  }

  const int t_last = (min(rows_bg, r0 + kRows) - 1) / HG;
  const int k_begin = blockIdx.z * keys_per_split;
  const int k_end = min(a.P + t_last + 1, k_begin + keys_per_split);
  const int D4 = D / 4;
  for (int kt = k_begin; kt < k_end; kt += kTile) {
    __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
    for (int idx = tid; idx < kTile * D4; idx += blockDim.x) {
      const int j = idx / D4, i4 = idx % D4, key = kt + j;
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (key < k_end) {
        const int64_t off = ((int64_t(b) * a.S + key) * a.G + g) * D;
        kv = __ldg(reinterpret_cast<const float4*>(a.k + off) + i4);
        vv = __ldg(reinterpret_cast<const float4*>(a.v + off) + i4);
      }
      *reinterpret_cast<float4*>(&ks[j][4 * i4]) = kv;
      *reinterpret_cast<float4*>(&vs[j][4 * i4]) = vv;
    }
    if (tid < kTile) {
      const int key = kt + tid;
      kvalid[tid] = key < k_end ? a.key_valid[int64_t(b) * a.S + key] : 0;
      kseg[tid] = (a.segment && key < k_end) ? a.segment[int64_t(b) * a.S + key] : 0;
    }
    __syncthreads();

    const int key = kt + lane;
#pragma unroll
    for (int w = 0; w < kRowsPerWarp; ++w) {
      if (!active[w]) continue;  // warp-uniform
      const int r = warp * kRowsPerWarp + w;
      const bool ok = key < k_end && key <= slot[w] && kvalid[lane] && (!a.segment || kseg[lane] == seg[w]);
      float s = -INFINITY;
      if (ok) {
        float dot = 0.0f;
        for (int i = 0; i < D; i += 4) {
          const float4 kk = *reinterpret_cast<const float4*>(&ks[lane][i]);
          const float4 qq = *reinterpret_cast<const float4*>(&qs[r][i]);
          dot = fmaf(qq.x, kk.x, dot);
          dot = fmaf(qq.y, kk.y, dot);
          dot = fmaf(qq.z, kk.z, dot);
          dot = fmaf(qq.w, kk.w, dot);
        }
        s = dot * scale;
      }
      const float m_new = fmaxf(m[w], warp_max(s));
      if (m_new == -INFINITY) continue;  // nothing visible to this row yet (warp-uniform)
      const float p = ok ? expf(s - m_new) : 0.0f;
      const float alpha = expf(m[w] - m_new);  // 0 while m was −inf
      l[w] = l[w] * alpha + warp_sum(p);
      m[w] = m_new;
#pragma unroll
      for (int d = 0; d < kDimsPerLane; ++d) acc[w][d] *= alpha;
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        if (pj == 0.0f) continue;  // masked key (warp-uniform): its V row is never read
#pragma unroll
        for (int d = 0; d < kDimsPerLane; ++d) {
          const int dim = lane + 32 * d;
          if (dim < D) acc[w][d] = fmaf(pj, vs[j][dim], acc[w][d]);
        }
      }
    }
  }

  // Results: the output directly (one split), or this split's partial state.
  const int64_t BTH = int64_t(a.B) * a.T * a.H;
#pragma unroll
  for (int w = 0; w < kRowsPerWarp; ++w) {
    if (!active[w]) continue;
    const int rr = r0 + warp * kRowsPerWarp + w;
    const int t = rr / HG, h = g * HG + rr % HG;
    const int64_t row = (int64_t(b) * a.T + t) * a.H + h;  // out row (b·T + t), head h = row · D
    if (gridDim.z == 1) {
      const float inv = l[w] > 0.0f ? 1.0f / l[w] : 0.0f;
#pragma unroll
      for (int d = 0; d < kDimsPerLane; ++d) {
        const int dim = lane + 32 * d;
        if (dim < D) a.out[row * D + dim] = acc[w][d] * inv;
      }
      if (a.lse && lane == 0) a.lse[row] = l[w] > 0.0f ? m[w] + logf(l[w]) : -INFINITY;
    } else {
      float* pr = part + (int64_t(blockIdx.z) * BTH + row) * (D + 2);
      if (lane == 0) pr[0] = m[w], pr[1] = l[w];
#pragma unroll
      for (int d = 0; d < kDimsPerLane; ++d) {
        const int dim = lane + 32 * d;
        if (dim < D) pr[2 + dim] = acc[w][d];
      }
    }
  }
}

// One warp per (row, head): merges the splits' partial states.
__global__ void combine_kernel(AttnArgs a, int splits, const float* part) {
  const int64_t BTH = int64_t(a.B) * a.T * a.H;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31, D = a.D;
  if (row >= BTH) return;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part[(int64_t(s) * BTH + row) * (D + 2)]);
  float* o = a.out + row * D;
  if (mx == -INFINITY) {
    for (int d = lane; d < D; d += 32) o[d] = 0.0f;
    if (a.lse && lane == 0) a.lse[row] = -INFINITY;
    return;
  }
  float L = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float* pr = part + (int64_t(s) * BTH + row) * (D + 2);
    if (pr[0] != -INFINITY) L += pr[1] * expf(pr[0] - mx);
  }
  for (int d = lane; d < D; d += 32) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float* pr = part + (int64_t(s) * BTH + row) * (D + 2);
      if (pr[0] != -INFINITY) acc += pr[2 + d] * expf(pr[0] - mx);
    }
    o[d] = acc / L;
  }
  if (a.lse && lane == 0) a.lse[row] = mx + logf(L);
}

__device__ float block_reduce(float v, bool is_max, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = is_max ? warp_max(v) : warp_sum(v);
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float u = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    u = is_max ? warp_max(u) : warp_sum(u);
    if (lane == 0) red[0] = u;
  }
  __syncthreads();
  return red[0];
}

// grid (B·T, H), 128 threads, dynamic shared memory: the P + T scores of the row.
__global__ void naive_kernel(AttnArgs a) {
  extern __shared__ float sc[];
  __shared__ float red[32];
  const int row = blockIdx.x, h = blockIdx.y, b = row / a.T, t = row % a.T, D = a.D;
  const int g = h / (a.H / a.G), last = a.P + t;
  const float scale = 1.0f / sqrtf(float(D));
  const float* qv = a.q + int64_t(row) * a.q_stride + int64_t(h) * D;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j <= last; j += blockDim.x) {
    float s = -INFINITY;
    if (visible(a, b, last, j)) {
      const float* kj = a.k + ((int64_t(b) * a.S + j) * a.G + g) * D;
      double d = 0;
      for (int i = 0; i < D; ++i) d += double(qv[i]) * double(kj[i]);
      s = float(d) * scale;
    }
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_reduce(mx, true, red);
  float* o = a.out + (int64_t(row) * a.H + h) * D;
  if (mx == -INFINITY) {
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = 0.0f;
    if (a.lse && threadIdx.x == 0) a.lse[int64_t(row) * a.H + h] = -INFINITY;
    return;
  }
  float sum = 0.0f;
  for (int j = threadIdx.x; j <= last; j += blockDim.x) {
    const float p = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - mx);
    sc[j] = p;
    sum += p;
  }
  sum = block_reduce(sum, false, red);  // its barriers also publish sc
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    double acc = 0;
    for (int j = 0; j <= last; ++j)
      if (sc[j] != 0.0f) acc += double(sc[j]) * double(a.v[((int64_t(b) * a.S + j) * a.G + g) * D + d]);
    o[d] = float(acc / double(sum));
  }
  if (a.lse && threadIdx.x == 0) a.lse[int64_t(row) * a.H + h] = mx + logf(sum);
}

constexpr size_t kNaiveMaxShared = 48 * 1024;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

std::string str(int64_t v) { return std::to_string(v); }

void check_shape(const AttnArgs& a, const char* kernel) {
  if (a.B < 1 || a.T < 1 || a.H < 1 || a.G < 1 || a.D < 1 || a.H % a.G != 0 || a.P < 0 || a.P + a.T > a.S)
    kernel_fail(std::string("cuda ") + kernel + ": bad shape B " + str(a.B) + " T " + str(a.T) + " P " + str(a.P) +
                " H " + str(a.H) + " G " + str(a.G) + " D " + str(a.D) + " S " + str(a.S) +
                " (need H a multiple of G and P + T ≤ S)");
}

int blocks_of(const AttnArgs& a) { return ((a.T * (a.H / a.G) + kRows - 1) / kRows) * a.B * a.G; }

}  // namespace

bool flash_supported(const AttnArgs& a) {
  return a.D >= 4 && a.D <= kAttnMaxD && a.D % 4 == 0 && a.q_stride % 4 == 0 && a.G > 0 && a.H % a.G == 0 &&
         aligned16(a.k) && aligned16(a.v);
}

int attention_splits(const AttnArgs& a, int sm_count) {
  const int blocks = blocks_of(a);
  const int keys = a.P + a.T;
  if (blocks >= sm_count || keys <= kMinKeysPerSplit) return 1;
  const int want = (2 * sm_count + blocks - 1) / blocks;         // about two blocks per SM
  const int most = (keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;  // at least 64 keys a split
  return std::max(1, std::min({want, most, 64}));
}

size_t attention_scratch_floats(const AttnArgs& a, int splits) {
  return splits <= 1 ? 0 : size_t(splits) * size_t(a.B) * size_t(a.T) * size_t(a.H) * size_t(a.D + 2);
}

void attention_flash(const AttnArgs& a, int splits, float* scratch, cudaStream_t stream) {
  check_shape(a, "attention_flash");
  if (!flash_supported(a))
    kernel_fail("cuda attention_flash: needs D ≤ " + str(kAttnMaxD) +
                " and D, q_stride multiples of 4 with 16-byte aligned K/V (D " + str(a.D) + ", q_stride " +
                str(a.q_stride) + ")");
  if (splits < 1) kernel_fail("cuda attention_flash: splits " + str(splits) + " (need ≥ 1)");
  if (splits > 1 && !scratch) kernel_fail("cuda attention_flash: " + str(splits) + " splits need scratch");
  const int keys = a.P + a.T;
  const int per = ((keys + splits - 1) / splits + kTile - 1) / kTile * kTile;
  const dim3 grid(unsigned((a.T * (a.H / a.G) + kRows - 1) / kRows), unsigned(a.B * a.G), unsigned(splits));
  flash_kernel<<<grid, kWarps * 32, 0, stream>>>(a, per, scratch);
  GLMLAB_CUDA_LAUNCHED("flash_kernel");
  if (splits > 1) {
    const int64_t rows = int64_t(a.B) * a.T * a.H;
    combine_kernel<<<blocks_for(rows, 4), 128, 0, stream>>>(a, splits, scratch);
    GLMLAB_CUDA_LAUNCHED("combine_kernel");
  }
}

void attention_naive(const AttnArgs& a, cudaStream_t stream) {
  check_shape(a, "attention_naive");
  const size_t shared = size_t(a.P + a.T) * sizeof(float);
  if (shared > kNaiveMaxShared)
    kernel_fail("cuda attention_naive: " + str(a.P + a.T) + " keys do not fit its shared memory (at most " +
                str(int64_t(kNaiveMaxShared / sizeof(float))) + "); use the flash kernel");
  naive_kernel<<<dim3(unsigned(a.B * a.T), unsigned(a.H)), 128, shared, stream>>>(a);
  GLMLAB_CUDA_LAUNCHED("naive_kernel");
}

}  // namespace glmlab::cuda::k
