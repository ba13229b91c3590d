// glmlab quantize: any loadable model (checkpoint or random:PRESET) → an int8 / int4 checkpoint folder
// in glmlab's layout (docs/QUANTIZATION.md), with the tokenizer files copied beside it.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "model/checkpoint_writer.h"
#include "model/quantize.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::cli {
namespace {

namespace fs = std::filesystem;

struct QuantizeArgs {
  ModelArgs m;
  std::string out;
};

RegisterCommand register_quantize([](CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand("quantize", "write an int8 / int4 (weight-only, group-wise) checkpoint");
  add_model_options(cmd, a->m);
  cmd->add_option("--out,-o", a->out, "output folder (must not exist)")->required();
  cmd->callback([a] {
    if (a->m.dtype != "int8" && a->m.dtype != "int4") fail("quantize: --dtype must be int8 or int4");
    if (path_exists(a->out)) fail("{} already exists: remove it or choose another output folder", a->out);
    Loaded l = load(a->m);
    write_checkpoint(l.model.config(), l.model.weights(), a->out);
    if (a->m.model.rfind("random:", 0) != 0)
      for (const char* f : {"tokenizer.model", "tokenizer_config.json"})
        if (path_exists(fs::path(a->m.model) / f)) fs::copy_file(fs::path(a->m.model) / f, fs::path(a->out) / f);
    std::printf("wrote %s: %s, %.3f GB of weights\n", a->out.c_str(), describe_weights(l.model.weights()).c_str(),
                double(l.model.weights().matrix_bytes()) / 1e9);
  });
});

}  // namespace
}  // namespace glmlab::cli
