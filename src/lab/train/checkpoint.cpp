// The output folder of a training run as one durable unit (see checkpoint.h).
#include "lab/train/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "model/peft_io.h"
#include "model/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

namespace fs = std::filesystem;

namespace {

const char* kLock = ".glmlab-train.lock";
const char* kTmpPrefix = ".checkpoint-";
const char* kAdapterFiles[] = {"adapter_model.safetensors", "adapter_config.json"};

// FNV-1a 64 of a file's bytes, as hex; "" when it cannot be read.
std::string file_hash(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return "";
  MappedFile f(p.string());
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < f.size(); ++i) h = (h ^ f.data()[i]) * 1099511628211ULL;
  return fmt::format("{:016x}", h);
}

std::string adapter_files_hash(const fs::path& dir) {
  std::string s;
  for (const char* n : kAdapterFiles) s += std::string(n) + "=" + file_hash(dir / n) + ";";
  return s;
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

OutLock::OutLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the output folder: {}", dir, ec.message());
  const std::string path = (fs::path(dir) / kLock).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open the lock file: {}", path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    fail("{}: another glmlab train (pid {}) is writing to this folder; wait for it or choose another --out", dir,
         n > 0 ? std::string(pid, size_t(n)) : std::string("?"));
  }
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
    // the pid is only for the message of a refused second run
  }
}

OutLock::~OutLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock (and so does the kernel if we die)
}

std::vector<std::string> clean_stale_temporaries(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.rfind(kTmpPrefix, 0) == 0 || name.find(".tmp.") != std::string::npos;
    if (!ours) continue;
    fs::remove_all(e.path(), ec);
    if (!ec) removed.push_back(name);
  }
  return removed;
}

void save_checkpoint(const std::string& dir, const Adapter& adapter, const AdamW& opt, const TrainState& st) {
  const fs::path out(dir), tmp = out / (kTmpPrefix + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) fail("{}: cannot create {}: {}", dir, tmp.string(), ec.message());
  try {
    save_adapter(tmp.string(), adapter);
    save_train_state(tmp.string(), adapter, opt, st, {{"adapter_files", adapter_files_hash(tmp)}});
    fsync_dir(tmp);
    // The adapter files first, the state last: a state in OUT always has its complete adapter behind it.
    for (const char* n : {kAdapterFiles[0], kAdapterFiles[1], "train_state.safetensors"}) {
      if (std::rename((tmp / n).c_str(), (out / n).c_str()) != 0)
        fail("cannot rename {} to {}: {}", (tmp / n).string(), (out / n).string(), std::strerror(errno));
    }
    fsync_dir(out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(tmp, ec);
}

bool adapter_matches_state(const std::string& dir) {
  const fs::path state = fs::path(dir) / "train_state.safetensors";
  SafetensorsFile f(state.string());
  auto it = f.metadata().find("adapter_files");
  if (it == f.metadata().end()) return true;
  return it->second == adapter_files_hash(dir);
}

}  // namespace glmlab::lab
