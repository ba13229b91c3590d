#include "model/loader.h"

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "model/quant_load.h"
#include "model/safetensors.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace glmlab {

namespace fs = std::filesystem;

ModelSpec ModelSpec::parse(const std::string& spec) {
  ModelSpec s;
  if (spec.rfind("random:", 0) == 0) {
    s.random = true;
    s.preset = spec.substr(7);
    return s;
  }
  if (!is_dir(spec))
    fail("model \"{}\" is neither random:PRESET nor a checkpoint folder (config.json + safetensors)", spec);
  s.dir = spec;
  return s;
}

ModelConfig load_config(const ModelSpec& spec) {
  if (spec.random) return ModelConfig::preset(spec.preset);
  auto cfg_path = (fs::path(spec.dir) / "config.json").string();
  if (!path_exists(cfg_path)) fail("checkpoint folder {} has no config.json", spec.dir);
  ModelConfig cfg = ModelConfig::from_file(cfg_path);
  auto qpath = fs::path(spec.dir) / "quantize_config.json";  // older AutoGPTQ exports keep it apart
  if (!cfg.quant.quantized() && path_exists(qpath)) {
    const nlohmann::json q = read_json_file(qpath.string());
    cfg.quant = QuantConfig::from_gptq_json(q, qpath.string());
  }
  return cfg;
}

DType default_dtype(const ModelSpec& spec, const ModelConfig& cfg) {
  if (spec.random) return DType::BF16;
  if (cfg.quant.quantized()) {  // as stored: look at the first linear
    SafetensorsSet set = SafetensorsSet::open(spec.dir);
    std::string qkv = names::layer(0, "self_attention.query_key_value");
    switch (stored_linear(set, qkv)) {
      case StoredLinear::Gptq: return cfg.quant.bits == 8 ? DType::Q8 : DType::Q4;
      case StoredLinear::Int: return set.get(qkv + ".weight").shape.back() == cfg.hidden_size ? DType::Q8 : DType::Q4;
      case StoredLinear::Float: break;
    }
  }
  return cfg.torch_dtype;
}

Model load_model(const std::string& spec_str, const std::string& dtype_name, uint64_t seed, int group_size) {
  ModelSpec spec = ModelSpec::parse(spec_str);
  ModelConfig cfg = load_config(spec);
  DType dt = dtype_name.empty() ? default_dtype(spec, cfg) : weight_dtype_from_name(dtype_name);
  ModelWeights w = spec.random ? random_weights(cfg, dt, seed, group_size) : load_weights(spec.dir, cfg, dt, group_size);
  return Model(std::move(cfg), std::move(w));
}

Tokenizer load_tokenizer(const std::string& path, const std::string& model_spec) {
  if (path == "bytes") return Tokenizer::byte_fallback();
  if (!path.empty()) return Tokenizer::from_file(path);
  if (model_spec.rfind("random:", 0) != 0) {
    auto beside = fs::path(model_spec) / "tokenizer.model";
    if (path_exists(beside)) return Tokenizer::from_file(beside.string());
  }
  if (const char* env = std::getenv("GLMLAB_TOKENIZER"); env && *env) return Tokenizer::from_file(env);
  return Tokenizer::byte_fallback();
}

}  // namespace glmlab
