// The fast CPU backward ops. Matmul input gradients go through sgemm (16-bit and int8/int4 weights
// widened / dequantized to fp32 a tile of rows at a time, as the forward does); attention's backward runs in two
// passes that each own their outputs, so threads never share an accumulator: one over query rows
// (dq), one over key slots (dk, dv), both recomputing the probabilities from the forward's lse.
#include "kernels/cpu/cpu_backward.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/dpbf16_gemm.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/simd_softmax.h"
#include "util/error.h"

namespace glmlab::cpu {

namespace {
// Row r of a Q8/Q4 matrix dequantized (q · scale, exactly what Matrix::at gives), layouts of weights.h:
// Q8 int8 [rows, cols]; Q4 two signed nibbles a byte, even element high; fp16 scales [rows, groups].
void dequantize_row(const Matrix& W, int64_t r, float* dst) {
  const uint16_t* sc = W.scales + r * W.groups();
  const int64_t gs = W.group_size;
  if (W.dtype == DType::Q8) {
    const int8_t* q = static_cast<const int8_t*>(W.data) + r * W.cols;
    for (int64_t c0 = 0, g = 0; c0 < W.cols; c0 += gs, ++g) {
      const float s = f16_to_f32(sc[g]);
      for (int64_t c = c0; c < std::min(W.cols, c0 + gs); ++c) dst[c] = float(q[c]) * s;
    }
    return;
  }
  const uint8_t* q = static_cast<const uint8_t*>(W.data) + r * W.row_bytes();
  for (int64_t c0 = 0, g = 0; c0 < W.cols; c0 += gs, ++g) {
    const float s = f16_to_f32(sc[g]);
    for (int64_t c = c0; c < std::min(W.cols, c0 + gs); ++c) {
      const int8_t b = int8_t(q[c / 2]);
      const int v = (c % 2 == 0) ? (b >> 4) : (int8_t(uint8_t(b) << 4) >> 4);
      dst[c] = float(v) * s;
    }
  }
}
}  // namespace

void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx, std::vector<float>& scratch,
                           bool bf16_activations) {
  // dx[N, K] += dy[N, M] · W[M, K]
  const int64_t M = W.rows, K = W.cols;
  if (N == 0) return;
  const bool use_amx = amx::fits(M, K) && amx::available();
  const bool use_dpbf16 = !use_amx && dpbf16::fits(M, K) && dpbf16::available();
  if (bf16_activations && W.dtype != DType::F32 && N >= 8 && (use_amx || use_dpbf16)) {
    // AMX tiles, else AVX512-BF16: bf16 rows of W straight from a bf16 matrix, else widened /
    // dequantized and rounded per chunk.
    const amx::RowSource rows = [&](int64_t m0, int64_t count, uint16_t* out) -> const uint16_t* {
      if (W.dtype == DType::BF16) return static_cast<const uint16_t*>(W.data) + m0 * K;
#pragma omp parallel
      {
        std::vector<float> f(static_cast<size_t>(K));  // one widened row per thread
#pragma omp for schedule(static)
        for (int64_t r = 0; r < count; ++r) {
          if (W.quantized())
            dequantize_row(W, m0 + r, f.data());
          else
            simd::to_f32(static_cast<const uint8_t*>(W.data) + size_t((m0 + r) * K) * dtype_size(W.dtype), W.dtype,
                         f.data(), size_t(K));
          for (int64_t i = 0; i < K; ++i) out[r * K + i] = f32_to_bf16(f[size_t(i)]);
        }
      }
      return out;
    };
    if (use_amx)
      amx::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
    else
      dpbf16::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
    return;
  }
  if (W.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(K), int(M), 1.0f, dy, int(M),
                static_cast<const float*>(W.data), int(K), 1.0f, dx, int(K));
    return;
  }
  // Widen a tile of weight rows to fp32, then dx += dy[:, tile] · tile.
  const bool simd_widen = W.dtype == DType::F16 || W.dtype == DType::BF16;
  const int64_t tile = std::max<int64_t>(64, std::min<int64_t>(M, (8 << 20) / (4 * K)));
  scratch.resize(size_t(tile * K));
  for (int64_t r0 = 0; r0 < M; r0 += tile) {
    const int64_t rows = std::min(tile, M - r0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = scratch.data() + r * K;
      if (simd_widen) {
        simd::to_f32(static_cast<const uint8_t*>(W.data) + size_t((r0 + r) * K) * dtype_size(W.dtype), W.dtype, dst,
                     size_t(K));
      } else if (W.quantized()) {
        dequantize_row(W, r0 + r, dst);
      } else {
        for (int64_t i = 0; i < K; ++i) dst[i] = W.at(r0 + r, i);
      }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(K), int(rows), 1.0f, dy + r0, int(M),
                scratch.data(), int(K), 1.0f, dx, int(K));
  }
}

void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) {
  // dW[M, K] += dy[N, M]ᵀ · x[N, K]
  if (N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(M), int(K), int(N), 1.0f, dy, int(M), x, int(K), 1.0f, dW,
              int(K));
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                      float* dx) {
  // dx_c += r · w_c · dy_c − x_c · r³ / C · Σ_j dy_j w_j x_j
#pragma omp parallel for schedule(static) if (N > 1)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* g = dy + n * C;
    float* o = dx + n * C;
    const float r = inv_rms[n];
    float dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += g[c] * w[c] * xr[c];
    const float k = r * r * r * dot / float(C);
    for (int64_t c = 0; c < C; ++c) o[c] += r * w[c] * g[c] - xr[c] * k;
  }
}

