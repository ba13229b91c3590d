// AMX bf16 GEMM (see amx_gemm.h). Compiled with -mamx-tile -mamx-bf16; called only when available().
#include "kernels/cpu/amx_gemm.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cpuid.h>

#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12 on _mm512_setzero_ps / set1 under a target attribute
#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on _mm512_cvtph_ps / extracts likewise
#endif

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cpu/dpbf16_gemm.h"
#include "util/aligned.h"
#include "util/dtype.h"

namespace glmlab::amx {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// CPUID leaf 7 EDX: AMX-BF16 bit 22, AMX-TILE bit 24, AMX-INT8 bit 25.
bool has_feature(unsigned bit) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return d & (1u << bit);
}

// Asks the kernel for the tile state (once per process; Linux refuses AMX instructions without it).
bool tile_state_granted() {
  static const bool ok = [] {
    if (!has_feature(24)) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

}  // namespace

void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // GCC 12 does not see LDTILECFG read the struct and drops the stores above unless told the memory is used.
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

bool available() {
  static const bool ok = has_feature(22) && tile_state_granted();
  return ok;
}

bool int8_available() {
  static const bool ok = has_feature(25) && tile_state_granted();
  return ok;
}

namespace {
// The probes' register-resident loop: operand tiles 4-7 loaded from `ab` (16 rows × 64 bytes), C tiles 0-3
// zeroed, `iters` rounds of `round` (4 independent products); word 0 of tile 0 and word 255 of tile 3 come
// back in out[0], out[1].
template <class Round>
void peak_loop(const void* ab, int64_t iters, Round round, uint32_t out[2]) {
  configure_tiles();
  alignas(64) uint32_t c[16 * 16];
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ab, 64);
  _tile_loadd(5, ab, 64);
  _tile_loadd(6, ab, 64);
  _tile_loadd(7, ab, 64);
  for (int64_t it = 0; it < iters; ++it) round();
  _tile_stored(0, c, 64);
  out[0] = c[0];
  _tile_stored(3, c, 64);
  out[1] = c[255];
  _tile_release();
}
}  // namespace

double peak_bf16(int64_t iters, float* sink) {
  alignas(64) uint16_t ab[16 * 32];
  for (auto& v : ab) v = 0x3f80;  // 1.0
  uint32_t out[2];
  peak_loop(ab, iters, [] {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }, out);
  *sink = std::bit_cast<float>(out[0]) + std::bit_cast<float>(out[1]);
  return double(iters) * 4 * 16 * 16 * 32 * 2;
}

double peak_int8(int64_t iters, float* sink) {
  alignas(64) uint8_t ab[16 * 64];
  std::memset(ab, 1, sizeof ab);
  uint32_t out[2];
  peak_loop(ab, iters, [] {
    _tile_dpbsud(0, 4, 6);
    _tile_dpbsud(1, 4, 7);
    _tile_dpbsud(2, 5, 6);
    _tile_dpbsud(3, 5, 7);
  }, out);
  *sink = float(int32_t(out[0])) + float(int32_t(out[1]));
  return double(iters) * 4 * 16 * 16 * 64 * 2;
}

#define GLMLAB_AMX_V __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

GLMLAB_AMX_V void copy_run(const float* src, int64_t n, float* y, bool stream) {
  const auto addr = reinterpret_cast<uintptr_t>(y);
  if (!stream || addr % sizeof(float) != 0) {
    std::memcpy(y, src, size_t(n) * sizeof(float));
    return;
  }
  const int64_t head = std::min(n, int64_t((64 - addr % 64) % 64) / int64_t(sizeof(float)));
  int64_t i = 0;
  for (; i < head; ++i) y[i] = src[i];
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, _mm512_loadu_ps(src + i));
  for (; i < n; ++i) y[i] = src[i];
}

namespace {

// Token block tb of acts_to_tiles: 16 tokens' rows rounded to bf16 (VCVTNE2PS2BF16, nearest even, as
// dpbf16::pack_acts) straight into their A tiles.
GLMLAB_AMX_V void acts_block_to_tiles(const float* x, int64_t N, int64_t K, int64_t tb, uint16_t* out) {
  const int64_t steps = K / 32;
  for (int64_t r = 0; r < 16; ++r) {
    const int64_t t = tb * 16 + r;
    const float* src = x + t * K;
    for (int64_t s = 0; s < steps; ++s) {
      uint16_t* d = out + ((tb * steps + s) * 16 + r) * 32;
      const __m512i v = t < N ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + s * 32 + 16), _mm512_loadu_ps(src + s * 32))
                              : _mm512_setzero_si512();
      _mm512_store_si512(d, v);
    }
  }
}

// The calling thread's buffer for a call's activations in tile layout, at least n elements, 64-byte
// aligned: kept between calls and only grown, so a layer's calls take no page faults (one per thread, so
// concurrent callers do not share; it holds the largest call's activations, as bf16).
uint16_t* tiles_workspace(size_t n) {
  thread_local AlignedVector<uint16_t> w;
  if (w.size() < n) {
    w.clear();
    w.resize(n);
  }
  return w.data();
}

// Activations x [N, K] rounded to bf16 and written into whole 1 KB A tiles, [tiles16 blocks of 16
// tokens][K/32 steps][16][32], on whole cache lines (tiles_workspace); tokens past N are zero.
const uint16_t* acts_to_tiles(const float* x, int64_t N, int64_t K, int64_t tiles16) {
  uint16_t* o = tiles_workspace(size_t(tiles16 * (K / 32) * 512));
#pragma omp parallel for schedule(static)
  for (int64_t tb = 0; tb < tiles16; ++tb) acts_block_to_tiles(x, N, K, tb, o);
  return o;
}

