// AVX2 GEMV for row-major Q8 / Q4 weights with int8 activations (see avx2_qgemv.h). A weight row is read
// in 64-byte chunks, the layout of vnni_gemv.cpp's lanes and activations, each as two 32-byte halves of
// 8 int32 lanes: lane l of a chunk sums bytes 4l..4l+3 (Q4: inputs 8l..8l+7, even inputs against the
// high nibbles; Q8: inputs 4l..4l+3).
#include "kernels/cpu/avx2_qgemv.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

namespace glmlab::avx2q {

namespace {

constexpr int64_t kPrefetch = 4096;   // bytes ahead on the weight stream (one stream per thread)
constexpr int kTokensPerPass = 4;     // two ymm accumulators per token (one per half of a chunk)
constexpr int64_t kRowsPerBlock = 4;  // weight rows a group of tokens passes over before the next group

#define GLMLAB_AVX2 __attribute__((target("avx2,fma,f16c")))

// The weight-group scales of a chunk's two halves (8 lanes each): one scale for the whole chunk when
// groups are whole chunks (or the whole row), else a gather of the chunk's `gpc` groups.
struct HalfScales {
  const float* sf;
  int64_t cpg = 0, gpc = 0, g = 0, left = 0;
  __m256i idx0, idx1;
  GLMLAB_AVX2 HalfScales(const float* s, int64_t CI, int64_t IPL, int64_t G, int64_t ng) : sf(s) {
    if (ng == 1 || G % CI == 0) {
      cpg = ng == 1 ? INT64_MAX : G / CI;
      left = cpg;
    } else {
      gpc = CI / G;
      alignas(32) int32_t ix[16];
      for (int l = 0; l < 16; ++l) ix[l] = int32_t(l * IPL / G);
      idx0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ix));
      idx1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ix + 8));
    }
  }
  GLMLAB_AVX2 inline void next(int64_t c, __m256& s0, __m256& s1) {  // chunks c = 0, 1, 2, ... in order
    if (gpc) {
      s0 = _mm256_i32gather_ps(sf + c * gpc, idx0, 4);
      s1 = _mm256_i32gather_ps(sf + c * gpc, idx1, 4);
      return;
    }
    s0 = s1 = _mm256_set1_ps(sf[g]);
    if (--left == 0) ++g, left = cpg;
  }
};

// One half (32 bytes at p) of a chunk against token tt: the 8 exact int32 lane sums.
GLMLAB_AVX2 inline __m256i half_q4(__m256i hi, __m256i lo, const uint8_t* xq, int64_t odd, const int32_t* corr) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
                                       _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + odd))));
  return _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr)));
}
GLMLAB_AVX2 inline __m256i half_q8(__m256i wabs, __m256i w, const uint8_t* xq) {
  const __m256i ones = _mm256_set1_epi16(1);
  // Activations are stored as x + 128 (u8, vnni_gemv.h): flipping the top bit gives x as s8.
  const __m256i x = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), _mm256_set1_epi8(char(0x80)));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, w)), ones);
}

