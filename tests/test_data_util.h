// Helpers for the data-lab tests (test_data*.cpp): writing small hand-made JSON-lines files and
// expecting glmlab::Error messages.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "test_util.h"
#include "util/error.h"

namespace glmlab::test {

inline std::string write_text(const std::filesystem::path& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  if (f) {
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  return path.string();
}

inline std::string read_text(const std::string& path) {
  std::string out;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "<missing>";
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

// One AdvertiseGen line with ASCII text (no escaping needed).
inline std::string jline(const std::string& content, const std::string& summary) {
  return "{\"content\": \"" + content + "\", \"summary\": \"" + summary + "\"}\n";
}

}  // namespace glmlab::test
