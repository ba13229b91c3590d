// AVX2 int4 GEMM on int8 activations (see avx2_qgemm.h). A weight row is read in 64-byte chunks of 128
// inputs, as the GEMV reads it (avx2_qgemv.cpp): each 32-byte half holds 8 int32 lanes of 8 inputs, lane l
// of a chunk summing inputs 8l..8l+7 (even inputs against the high nibbles); 4 lanes make a 32-input block
// of activations under one activation scale.
#include "kernels/cpu/avx2_qgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/isa.h"
#include "util/error.h"

namespace glmlab::avx2q {

namespace {

constexpr int64_t kChunk = 128;        // inputs per 64-byte chunk
constexpr int kTokensPerPass = 4;      // one accumulator per token, two rows folded into it
constexpr int64_t kBlockRows = 64;     // rows set up together; their slice of weights (128 KB) stays in L2
constexpr int64_t kSliceChunks = 32;   // 4096 inputs: 4 tokens' slice of activations (20 KB) stays in L1
constexpr int64_t kTokenBlock = 64;    // tokens whose partial sums wait in memory between slices (64 KB)
// Where block b of a chunk lands in the folded vector (row 0; row 1 one place after).
constexpr int kBlockSlot[4] = {0, 4, 2, 6};

// A thread's buffers: the block's rows' group scales in fp32 and zero-padded last chunks, the pairs'
// folded weight scales, the partial sums of a token block.
struct Scratch {
  std::vector<float> sf, wsv, acc;
  std::vector<uint8_t> last;
};

// The folded weight scales of a row pair for every chunk: wsv[8c + kBlockSlot[b] + j] = row j's scale of
// the group holding block b of chunk c (sa, sb: the two rows' group scales in fp32).
void pair_scales(const float* sa, const float* sb, int64_t chunks, int64_t ng, int64_t G, float* wsv) {
  for (int64_t c = 0; c < chunks; ++c)
    for (int b = 0; b < 4; ++b) {
      const int64_t g = ng == 1 ? 0 : std::min(ng - 1, (c * kChunk + 32 * b) / G);
      wsv[8 * c + kBlockSlot[b]] = sa[g];
      wsv[8 * c + kBlockSlot[b] + 1] = sb[g];
    }
}

// The 8 exact lane sums of one half chunk of a row (hi, lo: its nibbles + 8) against one token's even and
// odd activations of that half: Σ (q + 8)·x per lane.
GLMLAB_AVX2 inline __m256i half_sums(__m256i hi, __m256i lo, __m256i xe, __m256i xo, __m256i ones) {
  return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(hi, xe), _mm256_maddubs_epi16(lo, xo)), ones);
}

// A 32-byte half of a Q4 row as its two nibble vectors + 8 (u8 operands of VPMADDUBSW).
GLMLAB_AVX2 inline void nibbles(const uint8_t* p, __m256i& hi, __m256i& lo) {
  const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi8(char(0x88)));
  const __m256i m0f = _mm256_set1_epi8(0x0F);
  hi = _mm256_and_si256(_mm256_srli_epi16(u, 4), m0f);
  lo = _mm256_and_si256(u, m0f);
}

// Rows pa, pb (their last chunk, chunks - 1, replaced by the zero-padded copies la, lb) against NT tokens
// over chunks [c0, c1): acc[t] += folded lane sums × (activation scales × weight scales), per chunk.
template <int NT>
GLMLAB_AVX2 void pair_pass(const uint8_t* pa, const uint8_t* pb, const uint8_t* la, const uint8_t* lb, int64_t c0,
                           int64_t c1, int64_t chunks, const float* wsv, const uint8_t* const* xq, const float* const* s8,
                           int64_t odd, __m256 (&acc)[NT]) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t c = c0; c < c1; ++c) {
    const uint8_t* a = c + 1 < chunks ? pa + 64 * c : la;
    const uint8_t* b = c + 1 < chunks ? pb + 64 * c : lb;
    __m256i a0h, a0l, a1h, a1l, b0h, b0l, b1h, b1l;
    nibbles(a, a0h, a0l), nibbles(a + 32, a1h, a1l);
    nibbles(b, b0h, b0l), nibbles(b + 32, b1h, b1l);
    const __m256 ws = _mm256_loadu_ps(wsv + 8 * c);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const uint8_t* x = xq[t] + 64 * c;
      const __m256i xe0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
      const __m256i xo0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + odd));
      const __m256i xe1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
      const __m256i xo1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 + odd));
      const __m256i h0 = _mm256_hadd_epi32(half_sums(a0h, a0l, xe0, xo0, ones), half_sums(b0h, b0l, xe0, xo0, ones));
      const __m256i h1 = _mm256_hadd_epi32(half_sums(a1h, a1l, xe1, xo1, ones), half_sums(b1h, b1l, xe1, xo1, ones));
      const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(s8[t] + 8 * c), ws);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(h0, h1)), s, acc[t]);
    }
  }
}

