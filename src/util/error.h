// glmlab error type: every failure a user can cause is a glmlab::Error whose message names the
// file, line, tensor or field that is wrong and what was expected.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace glmlab {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace glmlab