// r[i] = column i of the 16 × 16 matrix whose rows r held (in registers: unpack, then 128-bit lane shuffles).
GLMLAB_AMX_V inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 4; ++k) {
      t[8 * i + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
      t[8 * i + 4 + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0xdd);
    }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
  }
}

// Rows [16·nb, 16·nb + 16) of x [N, K] (rows past N zero) rounded to bf16 into the row-major GEMM's B
// layout, [K/2 pairs][16 rows][2]: per 16 pairs, the rows' pair words transposed in registers.
GLMLAB_AMX_V void pairs_block(const float* x, int64_t N, int64_t K, int64_t nb, uint16_t* out) {
  auto* dst = reinterpret_cast<float*>(out + nb * 16 * K);  // pair words, moved as floats
  for (int64_t p0 = 0; p0 < K / 2; p0 += 16) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t n = nb * 16 + i;
      const float* src = x + n * K + 2 * p0;
      r[i] = n < N ? _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src)))
                   : _mm512_setzero_ps();
    }
    transpose16(r);
    for (int k = 0; k < 16; ++k) _mm512_store_ps(dst + (p0 + k) * 16, r[k]);
  }
}

// A C tile of 16 weight rows × 16 tokens, c[i][j], into y[j·ys + i] (+ bias[i]) for tokens j < ntok.
GLMLAB_AMX_V void store_transposed(const float* c, int ntok, float* y, int64_t ys, const float* bias) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(c + 16 * i);
  transpose16(r);
  const __m512 b = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int j = 0; j < ntok; ++j) _mm512_storeu_ps(y + j * ys, _mm512_add_ps(r[j], b));
}

// One token's outputs of a job out of the C buffer (c: the token's row in the first row pair's tile; row
// pairs 4 tiles apart, `tiles` 16-output tiles in order) into y, a contiguous run of 16·tiles floats,
// through `row` (64-byte aligned) and copy_run.
GLMLAB_AMX_V void store_c_row(const float* c, int64_t tiles, float* y, bool stream, float* row) {
  for (int64_t t = 0; t < tiles; ++t) _mm512_store_ps(row + 16 * t, _mm512_load_ps(c + (t / 2) * 1024 + (t % 2) * 256));
  copy_run(row, 16 * tiles, y, stream);
}

// Steps [k0, k1) of the 16-row block rb of an fp16 matrix packed [M/16][K][16 rows] (f16_packed.h) as
// bf16 B tiles in the bf16 packed layout, [steps][16 pairs][16 rows][2]: hi = bf16(w) (nearest even) and
// lo = bf16(w − hi). An fp16 value has 11 significant bits and hi holds the first 8, so w − hi is exact
// in fp32 and fits lo's 8 bits: hi + lo == w exactly, and hi·a + lo·a is the fp16 weight's product.
GLMLAB_AMX_V void f16_block_to_tiles(const uint16_t* P, int64_t K, int64_t rb, int64_t k0, int64_t k1, uint16_t* hi,
                                     uint16_t* lo) {
  alignas(64) static const uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  const uint16_t* src = P + rb * K * 16;  // [K][16 rows]
  for (int64_t p = 16 * k0; p < 16 * k1; ++p) {
    const __m512 wa = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + (2 * p) * 16)));
    const __m512 wb = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + (2 * p + 1) * 16)));
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(wb, wa);  // words 0-15: input 2p, 16-31: input 2p + 1
    const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    const __m512 hb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    const __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(wb, hb), _mm512_sub_ps(wa, ha));
    const int64_t o = (p - 16 * k0) * 32;  // the pair's line: row r's two inputs at words 2r, 2r + 1
    _mm512_store_si512(hi + o, _mm512_permutexvar_epi16(idx, h));
    _mm512_store_si512(lo + o, _mm512_permutexvar_epi16(idx, l));
  }
}

// Steps [k0, k1) of rows [16·rb, 16·rb + 16) of a row-major bf16 matrix W [M, K] as B tiles in the packed
// layout, [steps][16 pairs][16 rows][2]: per step, the 16 rows' 64-byte runs (16 pair words each)
// transposed in registers. The values are W's own: the product is the packed kernel's on the same bits.
GLMLAB_AMX_V void rowmajor_block_to_tiles(const uint16_t* W, int64_t K, int64_t rb, int64_t k0, int64_t k1,
                                          uint16_t* out) {
  const uint16_t* src = W + rb * 16 * K;
  for (int64_t s = k0; s < k1; ++s) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(reinterpret_cast<const float*>(src + i * K + s * 32));
    transpose16(r);
    float* d = reinterpret_cast<float*>(out + (s - k0) * 512);
    for (int p = 0; p < 16; ++p) _mm512_store_ps(d + p * 16, r[p]);
  }
}

// Word indices for _mm512_permutex2var_epi16(a, idx, b) over two rows' 32 words each: kPairLo interleaves
// words 0–15 of a and b (a0 b0 a1 b1 …), kPairHi words 16–31: the B-tile lines of Wᵀ's two 16-column blocks.
alignas(64) constexpr uint16_t kPairLo[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                              8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) constexpr uint16_t kPairHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                              24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

