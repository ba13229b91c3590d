// Packed-layout VNNI GEMV (see vnni_packed.h).
//
// Lane l of a 64-byte load at (block, unit u) holds bytes 4u..4u+3 of row 16·block + l:
//   Q4: 8 inputs 8u..8u+7; the high nibbles are the even inputs 8u, 8u+2, 8u+4, 8u+6, the low nibbles
//       the odd ones. (w >> 4) & 15 and w & 15 are two u8 operands of VPDPBUSD, against the 4 even and the
//       4 odd activation bytes (s8) broadcast to all lanes. Σ (q + 8)·x = Σ q·x + 8·Σ x.
//   Q8: 4 inputs 4u..4u+3 as q + 128 (u8) against 4 activation bytes. Σ (q + 128)·x = Σ q·x + 128·Σ x.
// Per block of activations (128 inputs) a lane's int32 sum is exact; the offset term is one int per
// (token, block) (corr), subtracted before the conversion to fp32, which is then scaled by the 16 rows'
// group scales times the token's block scale.
#include "kernels/cpu/vnni_packed.h"

#include <immintrin.h>
#include <omp.h>

#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/vnni_gemv.h"
#include "util/error.h"

namespace glmlab::vnni {

namespace {

constexpr int64_t kRows = 16;         // rows interleaved in a block (int32 lanes of a zmm)
constexpr int64_t kActBlock = 128;    // activation inputs per int8 scale
constexpr int kTokensPerPass = 8;
constexpr int64_t kBlocksPerTile = 4;  // row blocks (64 rows) that groups of 8 tokens pass over in turn
#ifndef GLMLAB_VNNI_PACKED_PREFETCH
#define GLMLAB_VNNI_PACKED_PREFETCH 2048
#endif
constexpr int64_t kPrefetch = GLMLAB_VNNI_PACKED_PREFETCH;


// From 5 tokens the fp32 sums go through L1 (tile's kAccInL1) so that 3 row blocks (Q8) or 2 (Q4: two
// unpacked weight registers each) share a pass: with the sums in registers 8 tokens left room for one
// block, one weight stream a thread, which read 21 GB/s (27392 × 4096 at 8 tokens: Q8 5.4 → 4.0-4.3 ms,
// Q4 3.0 → 2.6-2.75 on 2 AMX Xeon cores).
constexpr int kL1FromTokens = 5;
constexpr int kL1BlocksQ8 = 3, kL1BlocksQ4 = 2;
#define GLMLAB_VNNI_P __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

int64_t unit_inputs(DType t) { return t == DType::Q4 ? 8 : 4; }
uint8_t offset_mask(DType t) { return t == DType::Q4 ? 0x88 : 0x80; }

int64_t act_block(const Matrix& W) {
  if (W.groups() == 1 || W.group_size % kActBlock == 0) return kActBlock;
  return W.group_size;  // a divisor of 128 holding whole units (packable)
}

// Row blocks [b0, b0 + RB) against tokens [t0, t0 + NT), all units, into y. The fp32 sums stay in
// registers (kAccInL1 false: 2·RB·NT registers with the integer ones), or in an L1 buffer updated once per
// activation block (kAccInL1: RB·NT registers, so 8 tokens can read 3 row blocks, 3 weight streams, at once).
template <int RB, int NT, bool kQ4, bool kAccInL1 = false>
GLMLAB_VNNI_P void tile(const Matrix& P, int64_t b0, const PackedActs& a, int t0, float* y, int64_t ys) {
  constexpr int kS = kQ4 ? 8 : 4;       // activation bytes per unit
  const int64_t U = a.units, UB = a.block / unit_inputs(a.wtype), ng = P.groups(), G = P.group_size;
  const uint8_t* base = static_cast<const uint8_t*>(P.data) + b0 * U * 64;
  const __m512i m0f = _mm512_set1_epi8(0x0F);
  __m512 acc[kAccInL1 ? 1 : RB][kAccInL1 ? 1 : NT];
  alignas(64) float accm[kAccInL1 ? RB : 1][kAccInL1 ? NT : 1][kRows];
  _Pragma("GCC unroll 8")
  for (int r = 0; r < RB; ++r)
    _Pragma("GCC unroll 8")
    for (int t = 0; t < NT; ++t) {
      if constexpr (kAccInL1)
        _mm512_store_ps(accm[r][t], _mm512_setzero_ps());
      else
        acc[r][t] = _mm512_setzero_ps();
    }
  for (int64_t b = 0; b < a.blocks; ++b) {
    const int64_t u0 = b * UB, u1 = std::min(U, u0 + UB);
    // One chain of VPDPBUSD per (row block, token): splitting them further (even / odd units) measured
    // no faster at one token and slower for Q8.
    __m512i s[RB][NT];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < RB; ++r)
      _Pragma("GCC unroll 8")
      for (int t = 0; t < NT; ++t) s[r][t] = _mm512_setzero_si512();
    for (int64_t u = u0; u < u1; ++u) {
      const int8_t* xq = a.q.data() + (int64_t(t0) * U + u) * kS;
      if constexpr (kAccInL1 && kQ4) {
        // Q4: every row block's weights unpacked first, then each token's activations broadcast once for all
        // of them (Q8 measured 5-10% slower this way than with the loop below).
        __m512i wa[RB], wb[RB];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < RB; ++r) {
          const uint8_t* p = base + (r * U + u) * 64;
          _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
          const __m512i w = _mm512_loadu_si512(p);
          wa[r] = _mm512_and_si512(_mm512_srli_epi16(w, 4), m0f);
          wb[r] = _mm512_and_si512(w, m0f);
        }
        _Pragma("GCC unroll 8")
        for (int t = 0; t < NT; ++t) {
          int32_t e, o;
          std::memcpy(&e, xq + t * U * kS, 4);
          std::memcpy(&o, xq + t * U * kS + 4, 4);
          const __m512i ve = _mm512_set1_epi32(e), vo = _mm512_set1_epi32(o);
          _Pragma("GCC unroll 8")
          for (int r = 0; r < RB; ++r) s[r][t] = _mm512_dpbusd_epi32(s[r][t], wa[r], ve);
          _Pragma("GCC unroll 8")
          for (int r = 0; r < RB; ++r) s[r][t] = _mm512_dpbusd_epi32(s[r][t], wb[r], vo);
        }
        continue;
      }
      _Pragma("GCC unroll 8")
      for (int r = 0; r < RB; ++r) {
        const uint8_t* p = base + (r * U + u) * 64;
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
        const __m512i w = _mm512_loadu_si512(p);
        if constexpr (kQ4) {
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m0f), lo = _mm512_and_si512(w, m0f);
          _Pragma("GCC unroll 8")
          for (int t = 0; t < NT; ++t) {
            int32_t e, o;
            std::memcpy(&e, xq + t * U * kS, 4);
            std::memcpy(&o, xq + t * U * kS + 4, 4);
            s[r][t] = _mm512_dpbusd_epi32(s[r][t], hi, _mm512_set1_epi32(e));
            s[r][t] = _mm512_dpbusd_epi32(s[r][t], lo, _mm512_set1_epi32(o));
          }
        } else {
          _Pragma("GCC unroll 8")
          for (int t = 0; t < NT; ++t) {
            int32_t e;
            std::memcpy(&e, xq + t * U * kS, 4);
            s[r][t] = _mm512_dpbusd_epi32(s[r][t], w, _mm512_set1_epi32(e));
          }
        }
      }
    }
    const int64_t g = ng == 1 ? 0 : b * a.block / G;
    _Pragma("GCC unroll 8")
    for (int r = 0; r < RB; ++r) {
      const __m512 sw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P.scales + ((b0 + r) * ng + g) * kRows)));
      _Pragma("GCC unroll 8")
      for (int t = 0; t < NT; ++t) {
        const int64_t i = int64_t(t0 + t) * a.blocks + b;
        const __m512i si = _mm512_sub_epi32(s[r][t], _mm512_set1_epi32(a.corr[size_t(i)]));
        const __m512 sc = _mm512_mul_ps(sw, _mm512_set1_ps(a.scale[size_t(i)]));
        if constexpr (kAccInL1)
          _mm512_store_ps(accm[r][t], _mm512_fmadd_ps(_mm512_cvtepi32_ps(si), sc, _mm512_load_ps(accm[r][t])));
        else
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si), sc, acc[r][t]);
      }
    }
  }
  _Pragma("GCC unroll 8")
  for (int r = 0; r < RB; ++r) {
    const int64_t row = (b0 + r) * kRows, left = P.rows - row;
    const __mmask16 m = left >= kRows ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    _Pragma("GCC unroll 8")
    for (int t = 0; t < NT; ++t) {
      if constexpr (kAccInL1)
        _mm512_mask_storeu_ps(y + int64_t(t0 + t) * ys + row, m, _mm512_load_ps(accm[r][t]));
      else
        _mm512_mask_storeu_ps(y + int64_t(t0 + t) * ys + row, m, acc[r][t]);
    }
  }
}

