// Shared helpers for the C++ tests: where the real data and the oracle's golden files are, and a way
// to run the glmlab CLI and capture what it prints.
#pragma once
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "util/error.h"

namespace glmlab::test {

inline std::string shared_path(const std::string& rel) { return std::string(GLMLAB_SHARED_DIR) + "/" + rel; }
inline std::string golden_path(const std::string& rel) { return std::string(GLMLAB_GOLDEN_DIR) + "/" + rel; }
inline std::string tokenizer_path() { return shared_path("data/chatglm3/tokenizer.model"); }
inline std::string dev_json_path() { return shared_path("data/AdvertiseGen/dev.json"); }

// A fresh empty folder under the build tree for one test's outputs.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::path(GLMLAB_GOLDEN_DIR).parent_path() / "test-tmp" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// The message of the glmlab::Error that `what` throws, or "<no Error thrown>".
template <typename F>
std::string error_of(F&& what) {
  try {
    what();
  } catch (const glmlab::Error& e) {
    return e.what();
  }
  return "<no Error thrown>";
}

struct CliResult {
  int rc;
  std::string out;  // stdout and stderr together
};

// Runs a shell command line and captures its output (stdout and stderr together) and exit status.
inline CliResult run_shell(const std::string& command) {
  std::string cmd = command + " 2>&1";
  CliResult r{0, {}};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs `glmlab ARGS` through the shell (args are passed verbatim) and captures its output.
inline CliResult run_cli(const std::string& args) { return run_shell(std::string(GLMLAB_CLI) + " " + args); }

// The first n records of the real dev.json in a fresh file of its own (folder `name` under the test tree).
inline std::string dev_json_head(const std::string& name, int n) {
  auto dir = temp_dir(name);
  std::ifstream in(dev_json_path());
  std::ofstream out(dir / "head.json");
  std::string line;
  for (int i = 0; i < n && std::getline(in, line); ++i) out << line << "\n";
  return (dir / "head.json").string();
}

// A whole file's bytes; empty when it cannot be read.
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The non-empty lines of a text.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

// A PNG file (by its signature) of at least min_bytes.
inline bool is_png(const std::filesystem::path& p, size_t min_bytes) {
  const std::string s = slurp(p);
  return s.size() >= min_bytes && s.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

// Runs fn, expects a glmlab::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no glmlab::Error thrown (expected one mentioning \"" << (parts.empty() ? "" : parts[0]) << "\")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
  }
}

// The real ChatGLM3 tokenizer (shared/), loaded once.
inline const Tokenizer& real_tokenizer() {
  static const Tokenizer t = Tokenizer::from_file(tokenizer_path());
  return t;
}

}  // namespace glmlab::test

// EXPECT that `haystack` (a string) contains `needle`, printing both when it does not.
#define EXPECT_CONTAINS(haystack, needle)                                                         \
  do {                                                                                            \
    const std::string h_ = (haystack);                                                            \
    EXPECT_NE(h_.find(needle), std::string::npos) << "\"" << (needle) << "\" not in: " << h_;   \
  } while (0)
