// safetensors reading and writing (format in safetensors.h).
// Reading maps the file and validates the whole header before handing out any tensor, with the rules
// of the reference library (huggingface/safetensors): header length <= 100 MB and inside the file, a
// JSON object without duplicate keys, every entry's dtype / shape / data_offsets, byte size == numel *
// dtype size (checked multiplication), and the tensors, sorted by offset, covering the data block
// exactly (the first starts at 0, each starts where the previous ends, the last ends at the end of
// the file), so a header length that is off by one byte is an error, never a shifted read.
// TensorInfo::data points into the mapping (zero copy) unless the mapping leaves a tensor misaligned
// for its dtype (the reference accepts header lengths that are not a multiple of 8, and tensors at any
// offset): such tensors are copied once into an aligned buffer, so every consumer may read them as
// float / uint16_t / int32 arrays. Every problem is an Error naming the file and, where there is one,
// the tensor. SafetensorsSet adds the checkpoint-folder logic
// (model.safetensors or the shards of model.safetensors.index.json, cross-checked with its weight_map).
// Writing builds the header (tensors in name order, padded with spaces to 8 bytes) and streams it and
// the data through write_file_atomic, so a failure leaves neither the target nor a temporary file.
#include "model/safetensors.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "util/error.h"
#include "util/json.h"
#include "util/file.h"

namespace glmlab {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100000000;  // 100 MB, as the reference: real headers are a few hundred KB

// An integer JSON value that fits int64 (false for floats, strings, huge unsigned values, ...).
bool as_int(const json& v, int64_t& out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
    out = int64_t(u);
    return true;
  }
  if (!v.is_number_integer()) return false;
  out = v.get<int64_t>();
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// numel of a shape with non-negative dims; false when it, or any product on the way, leaves int64:
// TensorInfo::numel() multiplies in int64 in the same order, and [2^32, 2^31 + 1, 0] has 0 elements
// but overflows before the 0 (fuzz/corpus/fuzz_safetensors/regress_numel_int64_overflow).
bool checked_numel(const std::vector<int64_t>& shape, uint64_t& n) {
  n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, uint64_t(d), &n) || n > uint64_t(std::numeric_limits<int64_t>::max())) return false;
  return true;
}

