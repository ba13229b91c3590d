#include "util/matrix.h"

#include "util/error.h"

namespace glmlab {

int quantized_value(const Matrix& w, int64_t r, int64_t c) {
  if (w.layout == MatrixLayout::Vnni16) {  // kernels/cpu/vnni_packed.h: [block][unit][16 rows][4 bytes], unsigned
    const int64_t byte = w.dtype == DType::Q8 ? c : c / 2, u = byte / 4;
    const uint8_t b = static_cast<const uint8_t*>(w.data)[((r / 16 * (w.row_bytes() / 4) + u) * 16 + r % 16) * 4 + byte % 4];
    if (w.dtype == DType::Q8) return int(b) - 128;
    return (c % 2 == 0 ? b >> 4 : b & 15) - 8;
  }
  const auto* row = static_cast<const uint8_t*>(w.data) + r * w.row_bytes();
  if (w.dtype == DType::Q8) return int8_t(row[c]);
  const uint8_t b = row[c / 2];
  return c % 2 == 0 ? int8_t(b) >> 4 : int8_t(uint8_t(b << 4)) >> 4;  // sign-extending shifts
}

float quantized_scale(const Matrix& w, int64_t r, int64_t c) {
  if (w.layout == MatrixLayout::Vnni16) return f16_to_f32(w.scales[(r / 16 * w.groups() + c / w.group_size) * 16 + r % 16]);
  return f16_to_f32(w.scales[r * w.groups() + c / w.group_size]);
}

float Matrix::at(int64_t r, int64_t c) const {
  size_t i = size_t(r * cols + c);
  if (layout == MatrixLayout::Pairs16)  // kernels/cpu/dpbf16_packed.h: [block][pair][16 rows][2 halves]
    i = size_t(((r / 16 * (cols / 2) + c / 2) * 16 + r % 16) * 2 + c % 2);
  if (layout == MatrixLayout::Rows16)  // kernels/cpu/f16_packed.h: [block][input][16 rows]
    i = size_t((r / 16 * cols + c) * 16 + r % 16);
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(data)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::Q8: case DType::Q4: return float(quantized_value(*this, r, c)) * quantized_scale(*this, r, c);
    default: fail("Matrix::at: unsupported dtype {}", dtype_name(dtype));
  }
}

}  // namespace glmlab
