// AVX512-VNNI GEMM for Q8 / Q4 weights with int8 activations (see vnni_gemm.h; the lane arithmetic is
// the GEMV's, vnni_gemv.cpp):
//   Q4: a 64-byte weight chunk = 128 inputs; its nibbles made unsigned (q + 8 = nibble ^ 8) are the u8
//       operand, the int8 activations split into even (high nibbles) and odd (low nibbles) inputs the
//       s8 operand; the lane's int32 sum starts at −8·Σx (−corr) instead of 0, which removes the offset.
//   Q8: 64 inputs per chunk; the activations are the u8 operand as x + 128, the weights the s8 operand;
//       the sum starts at −128·Σw of the lane (computed once per weight chunk, shared by 4 tokens).
// Every lane lies inside one activation block (32 inputs) and one weight group, so its exact int32 sum
// is converted and multiplied by (activation scale × weight scale) into an fp32 accumulator.
#include "kernels/cpu/vnni_gemm.h"

#include <immintrin.h>

// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 intrinsic headers.
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <vector>

namespace glmlab::vnni {

namespace {

constexpr int kRows = 4;                  // weight rows of the micro-kernel
constexpr int kToks = 4;                  // tokens of the micro-kernel: 16 zmm accumulators
constexpr int64_t kSliceChunks = 32;      // 64-byte chunks per slice of the inputs (L1 for 4 tokens)
constexpr int64_t kActL2Bytes = 384 << 10;  // activation slices of one group of tokens (stay in L2)

#define GLMLAB_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

// out[r][t] = Σ over chunks [c0, c0 + nc) of row wp[r] against token tok[t]. ws[r]: the row's fp32
// weight scales from chunk c0 on, one per chunk (LANE false) or one per lane (16 per chunk).
template <bool Q4, bool LANE>
GLMLAB_VNNI void micro(const uint8_t* const wp[kRows], const float* const ws[kRows], int64_t nc, __mmask64 last,
                       const QuantizedActs& a, const int64_t tok[kToks], int64_t c0, float out[kRows][kToks]) {
  const int64_t L = a.lanes;
  const uint8_t* xq[kToks];
  const int32_t* cr[kToks];
  const float* as[kToks];
  #pragma GCC unroll 4
  for (int t = 0; t < kToks; ++t) {
    xq[t] = a.q.data() + tok[t] * (Q4 ? 2 : 1) * L * 4 + 64 * c0;
    cr[t] = Q4 ? a.corr.data() + tok[t] * L + 16 * c0 : nullptr;
    as[t] = a.scale.data() + tok[t] * L + 16 * c0;
  }
  const __m512i zero = _mm512_setzero_si512();
  __m512 acc[kRows][kToks];
  #pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r)
    #pragma GCC unroll 4
    for (int t = 0; t < kToks; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < nc; ++c) {
    const __mmask64 m = c + 1 == nc ? last : ~__mmask64(0);
    if constexpr (Q4) {
      const __m512i m88 = _mm512_set1_epi8(char(0x88)), m0f = _mm512_set1_epi8(0x0F);
      __m512i hi[kRows], lo[kRows];
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        const __m512i b = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, wp[r] + 64 * c), m88);
        lo[r] = _mm512_and_si512(b, m0f);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(b, 4), m0f);
      }
      #pragma GCC unroll 4
      for (int t = 0; t < kToks; ++t) {
        const __m512i xe = _mm512_loadu_si512(xq[t] + 64 * c), xo = _mm512_loadu_si512(xq[t] + L * 4 + 64 * c);
        const __m512i nc0 = _mm512_sub_epi32(zero, _mm512_loadu_si512(cr[t] + 16 * c));
        const __m512 sa = _mm512_loadu_ps(as[t] + 16 * c);
        #pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          __m512i s = _mm512_dpbusd_epi32(nc0, hi[r], xe);
          s = _mm512_dpbusd_epi32(s, lo[r], xo);
          const __m512 sw = LANE ? _mm512_loadu_ps(ws[r] + 16 * c) : _mm512_set1_ps(ws[r][c]);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sa, sw), acc[r][t]);
        }
      }
    } else {
      const __m512i ones = _mm512_set1_epi8(1);
      __m512i w[kRows], nws[kRows];
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        w[r] = _mm512_maskz_loadu_epi8(m, wp[r] + 64 * c);
        nws[r] = _mm512_sub_epi32(zero, _mm512_slli_epi32(_mm512_dpbusd_epi32(zero, ones, w[r]), 7));  // −128·Σw
      }
      #pragma GCC unroll 4
      for (int t = 0; t < kToks; ++t) {
        const __m512i x = _mm512_loadu_si512(xq[t] + 64 * c);
        const __m512 sa = _mm512_loadu_ps(as[t] + 16 * c);
        #pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          const __m512i s = _mm512_dpbusd_epi32(nws[r], x, w[r]);
          const __m512 sw = LANE ? _mm512_loadu_ps(ws[r] + 16 * c) : _mm512_set1_ps(ws[r][c]);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sa, sw), acc[r][t]);
        }
      }
    }
  }
  #pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r)
    #pragma GCC unroll 4
    for (int t = 0; t < kToks; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

template <bool Q4, bool LANE>
GLMLAB_VNNI void gemm_impl(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, float* y, int64_t ys) {
  const int64_t CI = Q4 ? 128 : 64, IPL = Q4 ? 8 : 4, G = W.group_size, ng = W.groups();
  const int64_t units = a.units, chunks = a.lanes / 16, rem = units - (chunks - 1) * 64, rows = r1 - r0;
  const __mmask64 tail = rem == 64 ? ~__mmask64(0) : (__mmask64(1) << rem) - 1;
  const uint8_t* data = static_cast<const uint8_t*>(W.data);

  // fp32 weight scales of the rows: one per chunk (a chunk lies inside one group), or each row's group
  // scales (padded by 16) that a permute spreads over the lanes of each chunk, per block of rows.
  std::vector<float> wc, sf, wl;
  alignas(64) int32_t ix[16] = {};
  if constexpr (!LANE) {
    wc.resize(size_t(rows * chunks));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < chunks; ++c)
        wc[size_t(r * chunks + c)] = _cvtsh_ss(W.scales[(r0 + r) * ng + (ng == 1 ? 0 : c * CI / G)]);
  } else {
    sf.assign(size_t(rows * (ng + 16)), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < ng; ++g) sf[size_t(r * (ng + 16) + g)] = _cvtsh_ss(W.scales[(r0 + r) * ng + g]);
    wl.resize(size_t(kRows * kSliceChunks * 16));
    for (int l = 0; l < 16; ++l) ix[l] = int32_t(l * IPL / G);
  }
  const __m512i idx = _mm512_load_si512(ix);
  const int64_t gpc = LANE ? CI / G : 0;

  const int64_t tok_bytes = kSliceChunks * (Q4 ? 256 : 128);  // q (+ corr) + scales of one token's slice
  const int64_t group = std::max<int64_t>(kToks, kActL2Bytes / tok_bytes / kToks * kToks);
  float out[kRows][kToks];
  for (int64_t g0 = 0; g0 < a.nt; g0 += group) {
    const int64_t g1 = std::min<int64_t>(a.nt, g0 + group);
    for (int64_t c0 = 0; c0 < chunks; c0 += kSliceChunks) {
      const int64_t nc = std::min(kSliceChunks, chunks - c0);
      const __mmask64 last = c0 + nc == chunks ? tail : ~__mmask64(0);
      for (int64_t t0 = g0; t0 < g1; t0 += kToks) {
        int64_t tok[kToks];
        for (int t = 0; t < kToks; ++t) tok[t] = std::min(t0 + t, g1 - 1);  // a short last block repeats its last token
        const int nt = int(std::min<int64_t>(kToks, g1 - t0));
        for (int64_t rb = r0; rb < r1; rb += kRows) {
          const uint8_t* wp[kRows];
          const float* ws[kRows];
          for (int r = 0; r < kRows; ++r) {
            const int64_t rr = std::min(rb + r, r1 - 1) - r0;  // a short last block repeats its last row
            wp[r] = data + (r0 + rr) * units + 64 * c0;
            if constexpr (LANE) {
              float* dst = wl.data() + r * kSliceChunks * 16;
              const float* src = sf.data() + rr * (ng + 16);
              for (int64_t c = 0; c < nc; ++c)
                _mm512_storeu_ps(dst + 16 * c, _mm512_permutexvar_ps(idx, _mm512_loadu_ps(src + (c0 + c) * gpc)));
              ws[r] = dst;
            } else {
              ws[r] = wc.data() + rr * chunks + c0;
            }
          }
          micro<Q4, LANE>(wp, ws, nc, last, a, tok, c0, out);
          const int nr = int(std::min<int64_t>(kRows, r1 - rb));
          for (int t = 0; t < nt; ++t)
            for (int r = 0; r < nr; ++r) {
              float& o = y[(t0 + t) * ys + rb + r];
              o = c0 == 0 ? out[r][t] : o + out[r][t];
            }
        }
      }
    }
  }
}

}  // namespace

void gemm(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, float* y, int64_t ys) {
  if (r1 <= r0 || a.nt == 0) return;
  const int64_t CI = W.dtype == DType::Q4 ? 128 : 64;
  const bool lane = !(W.groups() == 1 || W.group_size % CI == 0);
  if (W.dtype == DType::Q4)
    lane ? gemm_impl<true, true>(W, r0, r1, a, y, ys) : gemm_impl<true, false>(W, r0, r1, a, y, ys);
  else
    lane ? gemm_impl<false, true>(W, r0, r1, a, y, ys) : gemm_impl<false, false>(W, r0, r1, a, y, ys);
}

}  // namespace glmlab::vnni
