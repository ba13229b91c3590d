// AVX2 GEMV for row-major bf16 / fp16 weights with fp32 activations (see avx2_gemv16.h). A row is read
// in chunks of 16 weights (32 bytes), each widened into two ymm registers: bf16 as (even inputs, odd
// inputs) — a 32-bit lane holds inputs 2j (low half) and 2j + 1 (high half), so a left shift by 16 gives
// the even one as fp32 and masking the low half the odd one — and fp16 as (inputs 0–7, inputs 8–15).
// pack_acts orders each 16 activations the same way; a row's last K mod 16 inputs stay in order and are
// summed in scalar code.
#include "kernels/cpu/avx2_gemv16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/isa.h"

namespace glmlab::avx2w16 {

namespace {

constexpr int64_t kChunk = 16;        // weights per 32-byte load
constexpr int64_t kPrefetch = 4096;       // bytes ahead on each row's stream (rows longer than 2 KB)
// One token, rows from 4 parts (see rows): bytes ahead on each part's stream. 2 Zen 3 cores, session 25
// (glmlab_kernel_bench BM_DecodeBatch N:1 bits:16, 4 rounds alternating): 512 B 6.6–7.1 ms on
// 27392 × 4096 bf16 against 8.0–8.6 at 4096 B, 3.3–3.7 against 3.8–4.2 on 4096 × 13696; 1 KB between.
constexpr int64_t kPartsPrefetch = 512;
constexpr int64_t kShortRowBytes = 2048;  // rows up to this long: a block's rows prefetched as one stream
constexpr int64_t kShortPrefetch = 2048;  // bytes ahead on that one stream
constexpr int kTokensPerPass = 4;     // at most 4 tokens share a pass over a row
constexpr int64_t kBlockBytes = 128 << 10;  // a block of rows a group of tokens passes over stays in L2 (≥ 15 rows)

// Floats from one token's packed activations to the next: whole 64-byte lines, plus one line so that
// the tokens' streams do not all fall into the same L1 sets (a K of 4096 floats is 16 KiB).
constexpr int64_t acts_stride(int64_t K) { return (K + 15) / 16 * 16 + 16; }

// Rows side by side for NT tokens: 4 at one token (memory-bound), else enough (row, token) accumulators
// that FMAs are not waiting on their own latency — 5 rows at 2 tokens, 3 at 3–4 (10–12 accumulators,
// with one row's two weight vectors within AVX2's 16 registers). Against 2 rows at 2–4 tokens (4–8
// accumulators; 2 Zen 2 cores, fp16, ms per matmul): 27392 × 4096 at 8 tokens 15.6 → 13.6, at 16 30.1 →
// 25.4; 4096 × 13696 at 8 8.3 → 6.8; bf16 gained little (15.9 → 15.5 at 8 tokens).
constexpr int rows_for(int nt) { return nt == 1 ? 4 : nt == 2 ? 5 : 3; }

template <bool kBf16>
GLMLAB_AVX2 inline __attribute__((always_inline)) void widen(const uint16_t* p, __m256& a, __m256& b) {
  if constexpr (kBf16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    a = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    b = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int32_t(0xFFFF0000u))));
  } else {
    a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
}

template <bool kBf16>
GLMLAB_AVX2 inline float scalar(uint16_t h) {
  if constexpr (kBf16) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  } else {
    return _cvtsh_ss(h);
  }
}

// Chunk c of NR rows (w: the first row, rs weights apart) against NT tokens (xp: the first token, xs
// apart). Each row and token has one accumulator and takes the chunk's two halves in the same order
// whatever NR and NT: acc = fma(second half, fma(first half, acc)). So a row's result is the same bit for
// bit whatever the number of tokens, the rows beside it or the threads' split of the rows (a sequence's
// output does not depend on the batch it runs in). Rows outer: a row's weights widened once, each
// activation load an FMA operand.
template <int NR, int NT, bool kBf16>
GLMLAB_AVX2 inline __attribute__((always_inline)) void chunk(const uint16_t* w, int64_t rs, const float* xp, int64_t xs,
                                                             int64_t c, __m256 (&acc)[NR][NT]) {
  const int64_t i = kChunk * c;
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    __m256 wa, wb;
    widen<kBf16>(w + r * rs + i, wa, wb);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)
      acc[r][t] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xp + t * xs + i + 8),
                                  _mm256_fmadd_ps(wa, _mm256_loadu_ps(xp + t * xs + i), acc[r][t]));
  }
}

