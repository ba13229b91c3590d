// What `glmlab info` reports: the architecture as a block diagram with shapes (text or Graphviz DOT),
// and parameter counts: total, per component, and trainable under LoRA and VeRA.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "model/config.h"

namespace glmlab {

// The four linear layers adapters can target, with (in, out) features.
struct LinearShape {
  std::string name;  // query_key_value | dense | dense_h_to_4h | dense_4h_to_h
  int64_t in, out;
};
std::vector<LinearShape> linear_shapes(const ModelConfig& c);
const LinearShape& linear_shape(const ModelConfig& c, const std::string& target);  // Error on unknown names

// LoRA: r·(in + out) per target per layer. VeRA: out + r per target per layer (lambda_b, lambda_d).
int64_t lora_params(const ModelConfig& c, int rank, const std::vector<std::string>& targets);
int64_t vera_params(const ModelConfig& c, int rank, const std::vector<std::string>& targets);

struct InfoOptions {
  int lora_rank = 8;
  float lora_alpha = 32;
  std::vector<std::string> lora_targets = {"query_key_value"};
  int vera_rank = 256;
  std::vector<std::string> vera_targets = {"query_key_value"};
};

std::string info_text(const ModelConfig& c, const InfoOptions& o);
nlohmann::json info_json(const ModelConfig& c, const InfoOptions& o);
std::string info_dot(const ModelConfig& c);  // Graphviz DOT of the block diagram

std::string group_digits(int64_t v);  // 6243584000 -> "6,243,584,000"

}  // namespace glmlab
