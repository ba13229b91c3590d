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

// config.json, plus a GPTQ quantize_config.json beside it when config.json has no quantization block.
ModelConfig load_config(const ModelSpec& spec);
// dtype: fp32/fp16/bf16/int8/int4; empty = as stored: the checkpoint's torch_dtype, or its quantized
// type when its linears are stored quantized (random: bf16). group_size: inputs per scale when int8/int4
// quantizes float weights (0 = per row); pre-quantized checkpoints keep their own.
Model load_model(const std::string& spec, const std::string& dtype = "", uint64_t seed = 0,
                 int group_size = kDefaultGroupSize);
DType default_dtype(const ModelSpec& spec, const ModelConfig& cfg);

// The tokenizer for a run: `path` if given ("bytes" = the byte-level fallback), else tokenizer.model
// beside the checkpoint, else $GLMLAB_TOKENIZER, else the byte-level fallback.
Tokenizer load_tokenizer(const std::string& path, const std::string& model_spec);

}  // namespace glmlab
