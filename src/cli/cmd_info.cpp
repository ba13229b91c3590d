// glmlab info: the architecture as a block diagram with shapes, and parameter counts.
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "lab/model_info.h"
#include "util/file.h"

namespace glmlab::cli {
namespace {

struct InfoArgs {
  std::string model = "random:chatglm3-6b";
  bool json = false;
  std::string dot;
  InfoOptions opt;
};

RegisterCommand register_info([](CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info", "architecture diagram and parameter counts (total, LoRA, VeRA)");
  cmd->add_option("--model,-m", a->model, "random:PRESET or a checkpoint folder")->capture_default_str();
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->add_option("--dot", a->dot, "also write the block diagram as Graphviz DOT to this file");
  cmd->add_option("--lora-rank", a->opt.lora_rank)->capture_default_str();
  cmd->add_option("--lora-alpha", a->opt.lora_alpha)
      ->check(FiniteIn(-std::numeric_limits<float>::max(), std::numeric_limits<float>::max()))
      ->capture_default_str();
  cmd->add_option("--lora-targets", a->opt.lora_targets, "target modules")->delimiter(',')->capture_default_str();
  cmd->add_option("--vera-rank", a->opt.vera_rank)->capture_default_str();
  cmd->add_option("--vera-targets", a->opt.vera_targets, "target modules")->delimiter(',')->capture_default_str();
  cmd->callback([a] {
    ModelConfig c = load_config(ModelSpec::parse(a->model));
    if (a->json)
      std::printf("%s\n", info_json(c, a->opt).dump(2).c_str());
    else
      std::fputs(info_text(c, a->opt).c_str(), stdout);
    if (!a->dot.empty()) write_file_atomic(a->dot, info_dot(c));
  });
});

}  // namespace
}  // namespace glmlab::cli
