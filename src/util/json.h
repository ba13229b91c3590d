// JSON reading for every file glmlab takes from a user (config.json, adapter_config.json,
// model.safetensors.index.json, safetensors headers, quantize_config.json, summaries, data lines):
// one parser with limits, so that no file can overflow the stack, smuggle a duplicate key past us,
// or turn into an exception that is not a glmlab::Error.
//  - nesting deeper than kMaxJsonDepth (64) levels is an error (nlohmann's DOM and dump() recurse);
//  - numbers that overflow a double (1e400) are errors naming the file;
//  - duplicate object keys are errors (nlohmann keeps the last one silently; for a safetensors
//    header that would hide a tensor);
//  - messages quote values through json_excerpt(), never a whole dump().
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace glmlab {

constexpr int kMaxJsonDepth = 64;

struct JsonLimits {
  int max_depth = kMaxJsonDepth;
  bool reject_duplicate_keys = true;
};

// Parses `text`; on failure returns false and sets `error` to a short description without any file
// name ("nested deeper than 64 levels", "duplicate key \"a\"", nlohmann's text of a syntax error).
bool try_parse_json(std::string_view text, nlohmann::json& out, std::string& error, JsonLimits limits = {});

// Parses `text`, the contents of `source` (a file name, or "FILE: header"); any failure is a
// glmlab::Error "SOURCE is not valid JSON at byte N: ...", "SOURCE: JSON nested deeper than 64 levels",
// "SOURCE: JSON duplicate key \"a\"", "SOURCE is not valid JSON: number overflow parsing '1e400'".
nlohmann::json parse_json(std::string_view text, const std::string& source, JsonLimits limits = {});

// read_file (a regular file is required) then parse_json with the path as source.
nlohmann::json read_json_file(const std::string& path, JsonLimits limits = {});

// `v` for an error message: its compact dump, cut to max_chars with "..." appended.
std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 60);

// Strict conversions for fields; `what` names the field in messages (e.g. "FILE: field \"r\"").
// An integer must be a JSON integer (8.5, "8", true are errors) inside [lo, hi] (no wrapping).
int64_t json_integer(const nlohmann::json& v, int64_t lo, int64_t hi, std::string_view what);
// A number that is finite once converted to float (1e39 and 1e300 are errors, not inf).
float json_float(const nlohmann::json& v, std::string_view what);

}  // namespace glmlab
