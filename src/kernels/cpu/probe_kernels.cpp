// Kernels of the machine probes (see probe_kernels.h).
#include "kernels/cpu/probe_kernels.h"

#include <immintrin.h>

#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace glmlab::probek {

bool avx512_available() { return __builtin_cpu_supports("avx512f"); }
bool dpbf16_available() {
  return avx512_available() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
}
bool vnni_available() { return avx512_available() && __builtin_cpu_supports("avx512vnni"); }
bool avx2_available() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
const char* int8_dot_unit() { return vnni_available() ? "AVX512-VNNI" : avx2_available() ? "AVX2" : ""; }
const char* fma_unit() { return avx512_available() ? "AVX-512" : avx2_available() ? "AVX2" : ""; }

namespace {

#define GLMLAB_P512 __attribute__((target("avx512f")))
#define GLMLAB_PAVX2 __attribute__((target("avx2")))

template <int S>
GLMLAB_P512 float read512(const char* p, size_t bytes, size_t row_bytes, size_t prefetch) {
  __m512 acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm512_setzero_ps();
  const size_t row = row_bytes ? row_bytes : bytes / S;  // one pass reads S rows side by side
  for (size_t base = 0; base < bytes; base += row * S) {
    const char* r0 = p + base;
    for (size_t i = 0; i < row; i += 64) {
#pragma GCC unroll 16
      for (int s = 0; s < S; ++s) {
        const char* q = r0 + size_t(s) * row + i;
        if (prefetch) _mm_prefetch(q + prefetch, _MM_HINT_T0);
        acc[s] = _mm512_add_ps(acc[s], _mm512_load_ps(reinterpret_cast<const float*>(q)));
      }
    }
  }
  __m512 t = acc[0];
  for (int s = 1; s < S; ++s) t = _mm512_add_ps(t, acc[s]);
  return _mm512_reduce_add_ps(t);
}

template <int S>
GLMLAB_PAVX2 float read256(const char* p, size_t bytes, size_t row_bytes, size_t prefetch) {
  __m256 acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm256_setzero_ps();
  const size_t row = row_bytes ? row_bytes : bytes / S;
  for (size_t base = 0; base < bytes; base += row * S) {
    const char* r0 = p + base;
    for (size_t i = 0; i < row; i += 64) {
#pragma GCC unroll 16
      for (int s = 0; s < S; ++s) {
        const char* q = r0 + size_t(s) * row + i;
        if (prefetch) _mm_prefetch(q + prefetch, _MM_HINT_T0);
        acc[s] = _mm256_add_ps(acc[s], _mm256_add_ps(_mm256_load_ps(reinterpret_cast<const float*>(q)),
                                                     _mm256_load_ps(reinterpret_cast<const float*>(q + 32))));
      }
    }
  }
  __m256 t = acc[0];
  for (int s = 1; s < S; ++s) t = _mm256_add_ps(t, acc[s]);
  alignas(32) float v[8];
  _mm256_store_ps(v, t);
  return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

}  // namespace

float read(const void* p, size_t bytes, int streams, size_t row_bytes, size_t prefetch) {
  const char* c = static_cast<const char*>(p);
  if (!avx512_available()) {
    switch (streams) {
      case 1: return read256<1>(c, bytes, row_bytes, prefetch);
      case 2: return read256<2>(c, bytes, row_bytes, prefetch);
      case 4: return read256<4>(c, bytes, row_bytes, prefetch);
      case 8: return read256<8>(c, bytes, row_bytes, prefetch);
      default: return read256<16>(c, bytes, row_bytes, prefetch);
    }
  }
  switch (streams) {
    case 1: return read512<1>(c, bytes, row_bytes, prefetch);
    case 2: return read512<2>(c, bytes, row_bytes, prefetch);
    case 4: return read512<4>(c, bytes, row_bytes, prefetch);
    case 8: return read512<8>(c, bytes, row_bytes, prefetch);
    default: return read512<16>(c, bytes, row_bytes, prefetch);
  }
}

// 16 chains, fully unrolled so that they stay in registers; the result depends on every step.
#define GLMLAB_PEAK_LOOP(INIT, STEP, REDUCE)                    \
  INIT;                                                         \
  for (int64_t it = 0; it < iters; ++it) {                      \
    _Pragma("GCC unroll 16") for (int c = 0; c < 16; ++c) STEP; \
  }                                                             \
  REDUCE

namespace {
// 12 chains: with the two operands they fill 14 of AVX2's 16 ymm registers (16 chains spill).
__attribute__((target("avx2,fma"))) double fma_f32_avx2(int64_t iters, float* sink) {
  const __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
  __m256 acc[12];
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int c = 0; c < 12; ++c) acc[c] = _mm256_fmadd_ps(a, b, acc[c]);
  }
  __m256 t = acc[0];
  for (int c = 1; c < 12; ++c) t = _mm256_add_ps(t, acc[c]);
  alignas(32) float v[8];
  _mm256_store_ps(v, t);
  *sink = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  return double(iters) * 12 * 16;
}

