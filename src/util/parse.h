// Checked numbers from text: the one rule for every number a user types (command-line options, token
// ids, fields read as text). An integer is a whole decimal string ([+-]?digits, no leading zeros, no
// spaces, no hex or octal) inside [lo, hi]; it is never wrapped or truncated. A floating-point number
// is a whole strtod string that is finite (no nan, no inf, no overflow) and inside [lo, hi].
// Anything else is a glmlab::Error naming `name` (the option or field), the text and what was expected.
// cli/checks.h wraps these as CLI11 validators for options.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace glmlab {

int64_t parse_int64(std::string_view text, std::string_view name, int64_t lo = std::numeric_limits<int64_t>::min(),
                    int64_t hi = std::numeric_limits<int64_t>::max());
int32_t parse_int32(std::string_view text, std::string_view name, int32_t lo = std::numeric_limits<int32_t>::min(),
                    int32_t hi = std::numeric_limits<int32_t>::max());
// No sign allowed: "-1" is an error, never 2^64 - 1.
uint64_t parse_uint64(std::string_view text, std::string_view name, uint64_t lo = 0,
                      uint64_t hi = std::numeric_limits<uint64_t>::max());
double parse_double(std::string_view text, std::string_view name, double lo = -std::numeric_limits<double>::max(),
                    double hi = std::numeric_limits<double>::max());

// The checks alone, for a value already converted (a config field, a struct member): the same
// messages as the parsers.
void check_int_range(int64_t v, std::string_view name, int64_t lo, int64_t hi);
void check_finite_range(double v, std::string_view name, double lo, double hi);

// "[lo, hi]" with the bounds written as a user would type them (INT64_MAX etc. as numbers).
std::string range_text(int64_t lo, int64_t hi);
std::string range_text(double lo, double hi);

}  // namespace glmlab
