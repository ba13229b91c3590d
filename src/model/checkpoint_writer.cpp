// Checkpoint folder writer (see checkpoint_writer.h).
#include "model/checkpoint_writer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {

namespace fs = std::filesystem;

namespace {

const char* torch_dtype_name(DType t) {
  return t == DType::F32 ? "float32" : t == DType::BF16 ? "bfloat16" : "float16";
}

// The group size every multi-group linear shares (0 when each linear has one group per row).
int common_group_size(const ModelWeights& w) {
  int64_t g = 0;
  for (auto& l : w.layers)
    for (const Matrix* m : {&l.qkv, &l.dense, &l.h_to_4h, &l.four_h_to_h}) {
      if (m->groups() <= 1) continue;
      if (g && g != m->group_size) fail("write_checkpoint: linears with different group sizes ({} and {})", g, m->group_size);
      g = m->group_size;
    }
  return int(g);
}

}  // namespace

void write_checkpoint(const ModelConfig& cfg, const ModelWeights& w, const std::string& dir) {
  if (path_exists(dir)) fail("{} already exists: remove it or choose another output folder", dir);
  std::string tmp = dir + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  std::vector<TensorToWrite> t;
  auto matrix = [&](const std::string& name, const Matrix& m) {
    if (m.layout != MatrixLayout::RowMajor)
      fail("{}: repacked for inference; checkpoints are written from row-major weights", name);
    if (!m.quantized()) {
      t.push_back({name + ".weight", m.dtype, {m.rows, m.cols}, m.data, m.nbytes()});
      return;
    }
    t.push_back({name + ".weight", DType::I8, {m.rows, m.row_bytes()}, m.data, m.data_bytes()});
    t.push_back({name + ".weight_scale", DType::F16, {m.rows, m.groups()}, m.scales, size_t(m.rows * m.groups()) * 2});
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    t.push_back({name, DType::F32, {int64_t(v.size())}, v.data(), v.size() * 4});
  };
  auto strip = [](const std::string& n) { return n.substr(0, n.size() - 7); };  // without ".weight"
  matrix(strip(names::embedding()), w.embedding);
  for (int i = 0; i < int(w.layers.size()); ++i) {
    const LayerWeights& l = w.layers[size_t(i)];
    vec(names::layer(i, "input_layernorm.weight"), l.input_norm);
    matrix(names::layer(i, "self_attention.query_key_value"), l.qkv);
    if (!l.qkv_bias.empty()) vec(names::layer(i, "self_attention.query_key_value.bias"), l.qkv_bias);
    matrix(names::layer(i, "self_attention.dense"), l.dense);
    vec(names::layer(i, "post_attention_layernorm.weight"), l.post_norm);
    matrix(names::layer(i, "mlp.dense_h_to_4h"), l.h_to_4h);
    matrix(names::layer(i, "mlp.dense_4h_to_h"), l.four_h_to_h);
  }
  vec(names::final_norm(), w.final_norm);
  matrix(strip(names::output()), w.output);

  nlohmann::json j = cfg.to_json();
  j["torch_dtype"] = torch_dtype_name(w.embedding.dtype);
  if (is_quantized(w.dtype))
    j["glmlab_quantization"] = QuantConfig::glmlab_block(w.dtype == DType::Q8 ? 8 : 4, common_group_size(w));
  try {
    write_safetensors((fs::path(tmp) / "model.safetensors").string(), t, {{"format", "pt"}});
    write_file_atomic((fs::path(tmp) / "config.json").string(), j.dump(2) + "\n");
    fs::rename(tmp, dir);
  } catch (...) {
    fs::remove_all(tmp);
    throw;
  }
}

}  // namespace glmlab
