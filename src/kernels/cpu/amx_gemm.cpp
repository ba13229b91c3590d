// AMX bf16 GEMM (see amx_gemm.h). Compiled with -mamx-tile -mamx-bf16; called only when available().
#include "kernels/cpu/amx_gemm.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cpuid.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "util/dtype.h"

namespace glmlab::amx {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool probe() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  if (!amx_bf16 || !amx_tile) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

}  // namespace

bool available() {
  static const bool ok = probe();
  return ok;
}

void gemm_bf16(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  const int64_t NB = (N + 31) / 32 * 32;  // rows of x padded to whole pairs of 16-row tiles
  const int64_t KP = K / 2;
  // Packed activations: for each block of 16 rows, [K/2][16][2] bf16 (a tile row = one k pair of 16 rows).
  std::vector<uint16_t> xp(size_t(NB * K));
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < NB / 16; ++nb) {
    uint16_t* dst = xp.data() + nb * 16 * K;
    for (int r = 0; r < 16; ++r) {
      const int64_t n = nb * 16 + r;
      for (int64_t p = 0; p < KP; ++p) {
        uint16_t lo = 0, hi = 0;
        if (n < N) {
          lo = f32_to_bf16(x[n * K + 2 * p]);
          hi = f32_to_bf16(x[n * K + 2 * p + 1]);
        }
        dst[(p * 16 + r) * 2] = lo;
        dst[(p * 16 + r) * 2 + 1] = hi;
      }
    }
  }
  const int64_t MB = M / 32, NBP = NB / 32;
#pragma omp parallel
  {
    configure_tiles();
    alignas(64) float c[4][16 * 16];
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < MB * NBP; ++job) {
      // Jobs walk all row pairs of x for one block of 32 weight rows, so those rows stay in L2.
      const int64_t mb = job / NBP, np = job % NBP;
      const int64_t m0 = mb * 32, n0 = np * 32;
      const uint16_t* a0 = W + m0 * K;
      const uint16_t* a1 = W + (m0 + 16) * K;
      const uint16_t* b0 = xp.data() + n0 * K;
      const uint16_t* b1 = xp.data() + (n0 + 16) * K;
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
      for (int t = 0; t < 4; ++t)
        for (int j = 0; j < 16; ++j) {
          const int64_t n = n0 + 16 * (t % 2) + j;
          if (n >= N) continue;
          float* yr = y + n * M + m0 + 16 * (t / 2);
          const float* br = bias ? bias + m0 + 16 * (t / 2) : nullptr;
          for (int i = 0; i < 16; ++i) yr[i] = c[t][i * 16 + j] + (br ? br[i] : 0.0f);
        }
    }
    _tile_release();
  }
}

}  // namespace glmlab::amx
