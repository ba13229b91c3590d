#include "model/config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace glmlab {

using nlohmann::json;

int64_t ModelConfig::layer_params() const {
  int64_t C = hidden_size, F = ffn_hidden_size, Q = qkv_dim();
  return C                          // input_layernorm
         + Q * C + (add_qkv_bias ? Q : 0)  // query_key_value
         + int64_t(q_dim()) * C     // dense
         + C                        // post_attention_layernorm
         + 2 * F * C + F * C;       // dense_h_to_4h, dense_4h_to_h
}

int64_t ModelConfig::total_params() const {
  return int64_t(num_layers) * layer_params() + 2 * int64_t(vocab_size) * hidden_size + hidden_size;
}

namespace {

// j[key] as T. Integers must be JSON integers that fit an int (nlohmann's get<int> would silently
// truncate 28.5 or wrap 10000000000); floats must be finite as float (1e300 is not inf).
template <typename T>
T convert(const json& j, const char* key, const std::string& src) {
  const json& v = j.at(key);
  const std::string what = fmt::format("{}: field \"{}\"", src, key);
  if constexpr (std::is_same_v<T, int>) {
    return int(json_integer(v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), what));
  } else if constexpr (std::is_same_v<T, float>) {
    return json_float(v, what);
  } else {
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      fail("{} has the wrong type ({})", what, json_excerpt(v));
    }
  }
}

template <typename T>
T get_required(const json& j, const char* key, const std::string& src) {
  if (!j.contains(key)) fail("{}: field \"{}\" is missing", src, key);
  return convert<T>(j, key, src);
}

template <typename T>
T get_optional(const json& j, const char* key, T dflt, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  return convert<T>(j, key, src);
}

void require_flag(const json& j, const char* key, bool want, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return;
  if (!j.at(key).is_boolean())
    fail("{}: field \"{}\" has the wrong type ({}; expected true or false)", src, key, json_excerpt(j.at(key)));
  if (j.at(key).get<bool>() != want)
    fail("{}: \"{}\": {} is not supported by glmlab (ChatGLM3 uses {})", src, key, !want, want);
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: expected a JSON object", src);
  auto mt = get_optional<std::string>(j, "model_type", "", src);
  if (mt != "chatglm") fail("{}: model_type is \"{}\"; glmlab loads model_type \"chatglm\" (ChatGLM3)", src, mt);
  ModelConfig c;
  c.name = src;
  c.num_layers = get_required<int>(j, "num_layers", src);
  c.hidden_size = get_required<int>(j, "hidden_size", src);
  c.ffn_hidden_size = get_required<int>(j, "ffn_hidden_size", src);
  c.num_heads = get_required<int>(j, "num_attention_heads", src);
  // The default needs positive sizes: INT_MIN / -1 overflows (validate() refuses non-positive sizes).
  c.kv_channels = get_optional<int>(j, "kv_channels", c.num_heads > 0 && c.hidden_size > 0 ? c.hidden_size / c.num_heads : 0,
                                    src);
  bool mqa = get_optional<bool>(j, "multi_query_attention", false, src);
  c.num_groups = mqa ? get_required<int>(j, "multi_query_group_num", src) : c.num_heads;
  c.vocab_size = get_optional<int>(j, "padded_vocab_size", 0, src);
  if (c.vocab_size == 0) c.vocab_size = get_required<int>(j, "vocab_size", src);
  c.seq_length = get_required<int>(j, "seq_length", src);
  c.layernorm_eps = get_optional<float>(j, "layernorm_epsilon", 1e-5f, src);
  c.rope_ratio = get_optional<float>(j, "rope_ratio", 1.0f, src);
  c.add_qkv_bias = get_optional<bool>(j, "add_qkv_bias", false, src);
  // eos_token_id: an id, or (as some configs write it) a list of ids of which the first is used.
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json& e = j["eos_token_id"];
    if (e.is_array() && e.empty()) fail("{}: field \"eos_token_id\" is an empty list", src);
    const std::string what = fmt::format("{}: field \"eos_token_id\"", src);
    if (e.is_array()) {
      for (const json& x : e) json_integer(x, 0, std::numeric_limits<int>::max(), what);
      c.eos_token_id = int(json_integer(e[0], 0, std::numeric_limits<int>::max(), what));
    } else {
      c.eos_token_id = int(json_integer(e, 0, std::numeric_limits<int>::max(), what));
    }
    for (const json& x : e.is_array() ? e : json::array({e}))
      if (x.get<int64_t>() >= c.vocab_size && c.vocab_size > 0)
        fail("{}: eos_token_id {} is outside the vocabulary (padded_vocab_size {})", src, x.get<int64_t>(), c.vocab_size);
  }
  c.pad_token_id = get_optional<int>(j, "pad_token_id", 0, src);
  auto td = get_optional<std::string>(j, "torch_dtype", "float16", src);
  try {
    c.torch_dtype = dtype_from_name(td);
  } catch (const Error&) {
    fail("{}: torch_dtype \"{}\" is not float32, float16 or bfloat16", src, td);
  }
  // Fields whose other values change the math in ways glmlab does not implement.
  require_flag(j, "rmsnorm", true, src);
  require_flag(j, "post_layer_norm", true, src);
  require_flag(j, "add_bias_linear", false, src);
  require_flag(j, "apply_residual_connection_post_layernorm", false, src);
  c.quant = QuantConfig::from_json(j, src);  // quantization_bit, quantization_config, glmlab_quantization
  if (!get_optional<json>(j, "pre_seq_len", json(), src).is_null())
    fail("{}: pre_seq_len (P-tuning v2 prefix) is not supported", src);
  c.validate();
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

