// Fuzz target: a PEFT adapter folder -> load_adapter on a tiny model (fuzz_util.h). The input holds
// both files: adapter_config.json, the separator kSeparator, then adapter_model.safetensors (without a
// separator the weights file is absent, which load_adapter must refuse). Accepted adapters are
// checked: every parameter has numel values, all finite.
#include <cmath>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/adapters.h"
#include "model/config.h"
#include "model/peft_io.h"

using namespace glmlab;

namespace {
constexpr std::string_view kSeparator = "\n==== adapter_model.safetensors ====\n";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ModelConfig model = ModelConfig::from_json(nlohmann::json::parse(fuzz::kTinyConfigJson), "tiny");
  const std::string dir = fuzz::scratch_path("adapter");
  std::filesystem::create_directories(dir);
  auto [config, weights] = fuzz::split(data, size, kSeparator);
  fuzz::write_bytes(dir + "/adapter_config.json", config);
  std::error_code ec;
  std::filesystem::remove(dir + "/adapter_model.safetensors", ec);
  if (weights.data() != nullptr) fuzz::write_bytes(dir + "/adapter_model.safetensors", weights);
  fuzz::refused([&] {
    Adapter a = load_adapter(dir, model);
    for (const AdapterParam& p : a.params()) {
      if (p.value.size() != size_t(p.numel())) __builtin_trap();
      for (float v : p.value)
        if (!std::isfinite(v)) __builtin_trap();
    }
  });
  return 0;
}