// Steps [k0, k1) of output blocks rb and rb + 1 of the input gradient dx[N, M'] += dy[N, K'] ·
// W[K', M'] with W row-major (its rows the product's inputs): the B tiles of Wᵀ, [steps][16 pairs][16
// outputs][2], block rb's into b0, rb + 1's into b1 (fits() shapes have an even number of blocks). Line p of step s holds W's rows 32s + 2p and
// 32s + 2p + 1 at the block's 16 columns, interleaved. Both blocks come from one 64-byte load a row (rows
// 2·M' bytes apart fall into one L1 set: a second pass for the other block would fetch them again).
GLMLAB_AMX_V void rowmajor_t_blocks_to_tiles(const uint16_t* W, int64_t cols, int64_t rb, int64_t k0, int64_t k1,
                                             uint16_t* b0, uint16_t* b1) {
  const __m512i lo = _mm512_load_si512(kPairLo), hi = _mm512_load_si512(kPairHi);
  for (int64_t s = k0; s < k1; ++s)
    for (int64_t p = 0; p < 16; ++p) {
      // rows m and m + 1, 32 columns each: words 0–15 block rb, 16–31 block rb + 1
      const uint16_t* r0 = W + (32 * s + 2 * p) * cols + 16 * rb;
      const int64_t o = ((s - k0) * 16 + p) * 32;
      const __m512i a = _mm512_loadu_si512(r0), b = _mm512_loadu_si512(r0 + cols);
      _mm512_store_si512(b0 + o, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_store_si512(b1 + o, _mm512_permutex2var_epi16(a, hi, b));
    }
}

// Weights [c, c + 32) of row r of a row-major Q8 / Q4 matrix (c a multiple of 32 inside one group) as 32
// bf16 in order: q · scale in fp32 rounded to nearest even (VCVTNE2PS2BF16), the bits simd::dequant_rows_bf16
// writes for them. Q4 holds the even element in a byte's high nibble.
GLMLAB_AMX_V inline __m512i quant32_bf16(const Matrix& W, int64_t r, int64_t c) {
  const __m512 s = _mm512_set1_ps(f16_to_f32(W.scales[r * W.groups() + c / W.group_size]));
  const int8_t* q = static_cast<const int8_t*>(W.data) + r * W.row_bytes();
  __m512i lo, hi;  // elements 0–15 and 16–31 as int32
  if (W.dtype == DType::Q8) {
    lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c)));
    hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c + 16)));
  } else {
    alignas(64) static const int32_t kLo[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    alignas(64) static const int32_t kHi[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c / 2)));
    const __m512i even = _mm512_srai_epi32(b, 4), odd = _mm512_srai_epi32(_mm512_slli_epi32(b, 28), 28);
    lo = _mm512_permutex2var_epi32(even, _mm512_load_si512(kLo), odd);
    hi = _mm512_permutex2var_epi32(even, _mm512_load_si512(kHi), odd);
  }
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_cvtepi32_ps(hi), s), _mm512_mul_ps(_mm512_cvtepi32_ps(lo), s));
}

// rowmajor_block_to_tiles for a Q8 / Q4 matrix: each row's 32 weights of a step dequantized in registers.
GLMLAB_AMX_V void quant_block_to_tiles(const Matrix& W, int64_t rb, int64_t k0, int64_t k1, uint16_t* out) {
  for (int64_t s = k0; s < k1; ++s) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_castsi512_ps(quant32_bf16(W, rb * 16 + i, s * 32));
    transpose16(r);
    float* d = reinterpret_cast<float*>(out + (s - k0) * 512);
    for (int p = 0; p < 16; ++p) _mm512_store_ps(d + p * 16, r[p]);
  }
}

// rowmajor_t_blocks_to_tiles for a Q8 / Q4 matrix [K', M'] (both blocks: fits() shapes have an even number
// of 16-column blocks): rows 32s + 2p and 32s + 2p + 1 at columns [16·rb, 16·rb + 32) dequantized, then
// interleaved.
GLMLAB_AMX_V void quant_t_blocks_to_tiles(const Matrix& W, int64_t rb, int64_t k0, int64_t k1, uint16_t* b0,
                                          uint16_t* b1) {
  const __m512i lo = _mm512_load_si512(kPairLo), hi = _mm512_load_si512(kPairHi);
  for (int64_t s = k0; s < k1; ++s)
    for (int64_t p = 0; p < 16; ++p) {
      const int64_t r = 32 * s + 2 * p, o = ((s - k0) * 16 + p) * 32;
      const __m512i a = quant32_bf16(W, r, 16 * rb), b = quant32_bf16(W, r + 1, 16 * rb);
      _mm512_store_si512(b0 + o, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_store_si512(b1 + o, _mm512_permutex2var_epi16(a, hi, b));
    }
}

// Weights [c, c + 32) of row r of a row-major fp16 matrix [.., cols] as 32 bf16 pairs in order, split as
// f16_block_to_tiles does: hi = bf16(w) (nearest even), lo = bf16(w − hi), hi + lo == w exactly.
GLMLAB_AMX_V inline void f16_32_hi_lo(const uint16_t* W, int64_t cols, int64_t r, int64_t c, __m512i& hi, __m512i& lo) {
  const uint16_t* p = W + r * cols + c;
  const __m512 a = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __m512 b = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  hi = (__m512i)_mm512_cvtne2ps_pbh(b, a);
  const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
  const __m512 hb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
  lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha));
}

// rowmajor_block_to_tiles for a row-major fp16 matrix: the hi and lo B tiles of block rb.
GLMLAB_AMX_V void f16_rows_block_to_tiles(const uint16_t* W, int64_t K, int64_t rb, int64_t k0, int64_t k1,
                                          uint16_t* hi, uint16_t* lo) {
  for (int64_t s = k0; s < k1; ++s) {
    __m512 h[16], l[16];
    for (int i = 0; i < 16; ++i) {
      __m512i a, b;
      f16_32_hi_lo(W, K, rb * 16 + i, s * 32, a, b);
      h[i] = _mm512_castsi512_ps(a);
      l[i] = _mm512_castsi512_ps(b);
    }
    transpose16(h);
    transpose16(l);
    float* dh = reinterpret_cast<float*>(hi + (s - k0) * 512);
    float* dl = reinterpret_cast<float*>(lo + (s - k0) * 512);
    for (int p = 0; p < 16; ++p) {
      _mm512_store_ps(dh + p * 16, h[p]);
      _mm512_store_ps(dl + p * 16, l[p]);
    }
  }
}

