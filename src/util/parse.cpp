#include "util/parse.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

#include "util/error.h"

namespace glmlab {

namespace {

constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min(), kI64Max = std::numeric_limits<int64_t>::max();
constexpr double kDMax = std::numeric_limits<double>::max();

// [+-]?(0|[1-9][0-9]*): what CLI11 and strtoll read as the same decimal value (a leading 0 is octal there).
bool plain_decimal(std::string_view s, bool allow_minus) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || (allow_minus && s[i] == '-'))) ++i;
  if (i == s.size()) return false;
  if (s[i] == '0' && i + 1 != s.size()) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

std::string_view unsigned_digits(std::string_view s) { return !s.empty() && s[0] == '+' ? s.substr(1) : s; }

// "NAME " before a message, or nothing for an unnamed value (a CLI11 validator: CLI11 adds the option's name).
std::string subject(std::string_view name) { return name.empty() ? std::string() : std::string(name) + " "; }
std::string prefix(std::string_view name) { return name.empty() ? std::string() : std::string(name) + ": "; }

}  // namespace

std::string range_text(int64_t lo, int64_t hi) {
  if (lo == kI64Min && hi == kI64Max) return "any integer";
  if (hi == kI64Max) return fmt::format("an integer >= {}", lo);
  if (lo == kI64Min) return fmt::format("an integer <= {}", hi);
  return fmt::format("an integer in [{}, {}]", lo, hi);
}

std::string range_text(double lo, double hi) {
  if (lo <= -kDMax && hi >= kDMax) return "a finite number";
  if (hi >= kDMax) return fmt::format("a finite number >= {}", lo);
  if (lo <= -kDMax) return fmt::format("a finite number <= {}", hi);
  return fmt::format("a finite number in [{}, {}]", lo, hi);
}

void check_int_range(int64_t v, std::string_view name, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) fail("{}must be {}, got {}", subject(name), range_text(lo, hi), v);
}

void check_finite_range(double v, std::string_view name, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) fail("{}must be {}, got {}", subject(name), range_text(lo, hi), v);
}

int64_t parse_int64(std::string_view text, std::string_view name, int64_t lo, int64_t hi) {
  int64_t v = 0;
  bool ok = plain_decimal(text, true);
  if (ok) {
    std::string_view d = unsigned_digits(text);
    auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
    if (ec == std::errc::result_out_of_range) fail("{}must be {}, got {} (out of range)", subject(name), range_text(lo, hi), text);
    ok = ec == std::errc() && end == d.data() + d.size();
  }
  if (!ok) fail("{}\"{}\" is not an integer (expected {})", prefix(name), text, range_text(lo, hi));
  if (v < lo || v > hi) fail("{}must be {}, got {}", subject(name), range_text(lo, hi), text);
  return v;
}

int32_t parse_int32(std::string_view text, std::string_view name, int32_t lo, int32_t hi) {
  return int32_t(parse_int64(text, name, lo, hi));
}

uint64_t parse_uint64(std::string_view text, std::string_view name, uint64_t lo, uint64_t hi) {
  auto expected = [&] {
    return hi == std::numeric_limits<uint64_t>::max() ? fmt::format("an integer >= {}", lo)
                                                      : fmt::format("an integer in [{}, {}]", lo, hi);
  };
  uint64_t v = 0;
  bool ok = plain_decimal(text, false);
  if (ok) {
    std::string_view d = unsigned_digits(text);
    auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
    if (ec == std::errc::result_out_of_range) fail("{}must be {}, got {} (out of range)", subject(name), expected(), text);
    ok = ec == std::errc() && end == d.data() + d.size();
  }
  if (!ok) fail("{}\"{}\" is not {}", prefix(name), text, expected());
  if (v < lo || v > hi) fail("{}must be {}, got {}", subject(name), expected(), text);
  return v;
}

double parse_double(std::string_view text, std::string_view name, double lo, double hi) {
  std::string_view d = !text.empty() && text[0] == '+' ? text.substr(1) : text;
  double v = 0;
  auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), v, std::chars_format::general);
  if (ec == std::errc::result_out_of_range) fail("{}must be {}, got {} (out of range)", subject(name), range_text(lo, hi), text);
  if (d.empty() || d[0] == '+' || (d.data() != text.data() && d[0] == '-') || ec != std::errc() || end != d.data() + d.size())
    fail("{}\"{}\" is not a number (expected {})", prefix(name), text, range_text(lo, hi));
  if (!std::isfinite(v) || v < lo || v > hi) fail("{}must be {}, got {}", subject(name), range_text(lo, hi), text);
  return v;
}

}  // namespace glmlab