// out[r·NT + t] = the lanes of acc[r][t] summed, plus the row's last K mod 16 products in order.
template <int NR, int NT, bool kBf16>
GLMLAB_AVX2 inline void finish(const uint16_t* w, int64_t rs, int64_t K, const float* xp, int64_t xs,
                               __m256 (&acc)[NR][NT], float* out) {
  const int64_t full = K / kChunk * kChunk;
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) {
      float s = isa::hsum(acc[r][t]);
      for (int64_t j = full; j < K; ++j) s += scalar<kBf16>(w[r * rs + j]) * xp[t * xs + j];
      out[r * NT + t] = s;
    }
}

// out[r·NT + t] = row r of the NR rows at w (rs weights apart) against token t.
// Software prefetch, one line of each row a step:
// - kParts (one token, rows from NR contiguous parts of a thread's rows, see rows): each row is its own
//   long sequential stream, prefetched kPartsPrefetch bytes ahead along itself (into its part's next row past
//   the end of this one).
// - Adjacent rows (rs = K) of up to 2 KB: the block's NR rows are one short contiguous range, prefetched
//   as one stream kShortPrefetch bytes ahead of where its reading has got to.
// - Longer adjacent rows: row r of the block is one of NR streams that goes on with row r + NR of the next
//   block (threads read their rows in order, NR at a time); each is prefetched kPrefetch bytes ahead along
//   that path, into the row it reads next once the distance runs past the end of its row. (2 Zen 2 cores,
//   one token: 65024 × 512 fp16 2.7 ms as one stream, 3.6–3.9 as 4; 4096 × 13696 bf16 3.1 ms as 4
//   streams, 3.8 as one.)
template <int NR, int NT, bool kBf16, bool kParts>
GLMLAB_AVX2 void block(const uint16_t* w, int64_t rs, int64_t K, const float* xp, int64_t xs, float* out) {
  const int64_t nc = K / kChunk;
  __m256 acc[NR][NT];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
  const int64_t row_bytes = 2 * K;
  const bool one_stream = !kParts && row_bytes <= kShortRowBytes;
  const int64_t spacing = kParts ? 2 * rs : one_stream ? 64 : row_bytes;  // between the NR lines a step prefetches
  const char* pf = reinterpret_cast<const char*>(w);
  int64_t po = 0;  // long adjacent rows: the prefetch's offset in its row
  if (kParts) {
    pf += kPartsPrefetch;
  } else if (one_stream) {
    pf += kShortPrefetch;
  } else {
    pf += kPrefetch / row_bytes * NR * row_bytes + kPrefetch % row_bytes;
    po = kPrefetch % row_bytes;
  }
  int64_t c = 0;
  for (; c + 2 <= nc; c += 2) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) _mm_prefetch(pf + r * spacing, _MM_HINT_T0);
    if (one_stream) {
      pf += 64 * NR;
    } else {
      pf += 64;
      if (!kParts && (po += 64) >= row_bytes) po -= row_bytes, pf += (NR - 1) * row_bytes;
    }
    chunk<NR, NT, kBf16>(w, rs, xp, xs, c, acc);
    chunk<NR, NT, kBf16>(w, rs, xp, xs, c + 1, acc);
  }
  if (c < nc) chunk<NR, NT, kBf16>(w, rs, xp, xs, c, acc);
  finish<NR, NT, kBf16>(w, rs, K, xp, xs, acc, out);
}