// rowmajor_t_blocks_to_tiles for a row-major fp16 matrix [K', M']: both blocks' hi and lo tiles.
GLMLAB_AMX_V void f16_rows_t_blocks_to_tiles(const uint16_t* W, int64_t cols, int64_t rb, int64_t k0, int64_t k1,
                                             uint16_t* h0, uint16_t* h1, uint16_t* l0, uint16_t* l1) {
  const __m512i lo = _mm512_load_si512(kPairLo), hi = _mm512_load_si512(kPairHi);
  for (int64_t s = k0; s < k1; ++s)
    for (int64_t p = 0; p < 16; ++p) {
      const int64_t r = 32 * s + 2 * p, o = ((s - k0) * 16 + p) * 32;
      __m512i ah, al, bh, bl;
      f16_32_hi_lo(W, cols, r, 16 * rb, ah, al);
      f16_32_hi_lo(W, cols, r + 1, 16 * rb, bh, bl);
      _mm512_store_si512(h0 + o, _mm512_permutex2var_epi16(ah, lo, bh));
      _mm512_store_si512(h1 + o, _mm512_permutex2var_epi16(ah, hi, bh));
      _mm512_store_si512(l0 + o, _mm512_permutex2var_epi16(al, lo, bl));
      _mm512_store_si512(l1 + o, _mm512_permutex2var_epi16(al, hi, bl));
    }
}

// A C tile's initial value from y (16 tokens × 16 outputs, row stride ys floats), tokens past n zero:
// whole tiles straight from y, a partial one through `tmp` (1 KB, 64-byte aligned).
GLMLAB_AMX_V inline void load_c_from(int tile, const float* y, int64_t ys, int64_t n, float* tmp) {
  if (n >= 16) {
    switch (tile) {  // _tile_loadd takes a constant tile number
      case 0: _tile_loadd(0, y, int(ys * 4)); break;
      case 1: _tile_loadd(1, y, int(ys * 4)); break;
      case 2: _tile_loadd(2, y, int(ys * 4)); break;
      default: _tile_loadd(3, y, int(ys * 4)); break;
    }
    return;
  }
  for (int64_t j = 0; j < 16; ++j)
    _mm512_store_ps(tmp + 16 * j, j < n ? _mm512_loadu_ps(y + j * ys) : _mm512_setzero_ps());
  switch (tile) {
    case 0: _tile_loadd(0, tmp, 64); break;
    case 1: _tile_loadd(1, tmp, 64); break;
    case 2: _tile_loadd(2, tmp, 64); break;
    default: _tile_loadd(3, tmp, 64); break;
  }
}

}  // namespace

namespace {
enum class Weights;
template <Weights kW>
void packed_gemm(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y,
                 const Matrix* Q = nullptr);
void gemm_bf16_rowmajor_blocked(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                                float* y);
}  // namespace

void gemm_bf16(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  // From 8 blocks of 32 tokens, the cache-blocked kernel on B tiles transposed from W's rows per chunk:
  // W as A tiles below reads 16 rows 2·K bytes apart a tile (one L1 set for K = 4096, a row stride of
  // 8 KB), with C held over all of K and both operands streaming from L2 or beyond. AMX Xeon, 2 threads,
  // 4096 × 4096 / 27392 × 4096, ms: 512 tokens 14.1 / 96.6 → 9.7 / 60.4; 256 tokens 7.1 / 45.0 → 6.7 /
  // 40.5; 110 tokens 3.7 / 25.2 → 4.4 / 27.3 (there the transposes cost more than the blocking gains).
  if (N > kBlockedFromTokens) return gemm_bf16_rowmajor_blocked(W, M, K, x, N, bias, y);
  const int64_t NB = (N + 31) / 32 * 32;  // rows of x padded to whole pairs of 16-row tiles
  // Packed activations: for each block of 16 rows, [K/2][16][2] bf16 (a tile row = one k pair of 16 rows).
  uint16_t* xpd = tiles_workspace(size_t(NB * K));
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < NB / 16; ++nb) pairs_block(x, N, K, nb, xpd);
  const int64_t MB = M / 32, NBP = NB / 32;
  // A job is (32-row block of W, pair of token tiles), in block-major order; each thread takes a
  // contiguous range of jobs, so it runs every token pair over a block while the block (64·K bytes)
  // stays in L2, and the block after it is its own next one. With short rows (K ≤ 1024) the tile loads
  // of a block's first pass wait on memory line by line, so the next block's lines are prefetched into
  // L2, a share during each token pass (AMX Xeon, 2 threads: 65024 × 512 at 129 tokens 20.2 -> 15.0 ms,
  // 2752 × 512 at 520 2.1 -> 1.6); at K = 4096 the same prefetch cost 10% and is left out.
  const int64_t rowb = K * 2, lines = 32 * rowb / 64;
#pragma omp parallel
  {
    configure_tiles();
    alignas(64) float c[4][16 * 16];
#pragma omp for schedule(static)
    for (int64_t job = 0; job < MB * NBP; ++job) {
      const int64_t mb = job / NBP, np = job % NBP;
      const int64_t m0 = mb * 32;
      const uint16_t* a0 = W + m0 * K;
      const uint16_t* a1 = W + (m0 + 16) * K;
      const char* next = reinterpret_cast<const char*>(W + (m0 + 32) * K);
      if (mb + 1 < MB && K <= 1024)
        for (int64_t l = np * lines / NBP; l < (np + 1) * lines / NBP; ++l) _mm_prefetch(next + 64 * l, _MM_HINT_T1);
      const int64_t n0 = np * 32;
      const uint16_t* b0 = xpd + n0 * K;
      const uint16_t* b1 = xpd + (n0 + 16) * K;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t k = 0; k < K; k += 32) {
        _tile_loadd(4, a0 + k, int(K * 2));
        _tile_loadd(5, a1 + k, int(K * 2));
        _tile_loadd(6, b0 + k * 16, 64);  // k/2 pairs × 16 rows × 2 = 16·k elements in
        _tile_loadd(7, b1 + k * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      // c[t][i][j] = y[n][m] with m = m0 + 16·(t/2) + i, n = n0 + 16·(t%2) + j.
      for (int t = 0; t < 4; ++t) {
        const int64_t n = n0 + 16 * (t % 2), m = m0 + 16 * (t / 2);
        if (n < N) store_transposed(c[t], int(std::min<int64_t>(16, N - n)), y + n * M + m, M, bias ? bias + m : nullptr);
      }
    }
    _tile_release();
  }
}

