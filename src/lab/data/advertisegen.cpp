// AdvertiseGen reading, validation and the input/output definition (see advertisegen.h).
#include "lab/data/advertisegen.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json.h"
#include "util/utf8.h"

namespace glmlab::lab {

using nlohmann::json;

void SkipLog::add(std::string message) {
  ++count;
  if (first.size() < kKeep) first.push_back(std::move(message));
}

void SkipLog::merge(const SkipLog& other) {
  count += other.count;
  for (const auto& m : other.first)
    if (first.size() < kKeep) first.push_back(m);
}

namespace {

bool is_blank(std::string_view s) { return s.find_first_not_of(" \t") == std::string_view::npos; }

// The text of a nlohmann parse error without its "[json.exception.parse_error.101] " tag, and with
// "at line 1, column N" (the parser sees one line) shortened to "at column N".
std::string clean_json_error(const char* what) {
  std::string_view s(what);
  if (!s.empty() && s.front() == '[') {
    auto close = s.find("] ");
    if (close != std::string_view::npos) s.remove_prefix(close + 2);
  }
  std::string out(s);
  if (auto at = out.find("at line 1, column "); at != std::string::npos) out.replace(at, 18, "at column ");
  return out;
}

}  // namespace

ParsedLine parse_line(const Line& line, const std::string& file, size_t max_line_bytes) {
  ParsedLine out;
  auto bad = [&](const std::string& reason) {
    out.kind = LineKind::kBad;
    out.error = fmt::format("{}:{}: {}", file, line.number, reason);
    return out;
  };
  if (line.too_long)
    return bad(fmt::format("line is {} bytes long, over the limit of {} bytes per line", line.bytes, max_line_bytes));
  std::string_view text = line.text;
  if (line.number == 1 && text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM
  if (is_blank(text)) return out;
  if (auto at = utf8::first_invalid(text)) return bad(fmt::format("invalid UTF-8 at byte {} of the line", *at + 1));
  json v;
  // Depth-limited like every JSON glmlab reads; duplicate keys are left to nlohmann (last one wins),
  // as Python's json does for data files.
  if (std::string err; !try_parse_json(text, v, err, JsonLimits{kMaxJsonDepth, false}))
    return bad("invalid JSON: " + clean_json_error(err.c_str()));
  if (!v.is_object()) return bad(fmt::format("expected a JSON object, found {}", v.type_name()));
  for (const char* key : {"content", "summary"}) {
    auto it = v.find(key);
    if (it == v.end()) return bad(fmt::format("field \"{}\" is missing", key));
    if (!it->is_string()) return bad(fmt::format("field \"{}\" must be a string, found {}", key, it->type_name()));
  }
  out.kind = LineKind::kRecord;
  out.record.content = v["content"].get_ref<const std::string&>();
  out.record.summary = v["summary"].get_ref<const std::string&>();
  out.record.file = file;
  out.record.line = line.number;
  return out;
}

RecordReader::RecordReader(const std::string& path, const ReadOptions& options)
    : lines_(path, options.max_line_bytes), options_(options) {}

bool RecordReader::next(Record& record) {
  while (lines_.next(line_)) {
    ParsedLine p = parse_line(line_, lines_.path(), options_.max_line_bytes);
    if (p.kind == LineKind::kBlank) continue;
    ++nonblank_;
    if (p.kind == LineKind::kBad) {
      if (!options_.skip_bad) throw Error(p.error);
      skipped_.add(std::move(p.error));
      continue;
    }
    record = std::move(p.record);
    return true;
  }
  if (nonblank_ == 0) fail("{}: empty file (no JSON lines)", lines_.path());
  return false;
}

std::vector<Record> read_records(const std::vector<std::string>& paths, const ReadOptions& options,
                                 SkipLog* skipped) {
  std::vector<Record> out;
  for (const auto& path : paths) {
    RecordReader reader(path, options);
    Record r;
    while (reader.next(r)) out.push_back(std::move(r));
    if (skipped) skipped->merge(reader.skipped());
  }
  return out;
}

SampleIds sample_ids(const Tokenizer& tok, std::string_view content, std::string_view summary) {
  SampleIds s;
  s.input = tok.build_chat_input(content);
  s.output = tok.encode("\n");
  auto body = tok.encode(summary);
  s.output.insert(s.output.end(), body.begin(), body.end());
  s.output.push_back(tok::kEos);
  return s;
}

LengthMeter::LengthMeter(const Tokenizer& tok) : tok_(&tok) {
  auto fixed = sample_ids(tok, "", "");
  fixed_input_ = int32_t(fixed.input.size());
  fixed_output_ = int32_t(fixed.output.size());
}

RecordLengths LengthMeter::operator()(std::string_view content, std::string_view summary) const {
  RecordLengths len;
  len.content_tokens = int32_t(tok_->encode(content).size());
  len.summary_tokens = int32_t(tok_->encode(summary).size());
  len.input_tokens = fixed_input_ + len.content_tokens;
  len.output_tokens = fixed_output_ + len.summary_tokens;
  len.content_chars = int32_t(utf8::count_code_points(content));
  len.summary_chars = int32_t(utf8::count_code_points(summary));
  return len;
}

RecordLengths measure(const Tokenizer& tok, std::string_view content, std::string_view summary) {
  return LengthMeter(tok)(content, summary);
}

std::string format_record_line(std::string_view content, std::string_view summary) {
  std::string out = "{\"content\": ";
  out += json(std::string(content)).dump();
  out += ", \"summary\": ";
  out += json(std::string(summary)).dump();
  out += '}';
  return out;
}

}  // namespace glmlab::lab
