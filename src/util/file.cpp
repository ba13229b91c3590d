#include "util/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace glmlab {

namespace {

// Opens `path` read-only and requires a regular file. O_NONBLOCK: opening a FIFO for reading would
// otherwise wait for a writer forever (it has no effect on regular files).
int open_regular_file(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("cannot stat {}: {}", path, std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("{} is a directory, not a file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    const char* kind = S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a file";
    fail("{} is not a regular file ({}); glmlab reads only regular files", path, kind);
  }
  return fd;
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  struct stat st{};
  int fd = open_regular_file(path, st);
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("cannot map {}: {}", path, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_file(const std::string& path) {
  struct stat st{};
  int fd = open_regular_file(path, st);
  std::string out;
  out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t k = ::read(fd, buf, sizeof buf);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      int e = errno;
      ::close(fd);
      fail("cannot read {}: {}", path, std::strerror(e));
    }
    if (k == 0) break;
    out.append(buf, size_t(k));
  }
  ::close(fd);
  return out;
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / (target.filename().string() + ".tmp.XXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail("cannot create a temporary file beside {}: {}", path, std::strerror(errno));
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    fail("cannot open {} for writing", tmpl);
  }
  try {
    writer(f);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      fail("cannot write {}: {}", path, std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    ::unlink(tmpl.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    ::unlink(tmpl.c_str());
    fail("cannot write {}: {}", path, std::strerror(errno));
  }
  ::chmod(tmpl.c_str(), 0644);
  if (std::rename(tmpl.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmpl.c_str());
    fail("cannot rename {} to {}: {}", tmpl, path, std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  write_file_atomic(path, [&](std::FILE* f) {
    if (!contents.empty() && std::fwrite(contents.data(), 1, contents.size(), f) != contents.size())
      fail("cannot write {}: {}", path, std::strerror(errno));
  });
}

bool detail::publish_without_exchange = false;

namespace {

namespace fs = std::filesystem;

// fsync a file or folder by path; Error naming it when it cannot be opened or synced.
void fsync_path(const fs::path& p, bool folder) {
  int fd = ::open(p.c_str(), (folder ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail("cannot open {} to sync it: {}", p.string(), std::strerror(errno));
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    fail("cannot sync {}: {}", p.string(), std::strerror(e));
  }
  ::close(fd);
}

// "NAME.tmp.XXXXXX", the temporary file write_file_atomic leaves when a process dies mid-write.
bool is_atomic_leftover(const std::string& entry, const std::string& name) {
  const std::string stem = name + ".tmp.";
  return entry.size() == stem.size() + 6 && entry.compare(0, stem.size(), stem) == 0;
}

// The first entry of `folder` (in name order) that is not a regular file named in `owned`, or "".
std::string first_foreign_entry(const fs::path& folder, const std::vector<std::string>& owned) {
  std::vector<std::string> foreign;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    bool mine = it->symlink_status().type() == fs::file_type::regular &&
                std::any_of(owned.begin(), owned.end(), [&](const std::string& o) {
                  return name == o || is_atomic_leftover(name, o);
                });
    if (!mine) foreign.push_back(name);
  }
  if (ec) fail("cannot list the folder {}: {}", folder.string(), ec.message());
  return foreign.empty() ? std::string() : *std::min_element(foreign.begin(), foreign.end());
}

[[noreturn]] void refuse(const fs::path& dir, const std::string& foreign) {
  fail("refusing to replace the folder {}: it holds {}, which is not a file this report writes; move it away "
       "or choose another output folder",
       dir.string(), foreign);
}

// Removes siblings NAME.partial-PID / NAME.old-PID of `dir` whose process is gone (or is this one) and
// that hold only `owned` files; one holding anything else (a user's folder after a failed undo) is kept.
void remove_stale_siblings(const fs::path& parent, const std::string& name, const std::vector<std::string>& owned) {
  std::vector<fs::path> stale;
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    std::string entry = it->path().filename().string();
    std::string digits;
    for (const char* tag : {".partial-", ".old-"}) {
      std::string prefix = name + tag;
      if (entry.size() > prefix.size() && entry.compare(0, prefix.size(), prefix) == 0)
        digits = entry.substr(prefix.size());
    }
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    pid_t pid = pid_t(std::stol(digits));
    bool gone = pid == ::getpid() || (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH);
    if (gone && it->symlink_status().type() == fs::file_type::directory) stale.push_back(it->path());
  }
  if (ec) fail("cannot list the folder {}: {}", parent.string(), ec.message());
  for (const auto& p : stale) {
    if (!first_foreign_entry(p, owned).empty()) continue;
    std::error_code rec;
    fs::remove_all(p, rec);
    if (rec) fail("cannot remove the stale folder {}: {}", p.string(), rec.message());
  }
}

// Swaps two existing paths in one step; false when the file system (or kernel) cannot.
bool exchange_paths(const fs::path& a, const fs::path& b) {
  if (detail::publish_without_exchange) return false;
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    fail("cannot exchange {} with {}: {}", a.string(), b.string(), std::strerror(errno));
#endif
  (void)a, (void)b;
  return false;
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename {} to {}: {}", from.string(), to.string(), std::strerror(errno));
}

}  // namespace

namespace {

// `dir_arg` without a trailing slash, a symlink to a folder followed (the link itself stays).
fs::path publish_target(const std::string& dir_arg) {
  if (dir_arg.empty()) fail("the output folder is empty");
  fs::path dir = fs::path(dir_arg).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "out/" -> "out"
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(dir, ec))) {
    dir = fs::canonical(dir, ec);
    if (ec) fail("the output folder {} is a symlink that cannot be followed: {}", dir_arg, ec.message());
  }
  std::string name = dir.filename().string();
  if (name.empty() || name == "." || name == "..")
    fail("cannot publish the folder {}: name a folder of its own (not . or ..)", dir_arg);
  return dir;
}

// False when `folder` does not exist; true when it is a folder that holds only `owned` files (or
// nothing); otherwise the Error of publish_folder, naming `dir`.
bool check_replaceable(const fs::path& folder, const fs::path& dir, const std::vector<std::string>& owned) {
  std::error_code ec;
  fs::file_status st = fs::symlink_status(folder, ec);
  if (!fs::exists(st)) return false;
  if (!fs::is_directory(st)) fail("the output folder {} exists and is not a folder", dir.string());
  std::string foreign = first_foreign_entry(folder, owned);
  if (!foreign.empty()) refuse(dir, foreign);
  return true;
}

}  // namespace

void check_folder_publishable(const std::string& dir, const std::vector<std::string>& owned) {
  fs::path target = publish_target(dir);
  check_replaceable(target, target, owned);
}

void publish_folder(const std::string& dir_arg, const std::vector<std::string>& owned,
                    const std::function<void(const std::string& tmp)>& fill) {
  const fs::path dir = publish_target(dir_arg);
  const std::string name = dir.filename().string();
  std::error_code ec;
  fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) fail("cannot create the folder {}: {}", parent.string(), ec.message());

  remove_stale_siblings(parent, name, owned);

  auto check_existing = [&](const fs::path& folder) { return check_replaceable(folder, dir, owned); };
  check_existing(dir);  // before filling: refuse early, not after the work

  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / (name + ".partial-" + pid);
  const fs::path old = parent / (name + ".old-" + pid);
  if (!fs::create_directory(tmp, ec) || ec)
    fail("cannot create the temporary folder {}: {}", tmp.string(), ec ? ec.message() : "it exists");
  auto discard = [&] {
    std::error_code rec;
    fs::remove_all(tmp, rec);
  };
  try {
    fill(tmp.string());
    for (fs::directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec))
      if (it->symlink_status().type() == fs::file_type::regular) fsync_path(it->path(), false);
    if (ec) fail("cannot list the folder {}: {}", tmp.string(), ec.message());
    fsync_path(tmp, true);
  } catch (...) {
    discard();
    throw;
  }

  // Put it in place. `aside` is where the old folder ends up (none when `dir` did not exist).
  fs::path aside;
  bool tmp_is_new = true;  // false while `tmp` names the old folder: it must then never be removed
  try {
    if (std::rename(tmp.c_str(), dir.c_str()) == 0) {
      // `dir` was absent (or an empty folder, which rename replaces): nothing to keep aside.
    } else if (errno != EEXIST && errno != ENOTEMPTY) {
      fail("cannot rename {} to {}: {}", tmp.string(), dir.string(), std::strerror(errno));
    } else if (exchange_paths(tmp, dir)) {
      aside = tmp;  // the old folder now has the temporary name
      tmp_is_new = false;
      try {
        check_existing(aside);
      } catch (...) {
        if (exchange_paths(tmp, dir)) tmp_is_new = true;  // undo: the old folder back in place
        throw;
      }
    } else {
      rename_or_fail(dir, old);
      try {
        check_existing(old);
      } catch (...) {
        rename_or_fail(old, dir);
        throw;
      }
      if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
        int e = errno;
        rename_or_fail(old, dir);
        fail("cannot rename {} to {}: {}", tmp.string(), dir.string(), std::strerror(e));
      }
      aside = old;
    }
  } catch (...) {
    if (tmp_is_new) discard();
    throw;
  }
  fsync_path(parent, true);
  if (!aside.empty()) {
    std::error_code rec;
    fs::remove_all(aside, rec);  // if this fails, the next call removes it as a stale sibling
  }
}

