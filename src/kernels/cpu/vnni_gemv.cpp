// AVX512-VNNI GEMV for Q8 / Q4 weights with int8 activations (see vnni_gemv.h).
//
// A weight row is read in 64-byte chunks. An int32 lane of VPDPBUSD sums 4 byte products:
//   Q4: 64 bytes = 128 inputs; lane l = bytes 4l..4l+3 = inputs 8l..8l+7. The nibbles are made
//       unsigned (q + 8 = nibble ^ 8) for VPDPBUSD's u8 operand; the activations (s8, split into even
//       and odd inputs) are the other. Σ (q + 8)·x − 8·Σ x: the second term per lane is `corr`.
//   Q8: 64 bytes = 64 inputs; lane l = inputs 4l..4l+3. The activations are the u8 operand as
//       x + 128; Σ w·(x + 128) − 128·Σ w, with Σ w per lane from one more VPDPBUSD with ones.
// Each lane's int32 sum is exact; it is converted to fp32 and multiplied by its activation block's
// scale times its weight group's scale (groups never split a lane).
#include "kernels/cpu/vnni_gemv.h"

#include <immintrin.h>

// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 intrinsic headers.
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cpu/isa.h"

namespace glmlab::vnni {

namespace {

constexpr int64_t kBlock = 32;  // activation inputs per int8 scale
// Software prefetch distance along the weight stream (bytes): one sequential stream per thread does
// not keep enough loads in flight on its own to reach the memory bandwidth.
#ifndef GLMLAB_VNNI_PREFETCH
#define GLMLAB_VNNI_PREFETCH 4096
#endif
constexpr int64_t kPrefetch = GLMLAB_VNNI_PREFETCH;

constexpr int kTokensPerPass = 8;     // accumulators in registers: one zmm per token
constexpr int64_t kRowsPerBlock = 4;  // weight rows a group of tokens passes over before the next group

int64_t chunk_inputs(DType t) { return t == DType::Q4 ? 128 : 64; }
int64_t lane_inputs(DType t) { return t == DType::Q4 ? 8 : 4; }

#define GLMLAB_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

// The weight-group scale of each lane, chunk by chunk along a row, without divisions in the loop.
// sf holds the row's scales in fp32 (padded by 16). Either every chunk lies inside one group (one scale
// per chunk, a new group every `cpg` chunks) or a chunk holds `gpc` whole groups (a permute spreads
// them over the lanes).
struct LaneScales {
  const float* sf;
  int64_t cpg = 0, gpc = 0, g = 0, left = 0;
  __m512i idx;
  GLMLAB_VNNI LaneScales(const float* s, int64_t CI, int64_t IPL, int64_t G, int64_t ng) : sf(s) {
    if (ng == 1 || G % CI == 0) {
      cpg = ng == 1 ? INT64_MAX : G / CI;
      left = cpg;
    } else {
      gpc = CI / G;
      alignas(64) int32_t ix[16];
      for (int l = 0; l < 16; ++l) ix[l] = int32_t(l * IPL / G);
      idx = _mm512_load_si512(ix);
    }
  }
  GLMLAB_VNNI inline __m512 next(int64_t c) {  // for chunks c = 0, 1, 2, ... in order
    if (gpc) return _mm512_permutexvar_ps(idx, _mm512_loadu_ps(sf + c * gpc));
    __m512 v = _mm512_set1_ps(sf[g]);
    if (--left == 0) ++g, left = cpg;
    return v;
  }
};

// One 64-byte chunk c of a Q4 row against NT tokens, into acc (the caller alternates two sets of
// accumulators between even and odd chunks, so that one token's chain of FMAs does not serialize).
template <int NT>
GLMLAB_VNNI inline void chunk_q4(const uint8_t* p, int64_t c, __mmask64 mask, __m512 sw, const QuantizedActs& a, int t0,
                                 int64_t qs, __m512 (&acc)[NT]) {
  const __m512i m88 = _mm512_set1_epi8(char(0x88)), m0f = _mm512_set1_epi8(0x0F);
  _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
  const __m512i b = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, p + 64 * c), m88);
  const __m512i lo = _mm512_and_si512(b, m0f), hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), m0f);
  for (int t = 0; t < NT; ++t) {
    const int64_t tt = t0 + t;
    const uint8_t* xq = a.q.data() + tt * qs + 64 * c;
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_loadu_si512(xq));
    s = _mm512_dpbusd_epi32(s, lo, _mm512_loadu_si512(xq + a.lanes * 4));
    s = _mm512_sub_epi32(s, _mm512_loadu_si512(a.corr.data() + tt * a.lanes + 16 * c));
    const __m512 f = _mm512_mul_ps(_mm512_loadu_ps(a.scale.data() + tt * a.lanes + 16 * c), sw);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc[t]);
  }
}