// Rows [r0, r1) against tokens [t0, t0 + NT).
template <int NT, bool kQ4>
GLMLAB_AVX2 void rows_avx2(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, float* y,
                           int64_t ys, float* sf) {
  const int64_t rb = a.units, chunks = a.lanes / 16, ng = W.groups(), G = W.group_size, rem = rb - (chunks - 1) * 64;
  const int64_t qs = a.lanes * (kQ4 ? 8 : 4);  // activation bytes per token (Q4: even part, then odd part)
  const int64_t odd = a.lanes * 4;             // Q4: offset of the odd inputs' part
  const __m256i m88 = _mm256_set1_epi8(char(0x88)), m0f = _mm256_set1_epi8(0x0F);
  alignas(32) uint8_t last[64];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = static_cast<const uint8_t*>(W.data) + r * rb;
    for (int64_t g = 0; g < ng; ++g) sf[g] = _cvtsh_ss(W.scales[r * ng + g]);
    HalfScales hs(sf, kQ4 ? 128 : 64, kQ4 ? 8 : 4, G, ng);
    // The last chunk's bytes, zero-padded (its activations past the row are 0, so is their product).
    std::memset(last, 0, sizeof last);
    std::memcpy(last, p + (chunks - 1) * 64, size_t(rem));
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const uint8_t* src = c + 1 == chunks ? last : p + 64 * c;
      _mm_prefetch(reinterpret_cast<const char*>(p + 64 * c + kPrefetch), _MM_HINT_T0);
      __m256 sw0, sw1;
      hs.next(c, sw0, sw1);
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
      if constexpr (kQ4) {
        const __m256i u0 = _mm256_xor_si256(b0, m88), u1 = _mm256_xor_si256(b1, m88);  // q + 8 per nibble
        const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(u0, 4), m0f), lo0 = _mm256_and_si256(u0, m0f);
        const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(u1, 4), m0f), lo1 = _mm256_and_si256(u1, m0f);
        for (int t = 0; t < NT; ++t) {
          const int64_t tt = t0 + t;
          const uint8_t* xq = a.q.data() + tt * qs + 64 * c;
          const int32_t* corr = a.corr.data() + tt * a.lanes + 16 * c;
          const float* sc = a.scale.data() + tt * a.lanes + 16 * c;
          acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half_q4(hi0, lo0, xq, odd, corr)),
                                    _mm256_mul_ps(_mm256_loadu_ps(sc), sw0), acc0[t]);
          acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half_q4(hi1, lo1, xq + 32, odd, corr + 8)),
                                    _mm256_mul_ps(_mm256_loadu_ps(sc + 8), sw1), acc1[t]);
        }
      } else {
        const __m256i a0 = _mm256_abs_epi8(b0), a1 = _mm256_abs_epi8(b1);
        for (int t = 0; t < NT; ++t) {
          const int64_t tt = t0 + t;
          const uint8_t* xq = a.q.data() + tt * qs + 64 * c;
          const float* sc = a.scale.data() + tt * a.lanes + 16 * c;
          acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half_q8(a0, b0, xq)), _mm256_mul_ps(_mm256_loadu_ps(sc), sw0), acc0[t]);
          acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half_q8(a1, b1, xq + 32)), _mm256_mul_ps(_mm256_loadu_ps(sc + 8), sw1),
                                    acc1[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m256 s = _mm256_add_ps(acc0[t], acc1[t]);
      __m128 v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      v = _mm_add_ps(v, _mm_movehl_ps(v, v));
      v = _mm_add_ss(v, _mm_movehdup_ps(v));
      y[(t0 + t) * ys + r] = _mm_cvtss_f32(v);
    }
  }
}

template <int NT>
void rows(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, float* y, int64_t ys, float* sf) {
  if (W.dtype == DType::Q4)
    rows_avx2<NT, true>(W, r0, r1, a, t0, y, ys, sf);
  else
    rows_avx2<NT, false>(W, r0, r1, a, t0, y, ys, sf);
}

void rows_n(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, int t0, int n, float* y, int64_t ys,
            float* sf) {
  switch (n) {
    case 1: rows<1>(W, r0, r1, a, t0, y, ys, sf); break;
    case 2: rows<2>(W, r0, r1, a, t0, y, ys, sf); break;
    case 3: rows<3>(W, r0, r1, a, t0, y, ys, sf); break;
    default: rows<4>(W, r0, r1, a, t0, y, ys, sf); break;
  }
}

}  // namespace

bool available() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

void gemv(const Matrix& W, int64_t r0, int64_t r1, const vnni::QuantizedActs& a, float* y, int64_t ys) {
  std::vector<float> sf(size_t(W.groups() + 16), 0.0f);  // one row's scales in fp32 (+ padding for the gather)
  if (a.nt <= kTokensPerPass) return rows_n(W, r0, r1, a, 0, a.nt, y, ys, sf.data());
  for (int64_t rb = r0; rb < r1; rb += kRowsPerBlock) {
    const int64_t re = std::min(r1, rb + kRowsPerBlock);
    for (int t0 = 0; t0 < a.nt; t0 += kTokensPerPass)
      rows_n(W, rb, re, a, t0, std::min(kTokensPerPass, a.nt - t0), y, ys, sf.data());
  }
}

}  // namespace glmlab::avx2q