namespace {

// The blocked GEMM of bf16 weights packed at load (Packed: the B tiles as they lie), of fp16 weights packed
// [M/16][K][16] (F16: each chunk of a row pair converted into hi and lo bf16 B tiles, f16_block_to_tiles,
// and multiplied twice), or of a row-major bf16 matrix (RowMajor: each chunk of a row pair transposed into
// B tiles, rowmajor_block_to_tiles — training's frozen bases, which stay row-major for the backward), or
// of a row-major bf16 matrix's transpose accumulated onto y (RowMajorT, training's input gradient:
// P = W [K, M] row-major, y[N, M] += x[N, K] · W; rowmajor_t_blocks_to_tiles; no bias). Quant and QuantT:
// the same two on a row-major Q8 / Q4 matrix *Q (P unused), each chunk dequantized while it is converted
// (quant_block_to_tiles, quant_t_blocks_to_tiles): training's QAT bases. F16Rows and F16RowsT: the same two on
// a row-major fp16 P, each chunk split into hi and lo tiles multiplied twice as F16 (training's fp16 bases).
enum class Weights { Packed, F16, RowMajor, RowMajorT, Quant, QuantT, F16Rows, F16RowsT };
template <Weights kW>
void packed_gemm(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y,
                 const Matrix* Q) {
  // C[16 tokens][16 rows] += A[16 tokens][16 input pairs] · B[16 input pairs][16 rows][2]: B is 16 lines
  // of the packed layout as they lie (1 KB), A the activations rounded to bf16 and copied into whole
  // 1 KB tiles, [token blocks of 16][K/32 steps][16][32]; tokens past N are zero.
  const int64_t steps = K / 32, NB16 = (N + 15) / 16, RB = M / 16, pairs = K / 2;
  const uint16_t* xt = acts_to_tiles(x, N, K, NB16);
  // Cache blocking. A tile load costs ~4x a tile product's time when its lines come from L2 rather
  // than L1 (AMX Xeon, 2 cores: ~17 against ~3.5 ns a 1 KB tile; a product ~6.5 ns), and with 8 tile
  // registers a 2 × 2 block of C tiles needs one operand tile load per product. So: a job is a group of
  // up to 512 tokens (1024 for row-major weights, below) × a block of rpj row pairs; the inputs go in
  // chunks of kChunkSteps steps; for each chunk and row pair, that pair's B tiles of the chunk (16 KB)
  // stay in L1 while every token block of the group runs over them, its A tiles from L2 (the group's
  // chunk: 256 KB at 512 tokens). The C
  // tiles of each (token block, row pair) go through a per-thread buffer (L2) between chunks.
  // Measured against C kept in tile registers over all of K (each 32 × 32 output block reading both
  // operands from L2 or L3): 1.6-2.1x at 64-512 tokens, even at 16 (docs/BENCHMARKS.md, session 17).
  // With one token block (N ≤ 32) the weights stream from memory once whatever the order, and C stays in
  // the tile registers over all of K (one chunk): reloading it every 8 steps cost 10-30% there.
  // The C tiles start from the bias (a tile load of stride 0 repeats its 16 values in every row).
  // Token groups of 16 blocks of 32 tokens; 32 where each chunk of weights is converted first (row-major
  // bases: the conversion is shared by twice the tokens; training's micro-batches of ~800 tokens, kernel
  // at 800 tokens, ms, 16 → 32 blocks: forward 27392 × 4096 100–102 → 88–89, input gradient 127 → 114,
  // 4096 × 13696 input gradient 71 → 57). The C buffer is then 1 MB a thread.
  constexpr bool kRowMajorKind = kW == Weights::RowMajor || kW == Weights::RowMajorT || kW == Weights::Quant ||
                                 kW == Weights::QuantT || kW == Weights::F16Rows || kW == Weights::F16RowsT;
  constexpr int64_t kGroupBlocks = kRowMajorKind ? 32 : 16;
  const int64_t RP = (RB + 1) / 2, TBall = (N + 31) / 32;
  constexpr bool kF16 = kW == Weights::F16 || kW == Weights::F16Rows || kW == Weights::F16RowsT;  // hi + lo tiles
  constexpr bool kConvert = kW != Weights::Packed;
  constexpr bool kAcc = kW == Weights::RowMajorT || kW == Weights::QuantT || kW == Weights::F16RowsT;
  const int64_t kChunkSteps = TBall == 1 && !kConvert ? steps : 8;  // 8 steps = 256 inputs
  const int64_t groups = (TBall + kGroupBlocks - 1) / kGroupBlocks;
  // Row pairs per job: 8 (256 rows), fewer where that would leave threads without work.
  int64_t rpj = 8;
  while (rpj > 1 && groups * ((RP + rpj - 1) / rpj) < 2 * int64_t(omp_get_max_threads())) rpj /= 2;
  const int64_t RJ = (RP + rpj - 1) / rpj;
  alignas(64) static const float kZeroRow[16] = {};
  const bool stream = stream_output(N * M * int64_t(sizeof(float)));
#pragma omp parallel
  {
    configure_tiles();
    AlignedVector<float> cbuf(size_t(kGroupBlocks * rpj * 4 * 256));  // [token block][row pair][4 tiles][16][16]
    AlignedVector<float> row(size_t(rpj * 32));
    AlignedVector<float> ctile(kAcc ? 256 : 0);  // RowMajorT: a partial token tile of y, zero-padded
    // F16: a row pair's chunk as B tiles, [hi0, hi1, lo0, lo1] × kChunkSteps × 512 bf16 (32 KB);
    // RowMajor: [b0, b1] (16 KB).
    AlignedVector<uint16_t> bconv(kConvert ? size_t((kF16 ? 4 : 2) * kChunkSteps * 512) : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < groups * RJ; ++job) {
      const int64_t g = job / RJ, rp0 = (job % RJ) * rpj, rp1 = std::min(RP, rp0 + rpj);
      const int64_t tb0 = g * kGroupBlocks, tb1 = std::min(TBall, tb0 + kGroupBlocks);
      for (int64_t k0 = 0; k0 < steps; k0 += kChunkSteps) {
        const int64_t k1 = std::min(steps, k0 + kChunkSteps);
        for (int64_t rp = rp0; rp < rp1; ++rp) {
          const bool two_r = 2 * rp + 1 < RB;
          const uint16_t *b0, *b1, *l0 = nullptr, *l1 = nullptr;  // the chunk's first B tile: b0 + (s − k0)·512
          if constexpr (kF16) {
            uint16_t* cv = bconv.data();
            const int64_t T = kChunkSteps * 512;
            if constexpr (kW == Weights::F16) {
              f16_block_to_tiles(P, K, 2 * rp, k0, k1, cv, cv + 2 * T);
              if (two_r) f16_block_to_tiles(P, K, 2 * rp + 1, k0, k1, cv + T, cv + 3 * T);
            } else if constexpr (kW == Weights::F16Rows) {
              f16_rows_block_to_tiles(P, K, 2 * rp, k0, k1, cv, cv + 2 * T);
              if (two_r) f16_rows_block_to_tiles(P, K, 2 * rp + 1, k0, k1, cv + T, cv + 3 * T);
            } else {
              f16_rows_t_blocks_to_tiles(P, M, 2 * rp, k0, k1, cv, cv + T, cv + 2 * T, cv + 3 * T);
            }
            b0 = cv, b1 = cv + T, l0 = cv + 2 * T, l1 = cv + 3 * T;
          } else if constexpr (kW == Weights::RowMajor) {
            uint16_t* cv = bconv.data();
            const int64_t T = kChunkSteps * 512;
            rowmajor_block_to_tiles(P, K, 2 * rp, k0, k1, cv);
            if (two_r) rowmajor_block_to_tiles(P, K, 2 * rp + 1, k0, k1, cv + T);
            b0 = cv, b1 = cv + T;
          } else if constexpr (kW == Weights::RowMajorT) {
            uint16_t* cv = bconv.data();
            const int64_t T = kChunkSteps * 512;
            rowmajor_t_blocks_to_tiles(P, M, 2 * rp, k0, k1, cv, cv + T);  // two_r: M % 32 == 0
            b0 = cv, b1 = cv + T;
          } else if constexpr (kW == Weights::Quant) {
            uint16_t* cv = bconv.data();
            const int64_t T = kChunkSteps * 512;
            quant_block_to_tiles(*Q, 2 * rp, k0, k1, cv);
            if (two_r) quant_block_to_tiles(*Q, 2 * rp + 1, k0, k1, cv + T);
            b0 = cv, b1 = cv + T;
          } else if constexpr (kW == Weights::QuantT) {
            uint16_t* cv = bconv.data();
            const int64_t T = kChunkSteps * 512;
            quant_t_blocks_to_tiles(*Q, 2 * rp, k0, k1, cv, cv + T);
            b0 = cv, b1 = cv + T;
          } else {
            b0 = P + (2 * rp) * pairs * 32 + k0 * 512;
            b1 = b0 + pairs * 32;
          }
          const float* bias0 = bias ? bias + 32 * rp : kZeroRow;
          const float* bias1 = bias && two_r ? bias0 + 16 : kZeroRow;
          // The next row pair's weights of this chunk (16 KB at 8 steps) prefetched into L2, a share per
          // token block while this pair's products run: tile loads and the transposes' strided rows are
          // not followed by the hardware prefetchers. From 8 token blocks on (kernel, 2 threads, 512
          // tokens: packed 27392 × 4096 53–55 → 51–52 ms, 4096 × 13696 27–29 → 25–26; at 128 tokens the
          // same prefetch cost 10–20%, the weights streaming at the memory's rate either way).
          const char* pf = nullptr;
          int64_t pf_lines = 0, pf_row_lines = 0, pf_stride = 0;
          if (rp + 1 < rp1 && 2 * rp + 3 < RB && kW != Weights::F16 && TBall >= 8) {
            if constexpr (kW == Weights::RowMajor || kW == Weights::F16Rows) {
              pf = reinterpret_cast<const char*>(P + (2 * rp + 2) * 16 * K + k0 * 32);
              pf_row_lines = k1 - k0;  // 64 bytes a row a step
              pf_stride = K * 2;
              pf_lines = 32 * pf_row_lines;
            } else if constexpr (kW == Weights::RowMajorT || kW == Weights::F16RowsT) {
              pf = reinterpret_cast<const char*>(P + k0 * 32 * M + 32 * (rp + 1));
              pf_row_lines = 1;  // the next pair's 32 columns of each of the chunk's rows: one line
              pf_stride = M * 2;
              pf_lines = 32 * (k1 - k0);
            } else if constexpr (kW == Weights::Quant || kW == Weights::QuantT) {
              // the next pair's quantized bytes (16 or 32 a row a step; the scales are a few lines beside)
              const int64_t rb = Q->row_bytes(), per32 = Q->dtype == DType::Q4 ? 16 : 32;
              const auto* q = static_cast<const char*>(Q->data);
              if constexpr (kW == Weights::Quant) {
                pf = q + (2 * rp + 2) * 16 * rb + k0 * per32;
                pf_row_lines = ((k1 - k0) * per32 + 63) / 64;
                pf_stride = rb;
                pf_lines = 32 * pf_row_lines;
              } else {
                pf = q + k0 * 32 * rb + (rp + 1) * per32;
                pf_row_lines = 1;
                pf_stride = rb;
                pf_lines = 32 * (k1 - k0);
              }
            } else {
              pf = reinterpret_cast<const char*>(P + (2 * rp + 2) * pairs * 32 + k0 * 512);
              pf_row_lines = 16 * (k1 - k0);  // a row block's chunk: 1 KB a step, contiguous
              pf_stride = pairs * 64;
              pf_lines = 2 * pf_row_lines;
            }
          }
          for (int64_t tb = tb0; tb < tb1; ++tb) {
            if (pf)
              for (int64_t l = (tb - tb0) * pf_lines / (tb1 - tb0); l < (tb - tb0 + 1) * pf_lines / (tb1 - tb0); ++l)
                _mm_prefetch(pf + (l / pf_row_lines) * pf_stride + (l % pf_row_lines) * 64, _MM_HINT_T1);
            const bool two_t = N - 32 * tb > 16;
            float* c = cbuf.data() + ((tb - tb0) * rpj + (rp - rp0)) * 4 * 256;
            if (k0 == 0 && kAcc) {  // start from what y holds (tokens past N: zeros)
              const float* y0 = y + 32 * tb * M + 32 * rp;
              const int64_t n0 = N - 32 * tb, n1 = n0 - 16;
              load_c_from(0, y0, M, n0, ctile.data());
              if (two_r) load_c_from(1, y0 + 16, M, n0, ctile.data());
              if (two_t) {
                load_c_from(2, y0 + 16 * M, M, n1, ctile.data());
                if (two_r) load_c_from(3, y0 + 16 * M + 16, M, n1, ctile.data());
              }
            } else if (k0 == 0) {
              _tile_loadd(0, bias0, 0);
              _tile_loadd(1, bias1, 0);
              _tile_loadd(2, bias0, 0);
              _tile_loadd(3, bias1, 0);
            } else {
              _tile_loadd(0, c, 64);
              _tile_loadd(1, c + 256, 64);
              _tile_loadd(2, c + 512, 64);
              _tile_loadd(3, c + 768, 64);
            }
            const uint16_t* a0 = xt + (2 * tb) * steps * 512;
            const uint16_t* a1 = a0 + steps * 512;
            for (int64_t s = k0; s < k1; ++s) {
              const int64_t bs = (s - k0) * 512;
              _tile_loadd(4, a0 + s * 512, 64);
              _tile_loadd(6, b0 + bs, 64);
              _tile_dpbf16ps(0, 4, 6);
              if (two_r) {
                _tile_loadd(7, b1 + bs, 64);
                _tile_dpbf16ps(1, 4, 7);
              }
              if (two_t) {
                _tile_loadd(5, a1 + s * 512, 64);
                _tile_dpbf16ps(2, 5, 6);
                if (two_r) _tile_dpbf16ps(3, 5, 7);
              }
              if constexpr (kF16) {  // the same activations times the weights' low parts
                _tile_loadd(6, l0 + bs, 64);
                _tile_dpbf16ps(0, 4, 6);
                if (two_r) {
                  _tile_loadd(7, l1 + bs, 64);
                  _tile_dpbf16ps(1, 4, 7);
                }
                if (two_t) {
                  _tile_dpbf16ps(2, 5, 6);
                  if (two_r) _tile_dpbf16ps(3, 5, 7);
                }
              }
            }
            _tile_stored(0, c, 64);
            _tile_stored(1, c + 256, 64);
            _tile_stored(2, c + 512, 64);
            _tile_stored(3, c + 768, 64);
          }
        }
      }
      // c[2·(token tile) + row tile][j][i] = y[token 32·tb + 16·(token tile) + j][row 32·rp + 16·(row tile) + i]:
      // each token's outputs of the job are one contiguous run of y.
      for (int64_t n = 32 * tb0; n < std::min(N, 32 * tb1); ++n) {
        const int64_t tb = n / 32, t = (n % 32) / 16, j = n % 16;
        const float* c = cbuf.data() + ((tb - tb0) * rpj) * 4 * 256 + (2 * t) * 256 + j * 16;
        store_c_row(c, 2 * rp1 <= RB ? 2 * (rp1 - rp0) : 2 * (rp1 - rp0) - 1, y + n * M + 32 * rp0,
                    stream, row.data());
      }
    }
    _tile_release();
    if (stream) _mm_sfence();  // the non-temporal stores visible before the threads join
  }
}

}  // namespace

