// Instruction sets of the CPU kernels: asking the CPU for them at run time, and generating code for them
// in a region of a source file (that file's own functions only) or for one function (GLMLAB_AVX2).
//
//   GLMLAB_TARGET_BEGIN("avx512f,avx512bw,...")   ... functions ...   GLMLAB_TARGET_END
//
// Not a file-wide -m flag: with one, the inline functions and templates of the headers a file includes
// (std::vector's growth, fmt) are compiled for that instruction set too, and the linker may keep that copy
// for the whole program — the ASan build ran std::vector<uint8_t, LargePageAllocator>::_M_default_append
// from an AVX-512 file and died with SIGILL on a Zen 2 CPU (session 10). The region applies to functions
// defined inside it; put it after the #includes, so the headers' templates keep the default target. GCC:
// push_options / target / pop_options; clang (the fuzz build): `#pragma clang attribute`.
#pragma once
#include <cpuid.h>

#include <cstdint>

namespace glmlab::isa {

// F16C through CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
inline bool f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

// AVX2 + FMA + F16C: what GLMLAB_AVX2 functions may use.
inline bool avx2() {
  static const bool ok = f16c() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

}  // namespace glmlab::isa

#define GLMLAB_PRAGMA_STR_(...) #__VA_ARGS__
#define GLMLAB_PRAGMA_STR(...) GLMLAB_PRAGMA_STR_(__VA_ARGS__)

#if defined(__clang__)
#define GLMLAB_TARGET_BEGIN(features) \
  _Pragma(GLMLAB_PRAGMA_STR(clang attribute push(__attribute__((target(features))), apply_to = function)))
#define GLMLAB_TARGET_END _Pragma("clang attribute pop")
#else
#define GLMLAB_TARGET_BEGIN(features) _Pragma("GCC push_options") _Pragma(GLMLAB_PRAGMA_STR(GCC target(features)))
#define GLMLAB_TARGET_END _Pragma("GCC pop_options")
#endif

// The AVX512-BF16 kernels' instruction set (dpbf16_gemm.cpp, dpbf16_packed.cpp).
#define GLMLAB_AVX512BF16_FEATURES "avx512f,avx512bw,avx512vl,avx512bf16,fma"

// One function's code generation for AVX2 + FMA + F16C: the AVX2 kernels (avx2_qgemv.cpp, avx2_gemv16.cpp)
// mark each of their functions with it, so the files' other code stays plain x86-64.
#define GLMLAB_AVX2 __attribute__((target("avx2,fma,f16c")))

#include <immintrin.h>

namespace glmlab::isa {

// The sum of an AVX2 vector's 8 lanes (for GLMLAB_AVX2 functions).
GLMLAB_AVX2 inline float hsum(__m256 s) {
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_movehdup_ps(v));
  return _mm_cvtss_f32(v);
}

// Σ a[i]·b[i] over n floats, 16 at a time in two accumulators, then the tail one at a time.
GLMLAB_AVX2 inline float dot(const float* a, const float* b, int64_t n) {
  __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
  int64_t h = 0;
  for (; h + 16 <= n; h += 16) {
    d0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h), d0);
    d1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + h + 8), _mm256_loadu_ps(b + h + 8), d1);
  }
  if (h + 8 <= n) d0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h), d0), h += 8;
  float s = hsum(_mm256_add_ps(d0, d1));
  for (; h < n; ++h) s += a[h] * b[h];
  return s;
}

// n fp16 values to fp32, 8 at a time (F16C), then the tail one at a time.
GLMLAB_AVX2 inline void f16_to_f32(const uint16_t* h, int64_t n, float* f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) f[i] = _cvtsh_ss(h[i]);
}

}  // namespace glmlab::isa
