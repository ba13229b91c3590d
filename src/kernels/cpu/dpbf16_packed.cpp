// Packed-layout AVX512-BF16 products (see dpbf16_packed.h). Compiled for AVX512-F/BW/VL/BF16 by a target
// region below; nothing here runs unless packable() said yes, which asks dpbf16::available().
//
// Word (b, q, l) of the packed data is the bf16 pair (W[16b + l][2q], W[16b + l][2q + 1]). One 64-byte
// load at (b, q) is 16 lanes of pairs; VDPBF16PS against the token's pair (x[2q], x[2q + 1]) broadcast
// to all lanes adds W[r][2q]·x[2q] + W[r][2q + 1]·x[2q + 1] to lane r: the accumulator of (block, token)
// ends as 16 consecutive outputs of that token.
#include "kernels/cpu/dpbf16_packed.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"
#include "util/dtype.h"
#include "util/error.h"

#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on _mm512_set1_* under a target region
#endif

// AVX-512 code for this file's own functions only (kernels/cpu/isa.h says why).
GLMLAB_TARGET_BEGIN(GLMLAB_AVX512BF16_FEATURES)

namespace glmlab::dpbf16 {

namespace {

constexpr int64_t kRows = 16;          // rows interleaved in a block (fp32 lanes of a zmm)
constexpr int kTokensPerPass = 8;
constexpr int64_t kChunkPairs = 1024;  // input pairs of a prefill tile (2048 inputs)
constexpr int64_t kTileBlocks = 6;     // row blocks of a prefill tile: 96 rows × 2048 inputs = 384 KB (L2)
#ifndef GLMLAB_BF16_PACKED_PREFETCH
#define GLMLAB_BF16_PACKED_PREFETCH 2048
#endif
constexpr int64_t kPrefetch = GLMLAB_BF16_PACKED_PREFETCH;  // bytes ahead along each block's stream

// Row blocks [b, b + RB) × pairs [q0, q1) against NT tokens; y holds 16 outputs per block and token at
// y + t·ys + 16·r. `add`: onto what y holds (a later chunk of the inputs), else stored.
template <int RB, int NT>
inline void tile(const uint32_t* const* w, int64_t q0, int64_t q1, const uint32_t* x, int64_t xs, float* const* y,
                 int64_t ys, bool add, bool prefetch) {
  __m512 acc[RB][NT];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t q = q0; q < q1; ++q) {
    __m512bh wv[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const uint32_t* p = w[r] + q * kRows;
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      wv[r] = (__m512bh)_mm512_loadu_si512(p);
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(int(x[t * xs + q]));
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xb);
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

// The same products on fp32 FMAs: each 64-byte load's pairs widened exactly (the even input is the low
// half of a word, shifted up; the odd one the high half, masked), times the tokens' inputs as fp32 (the
// same bf16-rounded values), so every product is exact as in VDPBF16PS and only the summation order differs.
// For 5-8 tokens on AMX CPUs (Sapphire Rapids and later), where VDPBF16PS zmm issues one every 2 cycles:
// 24 of them per 3 weight lines held 8 tokens to 22 GB/s there, while 2 FMA ports do the same products
// at the memory's rate (as the fp16 kernel does).
template <int RB, int NT>
inline void tile_fma(const uint32_t* const* w, int64_t q0, int64_t q1, const float* x, int64_t xs, float* const* y,
                     int64_t ys, bool add, bool prefetch) {
  __m512 acc[RB][NT];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
  for (int64_t q = q0; q < q1; ++q) {
    __m512 we[RB], wo[RB];
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const uint32_t* p = w[r] + q * kRows;
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(p);
      we[r] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      wo[r] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512 xe = _mm512_set1_ps(x[t * xs + 2 * q]), xo = _mm512_set1_ps(x[t * xs + 2 * q + 1]);
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) acc[r][t] = _mm512_fmadd_ps(wo[r], xo, _mm512_fmadd_ps(we[r], xe, acc[r][t]));
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

// Row blocks [b0, b1) × pairs [q0, q1) against NT tokens: RB blocks side by side (RB weight streams).
// 3 × 8 accumulators + 3 weights + 1 broadcast fill 28 of the 32 registers; on FMAs (kFma: x the fp32
// activations, xs floats a token) 2 × 8 + 2 × 2 weights + 2 broadcasts.
template <int NT, bool kFma = false, typename X = uint32_t>
void blocks_nt(const uint32_t* P, int64_t pairs, int64_t b0, int64_t b1, int64_t q0, int64_t q1,
               const X* x, int64_t xs, float* y, int64_t ys, bool add, bool prefetch) {
  constexpr int RB = kFma ? 2 : NT <= 4 ? 4 : 3;
  const int64_t bs = pairs * kRows;
  auto run = [&]<int R>(const uint32_t* const* w, float* const* o) {
    if constexpr (kFma)
      tile_fma<R, NT>(w, q0, q1, x, xs, o, ys, add, prefetch);
    else
      tile<R, NT>(w, q0, q1, x, xs, o, ys, add, prefetch);
  };
  // The RB blocks of a tile come from RB equal parts of [b0, b1), each part read block after block: every
  // part is one long sequential stream (its prefetch runs on into the block it reads next), where RB
  // neighbouring blocks would restart all RB streams at every tile: with short rows (random:small's 512
  // inputs) its bf16 model generated 792 tokens/s that way and 923 this way. Blocks left over go one by one.
  const int64_t part = (b1 - b0) / RB;
  for (int64_t j = 0; j < part; ++j) {
    const uint32_t* w[RB];
    float* o[RB];
    for (int r = 0; r < RB; ++r) {
      w[r] = P + (b0 + r * part + j) * bs;
      o[r] = y + (b0 + r * part + j) * kRows;
    }
    run.template operator()<RB>(w, o);
  }
  for (int64_t b = b0 + RB * part; b < b1; ++b) {
    const uint32_t* w[1] = {P + b * bs};
    float* o[1] = {y + b * kRows};
    run.template operator()<1>(w, o);
  }
}

void blocks(int nt, const uint32_t* P, int64_t pairs, int64_t b0, int64_t b1, int64_t q0, int64_t q1,
            const uint32_t* x, int64_t xs, float* y, int64_t ys, bool add, bool prefetch) {
  switch (nt) {
    case 1: blocks_nt<1>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 2: blocks_nt<2>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 3: blocks_nt<3>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 4: blocks_nt<4>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 5: blocks_nt<5>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 6: blocks_nt<6>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    case 7: blocks_nt<7>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
    default: blocks_nt<8>(P, pairs, b0, b1, q0, q1, x, xs, y, ys, add, prefetch); break;
  }
}

}  // namespace

GLMLAB_TARGET_END
// Called on every CPU before available() is known to hold: plain x86-64.
bool packable(const Matrix& W) {
  return W.dtype == DType::BF16 && W.layout == MatrixLayout::RowMajor && W.rows > 0 && W.rows % kRows == 0 &&
         W.cols > 0 && W.cols % 32 == 0 && available();
}
GLMLAB_TARGET_BEGIN(GLMLAB_AVX512BF16_FEATURES)

PackedMatrix pack(const Matrix& W) {
  if (!packable(W)) fail("dpbf16::pack: a {} {}x{} matrix cannot be packed", dtype_name(W.dtype), W.rows, W.cols);
  const int64_t pairs = W.cols / 2, nb = W.rows / kRows;
  PackedMatrix out;
  out.data.resize(size_t(W.rows * W.cols * 2));
  const auto* src = static_cast<const uint32_t*>(W.data);  // a row's pairs as words
  auto* dst = reinterpret_cast<uint32_t*>(out.data.data());
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t q = 0; q < pairs; ++q)
      for (int64_t l = 0; l < kRows; ++l) dst[(b * pairs + q) * kRows + l] = src[(b * kRows + l) * pairs + q];
  out.m = W;
  out.m.layout = MatrixLayout::Pairs16;
  out.m.data = out.data.data();
  return out;
}

void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint16_t* out) {
  const int64_t pairs = P.cols / 2;
  const auto* src = static_cast<const uint32_t*>(P.data);
  auto* dst = reinterpret_cast<uint32_t*>(out);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t q = 0; q < pairs; ++q) dst[(r - r0) * pairs + q] = src[(r / kRows * pairs + q) * kRows + r % kRows];
}

