#include "util/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace glmlab
