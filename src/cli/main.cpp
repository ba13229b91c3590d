// glmlab command-line entry point: builds the CLI11 app from the registered subcommands and turns
// glmlab::Error into a one-line message and exit status 1.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "kernels/cpu/runtime.h"
#include "util/error.h"

namespace glmlab::cli {
std::vector<CommandSetup>& command_registry() {
  static std::vector<CommandSetup> registry;
  return registry;
}
}  // namespace glmlab::cli

int main(int argc, char** argv) {
  glmlab::prepare_cpu_runtime(argc, argv);
  CLI::App app{"glmlab: ChatGLM3 inference and fine-tuning engine and lab"};
  app.require_subcommand(1);
  for (auto& setup : glmlab::cli::command_registry()) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ValidationError& e) {  // an option's value failed its check (cli/checks.h)
    std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    return 1;
  } catch (const CLI::ConversionError& e) {  // an option's value is not of its type
    std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    return 1;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const glmlab::Error& e) {
    std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "glmlab: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