// Rows [r0, r1) against NT tokens, NR rows a pass: adjacent ones, or at one token one from each of NR
// contiguous parts of the range.
template <int NT, bool kBf16>
GLMLAB_AVX2 void rows(const uint16_t* W, int64_t K, int64_t r0, int64_t r1, const float* xp, float* y, int64_t ys) {
  const int64_t xs = acts_stride(K);
  constexpr int NR = rows_for(NT);
  float out[NR * NT];
  int64_t r = r0;
  if constexpr (NT == 1) {
    // One token: the NR rows of a pass from NR contiguous parts of [r0, r1), so that each stream runs
    // over a whole part rather than jumping NR rows at a time (2 Zen 2 cores, session 13: 6B bf16 decode
    // at batch 1 +8%, random:small's decode, mostly its 65024 × 512 fp16 output layer, +11–35%).
    const int64_t part = (r1 - r0) / NR;
    for (int64_t j = 0; j < part; ++j) {
      block<NR, 1, kBf16, true>(W + (r0 + j) * K, part * K, K, xp, xs, out);
      for (int q = 0; q < NR; ++q) y[r0 + q * part + j] = out[q];
    }
    r = r0 + NR * part;
  }
  for (; r + NR <= r1; r += NR) {
    block<NR, NT, kBf16, false>(W + r * K, K, K, xp, xs, out);
    for (int i = 0; i < NR; ++i)
      for (int t = 0; t < NT; ++t) y[t * ys + r + i] = out[i * NT + t];
  }
  for (; r < r1; ++r) {
    block<1, NT, kBf16, false>(W + r * K, K, K, xp, xs, out);
    for (int t = 0; t < NT; ++t) y[t * ys + r] = out[t];
  }
}

template <bool kBf16>
void rows_n(const uint16_t* W, int64_t K, int64_t r0, int64_t r1, const float* xp, int nt, float* y, int64_t ys) {
  switch (nt) {
    case 1: rows<1, kBf16>(W, K, r0, r1, xp, y, ys); break;
    case 2: rows<2, kBf16>(W, K, r0, r1, xp, y, ys); break;
    case 3: rows<3, kBf16>(W, K, r0, r1, xp, y, ys); break;
    default: rows<4, kBf16>(W, K, r0, r1, xp, y, ys); break;
  }
}

template <bool kBf16>
void gemv_t(const uint16_t* W, int64_t K, int64_t r0, int64_t r1, const float* xp, int nt, float* y, int64_t ys) {
  if (nt <= kTokensPerPass) return rows_n<kBf16>(W, K, r0, r1, xp, nt, y, ys);
  // Tokens in near-equal groups of at most 4 (5 = 3 + 2, not 4 + 1), each over a block of rows while
  // the block is in L2: a multiple of 15 rows, whole passes of 5 and of 3.
  const int groups = (nt + kTokensPerPass - 1) / kTokensPerPass;
  const int64_t block_rows = std::clamp<int64_t>(kBlockBytes / (2 * K) / 15 * 15, 15, 60);
  for (int64_t rb = r0; rb < r1; rb += block_rows) {
    const int64_t re = std::min(r1, rb + block_rows);
    for (int g = 0; g < groups; ++g) {
      const int t0 = g * nt / groups, t1 = (g + 1) * nt / groups;
      rows_n<kBf16>(W, K, rb, re, xp + t0 * acts_stride(K), t1 - t0, y + t0 * ys, ys);
    }
  }
}

}  // namespace

bool available() { return isa::avx2(); }

bool preferred() { return available() && !__builtin_cpu_supports("avx512f"); }

bool fits(const Matrix& W) {
  return W.layout == MatrixLayout::RowMajor && (W.dtype == DType::BF16 || W.dtype == DType::F16) && W.cols > 0;
}

const float* pack_acts(const Matrix& W, const float* x, int nt, int64_t xs, std::vector<float>& out) {
  const int64_t K = W.cols, full = K / kChunk * kChunk, ps = acts_stride(K);
  out.resize(size_t(nt * ps + 16));
  // The first token at a 64-byte boundary: every activation load is then within one cache line.
  float* base = out.data();
  base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64 / sizeof(float);
  for (int t = 0; t < nt; ++t) {
    const float* s = x + t * xs;
    float* d = base + t * ps;
    if (W.dtype == DType::BF16) {
      for (int64_t i = 0; i < full; i += kChunk)
        for (int j = 0; j < 8; ++j) d[i + j] = s[i + 2 * j], d[i + 8 + j] = s[i + 2 * j + 1];
      std::copy(s + full, s + K, d + full);
    } else {
      std::copy(s, s + K, d);
    }
  }
  return base;
}

void gemv(const Matrix& W, int64_t r0, int64_t r1, const float* xp, int nt, float* y, int64_t ys) {
  const auto* w = static_cast<const uint16_t*>(W.data);
  if (W.dtype == DType::BF16)
    gemv_t<true>(w, W.cols, r0, r1, xp, nt, y, ys);
  else
    gemv_t<false>(w, W.cols, r0, r1, xp, nt, y, ys);
}

}  // namespace glmlab::avx2w16
