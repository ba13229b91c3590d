// AdvertiseGen records: reading the JSON-lines files ({"content": ..., "summary": ...} per line) with
// bounded memory and clear errors, and the ONE definition of a record's model input and output.
//
// Definition (the finetune recipe's process_batch, ../shared/docs/chatglm3.md §4):
//   input  = build_chat_input(content)
//          = [gMASK] sop <|user|> encode("\n") encode(content) <|assistant|>
//   output = encode("\n") encode(summary) [eos 2]   (the assistant message after its role token, + eos)
//   input + output = the full training sequence; the loss is taken on the output ids only.
// encode() is SentencePiece with its dummy prefix, so encode("\n") = [30910 "▁", 13 "\n"].
// Characters are Unicode code points of the raw content / summary strings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lab/data/line_reader.h"
#include "model/tokenizer.h"

namespace glmlab::lab {

struct Record {
  std::string content;
  std::string summary;
  std::string file;  // the file it came from
  size_t line = 0;   // 1-based line number in that file
};

struct ReadOptions {
  bool skip_bad = false;                    // skip (and count) bad records instead of failing
  size_t max_line_bytes = size_t(1) << 20;  // longer lines are bad records
};

// Bad records that were skipped: how many, and the messages of the first few.
struct SkipLog {
  static constexpr size_t kKeep = 5;
  size_t count = 0;
  std::vector<std::string> first;  // "FILE:LINE: reason"
  void add(std::string message);
  void merge(const SkipLog& other);
};

// One line of a file, parsed. Blank lines (only spaces/tabs) are ignored, not records.
enum class LineKind { kRecord, kBlank, kBad };
struct ParsedLine {
  LineKind kind = LineKind::kBlank;
  Record record;      // when kRecord
  std::string error;  // when kBad: "FILE:LINE: reason"
};
// Never throws: too long, invalid UTF-8, invalid JSON, not an object, missing or non-string field.
ParsedLine parse_line(const Line& line, const std::string& file, size_t max_line_bytes);

// Streams the records of one file. Bad records throw Error("FILE:LINE: reason") unless skip_bad;
// a file without any non-blank line throws Error("FILE: empty file ..."), also with skip_bad.
class RecordReader {
 public:
  RecordReader(const std::string& path, const ReadOptions& options);
  bool next(Record& record);  // false at the end of the file
  const SkipLog& skipped() const { return skipped_; }

 private:
  LineReader lines_;
  ReadOptions options_;
  Line line_;
  SkipLog skipped_;
  size_t nonblank_ = 0;
};

// All records of the files, in order (file by file). Holds everything in memory: for small files.
std::vector<Record> read_records(const std::vector<std::string>& paths, const ReadOptions& options,
                                 SkipLog* skipped = nullptr);

// The model's view of a record (see the definition at the top of this file).
struct SampleIds {
  std::vector<int32_t> input;
  std::vector<int32_t> output;
};
SampleIds sample_ids(const Tokenizer& tok, std::string_view content, std::string_view summary);

struct RecordLengths {
  int32_t input_tokens = 0, output_tokens = 0;      // of sample_ids()
  int32_t content_tokens = 0, summary_tokens = 0;   // raw encode(content), encode(summary)
  int32_t content_chars = 0, summary_chars = 0;     // code points
  int32_t total_tokens() const { return input_tokens + output_tokens; }
  int32_t total_chars() const { return content_chars + summary_chars; }
};

// The fast way to count: encodes content and summary once each and adds the fixed ids around them,
// counted once from sample_ids(tok, "", "") (encode("") is empty). Equal to the sizes of
// sample_ids() by construction; DataDefinition tests check it. Thread-safe (const).
class LengthMeter {
 public:
  explicit LengthMeter(const Tokenizer& tok);
  RecordLengths operator()(std::string_view content, std::string_view summary) const;

 private:
  const Tokenizer* tok_;
  int32_t fixed_input_ = 0, fixed_output_ = 0;
};
RecordLengths measure(const Tokenizer& tok, std::string_view content, std::string_view summary);

// A record as one JSON line in the input format, without the "\n": {"content": "...", "summary": "..."}
// (the spacing of Python's json.dumps; non-ASCII text is written as UTF-8, not escaped).
std::string format_record_line(std::string_view content, std::string_view summary);

}  // namespace glmlab::lab
