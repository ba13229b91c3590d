#include "model/weights.h"

#include <omp.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "model/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {

float Matrix::at(int64_t r, int64_t c) const {
  size_t i = size_t(r * cols + c);
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(data)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: fail("Matrix::at: unsupported dtype {}", dtype_name(dtype));
  }
}

uint64_t ModelWeights::matrix_bytes() const {
  uint64_t n = embedding.nbytes() + output.nbytes();
  for (auto& l : layers) n += l.qkv.nbytes() + l.dense.nbytes() + l.h_to_4h.nbytes() + l.four_h_to_h.nbytes();
  return n;
}

namespace names {
std::string embedding() { return "transformer.embedding.word_embeddings.weight"; }
std::string layer(int i, const char* suffix) { return fmt::format("transformer.encoder.layers.{}.{}", i, suffix); }
std::string final_norm() { return "transformer.encoder.final_layernorm.weight"; }
std::string output() { return "transformer.output_layer.weight"; }
}  // namespace names

uint64_t weight_bytes(const ModelConfig& c, DType dtype) {
  uint64_t es = dtype_size(dtype);
  uint64_t C = c.hidden_size, F = c.ffn_hidden_size, Q = c.qkv_dim(), V = c.vocab_size;
  uint64_t per_layer = (Q * C + uint64_t(c.q_dim()) * C + 3 * F * C) * es + (2 * C + Q) * 4;
  return c.num_layers * per_layer + 2 * V * C * es + C * 4;
}

namespace {

// ---- seeded random numbers, reproducible regardless of thread count -----------------------------
uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Owns the buffers of random or converted matrices.
struct OwnedStorage {
  std::vector<std::vector<uint8_t>> buffers;
  std::shared_ptr<SafetensorsSet> files;
};

void store_floats(const float* src, DType dtype, void* dst, size_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::F16: for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]); break;
    case DType::BF16: for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]); break;
    default: fail("cannot store floats as {}", dtype_name(dtype));
  }
}

// Uniform in [-a, a], chunked so every chunk has its own stream.
Matrix random_matrix(OwnedStorage& st, const std::string& name, int64_t rows, int64_t cols, float stddev,
                     DType dtype, uint64_t seed) {
  auto& buf = st.buffers.emplace_back(size_t(rows * cols) * dtype_size(dtype));
  const float a = stddev * std::sqrt(3.0f);
  const int64_t n = rows * cols, chunk = 1 << 16;
  const uint64_t base = seed ^ hash_name(name);
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    uint64_t s = base + uint64_t(c0 / chunk) * 0x632be59bd9b4e019ull;
    float tmp[256];
    for (int64_t i = c0; i < std::min(n, c0 + chunk); i += 256) {
      int64_t m = std::min<int64_t>(256, std::min(n, c0 + chunk) - i);
      for (int64_t k = 0; k < m; ++k) {
        double u = double(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
        tmp[k] = float((2.0 * u - 1.0) * a);
      }
      store_floats(tmp, dtype, buf.data() + size_t(i) * dtype_size(dtype), size_t(m));
    }
  }
  return Matrix{dtype, rows, cols, buf.data()};
}

std::vector<float> random_vector(const std::string& name, int64_t n, float center, float halfwidth, uint64_t seed) {
  uint64_t s = seed ^ hash_name(name);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = center + halfwidth * float(2.0 * (double(splitmix64(s) >> 11) / 9007199254740992.0) - 1.0);
  return v;
}

}  // namespace

ModelWeights random_weights(const ModelConfig& c, DType dtype, uint64_t seed) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail("random weights: dtype {} is not fp32, fp16 or bf16", dtype_name(dtype));
  check_memory(weight_bytes(c, dtype), fmt::format("model random:{} in {}", c.name, dtype_name(dtype)));
  auto st = std::make_shared<OwnedStorage>();
  ModelWeights w;
  w.dtype = dtype;
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  const float depth = 1.0f / std::sqrt(2.0f * float(c.num_layers));  // keeps the residual stream tame
  w.embedding = random_matrix(*st, names::embedding(), V, C, 1.0f, dtype, seed);
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights l;
    l.input_norm = random_vector(names::layer(i, "input_layernorm.weight"), C, 1.0f, 0.1f, seed);
    l.qkv = random_matrix(*st, names::layer(i, "self_attention.query_key_value.weight"), c.qkv_dim(), C,
                          1.0f / std::sqrt(float(C)), dtype, seed);
    if (c.add_qkv_bias) l.qkv_bias = random_vector(names::layer(i, "self_attention.query_key_value.bias"), c.qkv_dim(), 0.0f, 0.1f, seed);
    l.dense = random_matrix(*st, names::layer(i, "self_attention.dense.weight"), C, c.q_dim(),
                            depth / std::sqrt(float(c.q_dim())), dtype, seed);
    l.post_norm = random_vector(names::layer(i, "post_attention_layernorm.weight"), C, 1.0f, 0.1f, seed);
    l.h_to_4h = random_matrix(*st, names::layer(i, "mlp.dense_h_to_4h.weight"), 2 * F, C, 1.0f / std::sqrt(float(C)), dtype, seed);
    l.four_h_to_h = random_matrix(*st, names::layer(i, "mlp.dense_4h_to_h.weight"), C, F, depth / std::sqrt(float(F)), dtype, seed);
    w.layers.push_back(std::move(l));
  }
  w.final_norm = random_vector(names::final_norm(), C, 1.0f, 0.1f, seed);
  w.output = random_matrix(*st, names::output(), V, C, 2.0f / std::sqrt(float(C)), dtype, seed);
  w.storage = st;
  return w;
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