// Row blocks [b0, b1) against tokens [t0, t0 + nt), nt ≤ 8: RB blocks side by side (RB streams).
template <int NT, bool kQ4>
void tiles_nt(const Matrix& P, int64_t b0, int64_t b1, const PackedActs& a, int t0, float* y, int64_t ys) {
  constexpr bool kL1 = NT >= kL1FromTokens;
  constexpr int RB = kL1 ? (kQ4 ? kL1BlocksQ4 : kL1BlocksQ8) : NT <= 2 ? 4 : NT <= 4 ? 2 : 1;
  int64_t b = b0;
  for (; b + RB <= b1; b += RB) tile<RB, NT, kQ4, kL1>(P, b, a, t0, y, ys);
  for (; b < b1; ++b) tile<1, NT, kQ4, kL1>(P, b, a, t0, y, ys);
}

template <bool kQ4>
void tiles(const Matrix& P, int64_t b0, int64_t b1, const PackedActs& a, int t0, int nt, float* y, int64_t ys) {
  switch (nt) {
    case 1: tiles_nt<1, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 2: tiles_nt<2, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 3: tiles_nt<3, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 4: tiles_nt<4, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 5: tiles_nt<5, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 6: tiles_nt<6, kQ4>(P, b0, b1, a, t0, y, ys); break;
    case 7: tiles_nt<7, kQ4>(P, b0, b1, a, t0, y, ys); break;
    default: tiles_nt<8, kQ4>(P, b0, b1, a, t0, y, ys); break;
  }
}

}  // namespace

