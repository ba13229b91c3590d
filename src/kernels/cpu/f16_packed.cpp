// Packed-layout fp16 products (see f16_packed.h). The kernels are compiled for AVX512F + F16C by the
// attribute below and run only where available() said yes; the rest of the file is plain x86-64.
#include "kernels/cpu/f16_packed.h"

#include <immintrin.h>
#include <omp.h>

// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 intrinsics.
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"
#include "util/error.h"

namespace glmlab::f16p {

#define GLMLAB_F16P __attribute__((target("avx512f,f16c,fma")))

namespace {

constexpr int64_t kRows = 16;           // rows interleaved in a block (fp32 lanes of a zmm)
constexpr int kTokensPerPass = 8;
constexpr int64_t kChunkInputs = 1024;  // inputs of a prefill tile
constexpr int64_t kTileBlocks = 6;      // row blocks of a prefill tile: 96 rows × 1024 inputs = 192 KB (L2)
#ifndef GLMLAB_F16_PACKED_PREFETCH
#define GLMLAB_F16_PACKED_PREFETCH 2048
#endif
constexpr int64_t kPrefetch = GLMLAB_F16_PACKED_PREFETCH;  // bytes ahead along each block's stream

// Row blocks [b, b + RB) × inputs [k0, k1) against NT tokens (token t's inputs at x + t·xs); 16 outputs
// per block and token at y + t·ys + 16·r, stored, or added onto y (`add`: a later chunk of the inputs).
template <int RB, int NT>
GLMLAB_F16P inline void tile(const uint16_t* const* w, int64_t k0, int64_t k1, const float* x, int64_t xs,
                             float* const* y, int64_t ys, bool add, bool prefetch) {
  __m512 acc[RB][NT];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t k = k0; k < k1; ++k) {
    __m512 wv[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const uint16_t* p = w[r] + k * kRows;
      if (prefetch && (k & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      wv[r] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * xs + k]);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xb, acc[r][t]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      float* o = y[r] + t * ys;
      _mm512_storeu_ps(o, add ? _mm512_add_ps(_mm512_loadu_ps(o), acc[r][t]) : acc[r][t]);
    }
}

template <int NT>
void blocks_nt(const uint16_t* P, int64_t K, int64_t b0, int64_t b1, int64_t k0, int64_t k1, const float* x,
               int64_t xs, float* y, int64_t ys, bool add, bool prefetch) {
  constexpr int RB = NT <= 4 ? 4 : 3;  // 3 × 8 accumulators + 3 weights + 1 broadcast: 28 registers
  const int64_t bs = K * kRows;
  // The RB blocks of a tile come from RB equal parts of [b0, b1), each part read block after block: every
  // part is one long sequential stream (its prefetch runs on into the block it reads next), where RB
  // neighbouring blocks would restart all RB streams at every tile: with short rows (random:small's 512
  // inputs) its fp16 model generated 771 tokens/s that way and 937 this way. Blocks left over go one by one.
  const int64_t part = (b1 - b0) / RB;
  for (int64_t j = 0; j < part; ++j) {
    const uint16_t* w[RB];
    float* o[RB];
    for (int r = 0; r < RB; ++r) {
      w[r] = P + (b0 + r * part + j) * bs;
      o[r] = y + (b0 + r * part + j) * kRows;
    }
    tile<RB, NT>(w, k0, k1, x, xs, o, ys, add, prefetch);
  }
  for (int64_t b = b0 + RB * part; b < b1; ++b) {
    const uint16_t* w[1] = {P + b * bs};
    float* o[1] = {y + b * kRows};
    tile<1, NT>(w, k0, k1, x, xs, o, ys, add, prefetch);
  }
}

void blocks(int nt, const uint16_t* P, int64_t K, int64_t b0, int64_t b1, int64_t k0, int64_t k1, const float* x,
            int64_t xs, float* y, int64_t ys, bool add, bool prefetch) {
  switch (nt) {
    case 1: blocks_nt<1>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 2: blocks_nt<2>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 3: blocks_nt<3>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 4: blocks_nt<4>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 5: blocks_nt<5>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 6: blocks_nt<6>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    case 7: blocks_nt<7>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
    default: blocks_nt<8>(P, K, b0, b1, k0, k1, x, xs, y, ys, add, prefetch); break;
  }
}

}  // namespace

__attribute__((target("no-avx512f"))) bool available() {
  static const bool ok = isa::f16c() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  return ok;
}

bool packable(const Matrix& W) {
  return W.dtype == DType::F16 && W.layout == MatrixLayout::RowMajor && W.rows > 0 && W.rows % kRows == 0 &&
         W.cols > 0 && available();
}

PackedMatrix pack(const Matrix& W) {
  if (!packable(W)) fail("f16p::pack: a {} {}x{} matrix cannot be packed", dtype_name(W.dtype), W.rows, W.cols);
  const int64_t K = W.cols, nb = W.rows / kRows;
  PackedMatrix out;
  out.data.resize(size_t(W.rows * K * 2));
  const auto* src = static_cast<const uint16_t*>(W.data);
  auto* dst = reinterpret_cast<uint16_t*>(out.data.data());
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t l = 0; l < kRows; ++l) dst[(b * K + k) * kRows + l] = src[(b * kRows + l) * K + k];
  out.m = W;
  out.m.layout = MatrixLayout::Rows16;
  out.m.data = out.data.data();
  return out;
}

void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint16_t* out) {
  const int64_t K = P.cols;
  const auto* src = static_cast<const uint16_t*>(P.data);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t k = 0; k < K; ++k) out[(r - r0) * K + k] = src[(r / kRows * K + k) * kRows + r % kRows];
}

void packed_matmul(const Matrix& P, const float* x, int64_t N, float* y) {
  if (P.layout != MatrixLayout::Rows16 || P.dtype != DType::F16)
    fail("f16p::packed_matmul: the matrix is not a packed fp16 matrix");
  const int64_t K = P.cols, M = P.rows, nb = M / kRows;
  const auto* W = static_cast<const uint16_t*>(P.data);
  if (N <= kTokensPerPass) {
    // Decode: the threads split the row blocks; each reads its blocks once, for every token, all inputs.
    par::static_ranges(nb, [&](int64_t b0, int64_t b1) {
      blocks(int(N), W, K, b0, b1, 0, K, x, K, y, M, false, true);
    });
    return;
  }
  // Prefill: tiles of kTileBlocks row blocks × kChunkInputs inputs, read from memory once (the first group
  // of tokens, with prefetch) and from L2 by the groups after it.
  const int64_t ntiles = (nb + kTileBlocks - 1) / kTileBlocks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < ntiles; ++i) {
    const int64_t b0 = i * kTileBlocks, b1 = std::min(nb, b0 + kTileBlocks);
    for (int64_t k0 = 0; k0 < K; k0 += kChunkInputs) {
      const int64_t k1 = std::min(K, k0 + kChunkInputs);
      for (int64_t t0 = 0; t0 < N; t0 += kTokensPerPass) {
        const int n = int(std::min<int64_t>(kTokensPerPass, N - t0));
        blocks(n, W, K, b0, b1, k0, k1, x + t0 * K, K, y + t0 * M, M, k0 > 0, t0 == 0);
      }
    }
  }
}

}  // namespace glmlab::f16p
