#include "util/dtype.h"

#include "util/error.h"

#include <algorithm>
#include <cstdint>

namespace glmlab {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "fp32";
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
    case DType::I8: return "int8";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U8: return "uint8";
    case DType::Q8: return "int8";
    case DType::Q4: return "int4";
  }
  return "?";
}

std::string_view dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I8: return "I8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Q8: case DType::Q4: return "I8";  // stored as int8 bytes (docs/QUANTIZATION.md)
  }
  return "?";
}

DType dtype_from_safetensors(std::string_view s) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I8, DType::I32, DType::I64, DType::U8})
    if (dtype_safetensors_name(t) == s) return t;
  fail("unsupported safetensors dtype \"{}\" (expected one of F32, F16, BF16, I8, I32, I64, U8)", s);
}

DType dtype_from_name(std::string_view s) {
  if (s == "fp32" || s == "f32" || s == "float32") return DType::F32;
  if (s == "fp16" || s == "f16" || s == "float16" || s == "half") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  fail("unknown dtype \"{}\" (expected fp32, fp16 or bf16)", s);
}

DType weight_dtype_from_name(std::string_view s) {
  if (s == "int8" || s == "q8") return DType::Q8;
  if (s == "int4" || s == "q4") return DType::Q4;
  if (s == "fp32" || s == "f32" || s == "float32" || s == "fp16" || s == "f16" || s == "float16" || s == "half" ||
      s == "bf16" || s == "bfloat16")
    return dtype_from_name(s);
  fail("unknown dtype \"{}\" (expected fp32, fp16, bf16, int8 or int4)", s);
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I8: case DType::U8: case DType::Q8: return 1;
    case DType::Q4: return 0;
    case DType::I64: return 8;
  }
  return 0;
}

namespace {

// Exponent all ones (NaN or Inf) anywhere in [b, e)? Written as an OR-reduction so it vectorizes.
template <typename U>
bool any_exp_all_ones(const U* p, size_t b, size_t e, U mask) {
  U bad = 0;
#pragma omp simd reduction(| : bad)
  for (size_t i = b; i < e; ++i) bad |= U(U(p[i] & mask) == mask);
  return bad != 0;
}

template <typename U>
size_t first_all_ones(const U* p, size_t n, U mask) {
  constexpr size_t kChunk = size_t(1) << 16;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  size_t first_chunk = chunks;
#pragma omp parallel for schedule(static) reduction(min : first_chunk) if (chunks > 4)
  for (size_t c = 0; c < chunks; ++c)
    if (any_exp_all_ones(p, c * kChunk, std::min(n, (c + 1) * kChunk), mask)) first_chunk = std::min(first_chunk, c);
  if (first_chunk == chunks) return n;
  for (size_t i = first_chunk * kChunk; i < n; ++i)
    if ((p[i] & mask) == mask) return i;
  return n;
}

}  // namespace

size_t first_non_finite(const void* data, DType t, size_t n) {
  switch (t) {
    case DType::F32: return first_all_ones(static_cast<const uint32_t*>(data), n, uint32_t(0x7f800000u));
    case DType::F16: return first_all_ones(static_cast<const uint16_t*>(data), n, uint16_t(0x7c00u));
    case DType::BF16: return first_all_ones(static_cast<const uint16_t*>(data), n, uint16_t(0x7f80u));
    default: return n;
  }
}

}  // namespace glmlab
