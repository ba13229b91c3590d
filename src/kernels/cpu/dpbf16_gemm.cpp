// AVX512-BF16 GEMM (see dpbf16_gemm.h). Compiled for AVX512-F/BW/VL/BF16 by a target region below; the
// kernels run only after available() said yes, and available() itself is built for plain x86-64.
#include "kernels/cpu/dpbf16_gemm.h"

#include <immintrin.h>
#include <omp.h>

// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/isa.h"

namespace glmlab::dpbf16 {
bool available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return ok;
}
}  // namespace glmlab::dpbf16

// AVX-512 code for this file's own functions only (kernels/cpu/isa.h says why).
GLMLAB_TARGET_BEGIN(GLMLAB_AVX512BF16_FEATURES)

namespace glmlab::dpbf16 {


namespace {

// n fp32 values → n/2 words, each a bf16 pair (element 2i low, 2i+1 high), rounded to nearest even
// (VCVTNEPS2BF16; NaN stays NaN). n is even.
void to_bf16_pairs(const float* src, int64_t n, uint32_t* dst) {
  auto* d = reinterpret_cast<uint16_t*>(dst);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(d + i, (__m512i)v);
  }
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i > 16 ? 16 : n - i)) - 1);
    const __m256bh lo = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(d + i, m, (__m256i)lo);
    if (n - i > 16) {
      const __mmask16 m2 = __mmask16((1u << (n - i - 16)) - 1);
      const __m256bh hi = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m2, src + i + 16));
      _mm256_mask_storeu_epi16(d + i + 16, m2, (__m256i)hi);
    }
  }
}

// acc[i][j] += Σ_p  pair(bc[i·bc_rs + p]) · pair(v_j[p·v_step .. +16]),  j < NV (1 or 2); p < P.
// bc: 32-bit words (bf16 pairs) broadcast to all lanes; v0, v1: 16 words (16 lanes' pairs) per step.
template <int MR, int NV = 2>
inline void kernel(__m512 (&acc)[MR][2], const uint32_t* bc, int64_t bc_rs, const uint32_t* v0, const uint32_t* v1,
                   int64_t v_step, int64_t P) {
  for (int64_t p = 0; p < P; ++p) {
    const __m512bh a0 = (__m512bh)_mm512_loadu_si512(v0 + p * v_step);
    const __m512bh a1 = NV == 2 ? (__m512bh)_mm512_loadu_si512(v1 + p * v_step) : a0;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(int(bc[i * bc_rs + p]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], b, a0);
      if (NV == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], b, a1);
    }
  }
}

// Backward micro-tile: MR token rows of dx, 32 columns, the P row pairs of one panel.
template <int MR>
void backward_tile(const uint32_t* dyw, int64_t dy_rs, const uint32_t* panel, int64_t P, float* dx, int64_t K) {
  __m512 acc[MR][2];
  for (int t = 0; t < MR; ++t) {
    acc[t][0] = _mm512_loadu_ps(dx + t * K);
    acc[t][1] = _mm512_loadu_ps(dx + t * K + 16);
  }
  kernel<MR>(acc, dyw, dy_rs, panel, panel + 16, 32, P);
  for (int t = 0; t < MR; ++t) {
    _mm512_storeu_ps(dx + t * K, acc[t][0]);
    _mm512_storeu_ps(dx + t * K + 16, acc[t][1]);
  }
}

// min(n, 8) token rows of dx against one panel: the tile height as a template argument.
void backward_tiles(int64_t n, const uint32_t* dyw, int64_t dy_rs, const uint32_t* panel, int64_t P, float* dx,
                    int64_t K) {
  switch (std::min<int64_t>(n, 8)) {
    case 8: backward_tile<8>(dyw, dy_rs, panel, P, dx, K); break;
    case 7: backward_tile<7>(dyw, dy_rs, panel, P, dx, K); break;
    case 6: backward_tile<6>(dyw, dy_rs, panel, P, dx, K); break;
    case 5: backward_tile<5>(dyw, dy_rs, panel, P, dx, K); break;
    case 4: backward_tile<4>(dyw, dy_rs, panel, P, dx, K); break;
    case 3: backward_tile<3>(dyw, dy_rs, panel, P, dx, K); break;
    case 2: backward_tile<2>(dyw, dy_rs, panel, P, dx, K); break;
    case 1: backward_tile<1>(dyw, dy_rs, panel, P, dx, K); break;
    default: break;
  }
}

}  // namespace

