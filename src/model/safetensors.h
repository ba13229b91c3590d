// safetensors files: reading (memory-mapped, zero copy; one file or shards listed by
// model.safetensors.index.json) and writing (atomically: temporary file, then rename).
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__": {str: str}}, then the data block; offsets are relative to it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/dtype.h"
#include "util/file.h"

namespace glmlab {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping; valid while the SafetensorsFile lives
  size_t nbytes = 0;
  std::string file;               // the file it came from, for messages
  int64_t numel() const;
  std::string shape_str() const;  // "[4608, 4096]"
};

// One mapped file. Validates the whole header on open with the reference library's rules: JSON syntax
// (depth-limited, no duplicate keys), header length, known dtypes, sizes equal to numel * dtype size,
// tensors covering the data block exactly (no gap, no overlap, nothing after the last); any problem is
// an Error naming the file (and the tensor). Tensors left misaligned for their dtype by the mapping
// are copied once into an aligned buffer (TensorInfo::data is then not in the mapping).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<uint64_t> aligned_;  // copies of misaligned tensors (64-byte slots)
};

// All tensors of a checkpoint folder (model.safetensors, or the shards of
// model.safetensors.index.json), or of a single .safetensors path.
class SafetensorsSet {
 public:
  static SafetensorsSet open(const std::string& path_or_dir);
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  const TensorInfo& get(const std::string& name) const;   // Error naming the tensor when absent
  std::vector<std::string> names() const;
  uint64_t total_bytes() const;

 private:
  std::string root_;  // the path open() was given, for messages
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

// A tensor to write: data is copied out of `bytes` (size must equal numel * dtype size).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes one safetensors file atomically. Tensors are written in name order, 8-byte aligned header.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace glmlab
