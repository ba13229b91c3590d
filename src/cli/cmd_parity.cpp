// glmlab parity: compare glmlab's logits with a golden file written by tools/reference.
#include <cstdio>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "lab/parity.h"
#include "util/error.h"

namespace glmlab::cli {
namespace {

struct ParityArgs {
  ModelArgs m;
  std::string ref;
  ParityOptions opt;
  bool all = false;
};

RegisterCommand register_parity([](CLI::App& app) {
  auto a = std::make_shared<ParityArgs>();
  auto* cmd = app.add_subcommand("parity", "compare logits with a reference dump (exit 1 beyond tolerance)");
  add_model_options(cmd, a->m);
  cmd->add_option("--ref", a->ref, "golden .safetensors written by tools/reference/make_golden.py")->required();
  cmd->add_option("--atol", a->opt.atol)->check(FiniteIn(0))->capture_default_str();
  cmd->add_option("--rtol", a->opt.rtol)->check(FiniteIn(0))->capture_default_str();
  cmd->add_option("--min-top1", a->opt.min_top1, "fraction of positions whose argmax must agree")
      ->check(FiniteIn(0, 1))
      ->capture_default_str();
  cmd->add_flag_callback("--fp32-ref", [a] { a->opt.suffix = "_fp32ref"; a->m.fp32_activations = true; },
                         "compare with the reference's fp32 computation on the same weights (implies --fp32-activations)");
  cmd->add_flag("--all", a->all, "print every position, not only the worst and the disagreeing ones");
  cmd->callback([a] {
    GoldenShape gs = golden_shape(a->ref);
    Loaded L = load(a->m, /*allow_device=*/true, /*inference=*/true);
    auto engine = make_engine(L, EngineLimits{gs.B, gs.T + gs.steps, gs.B * gs.T, gs.B * gs.T});
    ParityReport r = run_parity(*engine, a->ref, a->opt);
    std::fputs(parity_table(r, a->all).c_str(), stdout);
    if (!r.pass) throw Error(fmt::format("logits differ from {} beyond atol {} + rtol {} (or top-1 below {})", a->ref,
                                         a->opt.atol, a->opt.rtol, a->opt.min_top1));
  });
});

}  // namespace
}  // namespace glmlab::cli
