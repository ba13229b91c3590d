// AVX2 GEMV for row-major Q8 / Q4 weights with int8 activations (see avx2_qgemv.h). A weight row is read
// in 64-byte chunks, the layout of vnni_gemv.cpp's lanes and activations, each as two 32-byte halves of
// 8 int32 lanes: lane l of a chunk sums bytes 4l..4l+3 (Q4: inputs 8l..8l+7, even inputs against the
// high nibbles; Q8: inputs 4l..4l+3).
#include "kernels/cpu/avx2_qgemv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/isa.h"
#include "util/error.h"

namespace glmlab::avx2q {

namespace {

constexpr int64_t kPrefetch = 4096;   // bytes ahead on the weight stream (one stream per thread)
constexpr int kTokensPerPass = 4;     // two ymm accumulators per token (one per half of a chunk)
constexpr int64_t kRowsPerBlock = 4;  // weight rows a group of tokens passes over before the next group
constexpr int kStreams = 4;           // Q8 at one token: rows read side by side from this many parts of the range
                                      // (8, the probe's best pattern on Zen 3, spills the accumulators: 1.4x slower)

// Groups smaller than a chunk (Q8: 32 inputs; Q4: 32 or 64): the weight-group scales of a chunk's two
// halves (8 lanes each), gathered from the row's gpc = CI / G groups in the chunk. (Groups of whole
// chunks, or one per row, need no gather: rows_avx2's kWhole path.)
struct HalfScales {
  const float* sf;
  int64_t gpc = 0;
  __m256i idx0, idx1;
  GLMLAB_AVX2 HalfScales(const float* s, int64_t CI, int64_t IPL, int64_t G) : sf(s), gpc(CI / G) {
    alignas(32) int32_t ix[16];
    for (int l = 0; l < 16; ++l) ix[l] = int32_t(l * IPL / G);
    idx0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ix));
    idx1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ix + 8));
  }
  GLMLAB_AVX2 inline void next(int64_t c, __m256& s0, __m256& s1) const {  // chunk c's scales
    s0 = _mm256_i32gather_ps(sf + c * gpc, idx0, 4);
    s1 = _mm256_i32gather_ps(sf + c * gpc, idx1, 4);
  }
};

// One half (32 bytes) of a chunk against one token: the 8 exact int32 lane sums. Q4: Σ (q + 8)·x per lane
// (the offset 8·Σx is taken off once per row, see q4_offsets); Q8: Σ w·x.
GLMLAB_AVX2 inline __m256i half_q4(__m256i hi, __m256i lo, const uint8_t* xq, int64_t odd, __m256i ones) {
  const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
                                       _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + odd))));
  return _mm256_madd_epi16(s16, ones);
}
GLMLAB_AVX2 inline __m256i half_q8(__m256i wabs, __m256i w, const uint8_t* xq, __m256i ones) {
  // Activations as int8 (quantize_acts with q8_signed): x with w's sign against |w|.
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, w)), ones);
}

// One 64-byte chunk (c: its index in the row, src: its bytes) against NT tokens: each half's 8 exact lane
// sums, converted to fp32, times the activation block scales, added into gacc (kAcc independent
// accumulators per token, so that one token's FMAs do not wait on each other's latency). With kScaled
// the weight group scales of the halves (sw0, sw1) multiply in too; without, the caller multiplies gacc
// by the group's one scale once the group's chunks are in (one FMA per token and group instead of a
// multiplication per token and half).
template <int NT, int kAcc, bool kQ4, bool kScaled>
GLMLAB_AVX2 inline __attribute__((always_inline)) void chunk(const uint8_t* src, int64_t c, const uint8_t* const* xq,
                                                             const float* const* sc, int64_t odd, __m256 sw0, __m256 sw1,
                                                             __m256 (&gacc)[NT][kAcc]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
  __m256i w0a, w0b, w1a, w1b;  // Q4: high and low nibbles + 8; Q8: |w| and w
  if constexpr (kQ4) {
    const __m256i m88 = _mm256_set1_epi8(char(0x88)), m0f = _mm256_set1_epi8(0x0F);
    const __m256i u0 = _mm256_xor_si256(b0, m88), u1 = _mm256_xor_si256(b1, m88);  // q + 8 per nibble
    w0a = _mm256_and_si256(_mm256_srli_epi16(u0, 4), m0f), w0b = _mm256_and_si256(u0, m0f);
    w1a = _mm256_and_si256(_mm256_srli_epi16(u1, 4), m0f), w1b = _mm256_and_si256(u1, m0f);
  } else {
    w0a = _mm256_abs_epi8(b0), w0b = b0, w1a = _mm256_abs_epi8(b1), w1b = b1;
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {  // unrolled, so that the accumulators stay in registers
    const uint8_t* x = xq[t] + 64 * c;
    const float* s = sc[t] + 16 * c;
    __m256i i0, i1;
    if constexpr (kQ4) {
      i0 = half_q4(w0a, w0b, x, odd, ones), i1 = half_q4(w1a, w1b, x + 32, odd, ones);
    } else {
      i0 = half_q8(w0a, w0b, x, ones), i1 = half_q8(w1a, w1b, x + 32, ones);
    }
    __m256 s0 = _mm256_loadu_ps(s), s1 = _mm256_loadu_ps(s + 8);
    if constexpr (kScaled) s0 = _mm256_mul_ps(s0, sw0), s1 = _mm256_mul_ps(s1, sw1);
    gacc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), s0, gacc[t][0]);
    gacc[t][kAcc - 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), s1, gacc[t][kAcc - 1]);
  }
}