bool packable(const Matrix& W) {
  if (!W.quantized() || W.layout != MatrixLayout::RowMajor || !available()) return false;
  const int64_t ui = unit_inputs(W.dtype);
  if (W.cols % ui != 0 || W.rows <= 0) return false;
  const int64_t G = W.group_size;
  return W.groups() == 1 || G % kActBlock == 0 || (kActBlock % G == 0 && G % ui == 0);
}

PackedMatrix pack(const Matrix& W) {
  if (!packable(W)) fail("vnni::pack: a {}x{} matrix (group {}) cannot be packed", W.rows, W.cols, W.group_size);
  const int64_t rb = W.row_bytes(), U = rb / 4, ng = W.groups(), nb = (W.rows + kRows - 1) / kRows;
  PackedMatrix out;
  out.data.resize(size_t(nb * kRows * rb));
  out.scales.resize(size_t(nb * kRows * ng * 2));
  const uint8_t* src = static_cast<const uint8_t*>(W.data);
  const uint8_t x = offset_mask(W.dtype);
  uint8_t* dst = out.data.data();
  uint16_t* sc = reinterpret_cast<uint16_t*>(out.scales.data());
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t l = 0; l < kRows; ++l) {
      const int64_t r = b * kRows + l;
      if (r >= W.rows) {  // padding rows: zero bytes (kept out of y by the kernel), zero scales
        for (int64_t u = 0; u < U; ++u) std::memset(dst + ((b * U + u) * kRows + l) * 4, 0, 4);
        for (int64_t g = 0; g < ng; ++g) sc[(b * ng + g) * kRows + l] = 0;
        continue;
      }
      const uint8_t* row = src + r * rb;
      for (int64_t u = 0; u < U; ++u) {
        uint8_t* d = dst + ((b * U + u) * kRows + l) * 4;
        for (int j = 0; j < 4; ++j) d[j] = row[4 * u + j] ^ x;
      }
      for (int64_t g = 0; g < ng; ++g) sc[(b * ng + g) * kRows + l] = W.scales[r * ng + g];
    }
  }
  out.m = W;
  out.m.layout = MatrixLayout::Vnni16;
  out.m.data = out.data.data();
  out.m.scales = sc;
  return out;
}

void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint8_t* data, uint16_t* scales) {
  const int64_t rb = P.row_bytes(), U = rb / 4, ng = P.groups();
  const uint8_t* src = static_cast<const uint8_t*>(P.data);
  const uint8_t x = offset_mask(P.dtype);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / kRows, l = r % kRows;
    uint8_t* row = data + (r - r0) * rb;
    for (int64_t u = 0; u < U; ++u) {
      const uint8_t* s = src + ((b * U + u) * kRows + l) * 4;
      for (int j = 0; j < 4; ++j) row[4 * u + j] = s[j] ^ x;
    }
    for (int64_t g = 0; g < ng; ++g) scales[(r - r0) * ng + g] = P.scales[(b * ng + g) * kRows + l];
  }
}