namespace {
constexpr int64_t kFmaMinTokens = 5;
// Decodes of 5-8 tokens on FMAs (tile_fma) where VDPBF16PS is the slower unit: the AMX CPUs.
bool fma_for_batches() {
  static const bool yes = amx::available();
  return yes;
}
}  // namespace

void packed_matmul(const Matrix& P, const float* x, int64_t N, float* y, Bf16Acts& acts) {
  if (P.layout != MatrixLayout::Pairs16 || P.dtype != DType::BF16)
    fail("dpbf16::packed_matmul: the matrix is not a packed bf16 matrix");
  const int64_t K = P.cols, M = P.rows, pairs = K / 2, nb = M / kRows;
  pack_acts(x, int(N), K, K, acts);
  const auto* W = static_cast<const uint32_t*>(P.data);
  const auto* xw = reinterpret_cast<const uint32_t*>(acts.x.data());
  if (N >= kFmaMinTokens && N <= kTokensPerPass && fma_for_batches()) {
    acts.xf.resize(size_t(N * K));
    for (size_t i = 0; i < acts.xf.size(); ++i) acts.xf[i] = bf16_to_f32(acts.x[i]);
    const float* xf = acts.xf.data();
    par::static_ranges(nb, [&](int64_t b0, int64_t b1) {
      switch (N) {
        case 5: blocks_nt<5, true>(W, pairs, b0, b1, 0, pairs, xf, K, y, M, false, true); break;
        case 6: blocks_nt<6, true>(W, pairs, b0, b1, 0, pairs, xf, K, y, M, false, true); break;
        case 7: blocks_nt<7, true>(W, pairs, b0, b1, 0, pairs, xf, K, y, M, false, true); break;
        default: blocks_nt<8, true>(W, pairs, b0, b1, 0, pairs, xf, K, y, M, false, true); break;
      }
    });
    return;
  }
  if (N <= kTokensPerPass) {
    // Decode: the threads split the row blocks; each reads its blocks once, for every token, all inputs.
    par::static_ranges(nb, [&](int64_t b0, int64_t b1) {
      blocks(int(N), W, pairs, b0, b1, 0, pairs, xw, pairs, y, M, false, true);
    });
    return;
  }
  // Prefill: tiles of kTileBlocks row blocks × kChunkPairs pairs, each read from memory once (the first
  // group of tokens, with prefetch) and from L2 by the groups after it; the threads split the tiles' rows.
  const int64_t ntiles = (nb + kTileBlocks - 1) / kTileBlocks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < ntiles; ++i) {
    const int64_t b0 = i * kTileBlocks, b1 = std::min(nb, b0 + kTileBlocks);
    for (int64_t q0 = 0; q0 < pairs; q0 += kChunkPairs) {
      const int64_t q1 = std::min(pairs, q0 + kChunkPairs);
      for (int64_t t0 = 0; t0 < N; t0 += kTokensPerPass) {
        const int n = int(std::min<int64_t>(kTokensPerPass, N - t0));
        blocks(n, W, pairs, b0, b1, q0, q1, xw + t0 * pairs, pairs, y + t0 * M, M, q0 > 0, t0 == 0);
      }
    }
  }
}

}  // namespace glmlab::dpbf16

GLMLAB_TARGET_END