TensorInfo parse_entry(const std::string& file, const std::string& name, const json& e, const uint8_t* block,
                       uint64_t block_size) {
  auto bad = [&](std::string_view what) {
    fail("{}: tensor \"{}\": {} (entry: {})", file, name, what, json_excerpt(e, 200));
  };
  if (!e.is_object()) bad("entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) bad(fmt::format("missing \"{}\"", key));
  if (!e["dtype"].is_string()) bad("\"dtype\" is not a string");
  if (!e["shape"].is_array()) bad("\"shape\" is not an array");
  TensorInfo t;
  t.name = name;
  t.file = file;
  try {
    t.dtype = dtype_from_safetensors(e["dtype"].get<std::string>());
  } catch (const Error& err) {
    fail("{}: tensor \"{}\": {}", file, name, err.what());
  }
  for (const json& d : e["shape"]) {
    int64_t v = 0;
    if (!as_int(d, v)) bad("\"shape\" holds something that is not an integer");
    if (v < 0) fail("{}: tensor \"{}\" has a negative dimension {} in its shape", file, name, v);
    t.shape.push_back(v);
  }
  const json& off = e["data_offsets"];
  int64_t begin = -1, end = -1;
  if (!off.is_array() || off.size() != 2 || !as_int(off[0], begin) || !as_int(off[1], end) || begin < 0 ||
      begin > end)
    bad(fmt::format("\"data_offsets\" must be [begin, end] with 0 <= begin <= end, got {}", json_excerpt(off)));
  if (uint64_t(end) > block_size)
    fail("{}: header says tensor \"{}\" ends at byte {} but the data block has only {} bytes", file, name, end,
         block_size);
  uint64_t numel, need;
  if (!checked_numel(t.shape, numel) || __builtin_mul_overflow(numel, dtype_size(t.dtype), &need))
    fail("{}: tensor \"{}\": shape {} is too large", file, name, t.shape_str());
  t.nbytes = size_t(end - begin);
  if (t.nbytes != need)
    fail("{}: tensor \"{}\" has {} bytes (data_offsets [{}, {}]) but shape {} of {} needs {} bytes", file, name,
         t.nbytes, begin, end, t.shape_str(), dtype_safetensors_name(t.dtype), need);
  t.data = block + begin;
  return t;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const { return shape_string(shape); }

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  const uint8_t* p = file_->data();
  const uint64_t size = file_->size();
  if (size < 8)
    fail("{}: file is only {} bytes; a safetensors file starts with an 8-byte header length", path, size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | p[i];  // little-endian
  if (n > kMaxHeader) fail("{}: header length {} is absurd (more than 100 MB): not a safetensors file?", path, n);
  if (n > size - 8)
    fail("{}: header length {} is larger than the file ({} bytes after the 8-byte length)", path, n, size - 8);
  const json h = parse_json(std::string_view(reinterpret_cast<const char*>(p + 8), size_t(n)), path + ": header");
  if (!h.is_object()) fail("{}: header is not a JSON object", path);
  const uint8_t* block = p + 8 + n;
  const uint64_t block_size = size - 8 - n;
  for (const auto& [name, e] : h.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) fail("{}: __metadata__ is not a JSON object", path);
      for (const auto& [k, v] : e.items()) {
        if (!v.is_string())
          fail("{}: __metadata__ value of \"{}\" is not a string: {}", path, k, json_excerpt(v));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    tensors_.emplace(name, parse_entry(path, name, e, block, block_size));
  }
  // The reference's layout rule: sorted by (begin, end), the tensors tile the data block exactly.
  std::vector<const TensorInfo*> order;
  for (const auto& [name, t] : tensors_) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->data != b->data ? a->data < b->data : a->nbytes < b->nbytes;
  });
  const TensorInfo* prev = nullptr;
  uint64_t pos = 0;  // where the next tensor must begin
  for (const TensorInfo* t : order) {
    const uint64_t begin = uint64_t(t->data - block), end = begin + t->nbytes;
    if (begin < pos)
      fail("{}: tensors \"{}\" (bytes {}..{}) and \"{}\" (bytes {}..{}) overlap", path, prev->name,
           prev->data - block, pos, t->name, begin, end);
    if (begin > pos) {
      if (prev)
        fail("{}: tensor \"{}\" starts at byte {} but the previous tensor \"{}\" ends at byte {}: a gap of {} bytes "
             "(the tensors must cover the data block exactly)", path, t->name, begin, prev->name, pos, begin - pos);
      fail("{}: tensor \"{}\" starts at byte {} but the data block starts at byte 0 (the tensors must cover the "
           "data block exactly)", path, t->name, begin);
    }
    pos = end;
    prev = t;
  }
  if (pos != block_size)
    fail("{}: {} bytes after the last tensor: the data block has {} bytes but the tensors cover {} (a wrong header "
         "length, or a truncated header?)", path, block_size - pos, block_size, pos);
  // Tensors the mapping leaves misaligned for their dtype are copied to an aligned buffer.
  uint64_t copy_bytes = 0;
  auto misaligned = [](const TensorInfo& t) {
    const size_t a = std::min<size_t>(std::max<size_t>(dtype_size(t.dtype), 1), 8);
    return t.nbytes && reinterpret_cast<uintptr_t>(t.data) % a != 0;
  };
  for (const auto& [name, t] : tensors_)
    if (misaligned(t)) copy_bytes += (t.nbytes + 63) / 64 * 64;
  if (copy_bytes) {
    check_memory(copy_bytes, fmt::format("copying the misaligned tensors of {} (header length {} is not a multiple of "
                                         "8, or tensors at odd offsets)", path, n));
    aligned_.resize(copy_bytes / 8);
    uint8_t* dst = reinterpret_cast<uint8_t*>(aligned_.data());
    for (auto& [name, t] : tensors_)
      if (misaligned(t)) {
        std::memcpy(dst, t.data, t.nbytes);
        t.data = dst;
        dst += (t.nbytes + 63) / 64 * 64;
      }
  }
}

