// Loading checkpoint weights: errors for missing / mis-shaped / unexpected / non-float tensors and
// truncated files (each naming what is wrong), zero copy from the memory map when the stored dtype is
// the one asked for, and the memory check that refuses models that cannot fit.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/loader.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string tiny_dir() { return test::golden_path("tiny-f32"); }

// A copy of the tiny-f32 checkpoint whose tensor list can be edited before writing it out.
struct EditableCheckpoint {
  SafetensorsSet src = SafetensorsSet::open(tiny_dir());
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<uint8_t>> owned;  // data of tensors added by the test

  EditableCheckpoint() {
    for (const auto& n : src.names()) {
      const TensorInfo& t = src.get(n);
      tensors.push_back({n, t.dtype, t.shape, t.data, t.nbytes});
    }
  }
  TensorToWrite& at(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return t;
    throw std::runtime_error("test bug: no tensor " + name);
  }
  void remove(const std::string& name) {
    std::erase_if(tensors, [&](const TensorToWrite& t) { return t.name == name; });
  }
  // Adds (or replaces) a tensor filled with `fill` bytes.
  void put(const std::string& name, DType dtype, std::vector<int64_t> shape, uint8_t fill = 0) {
    remove(name);
    size_t n = dtype_size(dtype);
    for (int64_t d : shape) n *= size_t(d);
    owned.emplace_back(n, fill);
    tensors.push_back({name, dtype, std::move(shape), owned.back().data(), n});
  }
  // Writes config.json (tiny-f32's, optionally edited) and model.safetensors into a fresh folder.
  std::string write(const std::string& test_name, const std::function<void(json&)>& edit_config = {}) {
    auto dir = test::temp_dir(test_name);
    json cfg = json::parse(read_file(tiny_dir() + "/config.json"));
    if (edit_config) edit_config(cfg);
    write_file_atomic((dir / "config.json").string(), cfg.dump(2));
    write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
    return dir.string();
  }
};

std::string weights_load_error(const std::string& dir, const std::string& dtype = "fp32") {
  return test::error_of([&] { load_model(dir, dtype); });
}

const std::string kQkv = "transformer.encoder.layers.1.self_attention.query_key_value.weight";
const std::string kQkvBias = "transformer.encoder.layers.1.self_attention.query_key_value.bias";
const std::string kFinalNorm = "transformer.encoder.final_layernorm.weight";

// ---------------------------------------------------------------------------- the unmodified copy loads

TEST(WeightsLoad, UnmodifiedCopyLoadsAndEqualsTheOriginal) {
  EditableCheckpoint ck;
  std::string dir = ck.write("weights_copy");
  Model a = load_model(dir, "fp32"), b = load_model(tiny_dir(), "fp32");
  ASSERT_EQ(a.weights().layers.size(), 2u);
  EXPECT_EQ(0, std::memcmp(a.weights().output.data, b.weights().output.data, b.weights().output.nbytes()));
  EXPECT_EQ(a.weights().layers[1].qkv_bias, b.weights().layers[1].qkv_bias);
  EXPECT_EQ(a.weights().final_norm, b.weights().final_norm);
  // The stored inv_freq buffer is accepted (the real checkpoint has it too).
  EXPECT_NE(ck.src.find("transformer.rotary_pos_emb.inv_freq"), nullptr);
}

// ---------------------------------------------------------------------------- bad tensors

TEST(WeightsErrors, MissingTensorNamesItAndTheExpectedShape) {
  EditableCheckpoint ck;
  ck.remove("transformer.encoder.layers.1.mlp.dense_4h_to_h.weight");
  std::string dir = ck.write("weights_missing");
  std::string msg = weights_load_error(dir);
  EXPECT_CONTAINS(msg, "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight");
  EXPECT_CONTAINS(msg, "missing");
  EXPECT_CONTAINS(msg, "[64, 96]");
  EXPECT_CONTAINS(msg, dir);
  // A missing vector (norm weight).
  EditableCheckpoint ck2;
  ck2.remove(kFinalNorm);
  msg = weights_load_error(ck2.write("weights_missing_norm"));
  EXPECT_CONTAINS(msg, kFinalNorm);
  EXPECT_CONTAINS(msg, "[64]");
}

