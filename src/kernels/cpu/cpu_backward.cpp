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

#include "kernels/cpu/bf16_gemm.h"
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
  if (W.layout != MatrixLayout::RowMajor)  // checked before the threads start: an exception must not leave them
    fail("backward: a [{}, {}] {} matrix repacked for inference (training needs the row-major layout)", W.rows, W.cols,
         dtype_name(W.dtype));
  // dx[N, K] += dy[N, M] · W[M, K]
  const int64_t M = W.rows, K = W.cols;
  if (N == 0) return;
  if (bf16_activations && amx::rowmajor_blocked(W, N, true)) {
    amx::gemm_backward_input_rowmajor(W, dy, N, dx);  // W read in place, cache-blocked (amx_gemm.h)
    return;
  }
  if (bf16_activations && W.dtype != DType::F32 && N >= 8 && bf16gemm::available(M, K)) {
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
    bf16gemm::backward_input(M, K, rows, dy, N, dx);
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

int attention_block_scores(const float* qb, int64_t q_stride, const KVView& kv, const float* kb, int64_t ldk, int b,
                           int P, int H, int G, int D, int g, int t0, int t1, float scale, float* qp,
                           std::vector<float>& sc) {
  const int HG = H / G, rows = (t1 - t0) * HG, nk = P + t1;
  for (int r = 0; r < rows; ++r)
    std::copy_n(qb + int64_t(t0 + r / HG) * q_stride + int64_t(g * HG + r % HG) * D, D,
                qp + int64_t(r) * D);
  sc.resize(size_t(rows) * size_t(nk));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, D, scale, qp, D, kb, int(ldk), 0.0f, sc.data(), nk);
  for (int r = 0; r < rows; ++r) {
    const int last = P + t0 + r / HG;
    float* row = sc.data() + int64_t(r) * nk;
    for (int j = 0; j < nk; ++j)
      if (j > last || !visible(kv, b, last, j)) row[j] = -std::numeric_limits<float>::infinity();
  }
  return nk;
}

void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                        int D, const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                        float* dk, float* dv) {
  // P = exp(scale·Q·Kᵀ − lse) (masked: 0), Δ_r = dout_r·out_r, dS = P ⊙ (dout·Vᵀ − Δ)·scale:
  // dQ += dS·K;  dK += dSᵀ·Q;  dV += Pᵀ·dout — as sgemm calls on blocks of kTB query tokens × the
  // group's heads. A job owns one (sequence, KV group): its keys' dK and dV and its heads' dQ, so jobs
  // never share an output; the blocks of a job run in order. With fewer jobs than threads the jobs run
  // one after another and OpenBLAS threads each product instead.
  if (kv.bf16()) fail("attention backward: the KV cache must be fp32 (a bf16 cache is for inference)");
  constexpr int kTB = kAttnBlockTokens;
  const float scale = 1.0f / std::sqrt(float(D));
  const float ninf = -std::numeric_limits<float>::infinity();
  const int HG = H / G;
  const int64_t jobs = int64_t(B) * G, ldkv = int64_t(G) * D;
#pragma omp parallel if (jobs >= omp_get_max_threads())
  {
    const size_t blk_rows = size_t(kTB * HG);
    std::vector<float> qp(blk_rows * D), gp(blk_rows * D), dqp(blk_rows * D), delta(blk_rows), pm, ds;
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; ++job) {
      const int g = int(job % G), b = int(job / G);
      const float* kb = kv.k + (int64_t(b) * kv.S * G + g) * D;
      const float* vb = kv.v + (int64_t(b) * kv.S * G + g) * D;
      float* dkb = dk + (int64_t(b) * kv.S * G + g) * D;
      float* dvb = dv + (int64_t(b) * kv.S * G + g) * D;
      for (int t0 = 0; t0 < T; t0 += kTB) {
        const int t1 = std::min(T, t0 + kTB), rows = (t1 - t0) * HG;
        const int nk =
            attention_block_scores(q + int64_t(b) * T * q_stride, q_stride, kv, kb, ldkv, b, P, H, G, D, g, t0, t1, scale,
                                   qp.data(), pm);
        ds.resize(pm.size());
        for (int r = 0; r < rows; ++r) {
          const int64_t rr = (int64_t(b) * T + t0 + r / HG) * H + g * HG + r % HG;
          std::copy_n(dout + rr * D, D, gp.data() + int64_t(r) * D);
          delta[size_t(r)] = simd::dot(dout + rr * D, out + rr * D, size_t(D));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, D, 1.0f, gp.data(), D, vb, int(ldkv), 0.0f,
                    ds.data(), nk);  // dout·Vᵀ
        for (int r = 0; r < rows; ++r) {
          const float l = lse[(int64_t(b) * T + t0 + r / HG) * H + g * HG + r % HG];
          float* pr = pm.data() + int64_t(r) * nk;
          float* dr = ds.data() + int64_t(r) * nk;
          if (l == ninf) {  // no visible key: no gradient
            std::fill(pr, pr + nk, 0.0f);
            std::fill(dr, dr + nk, 0.0f);
            continue;
          }
          simd::exp_shift_sum(pr, size_t(nk), l);  // masked keys give exp(−∞) = 0
          for (int j = 0; j < nk; ++j) dr[j] = pr[j] * (dr[j] - delta[size_t(r)]) * scale;
        }
        // dQ rows (this job's heads of these tokens) += dS·K.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, nk, 1.0f, ds.data(), nk, kb, int(ldkv), 0.0f,
                    dqp.data(), D);
        for (int r = 0; r < rows; ++r) {
          float* o = dq + int64_t(b * T + t0 + r / HG) * dq_stride + int64_t(g * HG + r % HG) * D;
          for (int d = 0; d < D; ++d) o[d] += dqp[size_t(int64_t(r) * D + d)];
        }
        // dK += dSᵀ·Q, dV += Pᵀ·dout over the keys 0 .. nk − 1 of this sequence and group.
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, rows, 1.0f, ds.data(), nk, qp.data(), D, 1.0f, dkb,
                    int(ldkv));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, rows, 1.0f, pm.data(), nk, gp.data(), D, 1.0f, dvb,
                    int(ldkv));
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
