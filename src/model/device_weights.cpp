// The model's weights uploaded to a Device (see device_weights.h).
#include "model/device_weights.h"

#include "util/error.h"

namespace glmlab {
namespace {

size_t scale_bytes(const Matrix& m) { return size_t(m.rows * m.groups()) * 2; }
size_t matrix_bytes(const Matrix& m) {
  return device_aligned(m.data_bytes()) + (m.scales ? device_aligned(scale_bytes(m)) : 0);
}

}  // namespace

uint64_t DeviceWeights::bytes(const ModelWeights& w) {
  uint64_t b = matrix_bytes(w.embedding) + matrix_bytes(w.output) + device_aligned(w.final_norm.size() * 4);
  for (const auto& lw : w.layers)
    b += matrix_bytes(lw.qkv) + matrix_bytes(lw.dense) + matrix_bytes(lw.h_to_4h) + matrix_bytes(lw.four_h_to_h) +
         device_aligned(lw.input_norm.size() * 4) + device_aligned(lw.post_norm.size() * 4) +
         device_aligned(lw.qkv_bias.size() * 4);
  return b;
}

DeviceWeights::DeviceWeights(Device& dev, const ModelWeights& w) {
  const uint64_t total = bytes(w);
  buf_ = DeviceBuffer(dev, total, "model weights");
  uint8_t* base = buf_.get<uint8_t>();
  size_t off = 0;
  auto put = [&](const void* src, size_t n) -> void* {
    void* p = base + off;
    if (n) dev.upload(p, src, n);
    off += device_aligned(n);
    return p;
  };
  auto put_matrix = [&](const Matrix& m) {
    Matrix d = m;
    d.data = put(m.data, m.data_bytes());
    if (m.scales) d.scales = static_cast<const uint16_t*>(put(m.scales, scale_bytes(m)));
    return d;
  };
  embedding = put_matrix(w.embedding);
  output = put_matrix(w.output);
  final_norm = static_cast<const float*>(put(w.final_norm.data(), w.final_norm.size() * 4));
  for (const auto& lw : w.layers) {
    DeviceLayerWeights d;
    d.qkv = put_matrix(lw.qkv);
    d.dense = put_matrix(lw.dense);
    d.h_to_4h = put_matrix(lw.h_to_4h);
    d.four_h_to_h = put_matrix(lw.four_h_to_h);
    d.input_norm = static_cast<const float*>(put(lw.input_norm.data(), lw.input_norm.size() * 4));
    d.post_norm = static_cast<const float*>(put(lw.post_norm.data(), lw.post_norm.size() * 4));
    d.qkv_bias = lw.qkv_bias.empty() ? nullptr : static_cast<const float*>(put(lw.qkv_bias.data(), lw.qkv_bias.size() * 4));
    layers.push_back(d);
  }
  if (off != total) fail("device weights: planned {} bytes but {} uploaded (internal error)", total, off);
}

}  // namespace glmlab