TEST(WeightsErrors, ConfigWithMoreLayersThanTheCheckpointNamesTheFirstMissingTensor) {
  EditableCheckpoint ck;
  std::string dir = ck.write("weights_more_layers", [](json& j) { j["num_layers"] = 3; });
  std::string msg = weights_load_error(dir);
  EXPECT_CONTAINS(msg, "transformer.encoder.layers.2.");
  EXPECT_CONTAINS(msg, "missing");
}

TEST(WeightsErrors, MisShapedTensorNamesBothShapes) {
  EditableCheckpoint ck;
  TensorToWrite& q = ck.at(kQkv);
  ASSERT_EQ(q.shape, (std::vector<int64_t>{128, 64}));  // 4·16 + 2·2·16 rows, hidden 64
  q.shape = {64, 128};                                  // same bytes, transposed shape
  std::string msg = weights_load_error(ck.write("weights_misshaped"));
  EXPECT_CONTAINS(msg, kQkv);
  EXPECT_CONTAINS(msg, "[64, 128]");
  EXPECT_CONTAINS(msg, "[128, 64]");
  // A bias of the wrong length.
  EditableCheckpoint ck2;
  TensorToWrite& b = ck2.at(kQkvBias);
  b.shape = {64};
  b.nbytes = 64 * 4;
  msg = weights_load_error(ck2.write("weights_misshaped_bias"));
  EXPECT_CONTAINS(msg, kQkvBias);
  EXPECT_CONTAINS(msg, "[64]");
  EXPECT_CONTAINS(msg, "[128]");
  // A config with another hidden size than the weights.
  EditableCheckpoint ck3;
  msg = weights_load_error(ck3.write("weights_wrong_config", [](json& j) { j["ffn_hidden_size"] = 128; }));
  EXPECT_CONTAINS(msg, "dense_h_to_4h.weight");
  EXPECT_CONTAINS(msg, "[192, 64]");
  EXPECT_CONTAINS(msg, "[256, 64]");
}

TEST(WeightsErrors, UnexpectedTensorIsNamed) {
  EditableCheckpoint ck;
  ck.put("transformer.encoder.layers.0.self_attention.dense.bias", DType::F32, {64});
  std::string msg = weights_load_error(ck.write("weights_extra"));
  EXPECT_CONTAINS(msg, "transformer.encoder.layers.0.self_attention.dense.bias");
  EXPECT_CONTAINS(msg, "unexpected");
  // A qkv bias when config.json says add_qkv_bias false is unexpected too.
  EditableCheckpoint ck2;
  msg = weights_load_error(ck2.write("weights_extra_bias", [](json& j) { j["add_qkv_bias"] = false; }));
  EXPECT_CONTAINS(msg, "query_key_value.bias");
  EXPECT_CONTAINS(msg, "unexpected");
}

TEST(WeightsErrors, IntegerTensorsWhereFloatsAreNeeded) {
  {
    EditableCheckpoint ck;
    ck.put(kQkv, DType::I8, {128, 64}, 1);
    std::string msg = weights_load_error(ck.write("weights_i8"));
    EXPECT_CONTAINS(msg, kQkv);
    EXPECT_CONTAINS(msg, "I8");
  }
  {
    EditableCheckpoint ck;
    ck.put(kFinalNorm, DType::I64, {64}, 0);
    std::string msg = weights_load_error(ck.write("weights_i64"), "bf16");
    EXPECT_CONTAINS(msg, kFinalNorm);
    EXPECT_CONTAINS(msg, "I64");
  }
}

TEST(WeightsErrors, TruncatedSafetensorsNamesTheFile) {
  std::string bytes = read_file(tiny_dir() + "/model.safetensors");
  std::string cfg = read_file(tiny_dir() + "/config.json");
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | uint8_t(bytes[size_t(i)]);
  ASSERT_LT(header + 8, bytes.size());
  // Cut inside the data block, inside the header, and inside the length prefix.
  for (size_t keep : {bytes.size() - 100, size_t(8 + header / 2), size_t(5)}) {
    SCOPED_TRACE(keep);
    auto dir = test::temp_dir("weights_truncated");
    write_file_atomic((dir / "config.json").string(), cfg);
    std::string file = (dir / "model.safetensors").string();
    write_file_atomic(file, std::string_view(bytes).substr(0, keep));
    EXPECT_CONTAINS(weights_load_error(dir.string()), file);
  }
  // An empty folder names the folder.
  auto empty = test::temp_dir("weights_no_files");
  write_file_atomic((empty / "config.json").string(), cfg);
  EXPECT_CONTAINS(weights_load_error(empty.string()), empty.string());
}

