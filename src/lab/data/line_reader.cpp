// Bounded-memory line reading (see line_reader.h).
#include "lab/data/line_reader.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace glmlab::lab {

LineReader::LineReader(const std::string& path, size_t max_line_bytes)
    : path_(path), max_line_bytes_(max_line_bytes), buf_(size_t(1) << 16) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, not a JSON-lines file", path);
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) fail("{}: cannot open: {}", path, std::strerror(errno));
}

LineReader::~LineReader() {
  if (file_) std::fclose(file_);
}

bool LineReader::fill() {
  end_ = std::fread(buf_.data(), 1, buf_.size(), file_);
  pos_ = 0;
  if (end_ == 0 && std::ferror(file_)) fail("{}: read error after line {}: {}", path_, number_, std::strerror(errno));
  return end_ > 0;
}

bool LineReader::next(Line& line) {
  line.text.clear();
  line.bytes = 0;
  line.too_long = false;
  bool any = false;  // did this line have at least one byte or a newline?
  for (;;) {
    if (pos_ == end_ && !fill()) break;
    any = true;
    const char* start = buf_.data() + pos_;
    const void* nl = std::memchr(start, '\n', end_ - pos_);
    size_t take = nl ? size_t(static_cast<const char*>(nl) - start) : end_ - pos_;
    line.bytes += take;
    if (!line.too_long) {
      if (line.bytes > max_line_bytes_) {
        line.too_long = true;
        line.text.clear();
        line.text.shrink_to_fit();
      } else {
        line.text.append(start, take);
      }
    }
    pos_ += take;
    if (nl) {
      ++pos_;  // the "\n"
      break;
    }
  }
  if (!any) return false;
  line.number = ++number_;
  if (!line.too_long && !line.text.empty() && line.text.back() == '\r') line.text.pop_back();
  return true;
}

}  // namespace glmlab::lab
