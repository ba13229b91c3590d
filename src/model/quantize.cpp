// Q8 / Q4 quantizer and scalar dequantizer (see quantize.h and docs/QUANTIZATION.md).
#include "model/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace glmlab {

int64_t effective_group_size(DType q, int64_t cols, int64_t group_size) {
  if (!is_quantized(q)) fail("effective_group_size: {} is not a quantized dtype", dtype_name(q));
  if (group_size < 0) fail("group size {} must be positive (or 0 for one group per row)", group_size);
  if (group_size == 0 || group_size >= cols) return cols;
  if (q == DType::Q4 && group_size % 2 != 0)
    fail("int4 group size {} must be even (two values share a byte)", group_size);
  return group_size;
}

uint64_t quantized_bytes(DType q, int64_t rows, int64_t cols, int64_t group_size) {
  Matrix m{q, rows, cols, nullptr};
  m.group_size = effective_group_size(q, cols, group_size);
  return m.nbytes();
}

QuantizedMatrix make_quantized(DType q, int64_t rows, int64_t cols, int64_t group_size) {
  QuantizedMatrix qm;
  qm.m = Matrix{q, rows, cols, nullptr};
  qm.m.group_size = effective_group_size(q, cols, group_size);
  qm.data.assign(qm.m.data_bytes(), 0);
  qm.scales.assign(size_t(rows * qm.m.groups()) * 2, 0);
  qm.m.data = qm.data.data();
  qm.m.scales = reinterpret_cast<const uint16_t*>(qm.scales.data());
  return qm;
}

void quantize_rows(const float* src, int64_t n, int64_t r0, QuantizedMatrix& qm) {
  const Matrix& m = qm.m;
  const int64_t C = m.cols, G = m.group_size, ng = m.groups(), rb = m.row_bytes();
  const float qmax = m.dtype == DType::Q8 ? 127.0f : 7.0f;
  auto* scales = reinterpret_cast<uint16_t*>(qm.scales.data());
  for (int64_t i = 0; i < n; ++i) {
    const float* w = src + i * C;
    const int64_t r = r0 + i;
    uint8_t* out = qm.data.data() + r * rb;
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t c0 = g * G, c1 = std::min(C, c0 + G);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) {
        if (!std::isfinite(w[c])) fail("cannot quantize row {} column {}: the weight is {}", r, c, w[c]);
        amax = std::max(amax, std::fabs(w[c]));
      }
      const uint16_t s16 = f32_to_f16(amax / qmax);
      const float s = f16_to_f32(s16);
      if (!std::isfinite(s)) fail("cannot quantize row {}: max |w| = {} overflows an fp16 scale", r, amax);
      scales[r * ng + g] = s16;
      for (int64_t c = c0; c < c1; ++c) {
        float q = s == 0 ? 0.0f : std::clamp(std::nearbyint(w[c] / s), -qmax, qmax);  // half to even
        int8_t qi = int8_t(q);
        if (m.dtype == DType::Q8) {
          out[c] = uint8_t(qi);
        } else if (c % 2 == 0) {
          out[c / 2] = uint8_t((uint8_t(qi) << 4) | (out[c / 2] & 0x0F));  // even element: high nibble
        } else {
          out[c / 2] = uint8_t((out[c / 2] & 0xF0) | (uint8_t(qi) & 0x0F));
        }
      }
    }
  }
}

QuantizedMatrix quantize(const Matrix& src, DType q, int64_t group_size) {
  if (src.quantized()) fail("quantize: the matrix is already {}", dtype_name(src.dtype));
  QuantizedMatrix qm = make_quantized(q, src.rows, src.cols, group_size);
  const int64_t block = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, src.cols));
  std::string err;
#pragma omp parallel
  {
    std::vector<float> tmp(size_t(block * src.cols));
#pragma omp for schedule(dynamic)
    for (int64_t r0 = 0; r0 < src.rows; r0 += block) {
      const int64_t n = std::min(block, src.rows - r0);
      try {
        for (int64_t i = 0; i < n; ++i) read_row(src, r0 + i, tmp.data() + i * src.cols);
        quantize_rows(tmp.data(), n, r0, qm);
      } catch (const Error& e) {
#pragma omp critical
        err = e.what();
      }
    }
  }
  if (!err.empty()) fail("{}", err);
  return qm;
}

void read_row(const Matrix& w, int64_t r, float* out) {
  if (w.quantized()) {
    for (int64_t c = 0; c < w.cols; ++c) out[c] = float(quantized_value(w, r, c)) * quantized_scale(w, r, c);
    return;
  }
  for (int64_t c = 0; c < w.cols; ++c) out[c] = w.at(r, c);
}

std::string describe_weights(const ModelWeights& w) {
  if (!is_quantized(w.dtype)) return std::string(dtype_name(w.dtype));
  int64_t g = w.layers.empty() ? 0 : w.layers[0].qkv.group_size;
  bool per_row = !w.layers.empty() && g == w.layers[0].qkv.cols;
  return fmt::format("{} ({}, fp16 scales; embedding/output {})", dtype_name(w.dtype),
                     per_row ? std::string("per-row scales") : fmt::format("group {}", g),
                     dtype_name(w.embedding.dtype));
}

}  // namespace glmlab
