// ChatGLM3 model configuration: read from a HuggingFace config.json (model_type "chatglm") or a
// built-in preset. Every field that changes the math is read; fields glmlab cannot honour are errors.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "model/quant_config.h"
#include "util/dtype.h"

namespace glmlab {

struct ModelConfig {
  std::string name;            // preset name or the folder it came from
  int num_layers = 0;
  int hidden_size = 0;         // C
  int ffn_hidden_size = 0;     // F (dense_h_to_4h has 2F outputs: gate, then up)
  int num_heads = 0;           // H query heads
  int kv_channels = 0;         // D head dim
  int num_groups = 0;          // G key/value heads (multi_query_group_num)
  int vocab_size = 0;          // V = padded_vocab_size
  int seq_length = 0;          // longest position the model accepts
  float layernorm_eps = 1e-5f;
  float rope_ratio = 1.0f;     // RoPE base = 10000 * rope_ratio
  bool add_qkv_bias = true;
  int eos_token_id = 2;
  int pad_token_id = 0;
  DType torch_dtype = DType::F16;
  QuantConfig quant;           // how the checkpoint's linears are quantized (if at all)

  int q_dim() const { return num_heads * kv_channels; }
  int kv_dim() const { return num_groups * kv_channels; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  int rot_dim() const { return kv_channels / 2; }  // rotary on the first half of each head
  float rope_base() const { return 10000.0f * rope_ratio; }

  // Parameter counts (weights and biases; no buffers).
  int64_t layer_params() const;
  int64_t total_params() const;

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);  // a config.json
  static ModelConfig preset(const std::string& name);     // chatglm3-6b, chatglm3-6b-32k, small, tiny
  static std::vector<std::string> preset_names();
  nlohmann::json to_json() const;                         // a config.json a HF loader accepts
  void validate() const;                                  // shape consistency; Error on violations
};

}  // namespace glmlab
