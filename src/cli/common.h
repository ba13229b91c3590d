// Options every model-loading command shares (--model, --dtype, --device, --tokenizer, --threads,
// --seed) and the code that turns them into a model, ops and tokenizer.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <limits>
#include <string>
#include <string_view>

#include "model/adapters.h"
#include "model/device_engine.h"
#include "model/engine.h"
#include "model/loader.h"
#include "ops/device.h"
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
  std::string engine = "auto";     // host | device | auto (= device for cuda, host otherwise)
};

// True when the model runs in a Device's memory (model/device_engine.h): --device cuda, or --engine device.
bool wants_device_engine(const ModelArgs& a);

void add_model_options(CLI::App* cmd, ModelArgs& a, bool with_weights = true);
void apply_threads(int threads);

struct Loaded {
  Model model;
  std::unique_ptr<Ops> ops;          // host engine (null when `device` is set)
  double load_seconds;
  std::shared_ptr<Adapter> adapter;  // set on model when --adapter was given
  std::unique_ptr<Device> device;    // device engine: the Device, opened before the model is loaded
};
// Prints one line about what was loaded to stderr. allow_device: the command can run the device
// engine (otherwise --device cuda is an Error naming the commands that can). inference: the command
// only runs the model forward (generate, chat, bench infer, parity, serve), so the host back end may
// repack the weights for its inference kernels (Model::pack_weights); training, quantize and merge
// keep them row-major.
Loaded load(const ModelArgs& a, bool allow_device = false, bool inference = false);

// The engine of a loaded model: a DeviceEngine (takes `device`) sized by `limits`, or (no device) a
// HostEngine over model and *ops. The model and ops must outlive it.
std::unique_ptr<Engine> make_engine(const Model& model, Ops* ops, std::unique_ptr<Device> device,
                                    const EngineLimits& limits);
inline std::unique_ptr<Engine> make_engine(Loaded& L, const EngineLimits& limits) {
  return make_engine(L.model, L.ops.get(), std::move(L.device), limits);
}

// "1 2 3" or "1,2,3": each id a whole decimal integer in [0, vocab) (never wrapped to int32); an error
// names `option` and the id.
std::vector<int32_t> parse_ids(const std::string& text, std::string_view option = "token ids",
                               int64_t vocab = std::numeric_limits<int32_t>::max());

}  // namespace glmlab::cli
