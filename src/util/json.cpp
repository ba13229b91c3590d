// JSON reading with limits (see json.h).
#include "util/json.h"

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "util/error.h"
#include "util/file.h"

namespace glmlab {

using nlohmann::json;

namespace {

// nlohmann's message without its "[json.exception.parse_error.101] " tag, cut to a sane length
// (a syntax error quotes the last token read, which may be a 100 MB string).
std::string exception_text(const char* what) {
  std::string_view s(what);
  if (!s.empty() && s.front() == '[')
    if (auto close = s.find("] "); close != std::string_view::npos) s.remove_prefix(close + 2);
  std::string out(s.substr(0, 200));
  if (s.size() > 200) out += "...";
  return out;
}

struct LimitHit {
  std::string what;
};

}  // namespace

namespace {

enum class Problem { None, Limit, Syntax, Other };

Problem parse_with_limits(std::string_view text, json& out, std::string& error, size_t& byte, JsonLimits limits) {
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= limits.max_depth) throw LimitHit{fmt::format("nested deeper than {} levels", limits.max_depth)};
        if (ev == json::parse_event_t::object_start && limits.reject_duplicate_keys) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (limits.reject_duplicate_keys && !keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (limits.reject_duplicate_keys && !keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get_ref<const std::string&>()).second)
          throw LimitHit{fmt::format("duplicate key \"{}\"", parsed.get_ref<const std::string&>().substr(0, 200))};
        break;
      default:
        break;
    }
    return true;
  };
  try {
    out = json::parse(text.begin(), text.end(), cb);
    return Problem::None;
  } catch (const LimitHit& h) {
    error = h.what;
    out = json();
    return Problem::Limit;
  } catch (const json::parse_error& e) {
    error = exception_text(e.what());
    byte = e.byte;
    out = json();
    return Problem::Syntax;
  } catch (const json::exception& e) {  // out_of_range.406: number overflow parsing '1e400'
    error = exception_text(e.what());
    out = json();
    return Problem::Other;
  }
}

}  // namespace

bool try_parse_json(std::string_view text, json& out, std::string& error, JsonLimits limits) {
  size_t byte = 0;
  return parse_with_limits(text, out, error, byte, limits) == Problem::None;
}

json parse_json(std::string_view text, const std::string& source, JsonLimits limits) {
  json j;
  std::string err;
  size_t byte = 0;
  switch (parse_with_limits(text, j, err, byte, limits)) {
    case Problem::None: return j;
    case Problem::Limit: fail("{}: JSON {}", source, err);
    case Problem::Syntax: fail("{} is not valid JSON at byte {}: {}", source, byte, err);
    case Problem::Other: break;
  }
  fail("{} is not valid JSON: {}", source, err);
}

json read_json_file(const std::string& path, JsonLimits limits) { return parse_json(read_file(path), path, limits); }

std::string json_excerpt(const json& v, size_t max_chars) {
  std::string s;
  try {
    s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception&) {
    return "<unprintable>";
  }
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

int64_t json_integer(const json& v, int64_t lo, int64_t hi, std::string_view what) {
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()) || int64_t(u) > hi)
      fail("{} is out of range ({}; expected {}..{})", what, json_excerpt(v), lo, hi);
    x = int64_t(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    fail("{} has the wrong type ({}; expected an integer)", what, json_excerpt(v));
  }
  if (x < lo || x > hi) fail("{} is out of range ({}; expected {}..{})", what, x, lo, hi);
  return x;
}

float json_float(const json& v, std::string_view what) {
  if (!v.is_number()) fail("{} has the wrong type ({}; expected a number)", what, json_excerpt(v));
  const double d = v.get<double>();
  const float f = float(d);
  if (!std::isfinite(d) || !std::isfinite(f))
    fail("{} = {} is out of range (not finite as a 32-bit float)", what, json_excerpt(v));
  return f;
}

}  // namespace glmlab
