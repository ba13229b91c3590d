// The matrix view every layer shares: ops and kernels compute on it, the model's weights hold it
// (model/weights.h). A view only: the bytes belong to whoever made it.
#pragma once
#include <cstdint>

#include "util/dtype.h"

namespace glmlab {

// How a matrix's bytes are laid out: row-major (below), or repacked at load for an inference kernel of
// the fast CPU back end, 16 rows interleaved: Q8/Q4 for VNNI (Vnni16, kernels/cpu/vnni_packed.h), bf16
// for AVX512-BF16 (Pairs16, kernels/cpu/dpbf16_packed.h), fp16 for AVX-512 FMA (Rows16,
// kernels/cpu/f16_packed.h). Only CPU inference reads the packed layouts.
enum class MatrixLayout : uint8_t { RowMajor, Vnni16, Pairs16, Rows16 };

// A row-major [rows, cols] matrix; as in nn.Linear, rows are outputs and cols are inputs (y = x·Wᵀ).
// Q8 / Q4 (weight-only quantization, docs/QUANTIZATION.md): data holds int8 [rows, cols] (Q8) or two
// signed 4-bit values a byte, even element in the high nibble, [rows, ceil(cols/2)] bytes (Q4);
// W[r, c] = q[r, c] · scales[r, c / group_size] with fp16 scales [rows, groups()].
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  const uint16_t* scales = nullptr;  // Q8/Q4 only: fp16 bits
  int64_t group_size = 0;            // Q8/Q4 only: inputs per scale (cols = one group per row)
  MatrixLayout layout = MatrixLayout::RowMajor;

  bool quantized() const { return is_quantized(dtype); }
  int64_t groups() const { return quantized() ? (cols + group_size - 1) / group_size : 0; }
  int64_t row_bytes() const { return dtype == DType::Q4 ? (cols + 1) / 2 : cols * int64_t(dtype_size(dtype)); }
  int64_t stored_rows() const { return layout == MatrixLayout::RowMajor ? rows : (rows + 15) / 16 * 16; }
  size_t data_bytes() const { return size_t(stored_rows() * row_bytes()); }
  size_t nbytes() const { return data_bytes() + size_t(stored_rows() * groups()) * 2; }  // data + scales
  float at(int64_t r, int64_t c) const;  // scalar read (dequantized), for references and tests
};

// The quantized value q[r, c] of a Q8/Q4 matrix and its scale (either layout).
int quantized_value(const Matrix& w, int64_t r, int64_t c);
float quantized_scale(const Matrix& w, int64_t r, int64_t c);

}  // namespace glmlab