// Every accumulator to 0.
template <int NT, int kAcc>
GLMLAB_AVX2 inline __attribute__((always_inline)) void zero(__m256 (&a)[NT][kAcc]) {
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t)
    for (int k = 0; k < kAcc; ++k) a[t][k] = _mm256_setzero_ps();
}

// Row r (rb bytes, chunks 64-byte chunks): its group scales into sf as fp32, and its last chunk's bytes
// into `last` zero-padded (the activations past the row are 0, so is their product). Returns the row.
GLMLAB_AVX2 inline const uint8_t* row_setup(const Matrix& W, int64_t r, int64_t rb, int64_t chunks, float* sf,
                                            uint8_t* last) {
  const uint8_t* p = static_cast<const uint8_t*>(W.data) + r * rb;
  const int64_t ng = W.groups();
  isa::f16_to_f32(W.scales + r * ng, ng, sf);
  std::memset(last, 0, 64);
  std::memcpy(last, p + (chunks - 1) * 64, size_t(rb - (chunks - 1) * 64));
  return p;
}

// Rows [r0, r1) against tokens [t0, t0 + NT). off: Q4's per-token, per-group offsets (q4_offsets).
// (Int4 at one token: reading 4 rows side by side, as 4 streams, measured slower on 2 Zen 2 cores: 3.7 ms
// against 1.8 for 27392 × 4096, with the rows' parts far apart or adjacent alike; session 13: one row at a
// time but the rows visited part by part, 2.84 against 2.08. Session 23, 2 Zen 3 cores, rows_parts for Q4
// with the same bits: 6B int4 decode 9.7-9.9 tokens/s against 10.4-10.9 on one stream, which reads 94-99%
// of `glmlab probe`'s best there. Q8 at one token: rows_parts.)
// kWhole: every chunk lies inside one weight group (groups of whole chunks, or one group per row), so a
// group's chunks accumulate without its scale, which multiplies in once at the group's end.
template <int NT, bool kQ4, bool kWhole>
GLMLAB_AVX2 void rows_avx2(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, float* y,
                           int64_t ys, float* sf, const float* off) {
  constexpr int kAcc = NT <= 2 ? 2 : 1;
  constexpr int64_t CI = kQ4 ? 128 : 64;  // inputs per 64-byte chunk
  const int64_t rb = a.units, chunks = a.lanes / 16, ng = W.groups(), G = W.group_size;
  const int64_t cpg = ng == 1 ? chunks : std::max<int64_t>(1, G / CI);  // kWhole: chunks per group
  const int64_t qs = a.lanes * (kQ4 ? 8 : 4);  // activation bytes per token (Q4: even part, then odd part)
  const int64_t odd = a.lanes * 4;             // Q4: offset of the odd inputs' part
  const uint8_t* xq[NT];
  const float* sc[NT];
  for (int t = 0; t < NT; ++t) xq[t] = a.q.data() + (t0 + t) * qs, sc[t] = a.scale.data() + (t0 + t) * a.lanes;
  alignas(32) uint8_t last[64];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = row_setup(W, r, rb, chunks, sf, last);
    __m256 acc[NT][kAcc];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)
      for (int k = 0; k < kAcc; ++k) acc[t][k] = _mm256_setzero_ps();
    if constexpr (kWhole) {
      const __m256 none = _mm256_setzero_ps();
      if (kQ4 && cpg == 1) {  // int4, a group per chunk: its scale times the activations' instead (Q8 as before)
        for (int64_t c = 0; c + 1 < chunks; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
          const __m256 sw = _mm256_broadcast_ss(sf + c);
          chunk<NT, kAcc, kQ4, true>(p + 64 * c, c, xq, sc, odd, sw, sw, acc);
        }
        const __m256 sw = _mm256_broadcast_ss(sf + chunks - 1);
        chunk<NT, kAcc, kQ4, true>(last, chunks - 1, xq, sc, odd, sw, sw, acc);
      } else {  // groups of several chunks: a group's chunks without scale, then its scale once
        for (int64_t c0 = 0, grp = 0; c0 < chunks; c0 += cpg, ++grp) {
          const int64_t c1 = std::min(chunks, c0 + cpg);
          __m256 gacc[NT][kAcc];
          zero(gacc);
          for (int64_t c = c0; c < c1; ++c) {
            _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
            chunk<NT, kAcc, kQ4, false>(c + 1 < chunks ? p + 64 * c : last, c, xq, sc, odd, none, none, gacc);
          }
          const __m256 sw = _mm256_set1_ps(sf[grp]);
#pragma GCC unroll 4
          for (int t = 0; t < NT; ++t)
            for (int k = 0; k < kAcc; ++k) acc[t][k] = _mm256_fmadd_ps(gacc[t][k], sw, acc[t][k]);
        }
      }
    } else {
      const HalfScales hs(sf, CI, kQ4 ? 8 : 4, G);
      __m256 sw0, sw1;
      for (int64_t c = 0; c + 1 < chunks; ++c) {
        _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
        hs.next(c, sw0, sw1);
        chunk<NT, kAcc, kQ4, true>(p + 64 * c, c, xq, sc, odd, sw0, sw1, acc);
      }
      hs.next(chunks - 1, sw0, sw1);
      chunk<NT, kAcc, kQ4, true>(last, chunks - 1, xq, sc, odd, sw0, sw1, acc);
    }
    for (int t = 0; t < NT; ++t) {
      float sum = isa::hsum(kAcc == 2 ? _mm256_add_ps(acc[t][0], acc[t][kAcc - 1]) : acc[t][0]);
      if constexpr (kQ4) sum -= isa::dot(sf, off + (t0 + t) * ng, ng);  // Q4: Σ_g scale g · offset term g
      y[(t0 + t) * ys + r] = sum;
    }
  }
}