void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) {
  // Rotation by −angle; angles computed exactly as CpuOps::rope computes them.
  const int R = D / 2;
  std::vector<float> theta(size_t(R / 2));
  for (int i = 0; i < R / 2; ++i) theta[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(R));
#pragma omp parallel for schedule(static) if (N > 1)
  for (int64_t n = 0; n < N; ++n) {
    float cs[256], sn[256];
    for (int i = 0; i < R / 2; ++i) {
      float ang = float(pos[n]) * theta[size_t(i)];
      cs[i] = std::cos(ang);
      sn[i] = std::sin(ang);
    }
    for (int h = 0; h < nheads; ++h) {
      float* v = dx + n * stride + int64_t(h) * D;
      for (int i = 0; i < R / 2; ++i) {
        float g0 = v[2 * i], g1 = v[2 * i + 1];
        v[2 * i] = g0 * cs[i] + g1 * sn[i];
        v[2 * i + 1] = g1 * cs[i] - g0 * sn[i];
      }
    }
  }
}

void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) {
#pragma omp parallel for schedule(static) if (N * F > 65536)
  for (int64_t n = 0; n < N; ++n)
    simd::swiglu_backward_row(dout + n * F, u + n * 2 * F, u + n * 2 * F + F, du + n * 2 * F, du + n * 2 * F + F,
                              size_t(F));
}

namespace {
inline bool visible(const KVView& kv, int b, int i, int j) {
  const int64_t row = int64_t(b) * kv.S;
  return kv.key_valid[row + j] && (!kv.segment || kv.segment[row + j] == kv.segment[row + i]);
}
}  // namespace

void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                        int D, const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                        float* dk, float* dv) {
  // p_tj = exp(scale·q_t·k_j − lse_t), Δ_t = dout_t·out_t, ds_tj = p_tj (dout_t·v_j − Δ_t):
  // dq_t += scale Σ_j ds_tj k_j;  dk_j += scale Σ_t ds_tj q_t;  dv_j += Σ_t p_tj dout_t.
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t rows = int64_t(B) * T * H, per_group = H / G;
  std::vector<float> delta(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r)  // r = (b·T + t)·H + h
    delta[size_t(r)] = simd::dot(dout + r * D, out + r * D, size_t(D));

  // Pass 1: dq, one job per (b, t, h).
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t job = 0; job < rows; ++job) {
    const int h = int(job % H), t = int((job / H) % T), b = int(job / (int64_t(H) * T));
    const float l = lse[job];
    if (l == -std::numeric_limits<float>::infinity()) continue;
    const int g = int(h / per_group), last = P + t;
    const float* qv = q + int64_t(b * T + t) * q_stride + int64_t(h) * D;
    const float* go = dout + job * D;
    float* dqv = dq + int64_t(b * T + t) * dq_stride + int64_t(h) * D;
    for (int j = 0; j <= last; ++j) {
      if (!visible(kv, b, last, j)) continue;
      const int64_t kvo = ((int64_t(b) * kv.S + j) * G + g) * D;
      const float p = std::exp(simd::dot(qv, kv.k + kvo, size_t(D)) * scale - l);
      const float ds = p * (simd::dot(go, kv.v + kvo, size_t(D)) - delta[size_t(job)]) * scale;
      simd::axpy(ds, kv.k + kvo, dqv, size_t(D));
    }
  }

  // Pass 2: dk and dv, one job per (b, key slot j, group g), over the queries that see slot j.
  const int S = P + T;
  const int64_t kjobs = int64_t(B) * S * G;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t job = 0; job < kjobs; ++job) {
    const int g = int(job % G), j = int((job / G) % S), b = int(job / (int64_t(G) * S));
    if (!kv.key_valid[int64_t(b) * kv.S + j]) continue;
    const int64_t kvo = ((int64_t(b) * kv.S + j) * G + g) * D;
    float* dkj = dk + kvo;
    float* dvj = dv + kvo;
    for (int t = std::max(0, j - P); t < T; ++t) {
      if (!visible(kv, b, P + t, j)) continue;
      for (int64_t h = g * per_group; h < (g + 1) * per_group; ++h) {
        const int64_t r = (int64_t(b) * T + t) * H + h;
        const float l = lse[r];
        if (l == -std::numeric_limits<float>::infinity()) continue;
        const float* qv = q + int64_t(b * T + t) * q_stride + h * D;
        const float* go = dout + r * D;
        const float p = std::exp(simd::dot(qv, kv.k + kvo, size_t(D)) * scale - l);
        const float ds = p * (simd::dot(go, kv.v + kvo, size_t(D)) - delta[size_t(r)]) * scale;
        simd::axpy(ds, qv, dkj, size_t(D));
        simd::axpy(p, go, dvj, size_t(D));
      }
    }
  }
}

double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) {
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] != -100 && (labels[n] < 0 || labels[n] >= V))
      fail("cross-entropy: label {} of row {} is outside the vocabulary [0, {})", labels[n], n, V);
  std::vector<double> row_loss(static_cast<size_t>(N), 0.0);  // summed in order: deterministic
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t n = 0; n < N; ++n) {
    float* row = z + n * V;
    const int32_t y = labels[n];
    if (y == -100) {
      std::fill(row, row + V, 0.0f);
      continue;
    }
    const float mx = simd::max_of(row, size_t(V));
    const double zy = double(row[y]) - mx;
    const double sum = simd::exp_shift_sum(row, size_t(V), mx);  // row now holds exp(z − mx)
    row_loss[size_t(n)] = std::log(sum) - zy;
    simd::scale(float(scale / sum), row, size_t(V));
    row[y] -= scale;
  }
  double loss = 0;
  for (double l : row_loss) loss += l;
  return loss;
}

}  // namespace glmlab::cpu
