// Files: read-only memory maps, whole-file reads, and atomic writes (temporary file + rename, so an
// output is either the old file, the complete new one, or absent; never half-written), of single files
// and of whole folders (publish_folder).
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

// What a path names, without std::filesystem's exceptions: a name too long, a denied search permission
// or a loop of links is an Error naming the path and the system's reason (a path that simply does not
// exist, or runs through a regular file, is Missing). Every loader checks paths through these.
enum class PathKind { Missing, File, Directory, Other };
PathKind path_kind(const std::filesystem::path& p);
inline bool path_exists(const std::filesystem::path& p) { return path_kind(p) != PathKind::Missing; }
inline bool is_file(const std::filesystem::path& p) { return path_kind(p) == PathKind::File; }
inline bool is_dir(const std::filesystem::path& p) { return path_kind(p) == PathKind::Directory; }

std::string read_file(const std::string& path);  // a regular file, as MappedFile; throws Error naming the path

// Writes through `writer` into PATH.tmp.XXXXXX in the same folder, fsyncs, renames onto `path`.
// If the writer throws, the temporary file is removed and the error rethrown.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);
void write_file_atomic(const std::string& path, std::string_view contents);

// Publishes a whole folder of outputs (a report): afterwards `dir` holds either what it held before or
// everything `fill` wrote, never a mix and never a half-written set.
//  1. Siblings DIR.partial-PID and DIR.old-PID left by a process that is no longer alive (or by this
//     one) are removed when they hold only files named in `owned` (see 2); one holding anything else
//     is kept. A pid reused by an unrelated live process keeps its sibling until later.
//  2. If `dir` exists it must be a folder holding only regular files named in `owned` (the names the
//     writer of this kind of report writes; `owned[i].tmp.XXXXXX`, a temporary file a crashed atomic
//     write left, also counts), or nothing. Otherwise this is an Error naming the folder and its first
//     foreign entry (in name order), before `fill` runs; nothing is deleted. A symlink to a folder is
//     followed: the folder it points to is the one published.
//  3. `fill(tmp)` writes the files into DIR.partial-PID, a fresh sibling (same file system). If it
//     throws, the temporary folder is removed, `dir` is left as it was, and the exception rethrown.
//  4. Every file in it and the folder itself are fsynced and the new folder is put in place: renamed
//     to `dir` when there is none; otherwise exchanged with it in one step (renameat2 RENAME_EXCHANGE),
//     or, where the file system cannot, the old one is renamed to DIR.old-PID and the new one renamed
//     in (between those two renames `dir` is briefly absent; if the second fails the old one is
//     renamed back). The old folder, now aside, is checked again as in 2: if a foreign file appeared
//     meanwhile the swap is undone and this is the Error of 2. Then the parent folder is fsynced and
//     the old folder removed.
// Not guaranteed: two publishers of the same `dir` at once (the last one wins; within one process,
// calls for the same `dir` must not overlap); a crash after the swap leaves the old folder as a stale
// sibling (removed by the next call); the old folder's permissions are not carried over; a folder
// whose name merely looks like DIR.partial-PID or DIR.old-PID is taken for a stale sibling.
void publish_folder(const std::string& dir, const std::vector<std::string>& owned,
                    const std::function<void(const std::string& tmp)>& fill);
// Step 2 of publish_folder on its own, creating and removing nothing: throws the same Error when `dir`
// could not be published. A command calls it before its long work so that a refusal comes first.
void check_folder_publishable(const std::string& dir, const std::vector<std::string>& owned);
namespace detail {
// Tests only: publish_folder behaves as on a file system without RENAME_EXCHANGE (the two renames).
extern bool publish_without_exchange;
}  // namespace detail

// Bytes of memory the system can still give this process (MemAvailable, capped by a cgroup limit).
uint64_t available_memory_bytes();
// The machine's memory (MemTotal), 0 when /proc/meminfo cannot be read.
uint64_t total_memory_bytes();
// Throws Error "WHAT needs X GiB but only Y GiB are available" when need > available.
void check_memory(uint64_t need_bytes, std::string_view what);
// Peak resident set size of this process so far (bytes).
uint64_t peak_rss_bytes();

}  // namespace glmlab