template <int NT>
GLMLAB_VNNI inline void chunk_q8(const uint8_t* p, int64_t c, __mmask64 mask, __m512 sw, const QuantizedActs& a, int t0,
                                 int64_t qs, __m512 (&acc)[NT]) {
  const __m512i ones = _mm512_set1_epi8(1);
  _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
  const __m512i w = _mm512_maskz_loadu_epi8(mask, p + 64 * c);
  const __m512i ws = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w), 7);  // 128·Σw
  for (int t = 0; t < NT; ++t) {
    const int64_t tt = t0 + t;
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(a.q.data() + tt * qs + 64 * c), w);
    s = _mm512_sub_epi32(s, ws);
    const __m512 f = _mm512_mul_ps(_mm512_loadu_ps(a.scale.data() + tt * a.lanes + 16 * c), sw);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc[t]);
  }
}

// Rows [r0, r1) against tokens [t0, t0 + NT): chunk by chunk, even and odd chunks into two sets of
// accumulators so that one token's FMA chain does not serialize the row.
template <int NT, bool kQ4>
GLMLAB_VNNI void rows_vnni(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, int t0, float* y,
                           int64_t ys, float* sf) {
  const int64_t rb = a.units, chunks = a.lanes / 16, ng = W.groups(), G = W.group_size, rem = rb - (chunks - 1) * 64;
  const __mmask64 tail = rem == 64 ? ~__mmask64(0) : (__mmask64(1) << rem) - 1, all = ~__mmask64(0);
  const int64_t qs = a.lanes * (kQ4 ? 8 : 4);  // activation bytes per token (Q4: even part, then odd part)
  auto chunk = [&](const uint8_t* p, int64_t c, __mmask64 m, __m512 sw, __m512(&acc)[NT]) GLMLAB_VNNI {
    if constexpr (kQ4)
      chunk_q4<NT>(p, c, m, sw, a, t0, qs, acc);
    else
      chunk_q8<NT>(p, c, m, sw, a, t0, qs, acc);
  };
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = static_cast<const uint8_t*>(W.data) + r * rb;
    for (int64_t g = 0; g < ng; ++g) sf[g] = _cvtsh_ss(W.scales[r * ng + g]);
    LaneScales ls(sf, kQ4 ? 128 : 64, kQ4 ? 8 : 4, G, ng);
    __m512 acc[NT], acc2[NT];
    for (int t = 0; t < NT; ++t) acc[t] = acc2[t] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 2 < chunks; c += 2) {
      const __m512 s0 = ls.next(c), s1 = ls.next(c + 1);
      chunk(p, c, all, s0, acc);
      chunk(p, c + 1, all, s1, acc2);
    }
    for (; c < chunks; ++c) chunk(p, c, c + 1 == chunks ? tail : all, ls.next(c), acc);
    for (int t = 0; t < NT; ++t) y[(t0 + t) * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t], acc2[t]));
  }
}

template <int NT>
void rows(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, int t0, float* y, int64_t ys, float* sf) {
  if (W.dtype == DType::Q4)
    rows_vnni<NT, true>(W, r0, r1, a, t0, y, ys, sf);
  else
    rows_vnni<NT, false>(W, r0, r1, a, t0, y, ys, sf);
}

