// Folding an adapter into the base weights (`glmlab merge`): W' = W + ΔW for every adapted linear,
//   LoRA  ΔW = s · B · A                          [out, in]
//   VeRA  ΔW = diag(λb) · B_sl · diag(λd) · A_sl  [out, in]
// computed in fp32 and rounded once to the checkpoint's dtype. The result is an ordinary checkpoint.
#pragma once
#include <string>
#include <vector>

#include "model/adapters.h"

namespace glmlab {

// ΔW [out, in] of (layer, t); empty when the adapter does not adapt it.
std::vector<float> adapter_delta(const Adapter& a, int layer, Target t);

struct MergeReport {
  int merged_matrices = 0;
  std::string dtype;  // of the merged linears
};

// Reads the checkpoint folder `model_dir` (config.json + safetensors, sharded or not) and the adapter
// folder, writes `out_dir`/model.safetensors (every tensor, the adapted linears merged, atomically) and
// copies config.json and the tokenizer files. A sharded checkpoint already in out_dir (its
// model.safetensors.index.json, the shards it lists, model-NNNNN-of-NNNNN.safetensors) is removed once
// the new model.safetensors is written, so it cannot shadow it; other files are left alone. Errors:
// quantized linears (merge into the float checkpoint, then quantize), an adapter made for other
// shapes, out_dir equal to model_dir, a merged value that is not finite (nothing is written).
MergeReport merge_checkpoint(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir);

}  // namespace glmlab