namespace {
void gemm_bf16_rowmajor_blocked(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                                float* y) {
  packed_gemm<Weights::RowMajor>(W, M, K, x, N, bias, y);
}
}  // namespace

bool rowmajor_blocked(const Matrix& W, int64_t N, bool input_gradient) {
  const int64_t from = W.dtype == DType::F16 && !input_gradient           ? kF16ForwardFromTokens
                       : W.dtype == DType::F16 || (W.quantized() && input_gradient) ? kConvertedFromTokens
                                                                           : kBlockedFromTokens + 1;
  if (N < from || W.layout != MatrixLayout::RowMajor ||
      !fits(W.rows, W.cols) || !available())
    return false;
  if (W.quantized()) return W.group_size > 0 && W.group_size % 32 == 0;
  return W.dtype == DType::BF16 || W.dtype == DType::F16;
}

void gemm_rowmajor(const Matrix& W, const float* x, int64_t N, const float* bias, float* y) {
  if (N == 0) return;
  const auto* P = static_cast<const uint16_t*>(W.data);
  if (W.quantized())
    packed_gemm<Weights::Quant>(nullptr, W.rows, W.cols, x, N, bias, y, &W);
  else if (W.dtype == DType::F16)
    packed_gemm<Weights::F16Rows>(P, W.rows, W.cols, x, N, bias, y);
  else
    packed_gemm<Weights::RowMajor>(P, W.rows, W.cols, x, N, bias, y);
}

