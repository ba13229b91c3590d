// Dispatch of the bf16 GEMMs (bf16_gemm.h), and zero padding for shapes the kernels do not take whole.
// Zeros appended to both operands' inputs add exact zeros to the sums, and padded weight rows give
// outputs that are dropped, so a padded product equals the unpadded one.
#include "kernels/cpu/bf16_gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "util/aligned.h"

namespace glmlab::bf16gemm {
namespace {

int64_t up32(int64_t v) { return (v + 31) / 32 * 32; }
bool whole(int64_t M, int64_t K) { return M % 32 == 0 && K % 32 == 0; }

void run_forward(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  if (use_amx(M, K))
    amx::gemm_bf16(W, M, K, x, N, bias, y);
  else
    dpbf16::gemm_bf16(W, M, K, x, N, bias, y);
}

void run_backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N, float* dx) {
  if (use_amx(M, K))
    amx::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
  else
    dpbf16::gemm_bf16_backward_input(M, K, rows, dy, N, dx);
}

// The rows of an [M, K] matrix as n ≥ M rows of KP ≥ K (zeros past K, and past M).
void pad_rows(const uint16_t* src, int64_t M, int64_t K, int64_t n, int64_t KP, uint16_t* out) {
#pragma omp parallel for schedule(static) if (n * KP > (int64_t(1) << 16))
  for (int64_t r = 0; r < n; ++r) {
    uint16_t* d = out + r * KP;
    if (r < M) {
      std::memcpy(d, src + r * K, size_t(K) * 2);
      std::fill(d + K, d + KP, uint16_t(0));
    } else {
      std::fill(d, d + KP, uint16_t(0));
    }
  }
}

}  // namespace

void forward(const uint16_t* W, int64_t M, int64_t K, const float* x, int64_t N, const float* bias, float* y) {
  if (whole(M, K)) return run_forward(W, M, K, x, N, bias, y);
  const int64_t MP = up32(M), KP = up32(K);
  AlignedVector<uint16_t> wp(size_t(MP * KP));  // every element written by pad_rows
  pad_rows(W, M, K, MP, KP, wp.data());
  std::vector<float> xp;
  const float* xin = x;
  if (KP != K) {
    xp.assign(size_t(N * KP), 0.0f);
    for (int64_t n = 0; n < N; ++n) std::copy(x + n * K, x + (n + 1) * K, xp.begin() + n * KP);
    xin = xp.data();
  }
  AlignedVector<float> yp(size_t(N * MP));  // every element written by the kernel
  run_forward(wp.data(), MP, KP, xin, N, nullptr, yp.data());
#pragma omp parallel for schedule(static) if (N * M > (int64_t(1) << 16))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) y[n * M + m] = yp[size_t(n * MP + m)] + (bias ? bias[m] : 0.0f);
}

void backward_input(int64_t M, int64_t K, const amx::RowSource& rows, const float* dy, int64_t N, float* dx) {
  if (whole(M, K)) return run_backward_input(M, K, rows, dy, N, dx);
  const int64_t MP = up32(M), KP = up32(K);
  // W's rows as the source gives them ([count, K]), padded to [count, KP]; rows past M are zeros.
  std::vector<uint16_t> src;
  const amx::RowSource padded = [&](int64_t m0, int64_t count, uint16_t* out) -> const uint16_t* {
    const int64_t real = std::clamp<int64_t>(M - m0, 0, count);
    if (src.size() < size_t(count * K)) src.resize(size_t(count * K));
    const uint16_t* r = real > 0 ? rows(m0, real, src.data()) : nullptr;
    pad_rows(r, real, K, count, KP, out);
    return out;
  };
  std::vector<float> dyp(size_t(N * MP), 0.0f), dxp(size_t(N * KP), 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    std::copy(dy + n * M, dy + (n + 1) * M, dyp.begin() + n * MP);
    std::copy(dx + n * K, dx + (n + 1) * K, dxp.begin() + n * KP);
  }
  run_backward_input(MP, KP, padded, dyp.data(), N, dxp.data());
  for (int64_t n = 0; n < N; ++n) std::copy(dxp.begin() + n * KP, dxp.begin() + n * KP + K, dx + n * K);
}

}  // namespace glmlab::bf16gemm
