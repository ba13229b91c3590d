// The fast CPU back end: OpenMP threads over SIMD kernels. Matmul, with approximate activations (the
// default): weights packed at load run on dot-product kernels at every batch size (int8/int4 on VNNI,
// vnni_packed.h; bf16 on AVX512-BF16, dpbf16_packed.h; fp16 widened onto fp32 FMA, f16_packed.h); row-major bf16 weights take the AVX512-BF16 GEMV
// up to 8 rows and AMX / AVX512-BF16 GEMMs beyond. Exact activations: up to 8 token rows read each
// weight row once (streamed in their storage dtype, widened in registers), more go to OpenBLAS sgemm
// with 16-bit weights widened tile by tile. Tested op by op against the reference (cpu_ref).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/avx2_gemv16.h"
#include "kernels/cpu/avx2_qgemv.h"
#include "kernels/cpu/bf16_gemm.h"
#include "kernels/cpu/cpu_backward.h"
#include "kernels/cpu/dpbf16_packed.h"
#include "kernels/cpu/f16_packed.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/simd_softmax.h"
#include "kernels/cpu/vnni_packed.h"
#include "ops/ops.h"
#include "util/error.h"

namespace glmlab {
namespace {

// Up to this many rows, one pass of the GEMV kernel reads each weight row once for all of them.
constexpr int64_t kGemvMaxRows = 8;
// Up to this many rows, bf16 weights with bf16 activations go through the AVX512-BF16 GEMV (dpbf16::gemv),
// beyond through the AVX512-BF16 GEMM. Per matrix the GEMM is faster from 8 rows (27392 × 4096: 9.0 ms
// GEMV, 7.3 GEMM; 4096 × 13696: 3.7 and ~3.1; glmlab_kernel_bench BM_DecodeBatch), but a whole 6B decode
// step at batch 8 ran 13% slower with the GEMM from 5 rows (llama_peer.py batch8-bf16: 19.3 against 22.1
// tokens/s, docs/BENCHMARKS.md session 7), so the GEMV keeps 8.
constexpr int64_t kBf16GemvMaxRows = 8;
// From this many rows on, bf16 weights go through AMX tiles with activations rounded to bf16 (what a
// bf16 model does anyway), unless the back end was made with exact fp32 activations.
constexpr int64_t kAmxMinRows = kBf16GemvMaxRows + 1;
// fp16 weights packed at load go to AMX tiles from this many rows: each call converts every weight to two
// bf16 tiles (hi + lo), which the AVX-512 fp16 kernel's exact fp32 products beat below ~28 rows (4608 ×
// 4096, 2 cores of an AMX Xeon: 9 rows 1.6 against 3.4 ms, 24 rows 3.0 / 3.1, 32 rows 4.1 / 3.6, 128 rows
// 16.6 / 6.9).
constexpr int64_t kF16AmxMinRows = 32;
// Up to this many rows, row-major bf16/fp16 weights on an AVX2 CPU without AVX-512 go through the AVX2
// GEMV (avx2_gemv16.h), beyond through fp32 tiles and sgemm (2 Zen 2 cores, bf16, glmlab_kernel_bench
// BM_DecodeBatch: at 64 rows the GEMV is 5-11% faster, at 128 rows 5% slower on 27392 × 4096 and 6%
// faster on 4096 × 13696).
constexpr int64_t kAvx2W16MaxRows = 64;

class CpuOps final : public Ops {
 public:
  explicit CpuOps(bool bf16_activations) : bf16_activations_(bf16_activations) {}
  std::string_view name() const override { return "cpu"; }
  bool pack_weights(const Matrix& W, PackedWeights& out) const override {
    // Packed quantized weights are read only with approximate (int8) activations; exact activations
    // keep the row-major fp32 kernels.
    if (!bf16_activations_) return false;
    if (dpbf16::packable(W)) {
      // bf16 for AVX512-BF16 (and AMX, whose prefill reads the packed lines as its B tiles).
      dpbf16::PackedMatrix p = dpbf16::pack(W);
      out.m = p.m;
      out.data = std::move(p.data);
      return true;
    }
    if (f16p::packable(W)) {
      f16p::PackedMatrix p = f16p::pack(W);
      out.m = p.m;
      out.data = std::move(p.data);
      return true;
    }
    if (!vnni::packable(W)) return false;
    vnni::PackedMatrix p = vnni::pack(W);
    out.m = p.m;
    out.data = std::move(p.data);
    out.scales = std::move(p.scales);
    return true;
  }
  std::string_view matmul_unit(const Matrix& W) const override {
    // int8/int4 weights packed at load run every matmul on VNNI integer dot products (quant_matmul.cpp);
    // bf16 weights, and row-major int8/int4 weights dequantized into bf16 tiles, run on bf16 dot products
    // when the activations may be rounded; everything else widens to fp32 (sgemm).
    if (W.layout == MatrixLayout::Vnni16 && bf16_activations_) return "int8";
    if (W.layout == MatrixLayout::Pairs16 && bf16_activations_) return "bf16";
    // Row-major int8/int4 on an AVX2 CPU without VNNI: integer dot products up to 32/64 rows, fp32 tiles
    // beyond (quant_matmul.cpp); the int8 peak (VPMADDUBSW) is the higher of the two limits.
    if (W.quantized() && bf16_activations_ && !vnni::available() && avx2q::available()) return "int8";
    const DType weights = W.dtype;
    const bool bf16_weights = weights == DType::BF16 || weights == DType::Q8 || weights == DType::Q4;
    return bf16_activations_ && bf16_weights && bf16gemm::available(4096, 4096) ? "bf16" : "fp32";
  }

