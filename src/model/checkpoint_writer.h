// Writes loaded weights back out as a checkpoint folder glmlab (and, for float weights, transformers)
// loads: config.json + model.safetensors. Q8/Q4 linears are written in glmlab's layout (`.weight` I8
// + `.weight_scale` F16 [rows, groups]) with a "glmlab_quantization" block in config.json
// (docs/QUANTIZATION.md). The folder is written as DIR.tmp and renamed, so DIR is complete or absent.
#pragma once
#include <string>

#include "model/config.h"
#include "model/weights.h"

namespace glmlab {

// Errors if `dir` already exists. Norms and biases are written in fp32.
void write_checkpoint(const ModelConfig& cfg, const ModelWeights& w, const std::string& dir);

}  // namespace glmlab
