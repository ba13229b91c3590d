// Helpers shared by the bench commands (see bench_group.h).
#include "cli/bench_group.h"

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include "util/file.h"

namespace glmlab::cli {

std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {}), out;
  for (char c : all) out += c ? c : ' ';
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string default_out_dir(const std::string& kind) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return "out/" + kind + "-" + buf;
}

std::string tokenizer_source(const Tokenizer& tok, const ModelArgs& m) {
  if (tok.is_byte_fallback()) return "bytes";
  if (!m.tokenizer.empty()) return m.tokenizer;
  auto beside = std::filesystem::path(m.model) / "tokenizer.model";
  if (m.model.rfind("random:", 0) != 0 && path_exists(beside)) return beside.string();
  const char* env = std::getenv("GLMLAB_TOKENIZER");
  return env ? env : "?";
}

}  // namespace glmlab::cli