void ModelConfig::validate() const {
  auto positive = [&](int v, const char* field) {
    if (v <= 0) fail("{}: {} must be positive, got {}", name, field, v);
  };
  positive(num_layers, "num_layers");
  positive(hidden_size, "hidden_size");
  positive(ffn_hidden_size, "ffn_hidden_size");
  positive(num_heads, "num_attention_heads");
  positive(kv_channels, "kv_channels");
  positive(num_groups, "multi_query_group_num");
  positive(vocab_size, "padded_vocab_size");
  positive(seq_length, "seq_length");
  if (num_heads % num_groups != 0)
    fail("{}: num_attention_heads {} is not a multiple of multi_query_group_num {}", name, num_heads, num_groups);
  if (kv_channels % 4 != 0)
    fail("{}: kv_channels {} must be a multiple of 4 (rotary pairs on the first half)", name, kv_channels);
  if (kv_channels > 1024)
    fail("{}: kv_channels {} is larger than glmlab's rotary kernels take (1024; ChatGLM3 uses 128)", name, kv_channels);
  // Products the model computes with int (q_dim, kv_dim, qkv_dim, 2F) must fit an int, and the
  // parameter count an int64 with room to spare (bytes = params × 4): checked, never wrapped.
  const int64_t imax = std::numeric_limits<int>::max();
  const int64_t q = int64_t(num_heads) * kv_channels, kv = int64_t(num_groups) * kv_channels;
  if (q > imax)
    fail("{}: num_attention_heads {} × kv_channels {} = {} is too large (more than {})", name, num_heads, kv_channels,
         q, imax);
  if (q + 2 * kv > imax)
    fail("{}: the fused QKV width {} (heads + 2 × groups, × kv_channels) is too large (more than {})", name,
         q + 2 * kv, imax);
  if (2 * int64_t(ffn_hidden_size) > imax)
    fail("{}: 2 × ffn_hidden_size {} is too large (more than {})", name, ffn_hidden_size, imax);
  {
    using u128 = unsigned __int128;
    const u128 C = u128(hidden_size), F = u128(ffn_hidden_size), Q = u128(q + 2 * kv), V = u128(vocab_size);
    const u128 layer = 2 * C + Q * C + Q + u128(q) * C + 3 * F * C;
    const u128 total = u128(num_layers) * layer + 2 * V * C + C;
    const u128 limit = u128(1) << 56;  // 7.2e16 parameters: bytes stay far below 2^63 in any dtype
    if (total > limit)
      fail("{}: the sizes are too large: {} layers × {} parameters per layer (hidden_size {}, ffn_hidden_size {}) "
           "and a vocabulary of {} exceed {} parameters", name, num_layers, uint64_t(layer >> 64 ? ~0ull : layer),
           hidden_size, ffn_hidden_size, vocab_size, uint64_t(limit));
  }
  if (!(layernorm_eps > 0 && layernorm_eps <= 0.1f) || !std::isfinite(layernorm_eps))
    fail("{}: layernorm_epsilon must be in (0, 0.1], got {}", name, layernorm_eps);
  if (!(rope_ratio > 0 && rope_ratio <= 1e6f) || !std::isfinite(rope_ratio))
    fail("{}: rope_ratio must be in (0, 1e6], got {}", name, rope_ratio);
  if (eos_token_id < 0 || eos_token_id >= vocab_size)
    fail("{}: eos_token_id {} is outside the vocabulary (0..{})", name, eos_token_id, vocab_size - 1);
  if (pad_token_id < 0 || pad_token_id >= vocab_size)
    fail("{}: pad_token_id {} is outside the vocabulary (0..{})", name, pad_token_id, vocab_size - 1);
}

