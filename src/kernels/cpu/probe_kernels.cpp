// Kernels of the machine probes (see probe_kernels.h).
#include "kernels/cpu/probe_kernels.h"

#include <immintrin.h>

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace glmlab::probek {

bool avx512_available() { return __builtin_cpu_supports("avx512f"); }
bool dpbf16_available() {
  return avx512_available() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
}
bool vnni_available() { return avx512_available() && __builtin_cpu_supports("avx512vnni"); }

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

GLMLAB_PAVX2 float read256(const char* p, size_t bytes) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (size_t i = 0; i < bytes; i += 64) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(reinterpret_cast<const float*>(p + i)));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 32)));
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(a0, a1));
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

}  // namespace

float read(const void* p, size_t bytes, int streams, size_t row_bytes, size_t prefetch) {
  const char* c = static_cast<const char*>(p);
  if (!avx512_available()) return read256(c, bytes);
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

__attribute__((target("avx512f,fma"))) double fma_f32(int64_t iters, float* sink) {
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

__attribute__((target("avx512f,avx512vnni"))) double dot_u8s8(int64_t iters, float* sink) {
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  GLMLAB_PEAK_LOOP(__m512i acc[16]; for (auto& v : acc) v = _mm512_setzero_si512(),
                   acc[c] = _mm512_dpbusd_epi32(acc[c], a, b),
                   // Summed as floats: the 256 int32 lanes of a long run add up past INT_MAX.
                   __m512 t = _mm512_cvtepi32_ps(acc[0]);
                   for (int c = 1; c < 16; ++c) t = _mm512_add_ps(t, _mm512_cvtepi32_ps(acc[c]));
                   *sink = _mm512_reduce_add_ps(t));
  return double(iters) * 16 * 128;
}

}  // namespace glmlab::probek
