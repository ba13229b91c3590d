#include "model/loader.h"

#include <cstdlib>
#include <filesystem>

#include "util/error.h"

namespace glmlab {

namespace fs = std::filesystem;

ModelSpec ModelSpec::parse(const std::string& spec) {
  ModelSpec s;
  if (spec.rfind("random:", 0) == 0) {
    s.random = true;
    s.preset = spec.substr(7);
    return s;
  }
  if (!fs::is_directory(spec))
    fail("model \"{}\" is neither random:PRESET nor a checkpoint folder (config.json + safetensors)", spec);
  s.dir = spec;
  return s;
}

ModelConfig load_config(const ModelSpec& spec) {
  if (spec.random) return ModelConfig::preset(spec.preset);
  auto cfg_path = (fs::path(spec.dir) / "config.json").string();
  if (!fs::exists(cfg_path)) fail("checkpoint folder {} has no config.json", spec.dir);
  return ModelConfig::from_file(cfg_path);
}

DType default_dtype(const ModelSpec& spec, const ModelConfig& cfg) {
  return spec.random ? DType::BF16 : cfg.torch_dtype;
}

Model load_model(const std::string& spec_str, const std::string& dtype_name, uint64_t seed) {
  ModelSpec spec = ModelSpec::parse(spec_str);
  ModelConfig cfg = load_config(spec);
  DType dt = dtype_name.empty() ? default_dtype(spec, cfg) : dtype_from_name(dtype_name);
  ModelWeights w = spec.random ? random_weights(cfg, dt, seed) : load_weights(spec.dir, cfg, dt);
  return Model(std::move(cfg), std::move(w));
}

Tokenizer load_tokenizer(const std::string& path, const std::string& model_spec) {
  if (path == "bytes") return Tokenizer::byte_fallback();
  if (!path.empty()) return Tokenizer::from_file(path);
  if (model_spec.rfind("random:", 0) != 0) {
    auto beside = fs::path(model_spec) / "tokenizer.model";
    if (fs::exists(beside)) return Tokenizer::from_file(beside.string());
  }
  if (const char* env = std::getenv("GLMLAB_TOKENIZER"); env && *env) return Tokenizer::from_file(env);
  return Tokenizer::byte_fallback();
}

}  // namespace glmlab