// Tokens [t0, t0 + n), n ≤ kTokensPerPass, of rows [r0, r1).
void rows_n(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, int t0, int n, float* y, int64_t ys,
            float* sf) {
  switch (n) {
    case 1: rows<1>(W, r0, r1, a, t0, y, ys, sf); break;
    case 2: rows<2>(W, r0, r1, a, t0, y, ys, sf); break;
    case 3: rows<3>(W, r0, r1, a, t0, y, ys, sf); break;
    case 4: rows<4>(W, r0, r1, a, t0, y, ys, sf); break;
    case 5: rows<5>(W, r0, r1, a, t0, y, ys, sf); break;
    case 6: rows<6>(W, r0, r1, a, t0, y, ys, sf); break;
    case 7: rows<7>(W, r0, r1, a, t0, y, ys, sf); break;
    default: rows<8>(W, r0, r1, a, t0, y, ys, sf); break;
  }
}

}  // namespace

bool available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni") && isa::f16c();
  return ok;
}

bool fits(const Matrix& W) {
  if (!W.quantized()) return false;  // any cols: a last partial block of activations, a masked last chunk
  const int64_t CI = chunk_inputs(W.dtype), IPL = lane_inputs(W.dtype), G = W.group_size;
  return W.groups() == 1 || G % CI == 0 || (CI % G == 0 && G % IPL == 0);
}

namespace {

// Block b (inputs [32b, min(K, 32b + 32))) of token t's activations xr, as the reference does it: scale
// d = max|x| / 127 (a NaN input skipped), v = x / d rounded half to even, clamped to ±127.
void quantize_block_scalar(const float* xr, int64_t K, int t, int64_t b, QuantizedActs& a) {
  const int64_t k0 = b * kBlock, k1 = std::min(K, k0 + kBlock);  // inputs past K stay 0 (their weights are masked off too)
  const int64_t IPL = lane_inputs(a.wtype);
  const int parts = a.wtype == DType::Q4 ? 2 : 1;
  uint8_t* q = a.q.data() + t * parts * a.lanes * 4;
  float amax = 0;
  for (int64_t i = k0; i < k1; ++i) amax = std::max(amax, std::fabs(xr[i]));
  const float d = amax / 127.0f;
  for (int64_t i = k0; i < k1; ++i) {
    // Clamped as VMAXPS / VMINPS do it, so that a NaN input becomes −127 (not an undefined int cast).
    float r = d == 0 ? 0.0f : std::nearbyint(xr[i] / d);
    r = r > -127.0f ? r : -127.0f;
    r = r < 127.0f ? r : 127.0f;
    const int v = int(r);
    if (a.wtype == DType::Q8)
      q[i] = uint8_t(a.q8_signed ? v : v + 128);
    else
      q[(i % 2) * a.lanes * 4 + i / 2] = uint8_t(int8_t(v));
    if (a.wtype == DType::Q4) a.corr[size_t(t * a.lanes + i / IPL)] += 8 * v;
  }
  for (int64_t l = k0 / IPL; l < std::min(a.lanes, (k0 + kBlock) / IPL); ++l) a.scale[size_t(t * a.lanes + l)] = d;
}

// A whole block of 32 inputs with AVX2, bit for bit the scalar block: the same IEEE division and
// round-to-nearest-even (VDIVPS, VROUNDPS), the maximum taken so that a NaN input is skipped as
// std::max skips it.
GLMLAB_AVX2 void quantize_block_avx2(const float* xr, int t, int64_t b, QuantizedActs& a) {
  const int64_t k0 = b * kBlock;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 x[4];
  __m256 m = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) {
    x[j] = _mm256_loadu_ps(xr + k0 + 8 * j);
    m = _mm256_max_ps(_mm256_andnot_ps(sign, x[j]), m);  // a NaN in the first operand leaves m
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float d = _mm_cvtss_f32(h) / 127.0f;
  const bool q4 = a.wtype == DType::Q4;
  const int64_t IPL = lane_inputs(a.wtype);
  std::fill_n(a.scale.data() + t * a.lanes + k0 / IPL, kBlock / IPL, d);
  __m256i v[4];
  if (d == 0) {
    for (auto& e : v) e = _mm256_setzero_si256();
  } else {
    const __m256 dv = _mm256_set1_ps(d), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    for (int j = 0; j < 4; ++j) {
      const __m256 r = _mm256_round_ps(_mm256_div_ps(x[j], dv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    }
  }
  // int32 → int8 in input order: the packs interleave the 128-bit halves, the permute puts the
  // 4-byte groups back in order.
  const __m256i p = _mm256_permutevar8x32_epi32(
      _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3])),
      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  if (!q4) {
    uint8_t* q = a.q.data() + t * a.lanes * 4 + k0;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                        a.q8_signed ? p : _mm256_xor_si256(p, _mm256_set1_epi8(char(0x80))));  // v or v + 128
    return;
  }
  // Q4: even inputs to the first part, odd ones to the second; corr = 8 · Σ v per lane of 8 inputs.
  const __m256i eo = _mm256_permute4x64_epi64(
      _mm256_shuffle_epi8(p, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                              12, 14, 1, 3, 5, 7, 9, 11, 13, 15)),
      0xD8);  // qwords 0, 2, 1, 3: evens of inputs 0–15, 16–31, then the odds
  uint8_t* q = a.q.data() + t * 2 * a.lanes * 4 + k0 / 2;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm256_castsi256_si128(eo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + a.lanes * 4), _mm256_extracti128_si256(eo, 1));
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(a.corr.data() + t * a.lanes + k0 / 8), _mm_slli_epi32(s4, 3));
}

