// glmlab merge: folds a LoRA / VeRA adapter (PEFT folder) into a checkpoint's weights (model/merge.h).
#include <cstdio>

#include "cli/commands.h"
#include "model/merge.h"

namespace glmlab::cli {
namespace {

RegisterCommand register_merge([](CLI::App& app) {
  struct Args {
    std::string model, adapter, out;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("merge", "fold an adapter into the base weights and write a checkpoint");
  cmd->add_option("--model,-m", a->model, "checkpoint folder (config.json + safetensors)")->required();
  cmd->add_option("--adapter", a->adapter, "adapter folder (adapter_config.json + adapter_model.safetensors)")
      ->required();
  cmd->add_option("--out", a->out, "folder for the merged checkpoint")->required();
  cmd->callback([a] {
    MergeReport r = merge_checkpoint(a->model, a->adapter, a->out);
    std::printf("merged %d %s matrices into %s\n", r.merged_matrices, r.dtype.c_str(), a->out.c_str());
  });
});

}  // namespace
}  // namespace glmlab::cli
