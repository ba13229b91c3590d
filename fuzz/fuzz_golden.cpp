// Fuzz target: the golden logits file `glmlab parity --ref` reads (tools/reference/make_golden.py:
// input_ids / attention_mask / position_ids [B, T] I64, prefill_logits [B, T, V] F32, stepK_ids [B] and
// stepK_logits [B, V]) -> golden_shape, then run_parity on a tiny model with seeded random weights
// (fuzz_util.h; vocabulary 16) on the reference CPU kernels, as cmd_parity does; with the "_fp32ref"
// logits when the file holds prefill_logits_fp32ref.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "lab/parity.h"
#include "model/config.h"
#include "model/model.h"
#include "model/weights.h"
#include "ops/ops.h"

using namespace glmlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ModelConfig cfg = ModelConfig::from_json(nlohmann::json::parse(fuzz::kTinyConfigJson), "tiny");
  static const Model model(cfg, random_weights(cfg, DType::F32, 1));
  static std::unique_ptr<Ops> ops = make_ops(Backend::CpuRef);
  const std::string path = fuzz::scratch_path("golden.safetensors");
  fuzz::write_bytes(path, data, size);
  fuzz::refused([&] {
    GoldenShape gs = golden_shape(path);
    if (gs.B <= 0 || gs.T <= 0 || gs.steps < 0) __builtin_trap();  // golden_shape must refuse such files
    ParityOptions opt;
    // The "_fp32ref" logits when the file names them (as `glmlab parity --fp32-ref` reads them).
    constexpr std::string_view kRef = "prefill_logits_fp32ref";
    opt.suffix = std::string_view(reinterpret_cast<const char*>(data), size).find(kRef) != std::string_view::npos
                     ? "_fp32ref" : "";
    ParityReport r = run_parity(model, *ops, path, opt);
    fuzz::consume(r.rows.size() + uint64_t(r.pass));
    fuzz::consume(parity_table(r, true).size());
  });
  return 0;
}