SafetensorsSet SafetensorsSet::open(const std::string& path_or_dir) {
  SafetensorsSet s;
  s.root_ = path_or_dir;
  auto add = [&](const std::string& file) -> SafetensorsFile& {
    s.files_.push_back(std::make_unique<SafetensorsFile>(file));
    for (const auto& [name, t] : s.files_.back()->tensors()) {
      auto [it, fresh] = s.index_.emplace(name, &t);
      if (!fresh) fail("{}: tensor \"{}\" is in both {} and {}", path_or_dir, name, it->second->file, file);
    }
    return *s.files_.back();
  };
  const fs::path dir(path_or_dir);
  if (is_file(dir)) {
    add(path_or_dir);
    return s;
  }
  if (!path_exists(dir)) fail("{} does not exist (expected a .safetensors file or a checkpoint folder)", path_or_dir);
  if (!is_dir(dir))
    fail("{} is not a regular file or a folder (expected a .safetensors file or a checkpoint folder)", path_or_dir);
  const std::string index = (dir / "model.safetensors.index.json").string();
  if (!path_exists(index)) {
    if (!path_exists(dir / "model.safetensors"))
      fail("no model.safetensors or model.safetensors.index.json in {}", path_or_dir);
    add((dir / "model.safetensors").string());
    return s;
  }
  const json j = read_json_file(index);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail("{}: no \"weight_map\" object", index);
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::vector<std::string> shards;                // in order of first mention
  for (const auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string()) fail("{}: weight_map entry \"{}\" is not a string", index, name);
    const std::string file = shard.get<std::string>();
    const fs::path sp(file);
    // Shards are files of the checkpoint folder: an absolute path or a ".." would read anything.
    // (Symbolic links inside the folder are followed: the HuggingFace cache links to ../../blobs.)
    if (file.empty()) fail("{}: weight_map entry \"{}\" has an empty shard name", index, name);
    if (sp.is_absolute() || sp.has_root_name() || sp.has_root_directory())
      fail("{}: weight_map entry \"{}\": shard \"{}\" is an absolute path; shards must be files inside {}", index,
           name, file, path_or_dir);
    for (const auto& part : sp)
      if (part == "..")
        fail("{}: weight_map entry \"{}\": shard \"{}\" leads outside the checkpoint folder {}", index, name, file,
             path_or_dir);
    weight_map[name] = file;
    if (std::find(shards.begin(), shards.end(), file) == shards.end()) shards.push_back(file);
  }
  for (const std::string& shard : shards) {
    const std::string file = (dir / shard).string();
    if (!is_file(file)) fail("{}: shard {} is missing (expected {})", index, shard, file);
    for (const auto& [name, t] : add(file).tensors()) {
      auto it = weight_map.find(name);
      if (it == weight_map.end()) fail("{}: shard {} has tensor \"{}\" that weight_map does not list", index, shard, name);
      if (it->second != shard)
        fail("{}: weight_map puts tensor \"{}\" in {} but it is in {}", index, name, it->second, shard);
    }
  }
  for (const auto& [name, shard] : weight_map)
    if (!s.index_.count(name)) fail("{}: weight_map lists tensor \"{}\" in {} but that shard does not have it", index, name, shard);
  return s;
}

const TensorInfo* SafetensorsSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorInfo& SafetensorsSet::get(const std::string& name) const {
  if (const TensorInfo* t = find(name)) return *t;
  fail("tensor \"{}\" is not in {} ({} tensors there)", name, root_, index_.size());
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

uint64_t SafetensorsSet::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : index_) n += t->nbytes;
  return n;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;  // what each tensor must have, from its shape and dtype
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    if (t.name.empty() || t.name == "__metadata__") fail("{}: invalid tensor name \"{}\"", path, t.name);
    if (i > 0 && order[i - 1]->name == t.name) fail("{}: tensor \"{}\" given twice", path, t.name);
    uint64_t numel, need;
    if (std::any_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d < 0; }) ||
        !checked_numel(t.shape, numel) || __builtin_mul_overflow(numel, dtype_size(t.dtype), &need))
      fail("{}: tensor \"{}\" has an invalid shape {}", path, t.name, shape_string(t.shape));
    h[t.name] = {{"dtype", dtype_safetensors_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + need}}};
    sizes.push_back(need);
    offset += need;
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot encode the header: {}", path, e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  write_file_atomic(path, [&](std::FILE* f) {
    auto put = [&](const void* p, size_t n) {
      if (n && std::fwrite(p, 1, n, f) != n) fail("cannot write {}: {}", path, std::strerror(errno));
    };
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    put(len, 8);
    put(header.data(), header.size());
    // Sizes are checked as each tensor is reached; a mismatch aborts the write and write_file_atomic
    // removes the partial temporary file.
    for (size_t i = 0; i < order.size(); ++i) {
      const TensorToWrite& t = *order[i];
      if (t.nbytes != sizes[i])
        fail("{}: tensor \"{}\" has {} bytes but shape {} of {} needs {} bytes (numel * {})", path, t.name, t.nbytes,
             shape_string(t.shape), dtype_safetensors_name(t.dtype), sizes[i], dtype_size(t.dtype));
      if (t.nbytes && !t.data) fail("{}: tensor \"{}\" has no data", path, t.name);
      put(t.data, t.nbytes);
    }
  });
}

}  // namespace glmlab
