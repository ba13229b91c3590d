// Parsing of the quantization blocks of config.json (see quant_config.h).
#include "model/quant_config.h"

#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json.h"

namespace glmlab {

using nlohmann::json;

namespace {

int int_field(const json& q, const char* key, int dflt, const std::string& src, const char* block) {
  if (!q.contains(key) || q.at(key).is_null()) return dflt;
  if (!q.at(key).is_number_integer()) fail("{}: {}.{} must be an integer, got {}", src, block, key, json_excerpt(q.at(key)));
  return int(json_integer(q.at(key), std::numeric_limits<int>::min(), std::numeric_limits<int>::max(),
                          fmt::format("{}: {}.{}", src, block, key)));
}

// q[key] as a string, `dflt` when absent or null. nlohmann's value() would throw its own type_error
// (not a glmlab::Error) for {"format": 1}.
std::string string_field(const json& q, const char* key, const char* dflt, const std::string& src, const char* block) {
  if (!q.contains(key) || q.at(key).is_null()) return dflt;
  if (!q.at(key).is_string()) fail("{}: {}.{} must be a string, got {}", src, block, key, json_excerpt(q.at(key)));
  return q.at(key).get<std::string>();
}

}  // namespace

QuantConfig QuantConfig::from_gptq_json(const json& q, const std::string& src) {
  if (!q.is_object()) fail("{}: quantization_config must be an object", src);
  std::string method = string_field(q, "quant_method", "gptq", src, "quantization_config");
  if (method != "gptq" && method != "auto-round" && method != "auto_round" && method != "intel/auto-round")
    fail("{}: quantization_config.quant_method \"{}\" is not supported (glmlab reads gptq and auto-round exports)", src,
         method);
  QuantConfig c;
  c.method = Method::Gptq;
  c.bits = int_field(q, "bits", 0, src, "quantization_config");
  if (c.bits != 4 && c.bits != 8) fail("{}: quantization_config.bits {} is not supported (4 or 8)", src, c.bits);
  int g = int_field(q, "group_size", -1, src, "quantization_config");
  if (g == 0 || g < -1) fail("{}: quantization_config.group_size {} must be positive or -1", src, g);
  c.group_size = g == -1 ? 0 : g;
  if (q.contains("sym") && q.at("sym").is_boolean() && !q.at("sym").get<bool>())
    fail("{}: quantization_config.sym false (asymmetric zero points) is not supported: glmlab's int4 is symmetric", src);
  std::string data_type = string_field(q, "data_type", "int", src, "quantization_config");
  if (data_type != "int") fail("{}: quantization_config.data_type \"{}\" is not supported (int)", src, data_type);
  // Zero-point convention: AutoGPTQ (v1) and auto-round's auto_gptq packing store zero − 1;
  // GPTQModel's v2 checkpoints and auto-round's gptqmodel packing store the zero itself.
  std::string fmt_ = string_field(q, "checkpoint_format", "gptq", src, "quantization_config");
  std::string packing = string_field(q, "packing_format", "auto_round:auto_gptq", src, "quantization_config");
  c.gptq_zero_minus_one = fmt_ != "gptq_v2" && packing != "auto_round:gptqmodel";
  return c;
}

QuantConfig QuantConfig::from_json(const json& j, const std::string& src) {
  QuantConfig c;
  int qb = int_field(j, "quantization_bit", 0, src, "config");
  if (qb != 0) {
    if (qb != 4 && qb != 8) fail("{}: quantization_bit {} is not supported (THUDM's 4 or 8)", src, qb);
    c.method = Method::Thudm;
    c.bits = qb;
    c.group_size = 0;
  }
  if (j.contains("glmlab_quantization") && !j.at("glmlab_quantization").is_null()) {
    const json& q = j.at("glmlab_quantization");
    if (!q.is_object()) fail("{}: glmlab_quantization must be an object", src);
    c.method = Method::Glmlab;
    c.bits = int_field(q, "bits", 0, src, "glmlab_quantization");
    if (c.bits != 4 && c.bits != 8) fail("{}: glmlab_quantization.bits {} must be 4 or 8", src, c.bits);
    c.group_size = int_field(q, "group_size", 0, src, "glmlab_quantization");
    if (c.group_size < 0) c.group_size = 0;
    std::string f = string_field(q, "format", "glmlab-v1", src, "glmlab_quantization");
    if (f != "glmlab-v1") fail("{}: glmlab_quantization.format \"{}\" is unknown (glmlab-v1)", src, f);
  }
  if (j.contains("quantization_config") && !j.at("quantization_config").is_null()) {
    if (c.quantized()) fail("{}: both quantization_config and {} are set", src,
                            c.method == Method::Thudm ? "quantization_bit" : "glmlab_quantization");
    c = from_gptq_json(j.at("quantization_config"), src);
  }
  return c;
}

json QuantConfig::glmlab_block(int bits, int group_size) {
  return json{{"bits", bits}, {"group_size", group_size}, {"format", "glmlab-v1"}};
}

std::string QuantConfig::describe() const {
  const char* m = method == Method::Thudm ? "THUDM" : method == Method::Gptq ? "GPTQ" : method == Method::Glmlab ? "glmlab" : "none";
  if (!quantized()) return "not quantized";
  return fmt::format("{} int{}, {}", m, bits, group_size ? fmt::format("group {}", group_size) : std::string("per row"));
}

}  // namespace glmlab