// ---------------------------------------------------------------------------- zero copy

struct Region {
  uintptr_t lo = 0, hi = 0;
  uint64_t offset = 0;
  std::string path;  // empty for anonymous memory
};

// The mapping of this process that holds `p` (from /proc/self/maps).
Region region_of(const void* p) {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  EXPECT_NE(f, nullptr);
  char line[4096];
  auto addr = reinterpret_cast<uintptr_t>(p);
  Region found;
  while (f && std::fgets(line, sizeof line, f)) {
    uintptr_t lo, hi;
    unsigned long long off;
    char perms[8], dev[16];
    unsigned long inode;
    int pos = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %15s %lu %n", &lo, &hi, perms, &off, dev, &inode,
                    &pos) < 6)
      continue;
    if (addr >= lo && addr < hi) {
      std::string path = line + pos;
      while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
      found = {lo, hi, off, path};
      break;
    }
  }
  if (f) std::fclose(f);
  return found;
}

// Byte offset of a tensor's data inside its safetensors file, from the header.
uint64_t file_offset_of(const std::string& file, const std::string& name) {
  std::string bytes = read_file(file);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(bytes[size_t(i)]);
  json h = json::parse(bytes.substr(8, n));
  return 8 + n + h.at(name).at("data_offsets")[0].get<uint64_t>();
}

// Expects that `m` points into `file`'s mapping exactly where tensor `name` is stored.
void expect_in_file(const Matrix& m, const std::string& file, const std::string& name) {
  Region r = region_of(m.data);
  ASSERT_TRUE(r.path.starts_with("/")) << name << " is not in a file mapping (copied?): \"" << r.path << "\"";
  EXPECT_EQ(fs::canonical(r.path), fs::canonical(file)) << name;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data) - r.lo + r.offset, file_offset_of(file, name)) << name;
  EXPECT_LE(reinterpret_cast<uintptr_t>(m.data) + m.nbytes(), r.hi) << name;
}

TEST(WeightsZeroCopy, StoredDtypeIsMappedNotCopied) {
  const std::string file = tiny_dir() + "/model.safetensors";
  Model m = load_model(tiny_dir(), "fp32");
  const ModelWeights& w = m.weights();
  ASSERT_EQ(w.dtype, DType::F32);
  expect_in_file(w.embedding, file, names::embedding());
  expect_in_file(w.output, file, names::output());
  for (int i = 0; i < 2; ++i) {
    expect_in_file(w.layers[size_t(i)].qkv, file, names::layer(i, "self_attention.query_key_value.weight"));
    expect_in_file(w.layers[size_t(i)].dense, file, names::layer(i, "self_attention.dense.weight"));
    expect_in_file(w.layers[size_t(i)].h_to_4h, file, names::layer(i, "mlp.dense_h_to_4h.weight"));
    expect_in_file(w.layers[size_t(i)].four_h_to_h, file, names::layer(i, "mlp.dense_4h_to_h.weight"));
  }
  // Same bytes as an independent reader sees.
  SafetensorsSet set = SafetensorsSet::open(tiny_dir());
  const TensorInfo& out = set.get(names::output());
  ASSERT_EQ(out.nbytes, w.output.nbytes());
  EXPECT_EQ(0, std::memcmp(out.data, w.output.data, out.nbytes));
  // The mapping outlives the loader's locals: a moved model still reads it.
  Model moved = std::move(m);
  EXPECT_EQ(moved.weights().output.at(3, 5), reinterpret_cast<const float*>(out.data)[3 * 64 + 5]);
}

TEST(WeightsZeroCopy, F16CheckpointInItsOwnDtypeIsMapped) {
  const std::string dir = test::golden_path("tiny-f16");
  Model m = load_model(dir, "");  // torch_dtype float16
  ASSERT_EQ(m.weights().dtype, DType::F16);
  expect_in_file(m.weights().output, dir + "/model.safetensors", names::output());
}

TEST(WeightsZeroCopy, ShardsAreMappedFromTheirOwnFiles) {
  const std::string dir = test::golden_path("tiny-sharded");
  Model m = load_model(dir, "fp32");
  expect_in_file(m.weights().embedding, dir + "/model-00001-of-00002.safetensors", names::embedding());
  expect_in_file(m.weights().output, dir + "/model-00002-of-00002.safetensors", names::output());
  expect_in_file(m.weights().layers[1].qkv, dir + "/model-00002-of-00002.safetensors",
                 names::layer(1, "self_attention.query_key_value.weight"));
}