void gemm_bf16(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  if (N == 0) return;
  const int64_t KP = K / 2, NB = (N + 15) / 16 * 16;  // whole blocks of 16 tokens (lanes)
  // x as words [NB/16][KP][16]: step p of a 16-token block is one zmm of the 16 tokens' k pair p.
  std::unique_ptr<uint32_t[]> xp(new uint32_t[size_t(NB * KP)]);  // every word written below
#pragma omp parallel
  {
    std::vector<uint32_t> row(static_cast<size_t>(KP));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < NB; ++n) {
      if (n < N)
        to_bf16_pairs(x + n * K, K, row.data());
      else
        std::fill(row.begin(), row.end(), 0u);
      uint32_t* dst = xp.get() + (n / 16) * KP * 16 + n % 16;
      for (int64_t p = 0; p < KP; ++p) dst[p * 16] = row[size_t(p)];
    }
  }
  // Threads own blocks of weight rows (kept in L2 while every token block passes); block height so
  // that it stays under ~256 KB of bf16.
  const int64_t BR = std::clamp<int64_t>((131072 / K) / 8 * 8, 8, 32);
  const int64_t blocks = (M + BR - 1) / BR;
  const auto* W32 = reinterpret_cast<const uint32_t*>(W);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t mb0 = blk * BR, mb1 = std::min(M, mb0 + BR);
    alignas(64) float c[8][32];
    for (int64_t n0 = 0; n0 < NB; n0 += 32) {
      const uint32_t* v0 = xp.get() + (n0 / 16) * KP * 16;
      for (int64_t m0 = mb0; m0 < mb1; m0 += 8) {
        __m512 acc[8][2];
        for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
        if (NB - n0 >= 32)
          kernel<8, 2>(acc, W32 + m0 * KP, KP, v0, v0 + KP * 16, 16, KP);
        else  // a last block of 16 tokens
          kernel<8, 1>(acc, W32 + m0 * KP, KP, v0, v0, 16, KP);
        for (int i = 0; i < 8; ++i) {
          _mm512_store_ps(c[i], acc[i][0]);
          _mm512_store_ps(c[i] + 16, acc[i][1]);
        }
        const int64_t nn = std::min<int64_t>(32, N - n0);
        for (int64_t j = 0; j < nn; ++j) {
          float* yr = y + (n0 + j) * M + m0;
          for (int i = 0; i < 8; ++i) yr[i] = c[i][j] + (bias ? bias[m0 + i] : 0.0f);
        }
      }
    }
  }
}

void interleave_row_pairs(const uint16_t* src, int64_t K, int64_t g0, int64_t ng, int64_t q0, int64_t q1,
                          int64_t pairs, uint32_t* out) {
  const __m512i idx_lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                          37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i idx_hi = _mm512_add_epi16(idx_lo, _mm512_set1_epi16(16));
  constexpr int64_t PF = 32;  // rows prefetched ahead: short strided pieces of rows outrun the prefetcher
  for (int64_t q = q0; q < q1; ++q) {
    const uint16_t* r0 = src + (2 * q) * K + g0 * 32;
    if (q + PF / 2 < q1)
      for (int64_t j = 0; j < ng; ++j) {  // a group is one 64-byte line of each row
        _mm_prefetch(reinterpret_cast<const char*>(r0 + PF * K + j * 32), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(r0 + (PF + 1) * K + j * 32), _MM_HINT_T0);
      }
    for (int64_t j = 0; j < ng; ++j) {
      const __m512i a = _mm512_loadu_si512(r0 + j * 32), b = _mm512_loadu_si512(r0 + K + j * 32);
      uint32_t* d = out + (j * pairs + q) * 32;
      _mm512_storeu_si512(d, _mm512_permutex2var_epi16(a, idx_lo, b));
      _mm512_storeu_si512(d + 16, _mm512_permutex2var_epi16(a, idx_hi, b));
    }
  }
}

void gemm_bf16_backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N,
                              float* dx) {
  if (N == 0) return;
  const int64_t MP = M / 2;
  // dy rounded to bf16, row-major: word q of token t is the pair (dy[t][2q], dy[t][2q+1]).
  std::unique_ptr<uint32_t[]> dyw(new uint32_t[size_t(N * MP)]);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) to_bf16_pairs(dy + t * M, M, dyw.get() + t * MP);

  // Chunks of W rows (what `rows` hands out at a time). Per chunk, each thread takes a job of GG
  // groups of 32 columns: it interleaves them, row pair by row pair, into its panels
  // [GG][chunk/2][32 words] (~512 KB: L2), then runs every token tile over each panel. A job reads
  // GG·64 contiguous bytes of each row: with 64 (one group) every row was a new page and the walks
  // held the strided reads to ~8 GB/s (GG = 4: backward at 110 tokens +20% on Zen 5).
  constexpr int64_t GG = 4;
  const int64_t chunk = std::min<int64_t>(M, 2048);
  // Filled only by sources that widen or dequantize: left uninitialized, so it costs nothing for bf16 W.
  std::unique_ptr<uint16_t[]> scratch(new uint16_t[size_t(chunk * K)]);
  const int64_t groups = K / 32, jobs = (groups + GG - 1) / GG;
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t mc = std::min(chunk, M - m0), pairs = mc / 2;
    const uint16_t* src = rows(m0, mc, scratch.get());
