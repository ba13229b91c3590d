// Files: read-only memory maps, whole-file reads, and atomic writes (temporary file + rename, so an
// output is either the old file, the complete new one, or absent; never half-written).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace glmlab {

// A read-only mapping of a whole file. Movable, not copyable; unmaps on destruction. The path must be
// a regular file: a directory, FIFO, socket or device is an Error naming it (a FIFO is never waited on).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

std::string read_file(const std::string& path);  // a regular file, as MappedFile; throws Error naming the path

// Writes through `writer` into PATH.tmp.XXXXXX in the same folder, fsyncs, renames onto `path`.
// If the writer throws, the temporary file is removed and the error rethrown.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);
void write_file_atomic(const std::string& path, std::string_view contents);

// Bytes of memory the system can still give this process (MemAvailable, capped by a cgroup limit).
uint64_t available_memory_bytes();
// The machine's memory (MemTotal), 0 when /proc/meminfo cannot be read.
uint64_t total_memory_bytes();
// Throws Error "WHAT needs X GiB but only Y GiB are available" when need > available.
void check_memory(uint64_t need_bytes, std::string_view what);
// Peak resident set size of this process so far (bytes).
uint64_t peak_rss_bytes();

}  // namespace glmlab
