// Quantized matmul: GEMV for decode, dequantized tiles + sgemm for prefill (see quant_matmul.h).
#include "kernels/cpu/quant_matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/simd_quant.h"

namespace glmlab {

namespace {
constexpr int64_t kGemvMaxRows = 4;
constexpr int64_t kTileBytes = 8 << 20;  // fp32 weight tile for sgemm: stays in L2/L3
}  // namespace

void quant_matmul(const float* x, int64_t N, const Matrix& W, float* y) {
  const int64_t M = W.rows, K = W.cols;
  // Q4: activations split once per call into even / odd inputs; the kernels' K is then 2·ceil(K/2).
  thread_local std::vector<float> xsplit, tile;
  const float* xin = x;
  int64_t Kx = K;
  if (W.dtype == DType::Q4) {
    Kx = 2 * W.row_bytes();
    xsplit.resize(size_t(N * Kx));
    for (int64_t n = 0; n < N; ++n) simd::split_q4(x + n * K, K, xsplit.data() + n * Kx);
    xin = xsplit.data();
  }
  if (N <= kGemvMaxRows) {
#pragma omp parallel
    {
      int nth = omp_get_num_threads(), id = omp_get_thread_num();
      int64_t per = (M + nth - 1) / nth, r0 = std::min(M, per * id), r1 = std::min(M, r0 + per);
      for (int64_t r = r0; r < r1; r += 64)
        simd::gemv_q_rows(W, r, std::min(r1, r + 64), xin, Kx, int(N), y, M);
    }
    return;
  }
  const int64_t rows_per_tile = std::max<int64_t>(64, std::min<int64_t>(M, kTileBytes / (4 * Kx)));
  tile.resize(size_t(rows_per_tile * Kx));
  float* tp = tile.data();  // thread_local: workers must use the caller's buffer, not their own
  for (int64_t r0 = 0; r0 < M; r0 += rows_per_tile) {
    const int64_t rows = std::min(rows_per_tile, M - r0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r += 16)
      simd::dequant_rows(W, r0 + r, r0 + std::min(rows, r + 16), tp + r * Kx, Kx);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(rows), int(Kx), 1.0f, xin, int(Kx), tp,
                int(Kx), 0.0f, y + r0, int(M));
  }
}

}  // namespace glmlab
