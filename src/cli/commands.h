// Front end: every subcommand lives in its own cmd_*.cpp and registers itself here at start-up, so
// adding a command never touches main.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace glmlab::cli {

// `setup` adds a subcommand (with its options and callback) to the top-level app.
using CommandSetup = std::function<void(CLI::App& app)>;
std::vector<CommandSetup>& command_registry();

struct RegisterCommand {
  explicit RegisterCommand(CommandSetup setup) { command_registry().push_back(std::move(setup)); }
};

}  // namespace glmlab::cli
