// AMX int8 GEMM on packed Q8/Q4 weights (see amx_int8.h). The file is compiled with -mamx-tile
// -mamx-int8 only (the tile instructions come from intrinsics); the AVX-512 parts select their ISA per
// function, so nothing inlined from a shared header is built for AVX-512. Runs only after int8_available().
#include "kernels/cpu/amx_int8.h"

#include <immintrin.h>
#include <omp.h>

#ifndef __clang__  // clang has no -Wmaybe-uninitialized (and warns of the unknown group)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on _mm512_cvtph_ps / set1 under a target attribute
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/amx_gemm.h"
#include "util/aligned.h"

namespace glmlab::amx {
namespace {

#define GLMLAB_AMX8_V __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,amx-tile,amx-int8")))

constexpr int64_t kRows = 16;       // weight rows in a packed block = int32 columns of a C tile
constexpr int64_t kStepInputs = 64;  // inputs per TDPBSUD (16 rows of 4 bytes; Q4: 8 units unpacked)

// Q4: 8 packed units (8 × 64 bytes: 16 rows × 4 bytes of nibbles each) → one B tile of 16 × 64 bytes:
// line 2j = the high nibbles of unit j (its 4 even inputs), line 2j + 1 = the low nibbles (the odd ones),
// matching the activations' [4 even, 4 odd] bytes per unit.
GLMLAB_AMX8_V inline void unpack_q4(const uint8_t* src, uint8_t* dst) {
  const __m512i m = _mm512_set1_epi8(0x0F);
  for (int j = 0; j < 8; ++j) {
    const __m512i w = _mm512_loadu_si512(src + 64 * j);
    _mm512_store_si512(dst + 128 * j, _mm512_and_si512(_mm512_srli_epi16(w, 4), m));
    _mm512_store_si512(dst + 128 * j + 64, _mm512_and_si512(w, m));
  }
}

// One C tile (16 tokens × 16 weight rows of int32, one block of inputs) into the fp32 sums: the VNNI
// GEMV's fold, op for op (vnni_packed.cpp).
GLMLAB_AMX8_V inline void fold(const int32_t* c, int tokens, const float* scale, const int32_t* corr, int64_t blocks,
                               __m512 sw, float* acc, int64_t acc_stride) {
  for (int j = 0; j < tokens; ++j) {
    const __m512i s = _mm512_sub_epi32(_mm512_load_si512(c + 16 * j), _mm512_set1_epi32(corr[j * blocks]));
    float* ar = acc + j * acc_stride;
    _mm512_store_ps(ar, _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sw, _mm512_set1_ps(scale[j * blocks])),
                                        _mm512_load_ps(ar)));
  }
}

constexpr int kPairs = 4;  // pairs of row blocks (32 rows each) a job takes: 128 rows

struct Buffers {
  alignas(64) float acc[32 * 32 * kPairs];  // [token][row] of this job
  alignas(64) int32_t c[2][4][16 * 16];     // C tiles of two consecutive units: [A tile (tokens) · 2 + B tile]
  alignas(64) uint8_t b[2][16 * 64];        // Q4 B tiles unpacked
};

// One unit of work is (block of inputs, pair of row blocks): its C tiles are folded while the next
// unit's tile products run, so the AVX-512 fold and the AMX unit overlap.
struct Unit {
  int64_t b;  // activation block
  int p;      // pair of row blocks in the job
  int nrb;    // row blocks in that pair (2, or 1 at the end of the matrix)
};

