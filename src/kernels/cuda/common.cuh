// Device helpers shared by the kernels: element reads of every weight dtype, warp reductions, launch
// sizes. Included only by .cu files.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace glmlab::cuda::k {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
__device__ __forceinline__ float f16_bits_to_float(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// Signed nibbles of a Q4 byte: the even element is the HIGH nibble (docs/QUANTIZATION.md).
__device__ __forceinline__ int q4_even(uint8_t b) { return int(int8_t(b)) >> 4; }
__device__ __forceinline__ int q4_odd(uint8_t b) { return int(int8_t(uint8_t(b << 4))) >> 4; }

// W[r, c] in fp32 (Q8/Q4: the exact product q · scale), one element at a time: the simple path.
__device__ __forceinline__ float load_w(const WView& W, int64_t r, int64_t c) {
  switch (W.type) {
    case WType::F32: return static_cast<const float*>(W.data)[r * W.cols + c];
    case WType::F16: return f16_bits_to_float(static_cast<const uint16_t*>(W.data)[r * W.cols + c]);
    case WType::BF16: return bf16_bits_to_float(static_cast<const uint16_t*>(W.data)[r * W.cols + c]);
    case WType::Q8: {
      const int q = static_cast<const int8_t*>(W.data)[r * W.row_bytes + c];
      return float(q) * f16_bits_to_float(W.scales[r * W.groups + c / W.group_size]);
    }
    case WType::Q4: {
      const uint8_t b = static_cast<const uint8_t*>(W.data)[r * W.row_bytes + c / 2];
      const int q = (c & 1) ? q4_odd(b) : q4_even(b);
      return float(q) * f16_bits_to_float(W.scales[r * W.groups + c / W.group_size]);
    }
  }
  return 0.0f;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace glmlab::cuda::k