  void embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) override {
    const size_t es = dtype_size(table.dtype);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      simd::to_f32(static_cast<const uint8_t*>(table.data) + size_t(ids[n]) * size_t(table.cols) * es, table.dtype,
                   out + n * table.cols, size_t(table.cols));
  }

  void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms) override {
#pragma omp parallel for schedule(static) if (N > 1)
    for (int64_t n = 0; n < N; ++n) {
      float r = 1.0f / std::sqrt(simd::sum_squares(x + n * C, size_t(C)) / float(C) + eps);
      if (inv_rms) inv_rms[n] = r;
      simd::mul3(x + n * C, r, w, y + n * C, size_t(C));
    }
  }

  void matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) override {
    const int64_t M = W.rows, K = W.cols;
    if (W.quantized()) {
      quant_matmul(x, N, W, y, bf16_activations_);  // int8 / int4 weights: kernels/cpu/quant_matmul.cpp
    } else if (W.layout == MatrixLayout::Pairs16 && bf16_activations_ && N >= kAmxMinRows && amx::available()) {
      amx::gemm_bf16_packed(static_cast<const uint16_t*>(W.data), M, K, x, N, bias, y);  // bf16 packed, AMX tiles
      return;
    } else if (W.layout == MatrixLayout::Pairs16 && bf16_activations_) {
      dpbf16::packed_matmul(W, x, N, y, bf16_acts_);  // bf16 packed at load: every N (dpbf16_packed.h)
    } else if (W.layout == MatrixLayout::Rows16 && bf16_activations_ && N >= kF16AmxMinRows && K % 32 == 0 &&
               amx::available()) {
      // fp16 packed at load, on AMX tiles: weights exact (hi + lo bf16 tiles), activations rounded to bf16.
      amx::gemm_f16_packed(static_cast<const uint16_t*>(W.data), M, K, x, N, bias, y);
      return;
    } else if (W.layout == MatrixLayout::Rows16 && bf16_activations_) {
      f16p::packed_matmul(W, x, N, y);  // fp16 packed at load: every N (f16_packed.h)
    } else if (W.layout == MatrixLayout::Pairs16 || W.layout == MatrixLayout::Rows16) {
      // Only this back end with approximate activations packs; exact activations on a packed matrix
      // (tests) read a row-major copy.
      std::vector<uint16_t> rm(size_t(M * K));
      if (W.layout == MatrixLayout::Pairs16)
        dpbf16::unpack_rows(W, 0, M, rm.data());
      else
        f16p::unpack_rows(W, 0, M, rm.data());
      Matrix R = W;
      R.layout = MatrixLayout::RowMajor;
      R.data = rm.data();
      matmul(x, N, R, bias, y);
      return;
    } else if (W.dtype == DType::BF16 && bf16_activations_ && N <= kBf16GemvMaxRows && dpbf16::gemv_fits(K) &&
               dpbf16::available()) {
      // bf16 dot products on whole 64-byte weight chunks, activations rounded to bf16 once.
      dpbf16::pack_acts(x, int(N), K, K, bf16_acts_);
      par::static_ranges(M, [&](int64_t r0, int64_t r1) {
        dpbf16::gemv(static_cast<const uint16_t*>(W.data), r0, r1, bf16_acts_, y, M);
      });
    } else if (W.dtype == DType::F16 && bf16_activations_ && amx::rowmajor_blocked(W, N, false)) {
      // Row-major fp16 (training's fp16 bases): hi + lo bf16 tiles per chunk, exact weights (amx_gemm.h).
      amx::gemm_rowmajor(W, x, N, bias, y);
      return;
    } else if (W.dtype == DType::BF16 && bf16_activations_ && N >= kAmxMinRows && bf16gemm::available(M, K)) {
      bf16gemm::forward(static_cast<const uint16_t*>(W.data), M, K, x, N, bias, y);  // AMX or AVX512-BF16
      return;
    } else if (N <= kAvx2W16MaxRows && avx2w16::fits(W) && avx2w16::preferred()) {
      // Exact fp32 activations against weights widened exactly: each row read once for every token.
      const float* xp = avx2w16::pack_acts(W, x, int(N), K, w16_acts_);
      par::static_ranges(M, [&](int64_t r0, int64_t r1) {
        avx2w16::gemv(W, r0, r1, xp, int(N), y, M);
      });
    } else if (N <= kGemvMaxRows) {
      // Threads split the weight rows; each row is read once for all N tokens.
      par::static_ranges(M, [&](int64_t r0, int64_t r1) {
        simd::gemv_rows(W.data, W.dtype, K, r0, r1, x, K, int(N), y, M);
      });
    } else if (W.dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(M), int(K), 1.0f, x, int(K),
                  static_cast<const float*>(W.data), int(K), 0.0f, y, int(M));
    } else {
      // Widen a tile of weight rows to fp32, multiply it with sgemm into the matching output columns.
      const int64_t tile = std::max<int64_t>(64, std::min<int64_t>(M, (8 << 20) / (4 * K)));
      scratch_.resize(size_t(tile * K));
      const size_t es = dtype_size(W.dtype);
      for (int64_t r0 = 0; r0 < M; r0 += tile) {
        int64_t rows = std::min(tile, M - r0);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r)
          simd::to_f32(static_cast<const uint8_t*>(W.data) + size_t((r0 + r) * K) * es, W.dtype,
                       scratch_.data() + r * K, size_t(K));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(rows), int(K), 1.0f, x, int(K),
                    scratch_.data(), int(K), 0.0f, y + r0, int(M));
      }
    }
    if (bias) {
#pragma omp parallel for schedule(static) if (N > 1)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < M; ++o) y[n * M + o] += bias[o];
    }
  }

  void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) override {
    const int R = D / 2;
    std::vector<float> theta(size_t(R / 2));
    for (int i = 0; i < R / 2; ++i) theta[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(R));
#pragma omp parallel for schedule(static) if (N > 1)
    for (int64_t n = 0; n < N; ++n) {
      float cs[256], sn[256];  // R/2 ≤ 256 (head dims up to 1024)
      for (int i = 0; i < R / 2; ++i) {
        float ang = float(pos[n]) * theta[size_t(i)];
        cs[i] = std::cos(ang);
        sn[i] = std::sin(ang);
      }
      for (int h = 0; h < nheads; ++h) {
        float* v = x + n * stride + int64_t(h) * D;
        for (int i = 0; i < R / 2; ++i) {
          float x0 = v[2 * i], x1 = v[2 * i + 1];
          v[2 * i] = x0 * cs[i] - x1 * sn[i];
          v[2 * i + 1] = x1 * cs[i] + x0 * sn[i];
        }
      }
    }
  }

  void attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                 float* out, float* lse) override {
    std::vector<AttnSeq> seqs(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) seqs[size_t(b)] = AttnSeq{b, P, T, int64_t(b) * T};
    attention_seqs(q, q_stride, kv, seqs.data(), B, H, G, D, out, lse);
  }

  void attention_seqs(const float* q, int64_t q_stride, const KVView& kv, const AttnSeq* seqs, int n, int H, int G,
                      int D, float* out, float* lse) override {
    // Per job: one sequence, one KV group, a block of up to kTB query tokens, all sequences' jobs in one
    // parallel loop. The block's queries (tokens × the group's heads) meet the keys 0 .. P + t1 − 1 in
    // two sgemm calls — masked scores S = Q·Kᵀ (cpu::attention_block_scores, shared with the backward),
    // then O = softmax(S)·V (keys past a row's own position are computed and masked: at most kTB − 1 a
    // row). A bf16 cache's keys and values of the job's (sequence, group) are widened first.
    constexpr int kTB = cpu::kAttnBlockTokens;
    const float scale = 1.0f / std::sqrt(float(D));
    const float ninf = -std::numeric_limits<float>::infinity();
    const int HG = H / G;
    const int64_t ldkv = int64_t(G) * D;
    struct Job {
      int seq, g, t0;
    };
    std::vector<Job> jobs;
    for (int i = 0; i < n; ++i)
      for (int g = 0; g < G; ++g)
        for (int t0 = 0; t0 < seqs[i].T; t0 += kTB) jobs.push_back({i, g, t0});
    const int64_t njobs = int64_t(jobs.size());
#pragma omp parallel if (njobs > 1)
    {
      std::vector<float> qp(static_cast<size_t>(kTB * HG * D)), op(qp.size()), sc, inv(static_cast<size_t>(kTB * HG));
      std::vector<float> kw, vw;  // a bf16 cache's keys and values of one (sequence, group), widened
#pragma omp for schedule(dynamic, 1)
      for (int64_t j = 0; j < njobs; ++j) {
        const Job job = jobs[size_t(j)];
        const AttnSeq& sq = seqs[job.seq];
        const int b = sq.row, P = sq.P, g = job.g, t0 = job.t0, t1 = std::min(sq.T, t0 + kTB), rows = (t1 - t0) * HG;
        const int64_t kv0 = (int64_t(b) * kv.S * G + g) * D;
        const float* kb = kv.k ? kv.k + kv0 : nullptr;
        const float* vb = kv.v ? kv.v + kv0 : nullptr;
        int64_t ld = ldkv;
        if (kv.bf16()) {
          const int nk = P + t1;
          kw.resize(size_t(nk) * D);
          vw.resize(size_t(nk) * D);
          for (int k = 0; k < nk; ++k) {
            simd::to_f32(kv.k16 + kv0 + int64_t(k) * ldkv, DType::BF16, kw.data() + int64_t(k) * D, size_t(D));
            simd::to_f32(kv.v16 + kv0 + int64_t(k) * ldkv, DType::BF16, vw.data() + int64_t(k) * D, size_t(D));
          }
          kb = kw.data();
          vb = vw.data();
          ld = D;
        }
        const int nk = cpu::attention_block_scores(q + sq.first * q_stride, q_stride, kv, kb, ld, b, P, H, G, D, g, t0,
                                                   t1, scale, qp.data(), sc);
        for (int r = 0; r < rows; ++r) {
          const int t = t0 + r / HG;
          float* row = sc.data() + int64_t(r) * nk;
          const float mx = simd::max_of(row, size_t(nk));
          float* l = lse ? lse + (sq.first + t) * H + g * HG + r % HG : nullptr;
          if (mx == ninf) {  // no visible key: output zeros
            std::fill(row, row + nk, 0.0f);
            inv[size_t(r)] = 0.0f;
            if (l) *l = ninf;
            continue;
          }
          const double sum = simd::exp_shift_sum(row, size_t(nk), mx);  // masked keys give exp(−∞) = 0
          inv[size_t(r)] = float(1.0 / sum);
          if (l) *l = mx + float(std::log(sum));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, nk, 1.0f, sc.data(), nk, vb, int(ld), 0.0f,
                    op.data(), D);
        for (int r = 0; r < rows; ++r) {
          float* o = out + (sq.first + t0 + r / HG) * H * D + int64_t(g * HG + r % HG) * D;
          for (int d = 0; d < D; ++d) o[d] = op[size_t(int64_t(r) * D + d)] * inv[size_t(r)];
        }
      }
    }
  }

  void swiglu(const float* u, int64_t N, int64_t F, float* out) override {
#pragma omp parallel for schedule(static) if (N * F > 65536)
    for (int64_t n = 0; n < N; ++n) simd::swiglu_row(u + n * 2 * F, u + n * 2 * F + F, out + n * F, size_t(F));
  }

  void argmax(const float* x, int64_t rows, int64_t V, int32_t* out) override {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * V > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = simd::argmax_finite(x + r * V, size_t(V));
      out[r] = i >= 0 ? int32_t(i) : (V > 5 ? 5 : 0);  // a row with Inf/NaN: id 5, as the reference
    }
  }

  void add(float* y, const float* x, int64_t count) override {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; ++i) y[i] += x[i];
  }

  // Backward ops: cpu_backward.cpp.
  void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) override {
    cpu::matmul_backward_input(dy, N, W, dx, scratch_, bf16_activations_);
  }
  void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) override {
    cpu::matmul_backward_weight(dy, x, N, M, K, dW);
  }
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                        float, float* dx) override {
    cpu::rmsnorm_backward(dy, x, w, inv_rms, N, C, dx);
  }
  void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos,
                     float base) override {
    cpu::rope_backward(dx, N, stride, nheads, D, pos, base);
  }
  void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) override {
    cpu::swiglu_backward(dout, u, N, F, du);
  }
  void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                          int D, const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                          float* dk, float* dv) override {
    cpu::attention_backward(q, q_stride, kv, B, T, P, H, G, D, out, lse, dout, dq, dq_stride, dk, dv);
  }
  double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) override {
    return cpu::cross_entropy(z, labels, N, V, scale);
  }

 private:
  bool bf16_activations_;
  std::vector<float> scratch_;
  dpbf16::Bf16Acts bf16_acts_;
  std::vector<float> w16_acts_;  // activations in avx2w16's order
};

}  // namespace

Backend backend_from_name(std::string_view s) {
  if (s == "cpu") return Backend::Cpu;
  if (s == "cpu-ref") return Backend::CpuRef;
  if (s == "cuda") return Backend::Cuda;
  fail("unknown device \"{}\" (expected cpu, cpu-ref or cuda)", s);
}

std::unique_ptr<Ops> make_ops(Backend b, bool bf16_activations) {
  if (b == Backend::CpuRef) return make_ref_ops();
  if (b == Backend::Cuda)
    fail("device cuda: this command runs on the host (cpu or cpu-ref); the CUDA back end drives its kernels "
         "through the device engine (generate, bench infer)");
  return std::make_unique<CpuOps>(bf16_activations);
}

}  // namespace glmlab