json ModelConfig::to_json() const {
  std::string td = torch_dtype == DType::F32 ? "float32" : torch_dtype == DType::BF16 ? "bfloat16" : "float16";
  json j = {{"model_type", "chatglm"},
            {"architectures", {"ChatGLMModel"}},
            {"num_layers", num_layers},
            {"hidden_size", hidden_size},
            {"ffn_hidden_size", ffn_hidden_size},
            {"num_attention_heads", num_heads},
            {"kv_channels", kv_channels},
            {"multi_query_attention", num_groups != num_heads},
            {"multi_query_group_num", num_groups},
            {"padded_vocab_size", vocab_size},
            {"vocab_size", vocab_size},
            {"seq_length", seq_length},
            {"layernorm_epsilon", layernorm_eps},
            {"rmsnorm", true},
            {"post_layer_norm", true},
            {"add_bias_linear", false},
            {"add_qkv_bias", add_qkv_bias},
            {"apply_residual_connection_post_layernorm", false},
            {"fp32_residual_connection", false},
            {"original_rope", true},
            {"eos_token_id", eos_token_id},
            {"pad_token_id", pad_token_id},
            {"torch_dtype", td},
            {"tie_word_embeddings", false}};
  if (rope_ratio != 1.0f) j["rope_ratio"] = rope_ratio;
  return j;
}

std::vector<std::string> ModelConfig::preset_names() { return {"chatglm3-6b", "chatglm3-6b-32k", "small", "tiny"}; }

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.vocab_size = 65024;  // every preset keeps the real vocabulary so the real tokenizer works with it
  c.add_qkv_bias = true;
  if (name == "chatglm3-6b" || name == "chatglm3-6b-32k") {
    c.num_layers = 28;
    c.hidden_size = 4096;
    c.ffn_hidden_size = 13696;
    c.num_heads = 32;
    c.kv_channels = 128;
    c.num_groups = 2;
    c.seq_length = name == "chatglm3-6b" ? 8192 : 32768;
    if (name == "chatglm3-6b-32k") c.rope_ratio = 50.0f;
  } else if (name == "small") {  // the demo: the same structure at a size a laptop decodes fast
    c.num_layers = 4;
    c.hidden_size = 512;
    c.ffn_hidden_size = 1368;
    c.num_heads = 8;
    c.kv_channels = 64;
    c.num_groups = 2;
    c.seq_length = 2048;
  } else if (name == "tiny") {  // for tests
    c.num_layers = 2;
    c.hidden_size = 64;
    c.ffn_hidden_size = 96;
    c.num_heads = 4;
    c.kv_channels = 16;
    c.num_groups = 2;
    c.seq_length = 512;
  } else {
    std::string names;
    for (auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown preset \"{}\" (expected one of: {})", name, names);
  }
  c.validate();
  return c;
}

}  // namespace glmlab