// The multiply of the AVX2 int8 kernel (avx2_qgemv.cpp): VPMADDUBSW, 32 u8 × s8 products into int16
// pairs, accumulated with VPADDW (another unit). The empty asm makes each chain's operand new every
// step, so the multiply is not hoisted out of the loop; it emits no instruction.
// kChains of an operand and an accumulator each (2·kChains + 1 of 16 ymm registers). Which count runs
// fastest differs between CPUs (2 Zen 2 cores: 4 chains 213 GOP/s, 5 chains 418, 8 chains 107): the probe
// takes the best of 4, 5 and 6.
template <int kChains>
GLMLAB_PAVX2 double dot_u8s8_avx2(int64_t iters, float* sink) {
  const __m256i b = _mm256_set1_epi8(-2);
  __m256i acc[kChains], a[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_setzero_si256(), a[c] = _mm256_set1_epi8(char(3 + c));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) {
      asm volatile("" : "+x"(a[c]));
      acc[c] = _mm256_add_epi16(acc[c], _mm256_maddubs_epi16(a[c], b));
    }
  }
  __m256i t = acc[0];
  for (int c = 1; c < kChains; ++c) t = _mm256_xor_si256(t, acc[c]);
  alignas(32) int16_t v[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), t);
  *sink = float(v[0] ^ v[5] ^ v[15]);
  return double(iters) * kChains * 64;
}
}  // namespace

static __attribute__((target("avx512f,fma"))) double fma_f32_512(int64_t iters, float* sink) {
  const __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
  GLMLAB_PEAK_LOOP(__m512 acc[16]; for (auto& v : acc) v = _mm512_setzero_ps(),
                   acc[c] = _mm512_fmadd_ps(a, b, acc[c]),
                   __m512 t = acc[0]; for (int c = 1; c < 16; ++c) t = _mm512_add_ps(t, acc[c]);
                   *sink = _mm512_reduce_add_ps(t));
  return double(iters) * 16 * 32;
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) double dot_bf16(int64_t iters, float* sink) {
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f7f);
  GLMLAB_PEAK_LOOP(__m512 acc[16]; for (auto& v : acc) v = _mm512_setzero_ps(),
                   acc[c] = _mm512_dpbf16_ps(acc[c], a, b),
                   __m512 t = acc[0]; for (int c = 1; c < 16; ++c) t = _mm512_add_ps(t, acc[c]);
                   *sink = _mm512_reduce_add_ps(t));
  return double(iters) * 16 * 64;
}

static __attribute__((target("avx512f,avx512vnni"))) double dot_u8s8_512(int64_t iters, float* sink) {
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  GLMLAB_PEAK_LOOP(__m512i acc[16]; for (auto& v : acc) v = _mm512_setzero_si512(),
                   acc[c] = _mm512_dpbusd_epi32(acc[c], a, b),
                   // Summed as floats: the 256 int32 lanes of a long run add up past INT_MAX.
                   __m512 t = _mm512_cvtepi32_ps(acc[0]);
                   for (int c = 1; c < 16; ++c) t = _mm512_add_ps(t, _mm512_cvtepi32_ps(acc[c]));
                   *sink = _mm512_reduce_add_ps(t));
  return double(iters) * 16 * 128;
}

double fma_f32(int64_t iters, float* sink) {
  if (!avx512_available()) return fma_f32_avx2(iters, sink);
  return fma_f32_512(iters, sink);
}
int dot_u8s8_variants() { return vnni_available() ? 1 : 3; }
double dot_u8s8(int variant, int64_t iters, float* sink) {
  if (vnni_available()) return dot_u8s8_512(iters, sink);
  switch (variant) {
    case 0: return dot_u8s8_avx2<4>(iters, sink);
    case 1: return dot_u8s8_avx2<5>(iters, sink);
    default: return dot_u8s8_avx2<6>(iters, sink);
  }
}

}  // namespace glmlab::probek
