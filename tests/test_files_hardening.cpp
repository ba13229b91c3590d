// Issue 14, file formats: what a hostile or broken checkpoint / adapter / config file must not do.
// safetensors layout rules of the reference library (exact coverage of the data block, no duplicate
// names, header length), misaligned data read correctly, deeply nested or overflowing JSON, huge or
// non-integral config sizes, shard paths leaving the folder, FIFOs and directories where files are
// expected, adapter config values, non-finite weights, and merge into a folder with a stale index.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "model/adapters.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/merge.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "test_util.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// [8-byte length][header][data bytes]; `declared` overrides the length field.
std::string write_raw(const fs::path& path, const std::string& header, const std::string& data,
                      int64_t declared = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared < 0 ? header.size() : uint64_t(declared);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
  return path.string();
}

std::string open_error(const std::string& p) { return test::error_of([&] { SafetensorsFile f(p); }); }

std::string f32_entry(const std::string& name, int64_t n, int64_t begin) {
  return fmt::format(R"("{}": {{"dtype": "F32", "shape": [{}], "data_offsets": [{}, {}]}})", name, n, begin,
                     begin + 4 * n);
}

std::string deep(size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); }

std::string train_path(const std::string& rel) { return test::golden_path("train/" + rel); }

// A copy of a checkpoint folder whose tensors' bytes can be edited; written with write_safetensors.
fs::path copy_checkpoint(const std::string& src, const std::string& name,
                         const std::function<void(const std::string&, DType, std::vector<uint8_t>&)>& edit) {
  auto dir = test::temp_dir(name);
  SafetensorsSet set = SafetensorsSet::open(src);
  std::map<std::string, std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> out;
  for (const auto& n : set.names()) {
    const TensorInfo& t = set.get(n);
    auto& b = bytes[n];
    b.assign(t.data, t.data + t.nbytes);
    edit(n, t.dtype, b);
    out.push_back({n, t.dtype, t.shape, b.data(), b.size()});
  }
  write_safetensors((dir / "model.safetensors").string(), out, {{"format", "pt"}});
  fs::copy_file(fs::path(src) / "config.json", dir / "config.json");
  return dir;
}

void put_value(DType dt, std::vector<uint8_t>& b, size_t i, float v) {
  if (dt == DType::F32) std::memcpy(b.data() + 4 * i, &v, 4);
  else {
    uint16_t h = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
    std::memcpy(b.data() + 2 * i, &h, 2);
  }
}

// Runs `what` on a thread; when it has not finished after 3 s (blocked on a FIFO), unblocks it by
// opening `fifo` for writing, and reports "<blocked>".
std::string error_without_blocking(const fs::path& fifo, const std::function<void()>& what) {
  auto fut = std::async(std::launch::async, [&] { return test::error_of(what); });
  if (fut.wait_for(std::chrono::seconds(3)) == std::future_status::ready) return fut.get();
  int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  if (fd >= 0) ::close(fd);
  fut.wait();
  return "<blocked>";
}

// ------------------------------------------------------------------ 5. FIFOs and directories

TEST(FilesType, FifoDoesNotBlock) {
  auto dir = test::temp_dir("files_fifo");
  ASSERT_EQ(::mkfifo((dir / "model.safetensors").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir / "config.json").c_str(), 0600), 0);
  std::string e = error_without_blocking(dir / "model.safetensors", [&] { SafetensorsSet::open(dir.string()); });
  EXPECT_CONTAINS(e, "model.safetensors");
  EXPECT_CONTAINS(e, "not a regular file");
  e = error_without_blocking(dir / "config.json", [&] { ModelConfig::from_file((dir / "config.json").string()); });
  EXPECT_CONTAINS(e, "config.json");
  EXPECT_CONTAINS(e, "not a regular file");
}

TEST(FilesType, DirectoryIsNamedAsSuch) {
  auto dir = test::temp_dir("files_dirs");
  fs::create_directories(dir / "model.safetensors");
  fs::create_directories(dir / "config.json");
  std::string e = test::error_of([&] { SafetensorsSet::open(dir.string()); });
  EXPECT_CONTAINS(e, "model.safetensors");
  EXPECT_CONTAINS(e, "is a directory");
  e = test::error_of([&] { ModelConfig::from_file((dir / "config.json").string()); });
  EXPECT_CONTAINS(e, "is a directory");
}

}  // namespace
}  // namespace glmlab