// The two rows' sums of a folded accumulator (row 0 in the even lanes), in a fixed order.
GLMLAB_AVX2 inline void unfold(__m256 acc, float& s0, float& s1) {
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  s0 = _mm_cvtss_f32(v);
  s1 = _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1));
}

// A row pair of a block: its bytes, zero-padded last chunks and folded weight scales.
struct Pair {
  const uint8_t* p[2];
  const uint8_t* last[2];
  const float* wsv;
};

// One slice [c0, c1) of a pair against NT tokens from t0; acc: the pair's NT partial sums, carried between
// slices in memory (start from 0 when first).
template <int NT>
GLMLAB_AVX2 void pair_slice(const Pair& q, int64_t c0, int64_t c1, int64_t chunks, const vnni::QuantizedActs& a,
                            const float* s8all, int64_t t0, bool first, float* accm) {
  const int64_t qs = a.lanes * 8, odd = a.lanes * 4, ss = chunks * 8;
  const uint8_t* xq[NT];
  const float* s8[NT];
  for (int t = 0; t < NT; ++t) xq[t] = a.q.data() + (t0 + t) * qs, s8[t] = s8all + (t0 + t) * ss;
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(accm + 8 * t);
  pair_pass<NT>(q.p[0], q.p[1], q.last[0], q.last[1], c0, c1, chunks, q.wsv, xq, s8, odd, acc);
  for (int t = 0; t < NT; ++t) _mm256_storeu_ps(accm + 8 * t, acc[t]);
}

