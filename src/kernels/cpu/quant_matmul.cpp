// Quantized matmul: GEMV for decode, dequantized tiles for prefill (see quant_matmul.h).
#include "kernels/cpu/quant_matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/amx_int8.h"
#include "kernels/cpu/avx2_qgemm.h"
#include "kernels/cpu/avx2_qgemv.h"
#include "kernels/cpu/bf16_gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_quant.h"
#include "kernels/cpu/vnni_gemm.h"
#include "kernels/cpu/vnni_gemv.h"
#include "kernels/cpu/vnni_packed.h"

namespace glmlab {

namespace {
constexpr int64_t kGemvMaxRows = 4;
constexpr int64_t kTileBytes = 8 << 20;  // dequantized weight tile: stays in L2/L3
// bf16 tiles (AMX or AVX512-BF16) right after the GEMV: for 5–7 rows the fp32 dequantize + sgemm path
// took 39–43 ms on a 27392 × 4096 int4/int8 matrix (2 Zen 5 cores), the bf16 tiles 12 ms.
constexpr int64_t kAmxMinRows = kGemvMaxRows + 1;
// The VNNI GEMV reads the weights once per call for any number of rows (groups of 8 tokens over blocks
// of rows in L1), at a cost per token; the bf16 tiles pay for dequantizing the whole matrix once per
// call. Which wins depends on the shape (2 Zen 5 cores, group 128, quiet machine, glmlab_kernel_bench
// BM_DecodeBatch, docs/BENCHMARKS.md session 7): Q4 at 16 rows took 15.2 ms in the GEMV and 12.2 ms in
// tiles on 27392 × 4096, but ~8 ms (GEMV, 4.2 ms at 8 rows) against 15.2 ms (tiles) on 4096 × 13696; the
// GEMV up to 16 rows of Q4 is the better sum over a layer. Q8: the GEMV 13.6 ms at 8 rows, the tiles
// 18.6 ms at 16 (27392 × 4096).
int64_t vnni_max_rows(DType t) { return t == DType::Q4 ? 16 : 8; }
// Without AVX512-VNNI (Zen 2/3, Haswell to Comet Lake) the AVX2 GEMV (avx2_qgemv.h) takes up to this many
// rows, beyond them the fp32 tiles and sgemm, whichever measured faster (2 Zen 2 cores, group 128,
// glmlab_kernel_bench BM_DecodeBatch, docs/BENCHMARKS.md session 10): Q4 27392 × 4096 at 32 rows 55 ms
// against 87 (tiles), at 128 rows 238 against 223; Q8 at 32 rows 80 against 88, at 128 311 against 230.
// Q4 beyond them: the AVX2 GEMM (avx2_qgemm.h; 2 Zen 3 cores, session 24: 27392 × 4096 at 128 rows 131–165
// ms against 226–258 in tiles, at 512 rows 567–717 against 779–829. Against the GEMV, same run: at 16 rows
// behind, 22.7 against 18.1 ms; at 32 even, 35–45 against 38; at 64 5–10% ahead, 73–82 against 83–91 ms;
// the GEMV keeps its 64 rows until a finer measurement moves the crossover).
int64_t avx2_max_rows(DType t) { return t == DType::Q4 ? 64 : 32; }
// At one token the threads take ~1 MB of rows at a time, which the AVX2 GEMV reads as 4 streams (Q8;
// 2 Zen 2 cores, glmlab_kernel_bench BM_DecodeBatch N:1, docs/BENCHMARKS.md session 15: 64-row blocks
// as one stream 3.7 / 2.1 ms on 27392 × 4096 / 4096 × 13696, as 4 streams in 1 MB blocks 3.5 / 1.5).
constexpr int64_t kAvx2OneTokenBlockBytes = 1 << 20;
// Weights packed at load (vnni_packed.h) take the packed GEMV at every number of rows with approximate
// activations: it read the weights once per call and beat the bf16 tiles from 1 to 512 rows on both
// large 6B shapes (2 Zen 5 cores, group 128, glmlab_kernel_bench BM_DecodeBatch packed:1, session 8):
// int4 27392 × 4096 at 8 rows 1.9 ms against 8.3 (row-major VNNI GEMV), at 512 rows 82–85 ms against
// 131–144 (tiles); int8 at 512 rows 104–106 against 130–155 ms. QuantPrefill::Tiles still forces the tiles.
// Prefill (more rows than the GEMV takes): the VNNI GEMM (vnni_gemm.h) or the bf16 tiles, whichever
// measured faster (2 shared Zen 5 cores, AVX512-BF16 tiles, group 128, docs/QUANTIZATION.md): Q4 at 32
// rows 16 ms against 24 ms on 27392 × 4096 (even to mixed on 4096 × 13696), but the tiles ahead from 128
// rows on (Q4 512 rows: 154 ms against 176–212 ms) and for Q8 at every size (Q8 512 rows: 128–145 ms
// against 217–256 ms): the GEMM pays a convert, a multiply and an FMA per 64-byte chunk and pair of
// (row, token) for the activations' per-32 scales, about as many vector ops as its integer dot products.
// It won only int4 at 32 rows on the larger matrix, and there its int8 activations (coarser than the
// tiles' bf16) flipped a top-1 of tiny-gptq-int4 against the oracle (QuantGolden.ThudmAndGptq...: prefill
// of 27 rows; max_rel 2.3e-2, within bound, but step 2's top-1 changed): off by default until the
// accuracy is understood; QuantPrefill::Vnni forces it.
bool vnni_gemm_wins(DType, int64_t) { return false; }
// From this many rows on, packed weights go through AMX-INT8 tiles where the CPU has them (amx_int8.h):
// the same int8 activations and the same fold as the packed GEMV, so the same bits. 2 cores of an AMX
// Xeon (glmlab_kernel_bench BM_DecodeBatch packed:1, docs/BENCHMARKS.md session 16): at 8 rows the VNNI
// GEMV (one pass) is ahead for Q8 (5.5 against 6.1 ms on 27392 × 4096) and even for Q4; from 16 rows the
// tiles lead (Q8 6.4 against 8.8 ms), at 512 rows by 2.5x (68 against 168 ms).
constexpr int64_t kAmxInt8MinRows = 9;

// Threads take blocks of 64 rows as they come (kernels/cpu/parallel.h).
template <class F>
void split_rows(int64_t M, F&& f) {
  par::dynamic_blocks(M, 64, f);
}
}  // namespace

void quant_matmul(const float* x, int64_t N, const Matrix& W, float* y, bool approx, QuantPrefill path) {
  const int64_t M = W.rows, K = W.cols;
  // Buffers are the calling thread's; OpenMP workers must use them through these pointers, never
  // by naming the thread_local variables (each worker would get its own, empty, copy).
  thread_local std::vector<float> xsplit, tile, ytile, gemm_s8;
  thread_local std::vector<uint16_t> tile16;
  thread_local vnni::QuantizedActs qacts;
  thread_local vnni::PackedActs pacts;

  if (W.layout == MatrixLayout::Vnni16 && approx && path != QuantPrefill::Tiles) {
    vnni::quantize_acts(x, int(N), W, pacts);
    if (N >= kAmxInt8MinRows && path != QuantPrefill::Vnni && amx::int8_fits(W, pacts)) {
      amx::packed_gemm(W, pacts, y, M);  // the same sums on AMX tiles (amx_int8.h)
      return;
    }
    const vnni::PackedActs* pa = &pacts;
    split_rows(M, [&](int64_t r0, int64_t r1) { vnni::gemv(W, r0, r1, *pa, y, M); });
    return;
  }
  // A packed matrix anywhere else is read through simd::dequant_rows / gemv_q_rows, which unpack it.
  const bool row_major = W.layout == MatrixLayout::RowMajor;
  if (row_major && N <= vnni_max_rows(W.dtype) && approx && vnni::available() && vnni::fits(W)) {
    vnni::quantize_acts(x, int(N), K, W.dtype, qacts);
    const vnni::QuantizedActs* qa = &qacts;
    split_rows(M, [&](int64_t r0, int64_t r1) { vnni::gemv(W, r0, r1, *qa, y, M); });
    return;
  }
  if (row_major && N <= avx2_max_rows(W.dtype) && approx && !vnni::available() && path != QuantPrefill::Tiles &&
      avx2q::available() && vnni::fits(W)) {
    vnni::quantize_acts(x, int(N), K, W.dtype, qacts, /*q8_signed=*/true);
    avx2q::prepare(W, qacts);
    const vnni::QuantizedActs* qa = &qacts;
    const int64_t block = N == 1 ? std::max<int64_t>(64, kAvx2OneTokenBlockBytes / W.row_bytes() / 64 * 64) : 64;
    par::dynamic_blocks(M, block, [&](int64_t r0, int64_t r1) { avx2q::gemv(W, r0, r1, *qa, y, M); });
    return;
  }
  if (row_major && approx && !vnni::available() && path != QuantPrefill::Tiles && avx2q::available() &&
      avx2q::gemm_fits(W)) {  // int4 prefill without VNNI: the AVX2 GEMM on the GEMV's int8 activations
    vnni::quantize_acts(x, int(N), K, W.dtype, qacts);
    avx2q::prepare(W, qacts);
    avx2q::gemm_scales(qacts, gemm_s8);
    const vnni::QuantizedActs* qa = &qacts;
    const float* s8 = gemm_s8.data();
    split_rows(M, [&](int64_t r0, int64_t r1) { avx2q::gemm_q4(W, r0, r1, *qa, s8, y, M); });
    return;
  }
  if (row_major && approx && N > vnni_max_rows(W.dtype) && path != QuantPrefill::Tiles && vnni::available() && vnni::fits(W) &&
      (path == QuantPrefill::Vnni || vnni_gemm_wins(W.dtype, N))) {
    vnni::quantize_acts(x, int(N), K, W.dtype, qacts);
    const vnni::QuantizedActs* qa = &qacts;
    split_rows(M, [&](int64_t r0, int64_t r1) { vnni::gemm(W, r0, r1, *qa, y, M); });
    return;
  }
  // A row-major matrix (training's QAT bases) from more than amx::kBlockedFromTokens rows on AMX: the
  // cache-blocked GEMM dequantizing each chunk of a row pair in registers (amx_gemm.h), the bf16 tiles' bits
  // without writing them; 6B QAT LoRA forward at ~800 tokens a micro-batch, docs/BENCHMARKS.md session 22.
  if (approx && path != QuantPrefill::Vnni && amx::rowmajor_blocked(W, N, false)) {
    amx::gemm_rowmajor(W, x, N, nullptr, y);
    return;
  }
  // Q4: activations split once per call into even / odd inputs; the kernels' K is then 2·ceil(K/2).
  const float* xin = x;
  int64_t Kx = K;
  if (W.dtype == DType::Q4) {
    Kx = 2 * W.row_bytes();
    xsplit.resize(size_t(N * Kx));
    for (int64_t n = 0; n < N; ++n) simd::split_q4(x + n * K, K, xsplit.data() + n * Kx);
    xin = xsplit.data();
  }
  if (N <= kGemvMaxRows) {
    split_rows(M, [&](int64_t r0, int64_t r1) { simd::gemv_q_rows(W, r0, r1, xin, Kx, int(N), y, M); });
    return;
  }
  if (approx && N >= kAmxMinRows && bf16gemm::available(M, Kx)) {
    // bf16 tiles of 32·k rows on AMX (else AVX512-BF16); each tile's outputs land in ytile [N, rows],
    // then in y's columns.
    const int64_t rows_per_tile = std::max<int64_t>(32, std::min<int64_t>(M, kTileBytes / (2 * Kx)) / 32 * 32);
    tile16.resize(size_t(rows_per_tile * Kx));
    ytile.resize(size_t(N * rows_per_tile));
    uint16_t* tp = tile16.data();
    float* yt = ytile.data();
    for (int64_t r0 = 0; r0 < M; r0 += rows_per_tile) {
      const int64_t rows = std::min(rows_per_tile, M - r0);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; r += 16)
        simd::dequant_rows_bf16(W, r0 + r, r0 + std::min(rows, r + 16), tp + r * Kx, Kx);
      bf16gemm::forward(tp, rows, Kx, xin, N, nullptr, yt);
      for (int64_t n = 0; n < N; ++n) std::memcpy(y + n * M + r0, yt + n * rows, size_t(rows) * 4);
    }
    return;
  }
  const int64_t rows_per_tile = std::max<int64_t>(64, std::min<int64_t>(M, kTileBytes / (4 * Kx)));
  tile.resize(size_t(rows_per_tile * Kx));
  float* tp = tile.data();
  for (int64_t r0 = 0; r0 < M; r0 += rows_per_tile) {
    const int64_t rows = std::min(rows_per_tile, M - r0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r += 16)
      simd::dequant_rows(W, r0 + r, r0 + std::min(rows, r + 16), tp + r * Kx, Kx);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(rows), int(Kx), 1.0f, xin, int(Kx), tp, int(Kx),
                0.0f, y + r0, int(M));
  }
}

}  // namespace glmlab
