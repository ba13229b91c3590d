// Element types of stored weights and their scalar conversions (fp16 / bf16 <-> fp32).
// SIMD conversions live in the kernels; these scalar ones are the reference.
// Q8 / Q4 are glmlab's weight-only quantized matrix types (docs/QUANTIZATION.md): a Matrix of them
// also carries fp16 group scales. They never appear in a safetensors header (stored there as I8).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace glmlab {

enum class DType : uint8_t { F32, F16, BF16, I8, I32, I64, U8, Q8, Q4 };

std::string_view dtype_name(DType t);               // "fp32", "fp16", "bf16", ...
std::string_view dtype_safetensors_name(DType t);   // "F32", "F16", "BF16", ...
DType dtype_from_safetensors(std::string_view s);   // throws Error on unknown names
DType dtype_from_name(std::string_view s);          // "fp32|f32|float32|fp16|...": throws on unknown
// A --dtype for weights: the float names above, and "int8" (Q8) / "int4" (Q4).
DType weight_dtype_from_name(std::string_view s);
inline bool is_quantized(DType t) { return t == DType::Q8 || t == DType::Q4; }
size_t dtype_size(DType t);                         // bytes per element; Q4 packs two per byte: 0
// Index of the first NaN or ±Inf among the n values of an F32/F16/BF16 array (aligned for its dtype),
// n when all are finite; other dtypes: n. One pass testing exponent bits, on all threads for big arrays.
size_t first_non_finite(const void* data, DType t, size_t n);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN kept quiet
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { ++e; man <<= 1; } while (!(man & 0x400u));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);           // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);          // overflow -> inf
  if (a < 0x38800000u) {                                           // subnormal or zero
    if (a < 0x33000000u) return uint16_t(sign);
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                                      // 14 + (113 - e) - 1
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
  return uint16_t(sign | (r >> 13));
}

}  // namespace glmlab