#pragma omp parallel
    {
      std::unique_ptr<uint32_t[]> panels(new uint32_t[size_t(GG * pairs * 32)]);
#pragma omp for schedule(dynamic, 1)
      for (int64_t job = 0; job < jobs; ++job) {
        const int64_t g0 = job * GG, ng = std::min(GG, groups - g0), k0 = g0 * 32;
        interleave_row_pairs(src, K, g0, ng, 0, pairs, pairs, panels.get());
        const uint32_t* dq = dyw.get() + m0 / 2;
        for (int64_t j = 0; j < ng; ++j) {
          const uint32_t* panel = panels.get() + j * pairs * 32;
          float* dxk = dx + k0 + j * 32;
          for (int64_t t = 0; t < N; t += 8) backward_tiles(N - t, dq + t * MP, MP, panel, pairs, dxk + t * K, K);
        }
      }
    }
  }
}

// ---- decode GEMV -------------------------------------------------------------------------------

void pack_acts(const float* x, int nt, int64_t K, int64_t xs, Bf16Acts& out) {
  out.nt = nt;
  out.K = K;
  out.x.resize(size_t(nt) * size_t(K));
#pragma omp parallel for schedule(static) if (nt >= 8)
  for (int t = 0; t < nt; ++t)
    to_bf16_pairs(x + t * xs, K, reinterpret_cast<uint32_t*>(out.x.data() + size_t(t) * size_t(K)));
}

namespace {

#ifndef GLMLAB_BF16_GEMV_PREFETCH
#define GLMLAB_BF16_GEMV_PREFETCH 2048
#endif
// How far ahead along each weight row its lines are prefetched (bytes).
constexpr int64_t kGemvPrefetch = GLMLAB_BF16_GEMV_PREFETCH;

// out[r][t · ys] = row w[r] · token t, for NR weight rows (anywhere in W) and NT tokens; K % 32 == 0.
template <int NR, int NT>
inline void gemv_tile(const uint16_t* const* w, int64_t K, const uint16_t* x, float* const* out, int64_t ys,
                      bool prefetch) {
  __m512 acc[NR][NT];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < K; i += 32) {
    __m512bh wv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(w[r] + i) + kGemvPrefetch, _MM_HINT_T0);
      wv[r] = (__m512bh)_mm512_loadu_si512(w[r] + i);
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * K + i);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], xv);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) out[r][t * ys] = _mm512_reduce_add_ps(acc[r][t]);
}

// Rows [r0, r1) against NT tokens. The range is cut into kStreams equal parts read side by side, one
// row of each at a time: each part is a long sequential stream through consecutive rows (the hardware
// prefetchers and the software prefetch, which runs on into a part's next row, both keep up), where
// neighbouring rows side by side would restart every stream at every row. Rows left over go one by one.
template <int NT>
void gemv_rows_nt(const uint16_t* W, int64_t K, int64_t r0, int64_t r1, const uint16_t* x, float* y, int64_t ys,
                  bool prefetch) {
  constexpr int kStreams = NT <= 4 ? 4 : 2;
  const int64_t part = (r1 - r0) / kStreams;
  for (int64_t j = 0; j < part; ++j) {
    const uint16_t* w[kStreams];
    float* out[kStreams];
    for (int s = 0; s < kStreams; ++s) {
      w[s] = W + (r0 + s * part + j) * K;
      out[s] = y + r0 + s * part + j;
    }
    gemv_tile<kStreams, NT>(w, K, x, out, ys, prefetch);
  }
  for (int64_t r = r0 + kStreams * part; r < r1; ++r) {
    const uint16_t* w[1] = {W + r * K};
    float* out[1] = {y + r};
    gemv_tile<1, NT>(w, K, x, out, ys, prefetch);
  }
}

void gemv_rows_any(int nt, const uint16_t* W, int64_t K, int64_t r0, int64_t r1, const uint16_t* x, float* y,
                   int64_t ys, bool prefetch) {
  switch (nt) {
    case 1: gemv_rows_nt<1>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 2: gemv_rows_nt<2>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 3: gemv_rows_nt<3>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 4: gemv_rows_nt<4>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 5: gemv_rows_nt<5>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 6: gemv_rows_nt<6>(W, K, r0, r1, x, y, ys, prefetch); break;
    case 7: gemv_rows_nt<7>(W, K, r0, r1, x, y, ys, prefetch); break;
    default: gemv_rows_nt<8>(W, K, r0, r1, x, y, ys, prefetch); break;
  }
}

}  // namespace

void gemv(const uint16_t* W, int64_t r0, int64_t r1, const Bf16Acts& a, float* y, int64_t ys) {
  const int64_t K = a.K;
  constexpr int kTokensPerPass = 8;
  if (a.nt <= kTokensPerPass) {
    gemv_rows_any(a.nt, W, K, r0, r1, a.x.data(), y, ys, true);
    return;
  }
  // Blocks of rows that stay in L2 (≤ ~128 KB) while every group of tokens passes over them; only the
  // first group streams them from memory (and prefetches).
  const int64_t block = std::max<int64_t>(2, (131072 / (2 * K)) / 2 * 2);
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block);
    for (int t0 = 0; t0 < a.nt; t0 += kTokensPerPass) {
      const int n = std::min(kTokensPerPass, a.nt - t0);
      gemv_rows_any(n, W, K, b0, b1, a.x.data() + size_t(t0) * size_t(K), y + t0 * ys, ys, t0 == 0);
    }
  }
}

}  // namespace glmlab::dpbf16

GLMLAB_TARGET_END