TEST(WeightsZeroCopy, ConvertingCopiesAndRounds) {
  Model f32 = load_model(tiny_dir(), "fp32");
  Model bf16 = load_model(tiny_dir(), "bf16");
  Model f16 = load_model(tiny_dir(), "fp16");
  ASSERT_EQ(bf16.weights().dtype, DType::BF16);
  ASSERT_EQ(f16.weights().dtype, DType::F16);
  for (const Model* c : {&bf16, &f16}) {
    const Matrix& o = c->weights().output;
    EXPECT_NE(o.data, f32.weights().output.data);
    EXPECT_EQ(o.nbytes(), f32.weights().output.nbytes() / 2);
    EXPECT_TRUE(region_of(o.data).path.find("model.safetensors") == std::string::npos)
        << "converted weights must live in their own buffers, not in the file mapping";
  }
  const Matrix &a = f32.weights().output, &b = bf16.weights().output, &h = f16.weights().output;
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t c = 0; c < a.cols; ++c) {
      float x = a.at(r, c);
      ASSERT_EQ(b.at(r, c), bf16_to_f32(f32_to_bf16(x))) << r << "," << c;
      ASSERT_EQ(h.at(r, c), f16_to_f32(f32_to_f16(x))) << r << "," << c;
    }
  // Norms and biases stay fp32 whatever the matrix dtype.
  EXPECT_EQ(bf16.weights().final_norm, f32.weights().final_norm);
  EXPECT_EQ(bf16.weights().layers[0].qkv_bias, f32.weights().layers[0].qkv_bias);
}

// ---------------------------------------------------------------------------- memory check

TEST(WeightsMemory, AbsurdRequestIsRefused) {
  const uint64_t avail = available_memory_bytes();
  ASSERT_GT(avail, 0u);
  std::string msg = test::error_of([] { check_memory(uint64_t(1) << 60, "an absurd model"); });
  EXPECT_CONTAINS(msg, "an absurd model needs");
  EXPECT_CONTAINS(msg, "1073741824.00 GiB");  // 2^60 bytes
  EXPECT_CONTAINS(msg, "GiB are available");
  EXPECT_NO_THROW(check_memory(1 << 20, "one MiB"));
}

TEST(WeightsMemory, WeightBytesOfChatGLM3_6b) {
  ModelConfig c = ModelConfig::preset("chatglm3-6b");
  EXPECT_EQ(weight_bytes(c, DType::F32), 4ull * 6'243'584'000);
  // Matrices in 2 bytes, the 28·(4096 + 4096 + 4608) + 4096 = 362,496 norm/bias values in fp32.
  EXPECT_EQ(weight_bytes(c, DType::BF16), 2ull * (6'243'584'000 - 362'496) + 4ull * 362'496);
  EXPECT_EQ(weight_bytes(c, DType::F16), weight_bytes(c, DType::BF16));
}

TEST(WeightsMemory, RandomChatGLM3_6bInFp32IsRefusedWhenItCannotFit) {
  ModelConfig c = ModelConfig::preset("chatglm3-6b");
  const uint64_t need = weight_bytes(c, DType::F32);  // 24.97 GB = 23.26 GiB
  const uint64_t avail = available_memory_bytes();
  if (avail < need) {
    std::string msg = test::error_of([] { load_model("random:chatglm3-6b", "fp32"); });
    EXPECT_CONTAINS(msg, "random:chatglm3-6b");
    EXPECT_CONTAINS(msg, "needs 23.26 GiB");
    EXPECT_CONTAINS(msg, "GiB are available");
  } else {
    // This machine could hold it: the check must let it through (loading it here would take minutes).
    EXPECT_NO_THROW(check_memory(need, "random:chatglm3-6b in fp32"));
  }
}

TEST(WeightsMemory, RandomTinyIsReproducible) {
  Model a = load_model("random:tiny", "fp32", 7), b = load_model("random:tiny", "fp32", 7);
  Model c = load_model("random:tiny", "fp32", 8);
  const Matrix &x = a.weights().layers[1].qkv, &y = b.weights().layers[1].qkv, &z = c.weights().layers[1].qkv;
  EXPECT_EQ(0, std::memcmp(x.data, y.data, x.nbytes()));
  EXPECT_NE(0, std::memcmp(x.data, z.data, x.nbytes()));
}

}  // namespace
}  // namespace glmlab