// Rows [r0, r1) in blocks of kBlockRows, each: its pairs set up once; then tokens in blocks of kTokenBlock,
// each block's inputs in slices of kSliceChunks, each slice's tokens in passes of 4 over every pair (the
// 4 tokens' slice of activations stays in L1, the block's slice of weights in L2), partial sums in
// memory between slices; at the end of a token block the sums, less Q4's offsets, go to y.
GLMLAB_AVX2 void gemm_avx2(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, const float* s8,
                           const float* off, float* y, int64_t ys, Scratch& sc) {
  const int64_t rb = a.units, chunks = a.lanes / 16, ng = W.groups(), G = W.group_size;
  const uint8_t* base = static_cast<const uint8_t*>(W.data);
  for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, r1 - b0), np = (rows + 1) / 2;
    Pair pairs[kBlockRows / 2];
    for (int64_t i = 0; i < rows; ++i) {
      isa::f16_to_f32(W.scales + (b0 + i) * ng, ng, sc.sf.data() + i * ng);
      uint8_t* l = sc.last.data() + 64 * i;
      std::memset(l, 0, 64);
      std::memcpy(l, base + (b0 + i) * rb + (chunks - 1) * 64, size_t(rb - (chunks - 1) * 64));
    }
    for (int64_t j = 0; j < np; ++j) {
      const int64_t i0 = 2 * j, i1 = std::min(i0 + 1, rows - 1);  // a lone last row pairs with itself
      float* wsv = sc.wsv.data() + j * chunks * 8;
      pair_scales(sc.sf.data() + i0 * ng, sc.sf.data() + i1 * ng, chunks, ng, G, wsv);
      pairs[j] = Pair{{base + (b0 + i0) * rb, base + (b0 + i1) * rb}, {sc.last.data() + 64 * i0, sc.last.data() + 64 * i1}, wsv};
    }
    for (int64_t t0 = 0; t0 < a.nt; t0 += kTokenBlock) {
      const int64_t t1 = std::min<int64_t>(a.nt, t0 + kTokenBlock);
      // The partial sums of pair j for the pass of 4 tokens from t.
      auto accm_of = [&](int64_t t, int64_t j) {
        return sc.acc.data() + (((t - t0) / kTokensPerPass) * np + j) * kTokensPerPass * 8;
      };
      for (int64_t c0 = 0; c0 < chunks; c0 += kSliceChunks) {
        const int64_t c1 = std::min(chunks, c0 + kSliceChunks);
        for (int64_t t = t0; t < t1; t += kTokensPerPass) {
          const int n = int(std::min<int64_t>(kTokensPerPass, t1 - t));
          for (int64_t j = 0; j < np; ++j) {
            float* accm = accm_of(t, j);
            switch (n) {
              case 1: pair_slice<1>(pairs[j], c0, c1, chunks, a, s8, t, c0 == 0, accm); break;
              case 2: pair_slice<2>(pairs[j], c0, c1, chunks, a, s8, t, c0 == 0, accm); break;
              case 3: pair_slice<3>(pairs[j], c0, c1, chunks, a, s8, t, c0 == 0, accm); break;
              default: pair_slice<4>(pairs[j], c0, c1, chunks, a, s8, t, c0 == 0, accm); break;
            }
          }
        }
      }
      for (int64_t t = t0; t < t1; t += kTokensPerPass)
        for (int64_t j = 0; j < np; ++j) {
          const float* accm = accm_of(t, j);
          const int64_t i0 = 2 * j, i1 = std::min(i0 + 1, rows - 1);
          for (int64_t k = 0; k < std::min<int64_t>(kTokensPerPass, t1 - t); ++k) {
            float s0, s1;
            unfold(_mm256_loadu_ps(accm + 8 * k), s0, s1);
            const float* o = off + (t + k) * ng;
            y[(t + k) * ys + b0 + i0] = s0 - isa::dot(sc.sf.data() + i0 * ng, o, ng);
            if (i1 != i0) y[(t + k) * ys + b0 + i1] = s1 - isa::dot(sc.sf.data() + i1 * ng, o, ng);
          }
        }
    }
  }
}

}  // namespace

bool gemm_fits(const Matrix& W) {
  return W.dtype == DType::Q4 && W.layout == MatrixLayout::RowMajor && vnni::fits(W) &&
         (W.groups() == 1 || W.group_size % 32 == 0);
}

void gemm_scales(const vnni::QuantizedActs& a, std::vector<float>& s8) {
  const int64_t chunks = a.lanes / 16;
  s8.resize(size_t(a.nt * chunks * 8));
  for (int t = 0; t < a.nt; ++t)
    for (int64_t c = 0; c < chunks; ++c) {
      const float* s = a.scale.data() + t * a.lanes + 16 * c;  // lane 16c + 4b holds block b's scale
      float* d = s8.data() + (t * chunks + c) * 8;
      for (int b = 0; b < 4; ++b) d[kBlockSlot[b]] = d[kBlockSlot[b] + 1] = s[4 * b];
    }
}

void gemm_q4(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, const float* s8, float* y,
             int64_t ys) {
  if (!gemm_fits(W) || a.wtype != DType::Q4 || a.units != W.row_bytes())
    fail("avx2q::gemm_q4: needs a row-major Q4 matrix with groups of 32 inputs or more and its own int4 activations");
  if (a.goff_group != W.group_size) fail("avx2q::gemm_q4: the activations' offsets are not prepared for W (avx2q::prepare)");
  if (r0 >= r1 || a.nt == 0) return;
  thread_local Scratch sc;  // sized here, outside the AVX2 code (isa.h)
  const int64_t chunks = a.lanes / 16;
  sc.sf.resize(size_t(kBlockRows * W.groups()));
  sc.wsv.resize(size_t(kBlockRows / 2 * chunks * 8));
  sc.acc.resize(size_t(kTokenBlock / kTokensPerPass * kBlockRows / 2 * kTokensPerPass * 8));
  sc.last.resize(size_t(kBlockRows * 64));
  gemm_avx2(W, r0, r1, a, s8, a.goff.data(), y, ys, sc);
}

}  // namespace glmlab::avx2q