// Tokens [t0, t0 + ntok) (ntok ≤ 32) against the row blocks [rb0, rb0 + nrb) (nrb ≤ 2·kPairs), all inputs.
// xt: the activations as A tiles ([token blocks of 16][steps][16][64]).
template <bool kQ4>
GLMLAB_AMX8_V void job(const Matrix& P, const vnni::PackedActs& a, const int8_t* xt, int64_t rb0, int nrb, int t0,
                       int ntok, float* y, int64_t ys, bool stream, Buffers& buf) {
  constexpr int64_t kSU = kQ4 ? 8 : 16;  // units per step of 64 inputs
  const int64_t U = a.units, steps = U / kSU, SB = a.block / kStepInputs, ng = P.groups(), G = P.group_size;
  const uint8_t* base = static_cast<const uint8_t*>(P.data);
  const int na = ntok > 16 ? 2 : 1, np = (nrb + 1) / 2;
  constexpr int64_t AS = 32 * kPairs;  // acc row stride
  std::fill(buf.acc, buf.acc + 32 * AS, 0.0f);
  const int8_t* a0 = xt + int64_t(t0 / 16) * steps * 1024;
  const int8_t* a1 = a0 + steps * 1024;

  auto fold_unit = [&](const Unit& w, int32_t (*c)[256]) GLMLAB_AMX8_V {
    const int64_t g = ng == 1 ? 0 : w.b * a.block / G;
    for (int rr = 0; rr < w.nrb; ++rr) {
      const int64_t rb = rb0 + 2 * w.p + rr;
      const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(P.scales + (rb * ng + g) * kRows)));
      for (int ti = 0; ti < na; ++ti) {
        const int64_t i = int64_t(t0 + 16 * ti) * a.blocks + w.b;
        fold(c[ti * 2 + rr], std::min(16, ntok - 16 * ti), a.scale.data() + i, a.corr.data() + i, a.blocks, sw,
             buf.acc + 16 * ti * AS + 32 * w.p + 16 * rr, AS);
      }
    }
  };

  Unit prev{};
  bool have_prev = false;
  int cur = 0;
  for (int64_t b = 0; b < a.blocks; ++b) {
    const int64_t s0 = b * SB, s1 = std::min(steps, s0 + SB);
    for (int p = 0; p < np; ++p) {
      const Unit w{b, p, std::min(2, nrb - 2 * p)};
      const uint8_t* w0 = base + (rb0 + 2 * p) * U * 64;
      const uint8_t* w1 = w0 + U * 64;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t s = s0; s < s1; ++s) {
        _tile_loadd(4, a0 + s * 1024, 64);
        if (na == 2) _tile_loadd(5, a1 + s * 1024, 64);
        if constexpr (kQ4) {
          unpack_q4(w0 + s * kSU * 64, buf.b[0]);
          _tile_loadd(6, buf.b[0], 64);
          if (w.nrb == 2) {
            unpack_q4(w1 + s * kSU * 64, buf.b[1]);
            _tile_loadd(7, buf.b[1], 64);
          }
        } else {
          _tile_loadd(6, w0 + s * 1024, 64);
          if (w.nrb == 2) _tile_loadd(7, w1 + s * 1024, 64);
        }
        _tile_dpbsud(0, 4, 6);
        if (w.nrb == 2) _tile_dpbsud(1, 4, 7);
        if (na == 2) _tile_dpbsud(2, 5, 6);
        if (na == 2 && w.nrb == 2) _tile_dpbsud(3, 5, 7);
      }
      if (have_prev) fold_unit(prev, buf.c[cur ^ 1]);  // runs while the products above finish
      _tile_stored(0, buf.c[cur][0], 64);
      if (w.nrb == 2) _tile_stored(1, buf.c[cur][1], 64);
      if (na == 2) _tile_stored(2, buf.c[cur][2], 64);
      if (na == 2 && w.nrb == 2) _tile_stored(3, buf.c[cur][3], 64);
      prev = w;
      have_prev = true;
      cur ^= 1;
    }
  }
  if (have_prev) fold_unit(prev, buf.c[cur ^ 1]);
  // Each token's outputs of the job are one run of y.
  const int64_t row0 = rb0 * kRows, n = std::min<int64_t>(nrb * kRows, P.rows - row0);
  for (int t = 0; t < ntok; ++t) copy_run(buf.acc + t * AS, n, y + int64_t(t0 + t) * ys + row0, stream);
}

}  // namespace

bool int8_fits(const Matrix& P, const vnni::PackedActs& a) {
  return P.layout == MatrixLayout::Vnni16 && P.cols % kStepInputs == 0 && a.block % kStepInputs == 0 && a.nt > 0 &&
         int8_available();
}

void packed_gemm(const Matrix& P, const vnni::PackedActs& a, float* y, int64_t ys) {
  const bool q4 = P.dtype == DType::Q4;
  const int64_t rowb = a.units * (q4 ? 8 : 4);
  // The activations as A tiles: [token blocks of 16][steps of 64 inputs][16 tokens][64 bytes], each
  // tile 1 KB in one piece (rows K bytes apart would share L1 sets when K is a multiple of 4096); tokens
  // past nt are zero.
  const int64_t steps = rowb / 64, TB16 = (a.nt + 15) / 16;
  thread_local AlignedVector<int8_t> tiles;  // tile rows on whole cache lines
  tiles.resize(size_t(TB16 * steps * 1024));
  int8_t* xt = tiles.data();
  const int8_t* q = a.q.data();
#pragma omp parallel for schedule(static)
  for (int64_t tb = 0; tb < TB16; ++tb)
    for (int64_t s = 0; s < steps; ++s)
      for (int64_t r = 0; r < 16; ++r) {
        int8_t* d = xt + ((tb * steps + s) * 16 + r) * 64;
        const int64_t t = tb * 16 + r;
        if (t < a.nt)
          std::memcpy(d, q + t * rowb + s * 64, 64);
        else
          std::memset(d, 0, 64);
      }
  const int64_t RB = (P.rows + kRows - 1) / kRows, RG = (RB + 2 * kPairs - 1) / (2 * kPairs), TB = (a.nt + 31) / 32;
  const bool stream = stream_output(int64_t(a.nt) * P.rows * int64_t(sizeof(float)));
#pragma omp parallel
  {
    configure_tiles();
    Buffers buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t jb = 0; jb < RG * TB; ++jb) {
      // Jobs walk every token block of one group of 128 rows, so those rows stay in L2.
      const int64_t rg = jb / TB, tb = jb % TB;
      const int nrb = int(std::min<int64_t>(2 * kPairs, RB - 2 * kPairs * rg));
      const int t0 = int(tb * 32), ntok = std::min(32, a.nt - t0);
      if (q4)
        job<true>(P, a, xt, 2 * kPairs * rg, nrb, t0, ntok, y, ys, stream, buf);
      else
        job<false>(P, a, xt, 2 * kPairs * rg, nrb, t0, ntok, y, ys, stream, buf);
    }
    _tile_release();
    if (stream) _mm_sfence();  // the non-temporal stores visible before the threads join
  }
}

}  // namespace glmlab::amx
