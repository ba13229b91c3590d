// Reading and writing PEFT adapter folders (see peft_io.h).
#include "model/peft_io.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "model/safetensors.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace glmlab {

namespace {

using nlohmann::json;

const char* kConfigFile = "adapter_config.json";
const char* kWeightsFile = "adapter_model.safetensors";

// PEFT matches a target entry against a module's full name by equality or as a dotted suffix, so
// "query_key_value" and "self_attention.query_key_value" both name the qkv linears.
Target target_of_entry(const std::string& entry, const std::string& file) {
  for (Target t : kTargets) {
    const std::string full = target_path(0, t);  // transformer.encoder.layers.0.<block>.<name>
    const std::string tail = full.substr(full.find(".0.") + 3);  // <block>.<name>
    if (entry == target_name(t) || entry == tail) return t;
  }
  fail("{}: unknown target module \"{}\" (expected query_key_value, dense, dense_h_to_4h or dense_4h_to_h)", file,
       entry);
}

// j[key] as T, or `def` when absent or null. Integers must be JSON integers in T's range (8.5 and
// 4294967304 are errors, not 8); floats must be finite as float (1e39 is not inf).
template <typename T>
T get_or(const json& j, const char* key, T def, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return def;
  const std::string what = fmt::format("{}: field \"{}\"", file, key);
  if constexpr (std::is_same_v<T, int> || std::is_same_v<T, int64_t>) {
    return T(json_integer(j[key], std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), what));
  } else if constexpr (std::is_same_v<T, float>) {
    return json_float(j[key], what);
  } else {
    try {
      return j[key].get<T>();
    } catch (const std::exception&) {
      fail("{} has the wrong type ({})", what, json_excerpt(j[key]));
    }
  }
}

void require_absent_or(const json& j, const char* key, const json& ok, const std::string& file, const char* what) {
  if (!j.contains(key) || j[key].is_null()) return;
  if (j[key] == ok) return;
  if (ok.is_object() && j[key].is_object() && j[key].empty()) return;
  fail("{}: {} = {} is not supported by glmlab ({})", file, key, json_excerpt(j[key]), what);
}

}  // namespace

AdapterConfig read_adapter_config(const std::string& dir) {
  const std::string file = (std::filesystem::path(dir) / kConfigFile).string();
  const json j = read_json_file(file);
  if (!j.is_object()) fail("{}: expected a JSON object", file);
  const std::string type = get_or<std::string>(j, "peft_type", "", file);
  AdapterConfig c;
  if (type == "LORA") {
    c = AdapterConfig::lora_defaults();
    c.alpha = get_or<float>(j, "lora_alpha", 8.0f, file);
    c.dropout = get_or<float>(j, "lora_dropout", 0.0f, file);
    c.rslora = get_or<bool>(j, "use_rslora", false, file);
    require_absent_or(j, "use_dora", false, file, "DoRA");
    require_absent_or(j, "rank_pattern", json::object(), file, "per-module ranks");
    require_absent_or(j, "alpha_pattern", json::object(), file, "per-module alphas");
    require_absent_or(j, "lora_bias", false, file, "LoRA bias");
    if (j.contains("init_lora_weights") && j["init_lora_weights"].is_string())
      fail("{}: init_lora_weights \"{}\" is not supported by glmlab", file, j["init_lora_weights"].get<std::string>());
  } else if (type == "VERA") {
    c = AdapterConfig::vera_defaults();
    c.dropout = get_or<float>(j, "vera_dropout", 0.0f, file);
    c.d_initial = get_or<float>(j, "d_initial", 0.1f, file);
    c.projection_prng_key = get_or<int64_t>(j, "projection_prng_key", 0, file);
    if (!get_or<bool>(j, "save_projection", true, file))
      fail("{}: save_projection is false: vera_A / vera_B are not in the file and glmlab cannot regenerate "
           "torch's random projections; save the adapter with save_projection=True",
           file);
  } else {
    fail("{}: peft_type \"{}\" is not supported (expected LORA or VERA)", file, type);
  }
  c.rank = get_or<int>(j, "r", c.rank, file);
  if (c.rank <= 0) fail("{}: rank r must be positive, got {} (field \"r\")", file, c.rank);
  require_absent_or(j, "bias", "none", file, "bias training");
  require_absent_or(j, "fan_in_fan_out", false, file, "transposed weights");
  require_absent_or(j, "layers_to_transform", json(), file, "a subset of layers");
  require_absent_or(j, "modules_to_save", json(), file, "extra trained modules");
  c.targets.clear();
  if (j.contains("target_modules") && !j["target_modules"].is_null()) {
    const json& tm = j["target_modules"];
    std::vector<std::string> entries;
    if (tm.is_string()) entries.push_back(tm.get<std::string>());
    else if (tm.is_array())
      for (auto& e : tm) {
        if (!e.is_string()) fail("{}: target_modules must hold strings, got {}", file, json_excerpt(e));
        entries.push_back(e.get<std::string>());
      }
    else fail("{}: target_modules must be a list of module names, got {}", file, json_excerpt(tm));
    for (auto& e : entries) {
      std::string name(target_name(target_of_entry(e, file)));
      if (std::find(c.targets.begin(), c.targets.end(), name) == c.targets.end()) c.targets.push_back(name);
    }
  } else {
    c.targets = {"query_key_value"};  // PEFT's default for model_type chatglm
  }
  if (c.targets.empty()) fail("{}: target_modules is empty", file);
  return c;
}