const TensorInfo& expect(const SafetensorsSet& set, const std::string& name, std::vector<int64_t> shape,
                         const std::string& dir) {
  const TensorInfo* t = set.find(name);
  if (!t) fail("{}: tensor {} is missing (expected shape {})", dir, name, shape_str(shape));
  if (t->shape != shape)
    fail("{}: tensor {} has shape {} but the config needs {}", dir, name, shape_str(t->shape), shape_str(shape));
  if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
    fail("{}: tensor {} is stored as {}; expected F32, F16 or BF16", dir, name, dtype_safetensors_name(t->dtype));
  return *t;
}

void to_floats(const TensorInfo& t, float* dst) {
  size_t n = size_t(t.numel());
  switch (t.dtype) {
    case DType::F32: std::memcpy(dst, t.data, n * 4); break;
    case DType::F16: for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[i]); break;
    case DType::BF16: for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[i]); break;
    default: fail("tensor {}: cannot read {}", t.name, dtype_name(t.dtype));
  }
}

std::vector<float> load_vector(const SafetensorsSet& set, const std::string& name, int64_t n, const std::string& dir) {
  auto& t = expect(set, name, {n}, dir);
  std::vector<float> v(static_cast<size_t>(n));
  to_floats(t, v.data());
  return v;
}

Matrix load_matrix(OwnedStorage& st, const SafetensorsSet& set, const std::string& name, int64_t rows, int64_t cols,
                   DType dtype, const std::string& dir) {
  auto& t = expect(set, name, {rows, cols}, dir);
  if (t.dtype == dtype) return Matrix{dtype, rows, cols, t.data};  // zero copy: points into the mapping
  auto& buf = st.buffers.emplace_back(size_t(rows * cols) * dtype_size(dtype));
  const int64_t n = rows * cols, chunk = 1 << 16;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    float tmp[1024];
    for (int64_t i = c0; i < std::min(n, c0 + chunk); i += 1024) {
      int64_t m = std::min<int64_t>(1024, std::min(n, c0 + chunk) - i);
      for (int64_t k = 0; k < m; ++k) {
        size_t idx = size_t(i + k);
        tmp[k] = t.dtype == DType::F32 ? reinterpret_cast<const float*>(t.data)[idx]
                 : t.dtype == DType::F16 ? f16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[idx])
                                         : bf16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[idx]);
      }
      store_floats(tmp, dtype, buf.data() + size_t(i) * dtype_size(dtype), size_t(m));
    }
  }
  return Matrix{dtype, rows, cols, buf.data()};
}

}  // namespace

ModelWeights load_weights(const std::string& dir, const ModelConfig& c, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail("loading {}: dtype {} is not fp32, fp16 or bf16", dir, dtype_name(dtype));
  auto st = std::make_shared<OwnedStorage>();
  st->files = std::make_shared<SafetensorsSet>(SafetensorsSet::open(dir));
  const SafetensorsSet& set = *st->files;

  // Memory: matrices stored in another dtype are converted into new buffers.
  uint64_t convert = 0;
  for (auto& n : set.names()) {
    auto* t = set.find(n);
    if (t->shape.size() == 2 && t->dtype != dtype) convert += uint64_t(t->numel()) * dtype_size(dtype);
  }
  check_memory(convert, fmt::format("converting the weights of {} to {}", dir, dtype_name(dtype)));

  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  std::set<std::string> used;
  auto mark = [&](const std::string& n) { used.insert(n); return n; };
  ModelWeights w;
  w.dtype = dtype;
  w.embedding = load_matrix(*st, set, mark(names::embedding()), V, C, dtype, dir);
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights l;
    l.input_norm = load_vector(set, mark(names::layer(i, "input_layernorm.weight")), C, dir);
    l.qkv = load_matrix(*st, set, mark(names::layer(i, "self_attention.query_key_value.weight")), c.qkv_dim(), C, dtype, dir);
    if (c.add_qkv_bias)
      l.qkv_bias = load_vector(set, mark(names::layer(i, "self_attention.query_key_value.bias")), c.qkv_dim(), dir);
    l.dense = load_matrix(*st, set, mark(names::layer(i, "self_attention.dense.weight")), C, c.q_dim(), dtype, dir);
    l.post_norm = load_vector(set, mark(names::layer(i, "post_attention_layernorm.weight")), C, dir);
    l.h_to_4h = load_matrix(*st, set, mark(names::layer(i, "mlp.dense_h_to_4h.weight")), 2 * F, C, dtype, dir);
    l.four_h_to_h = load_matrix(*st, set, mark(names::layer(i, "mlp.dense_4h_to_h.weight")), C, F, dtype, dir);
    w.layers.push_back(std::move(l));
  }
  w.final_norm = load_vector(set, mark(names::final_norm()), C, dir);
  w.output = load_matrix(*st, set, mark(names::output()), V, C, dtype, dir);
  // rotary_pos_emb.inv_freq is a buffer the reference recomputes; anything else is unexpected.
  for (auto& n : set.names())
    if (!used.count(n) && n != "transformer.rotary_pos_emb.inv_freq")
      fail("{}: unexpected tensor {} (shape {}) that a ChatGLM3 model with this config.json does not have", dir, n,
           set.find(n)->shape_str());
  w.storage = st;
  return w;
}

}  // namespace glmlab
