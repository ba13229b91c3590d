// glmlab command-line entry point: builds the CLI11 app from the registered subcommands and turns
// glmlab::Error into a one-line message and exit status 1.
#include <cstdio>
#include <filesystem>
#include <exception>

#include "cli/commands.h"
#include "dist/comm.h"
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
  int rc = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ValidationError& e) {  // an option's value failed its check (cli/checks.h)
    std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    return 1;
  } catch (const CLI::ConversionError& e) {  // an option's value is not of its type
    std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    return 1;
  } catch (const CLI::ParseError& e) {
    rc = app.exit(e);
  } catch (const glmlab::dist::CollectiveError& e) {
    // Every rank raised it together: one message (rank 0), every rank exits 1.
    if (!glmlab::dist::is_distributed() || glmlab::dist::world().rank() == 0)
      std::fprintf(stderr, "glmlab: error: %s\n", e.what());
    rc = 1;
  } catch (const std::exception& e) {
    // A filesystem error names the path and the system's reason (a file that cannot be created, a name
    // too long): the user's to fix, like a glmlab::Error.
    const bool internal = dynamic_cast<const glmlab::Error*>(&e) == nullptr &&
                          dynamic_cast<const std::filesystem::filesystem_error*>(&e) == nullptr;
    if (glmlab::dist::is_distributed()) {
      // One rank alone failed, maybe while the others wait in a collective: end the whole job.
      auto& w = glmlab::dist::world();
      std::fprintf(stderr, "glmlab: %serror on rank %d of %d: %s\n", internal ? "internal " : "", w.rank(), w.size(),
                   e.what());
      std::fflush(stderr);
      w.abort(internal ? 2 : 1);
    }
    std::fprintf(stderr, "glmlab: %serror: %s\n", internal ? "internal " : "", e.what());
    rc = internal ? 2 : 1;
  }
  glmlab::dist::finalize();
  return rc;
}
