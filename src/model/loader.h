// Model specs as users type them: "random:PRESET" (seeded random weights, no files) or a
// HuggingFace checkpoint folder (config.json + safetensors). Also finds the tokenizer to use.
#pragma once
#include <optional>
#include <string>

#include "model/config.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace glmlab {

struct ModelSpec {
  bool random = false;
  std::string preset;  // when random
  std::string dir;     // when a checkpoint
  static ModelSpec parse(const std::string& spec);
};

ModelConfig load_config(const ModelSpec& spec);
// dtype: fp32/fp16/bf16; empty = the checkpoint's torch_dtype (random: bf16).
Model load_model(const std::string& spec, const std::string& dtype = "", uint64_t seed = 0);
DType default_dtype(const ModelSpec& spec, const ModelConfig& cfg);

// The tokenizer for a run: `path` if given ("bytes" = the byte-level fallback), else tokenizer.model
// beside the checkpoint, else $GLMLAB_TOKENIZER, else the byte-level fallback.
Tokenizer load_tokenizer(const std::string& path, const std::string& model_spec);

}  // namespace glmlab
