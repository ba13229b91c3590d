// Helpers shared by the libFuzzer targets in fuzz/ (docs/RELIABILITY.md, "Fuzzing").
// Each target writes the fuzz input to a file in a private scratch folder in RAM (/dev/shm, else
// /tmp) and runs the real loader on it. A glmlab::Error is an expected outcome (the loader refused the
// file); anything else (a crash, an ASan/UBSan report, any other exception, a hang) is a finding.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "util/error.h"

namespace glmlab::fuzz {

// This process's scratch folder, created on first use and removed when the process exits normally.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    const std::string root = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    path = root + "/glmlab-fuzz-" + std::to_string(::getpid());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline const std::string& scratch_dir() {
  static const ScratchDir dir;
  return dir.path;
}

inline std::string scratch_path(const std::string& name) { return scratch_dir() + "/" + name; }

// Writes `size` bytes to `path` (replacing it). Aborts on an I/O error: that is the harness, not a finding.
inline void write_bytes(const std::string& path, const void* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n <= 0) std::abort();
    p += n;
    size -= size_t(n);
  }
  ::close(fd);
}

inline void write_bytes(const std::string& path, std::string_view s) { write_bytes(path, s.data(), s.size()); }

// Two files from one input: the bytes before the first `sep` and those after it (the second part is
// empty when `sep` does not occur).
inline std::pair<std::string_view, std::string_view> split(const uint8_t* data, size_t size, std::string_view sep) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t at = all.find(sep);
  if (at == std::string_view::npos) return {all, {}};
  return {all.substr(0, at), all.substr(at + sep.size())};
}

// Runs f; a glmlab::Error (the file was refused, with a message) is the expected way to fail.
// With GLMLAB_FUZZ_VERBOSE=1 in the environment the outcome is printed (to check a corpus by hand:
// GLMLAB_FUZZ_VERBOSE=1 build-fuzz/fuzz/fuzz_config -runs=0 fuzz/corpus/fuzz_config/*).
template <typename F>
bool refused(F&& f) {
  static const bool verbose = std::getenv("GLMLAB_FUZZ_VERBOSE") != nullptr;
  try {
    f();
    if (verbose) std::fprintf(stderr, "glmlab-fuzz: accepted\n");
    return false;
  } catch (const glmlab::Error& e) {
    if (verbose) std::fprintf(stderr, "glmlab-fuzz: refused: %.300s\n", e.what());
    return true;
  }
}

// Keeps the compiler from dropping reads whose only purpose is to touch every byte.
inline void consume(uint64_t v) {
  static volatile uint64_t sink;
  sink = sink + v;
}

// A model small enough that every adapter, golden file and forward pass is tiny: 1 layer, hidden 8,
// 2 heads × 4 channels, 1 KV group, vocabulary 16, 32 positions.
inline constexpr const char* kTinyConfigJson = R"({"model_type": "chatglm", "num_layers": 1, "hidden_size": 8,
  "ffn_hidden_size": 8, "num_attention_heads": 2, "kv_channels": 4, "multi_query_attention": true,
  "multi_query_group_num": 1, "padded_vocab_size": 16, "seq_length": 32, "eos_token_id": 2, "pad_token_id": 0,
  "torch_dtype": "float32", "add_qkv_bias": true})";

}  // namespace glmlab::fuzz