Adapter load_adapter(const std::string& dir, const ModelConfig& model) {
  AdapterConfig cfg = read_adapter_config(dir);
  const std::string file = (std::filesystem::path(dir) / kWeightsFile).string();
  if (!path_exists(file)) fail("{}: missing (an adapter folder holds {} and {})", file, kConfigFile, kWeightsFile);
  SafetensorsFile st(file);
  // The adapter is allocated only when it has at most 2^24 values more than the file holds: an absurd
  // rank beside a small file ("r": 81426666, 2.6 GB) is refused before allocating, while a near miss
  // (a model of other sizes) still gets the message naming the tensor that does not fit, below.
  uint64_t held = 0;
  for (auto& [name, info] : st.tensors())
    if (__builtin_add_overflow(held, uint64_t(info.numel()), &held)) held = UINT64_MAX;
  constexpr uint64_t kSlack = uint64_t(1) << 24;
  Adapter a = Adapter::create(model, cfg, held > UINT64_MAX - kSlack ? UINT64_MAX : held + kSlack, file);
  std::set<std::string> seen;
  for (auto& [name, info] : st.tensors()) {
    AdapterParam* p = a.find(name);
    if (!p)
      fail("{}: unexpected tensor {} {}: not a parameter of a {} adapter with targets {} on this {}-layer model", file,
           name, info.shape_str(), method_name(cfg.method), fmt::join(cfg.targets, ", "), model.num_layers);
    if (info.shape != p->shape)
      fail("{}: tensor {} has shape {} but this model needs [{}]: the adapter was made for other shapes", file, name,
           info.shape_str(), fmt::join(p->shape, ", "));
    const size_t n = size_t(p->numel());
    for (size_t i = 0; i < n; ++i) {
      float v;
      switch (info.dtype) {
        case DType::F32: std::memcpy(&v, info.data + 4 * i, 4); break;
        case DType::F16: { uint16_t h; std::memcpy(&h, info.data + 2 * i, 2); v = f16_to_f32(h); break; }
        case DType::BF16: { uint16_t h; std::memcpy(&h, info.data + 2 * i, 2); v = bf16_to_f32(h); break; }
        default: fail("{}: tensor {} has dtype {}; expected F32, F16 or BF16", file, name, dtype_name(info.dtype));
      }
      if (!std::isfinite(v))
        fail("{}: tensor {} holds a value that is not finite ({}) at index {}: the adapter is corrupt", file, name, v,
             i);
      p->value[i] = v;
    }
    seen.insert(name);
  }
  for (auto& p : a.params())
    if (!seen.count(p.name)) fail("{}: tensor {} is missing", file, p.name);
  return a;
}

void save_adapter(const std::string& dir, const Adapter& a) {
  std::filesystem::create_directories(dir);
  const AdapterConfig& c = a.config();
  json j;
  if (c.method == AdapterMethod::Lora) {
    j = {{"peft_type", "LORA"}, {"r", c.rank}, {"lora_alpha", c.alpha}, {"lora_dropout", c.dropout},
         {"use_rslora", c.rslora}, {"use_dora", false}, {"init_lora_weights", true}, {"rank_pattern", json::object()},
         {"alpha_pattern", json::object()}, {"lora_bias", false}};
  } else {
    j = {{"peft_type", "VERA"}, {"r", c.rank}, {"vera_dropout", c.dropout}, {"d_initial", c.d_initial},
         {"projection_prng_key", c.projection_prng_key}, {"save_projection", true}, {"init_weights", true}};
  }
  j["target_modules"] = c.targets;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["modules_to_save"] = nullptr;
  j["base_model_name_or_path"] = nullptr;
  j["revision"] = nullptr;
  j["task_type"] = nullptr;
  std::vector<TensorToWrite> tensors;
  for (auto& p : a.params())
    tensors.push_back({p.name, DType::F32, p.shape, p.value.data(), p.value.size() * sizeof(float)});
  write_safetensors((std::filesystem::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  write_file_atomic((std::filesystem::path(dir) / kConfigFile).string(), j.dump(2) + "\n");
}

}  // namespace glmlab