// Q8, one token, groups of whole chunks: NR rows side by side, one from each of NR contiguous parts of
// [r0, r1), so that the weights are read as NR sequential streams (`glmlab probe` on 2 Zen 2 cores: one
// stream a thread ~30 GB/s, 4 streams ~42-50). Each row's arithmetic is rows_avx2<1, false, true>'s, in
// the same order, so its result is the same bit for bit. (Q4 stays one stream: with 2 it took 2.13 ms
// against 2.07 on 27392 × 4096 while it was compute-bound; since session 15's per-chunk group scale it
// reads at one stream's rate, so streams are worth measuring again.)
template <int NR>
GLMLAB_AVX2 void rows_parts(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, float* y,
                            int64_t ys, float* sf) {
  const int64_t rb = a.units, chunks = a.lanes / 16, ng = W.groups(), G = W.group_size;
  const int64_t cpg = ng == 1 ? chunks : std::max<int64_t>(1, G / 64);
  const int64_t part = (r1 - r0) / NR;
  const uint8_t* xq[1] = {a.q.data() + t0 * a.lanes * 4};
  const float* sc[1] = {a.scale.data() + t0 * a.lanes};
  const int64_t sfs = ng + 16;  // sf holds NR rows' scales, sfs apart
  alignas(32) uint8_t last[NR][64];
  const __m256 none = _mm256_setzero_ps();
  for (int64_t j = 0; j < part; ++j) {
    const uint8_t* p[NR];
#pragma GCC unroll 4
    for (int q = 0; q < NR; ++q) {
      const int64_t r = r0 + q * part + j;
      p[q] = row_setup(W, r, rb, chunks, sf + q * sfs, last[q]);
    }
    __m256 acc[NR][1][2];
#pragma GCC unroll 4
    for (int q = 0; q < NR; ++q) acc[q][0][0] = acc[q][0][1] = _mm256_setzero_ps();
    for (int64_t c0 = 0, grp = 0; c0 < chunks; c0 += cpg, ++grp) {
      const int64_t c1 = std::min(chunks, c0 + cpg);
      __m256 gacc[NR][1][2];
#pragma GCC unroll 4
      for (int q = 0; q < NR; ++q) gacc[q][0][0] = gacc[q][0][1] = _mm256_setzero_ps();
      for (int64_t c = c0; c < c1; ++c) {
#pragma GCC unroll 4
        for (int q = 0; q < NR; ++q) {
          _mm_prefetch(reinterpret_cast<const char*>(p[q] + 64 * c + kPrefetch), _MM_HINT_T0);
          chunk<1, 2, false, false>(c + 1 < chunks ? p[q] + 64 * c : last[q], c, xq, sc, 0, none, none, gacc[q]);
        }
      }
#pragma GCC unroll 4
      for (int q = 0; q < NR; ++q) {
        const __m256 sw = _mm256_set1_ps(sf[q * sfs + grp]);
        acc[q][0][0] = _mm256_fmadd_ps(gacc[q][0][0], sw, acc[q][0][0]);
        acc[q][0][1] = _mm256_fmadd_ps(gacc[q][0][1], sw, acc[q][0][1]);
      }
    }
    for (int q = 0; q < NR; ++q) y[t0 * ys + r0 + q * part + j] = isa::hsum(_mm256_add_ps(acc[q][0][0], acc[q][0][1]));
  }
}

