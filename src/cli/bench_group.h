// The `glmlab bench ...` subcommand group, shared by every benchmark's cmd_*.cpp (bench infer in
// cmd_bench.cpp; bench train later). Whichever file registers first creates the group, the others
// find it, so static-initialisation order across files does not matter.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "cli/common.h"
#include "model/tokenizer.h"

namespace glmlab::cli {

inline CLI::App* bench_group(CLI::App& app) {
  auto found = app.get_subcommands([](CLI::App* sub) { return sub->get_name() == "bench"; });
  if (!found.empty()) return found.front();
  CLI::App* bench = app.add_subcommand("bench", "benchmarks: tokens/s, latency, GB/s and GFLOP/s against this "
                                                "machine's measured limits");
  bench->require_subcommand(1);
  return bench;
}

// Helpers every benchmark command shares (cli/bench_group.cpp).
std::string command_line();                                 // this process's command line
std::string default_out_dir(const std::string& kind);       // "out/KIND-YYYYmmdd-HHMMSS"
// Where the tokenizer came from: "bytes", the --tokenizer path, the one beside the checkpoint, or
// $GLMLAB_TOKENIZER.
std::string tokenizer_source(const Tokenizer& tok, const ModelArgs& m);

}  // namespace glmlab::cli
