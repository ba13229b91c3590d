// CLI11 validators that apply util/parse.h's rule to an option's text before CLI11 converts it:
// integers whole, decimal and in range (CLI11 2.1 alone reads "-1" into a uint64_t as 2^64 - 1, "010"
// as octal, and lets NaN through CLI::Range and CLI::PositiveNumber); floats finite and in range.
// A failed check is a CLI::ValidationError "OPTION: must be ..., got TEXT"; main() prints it as
// "glmlab: error: ..." with exit status 1, like a glmlab::Error.
//
//   cmd->add_option("--threads", a.threads)->check(cli::IntIn(0, 4096));
//   cmd->add_option("--seed", a.seed)->check(cli::UintIn());
//   cmd->add_option("--lr", a.lr)->check(cli::FiniteIn(0, 1));
//
// The bounds should also fit the option's C++ type (IntIn(0, INT32_MAX) for an int); the check runs
// on each element of a vector option.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>

#include "util/error.h"
#include "util/parse.h"

namespace glmlab::cli {

// Most threads a --threads option accepts (omp_set_num_threads would try to start any number).
constexpr int kMaxThreads = 4096;

inline CLI::Validator IntIn(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        try {
          parse_int64(s, "", lo, hi);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      range_text(lo, hi));
}

// An int option in [lo, INT32_MAX].
inline CLI::Validator IntAtLeast(int64_t lo) { return IntIn(lo, std::numeric_limits<int32_t>::max()); }

// An unsigned option (a seed, a count in size_t): no sign, no wrap.
inline CLI::Validator UintIn(uint64_t lo = 0, uint64_t hi = std::numeric_limits<uint64_t>::max()) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        try {
          parse_uint64(s, "", lo, hi);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      "UINT");
}

inline CLI::Validator FiniteIn(double lo = -std::numeric_limits<double>::max(),
                               double hi = std::numeric_limits<double>::max()) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        try {
          parse_double(s, "", lo, hi);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      range_text(lo, hi));
}

}  // namespace glmlab::cli
