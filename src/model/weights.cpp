#include "model/weights.h"

#include <omp.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "model/quant_load.h"
#include "model/quantize.h"
#include "model/safetensors.h"
#include "ops/ops.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {

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

uint64_t weight_bytes(const ModelConfig& c, DType dtype, int group_size) {
  uint64_t C = c.hidden_size, F = c.ffn_hidden_size, Q = c.qkv_dim(), V = c.vocab_size;
  if (is_quantized(dtype)) {
    uint64_t per_layer = quantized_bytes(dtype, Q, C, group_size) + quantized_bytes(dtype, C, c.q_dim(), group_size) +
                         quantized_bytes(dtype, 2 * F, C, group_size) + quantized_bytes(dtype, C, F, group_size) +
                         (2 * C + Q) * 4;
    return c.num_layers * per_layer + 2 * V * C * 2 + C * 4;  // embedding and output in fp16
  }
  uint64_t es = dtype_size(dtype);
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

// Owns the buffers of random or converted matrices (every ModelWeights::storage is one).
struct OwnedStorage {
  std::vector<WeightBytes> buffers;  // on huge pages where large (util/large_pages.h)
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

// Uniform in [-a, a]: element i of the matrix is number i % 2^16 of the stream of chunk i / 2^16, so
// any block of elements can be made alone (same numbers on any thread count or block size).
constexpr int64_t kRandomChunk = 1 << 16;
void fill_random(uint64_t base, float a, int64_t i0, int64_t n, float* out) {
  for (int64_t i = i0; i < i0 + n;) {
    const int64_t c = i / kRandomChunk, end = std::min(i0 + n, (c + 1) * kRandomChunk);
    uint64_t s = base + uint64_t(c) * 0x632be59bd9b4e019ull + uint64_t(i - c * kRandomChunk) * 0x9e3779b97f4a7c15ull;
    for (; i < end; ++i) {
      double u = double(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
      out[i - i0] = float((2.0 * u - 1.0) * a);
    }
  }
}

Matrix random_matrix(OwnedStorage& st, const std::string& name, int64_t rows, int64_t cols, float stddev,
                     DType dtype, uint64_t seed, int group_size = 0) {
  const float a = stddev * std::sqrt(3.0f);
  const uint64_t base = seed ^ hash_name(name);
  if (is_quantized(dtype)) {  // a block of fp32 rows at a time, quantized straight away
    QuantizedMatrix qm = make_quantized(dtype, rows, cols, group_size);
    const int64_t block = std::max<int64_t>(1, kRandomChunk / cols);
#pragma omp parallel
    {
      std::vector<float> tmp(size_t(block * cols));
#pragma omp for schedule(dynamic)
      for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t n = std::min(block, rows - r0);
        fill_random(base, a, r0 * cols, n * cols, tmp.data());
        quantize_rows(tmp.data(), n, r0, qm);
      }
    }
    st.buffers.push_back(std::move(qm.data));  // moving keeps the buffers where qm.m points
    st.buffers.push_back(std::move(qm.scales));
    return qm.m;
  }
  auto& buf = st.buffers.emplace_back(size_t(rows * cols) * dtype_size(dtype));
  const int64_t n = rows * cols;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += kRandomChunk) {
    float tmp[256];
    for (int64_t i = c0; i < std::min(n, c0 + kRandomChunk); i += 256) {
      int64_t m = std::min<int64_t>(256, std::min(n, c0 + kRandomChunk) - i);
      fill_random(base, a, i, m, tmp);
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

ModelWeights random_weights(const ModelConfig& c, DType dtype, uint64_t seed, int group_size) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && !is_quantized(dtype))
    fail("random weights: dtype {} is not fp32, fp16, bf16, int8 or int4", dtype_name(dtype));
  check_memory(weight_bytes(c, dtype, group_size), fmt::format("model random:{} in {}", c.name, dtype_name(dtype)));
  auto st = std::make_shared<OwnedStorage>();
  ModelWeights w;
  w.dtype = dtype;
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  const float depth = 1.0f / std::sqrt(2.0f * float(c.num_layers));  // keeps the residual stream tame
  const DType edt = is_quantized(dtype) ? DType::F16 : dtype;  // embedding and output stay 16-bit
  auto linear = [&](const std::string& name, int64_t rows, int64_t cols, float stddev) {
    return random_matrix(*st, name, rows, cols, stddev, dtype, seed, group_size);
  };
  w.embedding = random_matrix(*st, names::embedding(), V, C, 1.0f, edt, seed);
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights l;
    l.input_norm = random_vector(names::layer(i, "input_layernorm.weight"), C, 1.0f, 0.1f, seed);
    l.qkv = linear(names::layer(i, "self_attention.query_key_value.weight"), c.qkv_dim(), C, 1.0f / std::sqrt(float(C)));
    if (c.add_qkv_bias) l.qkv_bias = random_vector(names::layer(i, "self_attention.query_key_value.bias"), c.qkv_dim(), 0.0f, 0.1f, seed);
    l.dense = linear(names::layer(i, "self_attention.dense.weight"), C, c.q_dim(), depth / std::sqrt(float(c.q_dim())));
    l.post_norm = random_vector(names::layer(i, "post_attention_layernorm.weight"), C, 1.0f, 0.1f, seed);
    l.h_to_4h = linear(names::layer(i, "mlp.dense_h_to_4h.weight"), 2 * F, C, 1.0f / std::sqrt(float(C)));
    l.four_h_to_h = linear(names::layer(i, "mlp.dense_4h_to_h.weight"), C, F, depth / std::sqrt(float(F)));
    w.layers.push_back(std::move(l));
  }
  w.final_norm = random_vector(names::final_norm(), C, 1.0f, 0.1f, seed);
  w.output = random_matrix(*st, names::output(), V, C, 2.0f / std::sqrt(float(C)), edt, seed);
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
  // One pass over the stored values (also for zero-copy tensors: they are never converted), so a NaN or
  // Inf in a checkpoint is named here rather than surfacing as NaN logits.
  const size_t n = size_t(t->numel());
  if (size_t i = first_non_finite(t->data, t->dtype, n); i < n) {
    uint16_t h = 0;
    float v = 0;
    if (t->dtype == DType::F32) std::memcpy(&v, t->data + 4 * i, 4);
    else std::memcpy(&h, t->data + 2 * i, 2), v = t->dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    fail("{}: tensor {} holds a value that is not finite ({}) at index {} (of {}): the checkpoint is corrupt", dir,
         name, v, i, n);
  }
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

// One of the four linears of a layer (`module` without ".weight"), in `dtype`: float weights are
// converted or quantized; quantized ones (glmlab, THUDM, GPTQ) are kept as stored or dequantized.
Matrix load_linear(OwnedStorage& st, const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                   bool has_bias, DType dtype, int group_size, const QuantConfig& qc, const std::string& dir,
                   std::set<std::string>& used) {
  StoredLinear kind = stored_linear(set, module);
  for (auto& n : stored_linear_names(set, module, kind, has_bias)) used.insert(n);
  if (kind == StoredLinear::Float) {
    if (!is_quantized(dtype)) return load_matrix(st, set, module + ".weight", rows, cols, dtype, dir);
    const TensorInfo& t = expect(set, module + ".weight", {rows, cols}, dir);
    QuantizedMatrix qm = quantize(Matrix{t.dtype, rows, cols, t.data}, dtype, group_size);
    st.buffers.push_back(std::move(qm.data));
    st.buffers.push_back(std::move(qm.scales));
    return qm.m;
  }
  QuantizedMatrix qm = read_quantized_linear(set, module, rows, cols, qc, dir);
  if (is_quantized(dtype)) {
    if (qm.m.dtype != dtype)
      fail("{}: {} is stored quantized as {}; loading it as {} would quantize it twice (use --dtype {} or a float "
           "dtype)", dir, module, dtype_name(qm.m.dtype), dtype_name(dtype), dtype_name(qm.m.dtype));
    st.buffers.push_back(std::move(qm.data));  // empty for zero-copy views
    st.buffers.push_back(std::move(qm.scales));
    return qm.m;
  }
  auto& buf = st.buffers.emplace_back(size_t(rows * cols) * dtype_size(dtype));  // dequantized
#pragma omp parallel
  {
    std::vector<float> tmp(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      read_row(qm.m, r, tmp.data());
      store_floats(tmp.data(), dtype, buf.data() + size_t(r * cols) * dtype_size(dtype), size_t(cols));
    }
  }
  return Matrix{dtype, rows, cols, buf.data()};
}

// Bytes load_linear allocates.
uint64_t linear_alloc_bytes(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                            DType dtype, int group_size, const QuantConfig& qc) {
  StoredLinear kind = stored_linear(set, module);
  if (kind == StoredLinear::Float) {
    if (is_quantized(dtype)) return quantized_bytes(dtype, rows, cols, group_size);
    const TensorInfo* t = set.find(module + ".weight");
    return t && t->dtype == dtype ? 0 : uint64_t(rows * cols) * dtype_size(dtype);
  }
  return quantized_linear_alloc_bytes(set, module, rows, cols, qc) +
         (is_quantized(dtype) ? 0 : uint64_t(rows * cols) * dtype_size(dtype));
}

}  // namespace

ModelWeights load_weights(const std::string& dir, const ModelConfig& c, DType dtype, int group_size) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && !is_quantized(dtype))
    fail("loading {}: dtype {} is not fp32, fp16, bf16, int8 or int4", dir, dtype_name(dtype));
  auto st = std::make_shared<OwnedStorage>();
  st->files = std::make_shared<SafetensorsSet>(SafetensorsSet::open(dir));
  const SafetensorsSet& set = *st->files;
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  // Every layer has at least six tensors: a config with more layers than the checkpoint has tensors
  // (num_layers 1000000000) fails here, naming the first missing layer, before any per-layer loop.
  if (const size_t ntensors = set.names().size(); uint64_t(c.num_layers) > ntensors)
    for (int i = 0; i <= int(ntensors); ++i)
      if (std::string n = names::layer(i, "input_layernorm.weight"); !set.find(n))
        fail("{}: tensor {} is missing (expected shape [{}]): config.json says num_layers {} but the checkpoint has "
             "only {} tensors", dir, n, C, c.num_layers, ntensors);

  // Embedding and output: in `dtype`, or for int8/int4 kept 16-bit (fp32 checkpoints become fp16).
  DType edt = dtype;
  if (is_quantized(dtype)) {
    const TensorInfo* e = set.find(names::embedding());
    edt = e && (e->dtype == DType::F16 || e->dtype == DType::BF16) ? e->dtype : DType::F16;
  }
  struct Linear {
    const char* suffix;
    int64_t rows, cols;
    bool has_bias;
  };
  const Linear linears[] = {{"self_attention.query_key_value", c.qkv_dim(), C, c.add_qkv_bias},
                            {"self_attention.dense", C, c.q_dim(), false},
                            {"mlp.dense_h_to_4h", 2 * F, C, false},
                            {"mlp.dense_4h_to_h", C, F, false}};

  // Memory: what conversion, quantization, repacking or dequantization allocates.
  uint64_t need = 0;
  for (auto& n : {names::embedding(), names::output()})
    if (auto* t = set.find(n); t && t->dtype != edt) need += uint64_t(t->numel()) * dtype_size(edt);
  for (int i = 0; i < c.num_layers; ++i)
    for (auto& li : linears)
      need += linear_alloc_bytes(set, names::layer(i, li.suffix), li.rows, li.cols, dtype, group_size, c.quant);
  check_memory(need, fmt::format("converting the weights of {} to {}", dir, dtype_name(dtype)));

  std::set<std::string> used;
  auto mark = [&](const std::string& n) { used.insert(n); return n; };
  auto linear = [&](int i, const Linear& li) {
    return load_linear(*st, set, names::layer(i, li.suffix), li.rows, li.cols, li.has_bias, dtype, group_size, c.quant,
                       dir, used);
  };
  ModelWeights w;
  w.dtype = dtype;
  w.embedding = load_matrix(*st, set, mark(names::embedding()), V, C, edt, dir);
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights l;
    l.input_norm = load_vector(set, mark(names::layer(i, "input_layernorm.weight")), C, dir);
    l.qkv = linear(i, linears[0]);
    if (c.add_qkv_bias)
      l.qkv_bias = load_vector(set, mark(names::layer(i, "self_attention.query_key_value.bias")), c.qkv_dim(), dir);
    l.dense = linear(i, linears[1]);
    l.post_norm = load_vector(set, mark(names::layer(i, "post_attention_layernorm.weight")), C, dir);
    l.h_to_4h = linear(i, linears[2]);
    l.four_h_to_h = linear(i, linears[3]);
    w.layers.push_back(std::move(l));
  }
  w.final_norm = load_vector(set, mark(names::final_norm()), C, dir);
  w.output = load_matrix(*st, set, mark(names::output()), V, C, edt, dir);
  // rotary_pos_emb.inv_freq is a buffer the reference recomputes; anything else is unexpected.
  for (auto& n : set.names())
    if (!used.count(n) && n != "transformer.rotary_pos_emb.inv_freq")
      fail("{}: unexpected tensor {} (shape {}) that a ChatGLM3 model with this config.json does not have", dir, n,
           set.find(n)->shape_str());
  w.storage = st;
  return w;
}

int pack_weights(ModelWeights& w, const Ops& ops) {
  auto* st = static_cast<OwnedStorage*>(w.storage.get());
  if (!st) fail("pack_weights: the weights have no storage");
  auto release = [&](const void* p) {  // frees the owned buffer at p (none for a mapped file's bytes)
    for (auto& b : st->buffers)
      if (!b.empty() && b.data() == p) WeightBytes().swap(b);
  };
  std::vector<Matrix*> all;
  for (auto& l : w.layers)
    for (Matrix* m : {&l.qkv, &l.dense, &l.h_to_4h, &l.four_h_to_h}) all.push_back(m);
  if (w.output.data != w.embedding.data) all.push_back(&w.output);  // never a table the embedding shares
  int n = 0;
  for (Matrix* m : all) {
    PackedWeights p;
    if (!ops.pack_weights(*m, p)) continue;
    const Matrix old = *m;
    *m = p.m;
    st->buffers.push_back(std::move(p.data));
    st->buffers.push_back(std::move(p.scales));
    release(old.data);
    release(old.scales);
    ++n;
    }
  return n;
}

}  // namespace glmlab
