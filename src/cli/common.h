// Options every model-loading command shares (--model, --dtype, --device, --tokenizer, --threads,
// --seed) and the code that turns them into a model, ops and tokenizer.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "model/adapters.h"
#include "model/loader.h"
#include "ops/ops.h"

namespace glmlab::cli {

struct ModelArgs {
  std::string model = "random:small";
  std::string dtype;       // empty: as the checkpoint stores it, bf16 for random models
  int group_size = kDefaultGroupSize;  // int8/int4: inputs per scale when quantizing (0 = per row)
  std::string device = "cpu";
  std::string tokenizer;   // empty: beside the checkpoint, $GLMLAB_TOKENIZER, or the byte fallback
  int threads = 0;         // 0: all cores
  uint64_t seed = 0;
  std::string adapter;     // a PEFT adapter folder (LoRA / VeRA) applied unmerged; empty = none
  bool fp32_activations = false;  // never round activations to bf16 (exact parity checks)
};

void add_model_options(CLI::App* cmd, ModelArgs& a, bool with_weights = true);
void apply_threads(int threads);

struct Loaded {
  Model model;
  std::unique_ptr<Ops> ops;
  double load_seconds;
  std::shared_ptr<Adapter> adapter;  // set on model when --adapter was given
};
Loaded load(const ModelArgs& a);  // prints one line about what was loaded to stderr

std::vector<int32_t> parse_ids(const std::string& text);  // "1 2 3" or "1,2,3"

}  // namespace glmlab::cli