uint64_t total_memory_bytes() {
  uint64_t total = 0;
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kb;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemTotal: %llu kB", &kb) == 1) total = kb * 1024ull;
    std::fclose(f);
  }
  return total;
}

uint64_t available_memory_bytes() {
  uint64_t avail = 0;
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f)) {
      unsigned long long kb;
      if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = kb * 1024ull;
    }
    std::fclose(f);
  }
  // A cgroup v2 limit, when set, caps what this process may use.
  if (std::FILE* f = std::fopen("/sys/fs/cgroup/memory.max", "r")) {
    unsigned long long lim;
    if (std::fscanf(f, "%llu", &lim) == 1) {
      uint64_t used = 0;
      if (std::FILE* g = std::fopen("/sys/fs/cgroup/memory.current", "r")) {
        unsigned long long cur;
        if (std::fscanf(g, "%llu", &cur) == 1) used = cur;
        std::fclose(g);
      }
      uint64_t room = lim > used ? lim - used : 0;
      if (avail == 0 || room < avail) avail = room;
    }
    std::fclose(f);
  }
  return avail;
}

void check_memory(uint64_t need_bytes, std::string_view what) {
  uint64_t avail = available_memory_bytes();
  if (avail != 0 && need_bytes > avail)
    fail("{} needs {:.2f} GiB of memory but only {:.2f} GiB are available", what,
         double(need_bytes) / (1ull << 30), double(avail) / (1ull << 30));
}

uint64_t peak_rss_bytes() {
  struct rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024ull;
}

PathKind path_kind(const std::filesystem::path& p) {
  std::error_code ec;
  const auto st = std::filesystem::status(p, ec);  // follows links, as the throwing overloads do
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) return PathKind::Missing;
    fail("{}: {}", p.string(), ec.message());
  }
  switch (st.type()) {
    case std::filesystem::file_type::not_found: return PathKind::Missing;
    case std::filesystem::file_type::regular: return PathKind::File;
    case std::filesystem::file_type::directory: return PathKind::Directory;
    default: return PathKind::Other;
  }
}

}  // namespace glmlab