namespace {

// One token's row: per block of `block` inputs, d = max|x| / 127 and q = round-half-even(x / d) clamped to
// ±127 (0 where d is 0), stored in the packed layout's order; Σ q per block into *sum.
GLMLAB_VNNI_P void quantize_row(const float* xr, int64_t K, int64_t block, bool q4, int8_t* q, float* scale,
                                int32_t* sum) {
  // Q4: within each unit of 8 inputs, the 4 even ones first, then the 4 odd ones.
  const __m128i q4_order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  const int64_t blocks = (K + block - 1) / block;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t k0 = b * block, k1 = std::min(K, k0 + block);
    __m512 amax = _mm512_setzero_ps();
    for (int64_t i = k0; i < k1; i += 16) {
      const __mmask16 m = k1 - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (k1 - i)) - 1);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, xr + i)));
    }
    const float d = _mm512_reduce_max_ps(amax) / 127.0f;
    __m512i s = _mm512_setzero_si512();
    const __m512 dv = _mm512_set1_ps(d), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    for (int64_t i = k0; i < k1; i += 16) {
      const int64_t n = std::min<int64_t>(16, k1 - i);
      const __mmask16 m = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
      __m512i v = _mm512_setzero_si512();
      if (d != 0) {
        const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, xr + i), dv),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
      }
      s = _mm512_add_epi32(s, v);
      __m128i bytes = _mm512_cvtepi32_epi8(v);
      if (q4) bytes = _mm_shuffle_epi8(bytes, q4_order);  // n is a multiple of 8 (whole units) for Q4
      _mm_mask_storeu_epi8(q + i, __mmask16(m), bytes);
    }
    scale[b] = d;
    sum[b] = _mm512_reduce_add_epi32(s);
  }
}

}  // namespace

void quantize_acts(const float* x, int nt, const Matrix& P, PackedActs& a) {
  const int64_t K = P.cols, kS = P.dtype == DType::Q4 ? 8 : 4;
  a.wtype = P.dtype;
  a.nt = nt;
  a.units = P.row_bytes() / 4;
  a.block = act_block(P);
  a.blocks = (K + a.block - 1) / a.block;
  // A row holds units · kS = K bytes (K % 8 == 0 for Q4, % 4 for Q8): every byte is written below.
  a.q.resize(size_t(nt * a.units * kS));
  a.scale.resize(size_t(nt * a.blocks));
  a.corr.resize(size_t(nt * a.blocks));
  const int offset = P.dtype == DType::Q4 ? 8 : 128;
  const bool q4 = P.dtype == DType::Q4;
  // Rows are independent: a prefill's hundreds of rows are quantized on every thread.
#pragma omp parallel for schedule(static) if (nt >= 4)
  for (int t = 0; t < nt; ++t) {
    int32_t* corr = a.corr.data() + int64_t(t) * a.blocks;
    quantize_row(x + int64_t(t) * K, K, a.block, q4, a.q.data() + int64_t(t) * a.units * kS,
                 a.scale.data() + int64_t(t) * a.blocks, corr);
    for (int64_t b = 0; b < a.blocks; ++b) corr[b] *= offset;
  }
}

void gemv(const Matrix& P, int64_t r0, int64_t r1, const PackedActs& a, float* y, int64_t ys) {
  const int64_t b0 = r0 / kRows, b1 = (r1 + kRows - 1) / kRows;
  const bool q4 = P.dtype == DType::Q4;
  auto run = [&](int64_t c0, int64_t c1, int t0, int n) {
    if (q4)
      tiles<true>(P, c0, c1, a, t0, n, y, ys);
    else
      tiles<false>(P, c0, c1, a, t0, n, y, ys);
  };
  if (a.nt <= kTokensPerPass) return run(b0, b1, 0, a.nt);
  for (int64_t c = b0; c < b1; c += kBlocksPerTile) {
    const int64_t c1 = std::min(b1, c + kBlocksPerTile);
    for (int t0 = 0; t0 < a.nt; t0 += kTokensPerPass) run(c, c1, t0, std::min(kTokensPerPass, a.nt - t0));
  }
}

}  // namespace glmlab::vnni