void gemm_backward_input_rowmajor(const Matrix& W, const float* dy, int64_t N, float* dx) {
  if (N == 0) return;
  // dx[N, cols] += dy[N, rows] · W: the blocked kernel with Wᵀ [cols outputs, rows inputs] as its weights.
  const auto* P = static_cast<const uint16_t*>(W.data);
  if (W.quantized())
    packed_gemm<Weights::QuantT>(nullptr, W.cols, W.rows, dy, N, nullptr, dx, &W);
  else if (W.dtype == DType::F16)
    packed_gemm<Weights::F16RowsT>(P, W.cols, W.rows, dy, N, nullptr, dx);
  else
    packed_gemm<Weights::RowMajorT>(P, W.cols, W.rows, dy, N, nullptr, dx);
}

void gemm_bf16_packed(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                      float* y) {
  packed_gemm<Weights::Packed>(P, M, K, x, N, bias, y);
}

void gemm_f16_packed(const uint16_t* P, int64_t M, int64_t K, const float* x, int64_t N, const float* bias,
                     float* y) {
  packed_gemm<Weights::F16>(P, M, K, x, N, bias, y);
}

void gemm_bf16_backward_input(int64_t M, int64_t K, const RowSource& rows, const float* dy, int64_t N, float* dx) {
  // AMX computes C[16×16] += A[16×32] · B, B given as 16 rows of (k pair) × 16 columns × 2. Here
  // C = a 16×16 block of dx (tokens × inputs), A = 16 tokens × 32 of M from dy (bf16, row-major),
  // B = 32 of M (as 16 pairs) × 16 inputs from W: the pair interleaving of two consecutive W rows.
  if (N == 0) return;
  const int64_t NB = (N + 31) / 32 * 32, MS = M / 32;
  // dy as whole 1 KB A tiles: read from dy's rows M·2 bytes apart, a tile's 16 rows would touch 16 pages.
  const uint16_t* dyb = acts_to_tiles(dy, N, M, NB / 16);
  // dx padded to whole tiles; rows beyond N stay zero and are dropped at the end.
  AlignedVector<float> dxp(size_t(NB * K), 0.0f);
  std::memcpy(dxp.data(), dx, size_t(N * K) * sizeof(float));

  // Chunks of W rows: packed as [K/32][chunk/2][32][2] so that each 32-column slice is contiguous
  // (dpbf16::interleave_row_pairs, AVX512BW: threads take blocks of row pairs and read them whole).
  const int64_t chunk = std::min<int64_t>(M, 1024);
  // scratch is filled only by sources that widen or dequantize: uninitialized, free for bf16 W; every
  // word of wv is written by the packing of each chunk.
  std::unique_ptr<uint16_t[]> scratch(new uint16_t[size_t(chunk * K)]);
  AlignedVector<uint32_t> wv(size_t(chunk / 2 * K));
  const int64_t KB = K / 32, NP = NB / 32, KG = 8;  // KG slices of 32 columns per job group (L2 reuse)
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t mc = std::min(chunk, M - m0), pairs = mc / 2;
    const uint16_t* src = rows(m0, mc, scratch.get());
#pragma omp parallel for schedule(static)
    for (int64_t p0 = 0; p0 < pairs; p0 += 16)
      dpbf16::interleave_row_pairs(src, K, 0, KB, p0, std::min(pairs, p0 + 16), pairs, wv.data());
    const int64_t groups = (KB + KG - 1) / KG;
#pragma omp parallel
    {
      configure_tiles();
#pragma omp for schedule(dynamic, 1)
      for (int64_t job = 0; job < groups * NP * KG; ++job) {
        // Job order: a group of KG column slices (its packed W stays in L2), then token blocks, then slices.
        const int64_t g = job / (NP * KG), np = (job / KG) % NP, kb = g * KG + job % KG;
        if (kb >= KB) continue;
        const int64_t n0 = np * 32, k0 = kb * 32;
        float* c00 = dxp.data() + n0 * K + k0;
        float* c01 = c00 + 16;
        float* c10 = c00 + 16 * K;
        float* c11 = c10 + 16;
        _tile_loadd(0, c00, int(K * 4));
        _tile_loadd(1, c01, int(K * 4));
        _tile_loadd(2, c10, int(K * 4));
        _tile_loadd(3, c11, int(K * 4));
        const uint16_t* a0 = dyb + ((n0 / 16) * MS + m0 / 32) * 512;
        const uint16_t* a1 = a0 + MS * 512;
        const uint32_t* b = wv.data() + (kb * pairs) * 32;
        for (int64_t m = 0; m < mc; m += 32) {
          _tile_loadd(4, a0 + m * 16, 64);  // step m/32 of the chunk: 512 elements a tile
          _tile_loadd(5, a1 + m * 16, 64);
          _tile_loadd(6, b + (m / 2) * 32, 128);       // pairs m/2 .. m/2+15, inputs k0 .. k0+15
          _tile_loadd(7, b + (m / 2) * 32 + 16, 128);  // inputs k0+16 .. k0+31
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c00, int(K * 4));
        _tile_stored(1, c01, int(K * 4));
        _tile_stored(2, c10, int(K * 4));
        _tile_stored(3, c11, int(K * 4));
      }
      _tile_release();
    }
  }
  std::memcpy(dx, dxp.data(), size_t(N * K) * sizeof(float));
}

}  // namespace glmlab::amx