void size_acts(int nt, int64_t K, DType wtype, bool q8_signed, QuantizedActs& a) {
  a.wtype = wtype;
  a.q8_signed = wtype == DType::Q8 && q8_signed;
  a.nt = nt;
  a.goff_group = 0;  // new activations: offsets of the old ones are stale
  a.units = wtype == DType::Q4 ? (K + 1) / 2 : K;  // = the row bytes (odd K: a padded nibble)
  a.lanes = (a.units + 63) / 64 * 16;
  const int parts = wtype == DType::Q4 ? 2 : 1;
  a.q.assign(size_t(nt * parts * a.lanes * 4), 0);
  a.scale.assign(size_t(nt * a.lanes), 0.0f);
  a.corr.assign(wtype == DType::Q4 ? size_t(nt * a.lanes) : 0, 0);
}

}  // namespace

void quantize_acts_reference(const float* x, int nt, int64_t K, DType wtype, QuantizedActs& a, bool q8_signed) {
  size_acts(nt, K, wtype, q8_signed, a);
  for (int t = 0; t < nt; ++t)
    for (int64_t b = 0; b * kBlock < K; ++b) quantize_block_scalar(x + t * K, K, t, b, a);
}

void quantize_acts(const float* x, int nt, int64_t K, DType wtype, QuantizedActs& a, bool q8_signed) {
  if (!isa::avx2()) return quantize_acts_reference(x, nt, K, wtype, a, q8_signed);
  size_acts(nt, K, wtype, q8_signed, a);
  const int64_t full = K / kBlock;
  // Tokens are independent: a batch's rows are quantized on every thread (one token's ~13.7k inputs
  // take microseconds, less than a parallel region's cost is worth).
#pragma omp parallel for schedule(static) if (nt >= 4)
  for (int t = 0; t < nt; ++t) {
    const float* xr = x + int64_t(t) * K;
    for (int64_t b = 0; b < full; ++b) quantize_block_avx2(xr, t, b, a);
    if (full * kBlock < K) quantize_block_scalar(xr, K, t, full, a);
  }
}

void gemv(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, float* y, int64_t ys) {
  std::vector<float> sf(size_t(W.groups() + 16), 0.0f);  // one row's scales in fp32 (+ padding for the permute)
  if (a.nt <= kTokensPerPass) return rows_n(W, r0, r1, a, 0, a.nt, y, ys, sf.data());
  // More tokens than registers: blocks of kRowsPerBlock weight rows (a few KB) are read from memory once
  // and stay in L1 while every group of kTokensPerPass tokens passes over them.
  for (int64_t rb = r0; rb < r1; rb += kRowsPerBlock) {
    const int64_t re = std::min(r1, rb + kRowsPerBlock);
    for (int t0 = 0; t0 < a.nt; t0 += kTokensPerPass)
      rows_n(W, rb, re, a, t0, std::min(kTokensPerPass, a.nt - t0), y, ys, sf.data());
  }
}

}  // namespace glmlab::vnni
