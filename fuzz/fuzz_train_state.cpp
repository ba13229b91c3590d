// Fuzz target: train_state.safetensors -> load_train_state for a tiny LoRA adapter (r 2 on
// query_key_value and dense of the tiny model in fuzz_util.h) and its AdamW state.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "lab/train/train_state.h"
#include "model/adapters.h"
#include "model/config.h"
#include "model/optimizer.h"

using namespace glmlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ModelConfig model = ModelConfig::from_json(nlohmann::json::parse(fuzz::kTinyConfigJson), "tiny");
  static const AdapterConfig cfg = [] {
    AdapterConfig c = AdapterConfig::lora_defaults();
    c.rank = 2;
    c.targets = {"query_key_value", "dense"};
    return c;
  }();
  const std::string dir = fuzz::scratch_path("run");
  std::filesystem::create_directories(dir);
  fuzz::write_bytes(dir + "/train_state.safetensors", data, size);
  Adapter adapter = Adapter::create(model, cfg);
  AdamW opt(adapter, AdamWConfig{});
  fuzz::refused([&] {
    lab::TrainState st = lab::load_train_state(dir, adapter, opt);
    if (st.step < 0 || opt.steps() < 0) __builtin_trap();
    fuzz::consume(st.losses.size() + st.run.size());
  });
  return 0;
}
