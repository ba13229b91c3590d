// How a checkpoint's linears are quantized, as its config.json says: THUDM's "quantization_bit",
// GPTQ / auto-round's "quantization_config" (or a quantize_config.json beside it), or glmlab's own
// "glmlab_quantization" block (docs/QUANTIZATION.md). The tensors themselves decide, per linear,
// whether it is stored quantized; this only supplies what the tensors cannot say.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace glmlab {

struct QuantConfig {
  enum class Method { None, Thudm, Gptq, Glmlab };
  Method method = Method::None;
  int bits = 0;            // 4 or 8 (0 = not quantized)
  int group_size = 0;      // inputs per scale; 0 = one group per row (THUDM; GPTQ's -1)
  bool gptq_zero_minus_one = true;  // GPTQ v1 / AutoGPTQ / auto-round: stored zero = zero − 1

  bool quantized() const { return method != Method::None && bits != 0; }
  // Reads the block from a config.json object; `src` names the file in errors. Unsupported settings
  // (asymmetric GPTQ, 2/3 bits, non-chatglm methods) are errors.
  static QuantConfig from_json(const nlohmann::json& j, const std::string& src);
  // A GPTQ quantize_config.json (the quantization_config object itself).
  static QuantConfig from_gptq_json(const nlohmann::json& q, const std::string& src);
  // The "glmlab_quantization" block written by `glmlab quantize`.
  static nlohmann::json glmlab_block(int bits, int group_size);
  std::string describe() const;  // "GPTQ int4, group 128" etc.
};

}  // namespace glmlab
