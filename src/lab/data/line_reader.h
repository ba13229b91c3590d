// Reads a text file line by line with bounded memory: at most `max_line_bytes` of one line are kept;
// a longer line is reported as too long (with its full length) and skipped without being stored.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace glmlab::lab {

struct Line {
  std::string text;       // without the "\n" (and without a "\r" before it); empty when too_long
  size_t number = 0;      // 1-based line number in the file
  size_t bytes = 0;       // length of the whole line in bytes (also when too_long)
  bool too_long = false;  // bytes > max_line_bytes
};

class LineReader {
 public:
  // Throws Error naming the path when it is missing, a directory or unreadable.
  LineReader(const std::string& path, size_t max_line_bytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into `line`; false at the end of the file. A last line without "\n" counts.
  bool next(Line& line);
  const std::string& path() const { return path_; }

 private:
  bool fill();  // refills buf_; false at end of file

  std::string path_;
  size_t max_line_bytes_;
  std::FILE* file_ = nullptr;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  size_t number_ = 0;
};

}  // namespace glmlab::lab