// Q4's unsigned nibbles are q + 8, so each lane's integer sum carries 8·Σx of its activations (a.corr).
// Taken off per lane, that is a load and a subtraction per half chunk and token; folded instead into
// one term per weight group and token, off[t·ng + g] = Σ over the group's lanes of corr · activation
// scale, it costs one dot product of ng values per row and token.
void q4_offsets(const Matrix& W, const vnni::QuantizedActs& a, std::vector<float>& off) {
  const int64_t ng = W.groups(), G = W.group_size;
  off.assign(size_t(a.nt * ng), 0.0f);
  for (int t = 0; t < a.nt; ++t)
    for (int64_t l = 0; l < a.lanes; ++l) {
      const int32_t c = a.corr[size_t(t * a.lanes + l)];
      if (c == 0) continue;
      const int64_t g = ng == 1 ? 0 : std::min(ng - 1, l * 8 / G);
      off[size_t(t * ng + g)] += float(c) * a.scale[size_t(t * a.lanes + l)];
    }
}

template <int NT>
void rows(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, float* y, int64_t ys, float* sf,
          const float* off) {
  const bool whole = W.groups() == 1 || W.group_size % (W.dtype == DType::Q4 ? 128 : 64) == 0;
  if (NT == 1 && W.dtype == DType::Q8 && whole && r1 - r0 >= kStreams) {  // kStreams streams, then the rows left
    const int64_t done = r0 + (r1 - r0) / kStreams * kStreams;
    rows_parts<kStreams>(W, r0, done, a, t0, y, ys, sf);
    r0 = done;
  }
  if (W.dtype == DType::Q4)
    whole ? rows_avx2<NT, true, true>(W, r0, r1, a, t0, y, ys, sf, off)
          : rows_avx2<NT, true, false>(W, r0, r1, a, t0, y, ys, sf, off);
  else
    whole ? rows_avx2<NT, false, true>(W, r0, r1, a, t0, y, ys, sf, off)
          : rows_avx2<NT, false, false>(W, r0, r1, a, t0, y, ys, sf, off);
}

void rows_n(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, int n, float* y, int64_t ys,
            float* sf, const float* off) {
  switch (n) {
    case 1: rows<1>(W, r0, r1, a, t0, y, ys, sf, off); break;
    case 2: rows<2>(W, r0, r1, a, t0, y, ys, sf, off); break;
    case 3: rows<3>(W, r0, r1, a, t0, y, ys, sf, off); break;
    default: rows<4>(W, r0, r1, a, t0, y, ys, sf, off); break;
  }
}

}  // namespace

bool available() { return isa::avx2(); }

void prepare(const Matrix& W, vnni::QuantizedActs& a) {
  if (W.dtype != DType::Q4) return;
  q4_offsets(W, a, a.goff);
  a.goff_group = W.group_size;
}

void gemv(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, float* y, int64_t ys) {
  std::vector<float> sf(size_t(kStreams * (W.groups() + 16)), 0.0f);  // rows' scales in fp32 (+ padding for the gather)
  std::vector<float> own;  // offsets not prepared for W's groups: computed here
  const float* off = a.goff.data();
  if (W.dtype == DType::Q4 && a.goff_group != W.group_size) q4_offsets(W, a, own), off = own.data();
  if (W.dtype == DType::Q8 && !a.q8_signed)
    fail("avx2q::gemv: int8 activations must be quantized signed (vnni::quantize_acts with q8_signed)");
  if (a.nt <= kTokensPerPass) return rows_n(W, r0, r1, a, 0, a.nt, y, ys, sf.data(), off);
  for (int64_t rb = r0; rb < r1; rb += kRowsPerBlock) {
    const int64_t re = std::min(r1, rb + kRowsPerBlock);
    for (int t0 = 0; t0 < a.nt; t0 += kTokensPerPass)
      rows_n(W, rb, re, a, t0, std::min(kTokensPerPass, a.nt - t0), y, ys, sf.data(), off);
  }
}

}  // namespace glmlab::avx2q
