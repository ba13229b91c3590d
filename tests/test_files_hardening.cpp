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

#include "lab/parity.h"
#include "model/adapters.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/loader.h"
#include "model/merge.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "ops/ops.h"
#include "serve/scheduler.h"
#include "test_util.h"
#include "train_test_data.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

using test::train_golden_path;

using test::copy_adapter;

using test::slurp;

namespace fs = std::filesystem;
using nlohmann::json;

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

// ------------------------------------------------------------------ 1. safetensors layout rules

TEST(FilesSafetensors, DataBlockMustBeCoveredExactly) {
  auto dir = test::temp_dir("files_coverage");
  // A hole between two tensors.
  std::string p = write_raw(dir / "hole.safetensors", "{" + f32_entry("a", 2, 0) + ", " + f32_entry("b", 2, 12) + "}",
                            std::string(20, '\0'));
  std::string e = open_error(p);
  EXPECT_CONTAINS(e, p);
  EXPECT_CONTAINS(e, "\"b\" starts at byte 12");
  EXPECT_CONTAINS(e, "\"a\" ends at byte 8");
  // The first tensor not at 0.
  p = write_raw(dir / "start.safetensors", "{" + f32_entry("a", 2, 4) + "}", std::string(12, '\0'));
  EXPECT_CONTAINS(open_error(p), "\"a\" starts at byte 4");
  // Bytes after the last tensor.
  p = write_raw(dir / "tail.safetensors", "{" + f32_entry("a", 2, 0) + "}", std::string(12, '\0'));
  e = open_error(p);
  EXPECT_CONTAINS(e, p);
  EXPECT_CONTAINS(e, "4 bytes after the last tensor");
  // An empty tensor inside another one is an overlap for the reference library too.
  p = write_raw(dir / "inside.safetensors",
                R"({"e": {"dtype": "I8", "shape": [0], "data_offsets": [4, 4]}, )" + f32_entry("x", 4, 0) + "}",
                std::string(16, '\0'));
  EXPECT_CONTAINS(open_error(p), "\"e\"");
  // An empty file with an empty header is fine, as are empty tensors at the end.
  p = write_raw(dir / "empty.safetensors", "{}", "");
  EXPECT_EQ(open_error(p), "<no Error thrown>");
  p = write_raw(dir / "ok.safetensors",
                "{" + f32_entry("x", 4, 0) + R"(, "e": {"dtype": "I8", "shape": [0], "data_offsets": [16, 16]}})",
                std::string(16, '\0'));
  EXPECT_EQ(open_error(p), "<no Error thrown>");
}

TEST(FilesSafetensors, HeaderLengthOneByteShortIsAnError) {
  auto dir = test::temp_dir("files_short_header");
  std::string header = "{" + f32_entry("a", 2, 0) + "}   ";  // padded with spaces, as writers do
  float v[2] = {1.5f, -2.f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  std::string p = write_raw(dir / "short.safetensors", header, data, int64_t(header.size()) - 1);
  std::string e = open_error(p);
  EXPECT_CONTAINS(e, p);
  EXPECT_CONTAINS(e, "1 bytes after the last tensor");
}

TEST(FilesSafetensors, DuplicateNamesAreErrors) {
  auto dir = test::temp_dir("files_duplicates");
  std::string p = write_raw(dir / "dup.safetensors", "{" + f32_entry("a", 2, 0) + ", " + f32_entry("a", 2, 8) + "}",
                            std::string(16, '\0'));
  std::string e = open_error(p);
  EXPECT_CONTAINS(e, p);
  EXPECT_CONTAINS(e, "duplicate key \"a\"");
  p = write_raw(dir / "dupfield.safetensors",
                R"({"a": {"dtype": "F32", "dtype": "F16", "shape": [2], "data_offsets": [0, 8]}})",
                std::string(8, '\0'));
  EXPECT_CONTAINS(open_error(p), "duplicate key \"dtype\"");
}

TEST(FilesSafetensors, MetadataMustBeStringToString) {
  auto dir = test::temp_dir("files_metadata");
  std::string p = write_raw(dir / "m.safetensors", R"({"__metadata__": {"k": {"nested": "x"}}})", "");
  std::string e = open_error(p);
  EXPECT_CONTAINS(e, "__metadata__");
  EXPECT_CONTAINS(e, "\"k\"");
}

TEST(FilesSafetensors, MisalignedDataIsReadCorrectly) {
  auto dir = test::temp_dir("files_misaligned");
  const float f[3] = {1.5f, -2.25f, 3.0f};
  const uint16_t h[3] = {f32_to_f16(0.5f), f32_to_f16(-7.f), f32_to_f16(1024.f)};
  const uint16_t b[3] = {f32_to_bf16(2.f), f32_to_bf16(-0.125f), f32_to_bf16(256.f)};
  // h at [0,6], then f at [6,18] (not 4-aligned even with an aligned block), then b at [18,24].
  std::string header = R"({"h": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]}, )"
                       R"("f": {"dtype": "F32", "shape": [3], "data_offsets": [6, 18]}, )"
                       R"("b": {"dtype": "BF16", "shape": [3], "data_offsets": [18, 24]}})";
  std::string data = std::string(reinterpret_cast<const char*>(h), 6) + std::string(reinterpret_cast<const char*>(f), 12) +
                     std::string(reinterpret_cast<const char*>(b), 6);
  for (int pad = 0; pad < 4; ++pad) {  // header lengths of every remainder mod 4
    SCOPED_TRACE(pad);
    std::string p = write_raw(dir / fmt::format("m{}.safetensors", pad), header + std::string(size_t(pad), ' '), data);
    SafetensorsFile file(p);
    const TensorInfo& tf = file.tensors().at("f");
    const TensorInfo& th = file.tensors().at("h");
    const TensorInfo& tb = file.tensors().at("b");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tf.data) % alignof(float), 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(th.data) % alignof(uint16_t), 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tb.data) % alignof(uint16_t), 0u);
    for (int i = 0; i < 3; ++i) {
      float x;
      std::memcpy(&x, tf.data + 4 * i, 4);
      EXPECT_EQ(x, f[i]);
      uint16_t y;
      std::memcpy(&y, th.data + 2 * i, 2);
      EXPECT_EQ(y, h[i]);
      std::memcpy(&y, tb.data + 2 * i, 2);
      EXPECT_EQ(y, b[i]);
    }
  }
}

TEST(FilesSafetensors, MisalignedCheckpointLoadsTheSameWeights) {
  // tiny-f32 with one more space of header padding: every tensor of the data block is misaligned.
  auto dir = test::temp_dir("files_misaligned_ckpt");
  std::string raw = slurp(test::golden_path("tiny-f32/model.safetensors"));
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  raw.insert(8 + n, " ");
  n += 1;
  std::memcpy(raw.data(), &n, 8);
  spit(dir / "model.safetensors", raw);
  fs::copy_file(test::golden_path("tiny-f32/config.json"), dir / "config.json");
  Model a = load_model(test::golden_path("tiny-f32"), "fp32");
  Model b = load_model(dir.string(), "fp32");
  const Matrix& ma = a.weights().layers[1].qkv;
  const Matrix& mb = b.weights().layers[1].qkv;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(mb.data) % alignof(float), 0u);
  for (int64_t r = 0; r < ma.rows; r += 7)
    for (int64_t c = 0; c < ma.cols; c += 5) ASSERT_EQ(ma.at(r, c), mb.at(r, c));
}

// ------------------------------------------------------------------ 2. deeply nested / overflowing JSON

TEST(FilesJson, DeeplyNestedJsonIsAClearError) {
  auto dir = test::temp_dir("files_deep");
  const std::string d = deep(100000);
  std::string p = write_raw(dir / "deep.safetensors", R"({"__metadata__": )" + d + "}", "");
  std::string e = open_error(p);
  EXPECT_CONTAINS(e, p);
  EXPECT_CONTAINS(e, "nested deeper than");

  spit(dir / "config.json", R"({"model_type": "chatglm", "num_layers": )" + d + "}");
  e = test::error_of([&] { ModelConfig::from_file((dir / "config.json").string()); });
  EXPECT_CONTAINS(e, (dir / "config.json").string());
  EXPECT_CONTAINS(e, "nested deeper than");

  spit(dir / "adapter_config.json", R"({"peft_type": "LORA", "r": )" + d + "}");
  e = test::error_of([&] { read_adapter_config(dir.string()); });
  EXPECT_CONTAINS(e, "adapter_config.json");
  EXPECT_CONTAINS(e, "nested deeper than");

  spit(dir / "model.safetensors.index.json", R"({"weight_map": {"a": )" + d + "}}");
  e = test::error_of([&] { SafetensorsSet::open(dir.string()); });
  EXPECT_CONTAINS(e, "model.safetensors.index.json");
  EXPECT_CONTAINS(e, "nested deeper than");
}

TEST(FilesJson, OverflowingNumbersNameTheFile) {
  auto dir = test::temp_dir("files_overflow");
  json cfg = json::parse(slurp(test::golden_path("tiny-f32/config.json")));
  std::string text = cfg.dump();
  text.insert(1, R"("rope_ratio": 1e400, )");
  spit(dir / "config.json", text);
  std::string e = test::error_of([&] { ModelConfig::from_file((dir / "config.json").string()); });
  EXPECT_CONTAINS(e, (dir / "config.json").string());
  EXPECT_CONTAINS(e, "1e400");
}

TEST(FilesJson, ErrorMessagesDoNotDumpHugeValues) {
  auto dir = test::temp_dir("files_long_value");
  spit(dir / "config.json", R"({"model_type": "chatglm", "num_layers": ")" + std::string(100000, 'x') + "\"}");
  std::string e = test::error_of([&] { ModelConfig::from_file((dir / "config.json").string()); });
  EXPECT_CONTAINS(e, "num_layers");
  EXPECT_LT(e.size(), 1000u) << e.substr(0, 300);
}

// ------------------------------------------------------------------ 3. config.json sizes and values

std::string config_error(const std::function<void(json&)>& edit) {
  json cfg = json::parse(slurp(test::golden_path("tiny-f32/config.json")));
  edit(cfg);
  return test::error_of([&] { ModelConfig::from_json(cfg, "cfg"); });
}

TEST(FilesConfig, HugeLayerCountFailsFast) {
  auto dir = test::temp_dir("files_huge_layers");
  fs::copy_file(test::golden_path("tiny-f32/model.safetensors"), dir / "model.safetensors");
  json cfg = json::parse(slurp(test::golden_path("tiny-f32/config.json")));
  cfg["num_layers"] = 1000000000;
  spit(dir / "config.json", cfg.dump());
  auto t0 = std::chrono::steady_clock::now();
  std::string e = test::error_of([&] { load_model(dir.string(), "fp32"); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_CONTAINS(e, "num_layers");
  EXPECT_LT(s, 2.0);
}

TEST(FilesConfig, ProductsMustNotOverflow) {
  std::string e = config_error([](json& j) {
    j["num_attention_heads"] = 4194304;  // × kv_channels 1024 = 2^32
    j["kv_channels"] = 1024;
  });
  EXPECT_CONTAINS(e, "too large");
  e = config_error([](json& j) {
    j["hidden_size"] = 2000000000;
    j["ffn_hidden_size"] = 2000000000;
  });
  EXPECT_CONTAINS(e, "too large");
}

TEST(FilesConfig, FloatsMustBeFiniteAsFloat) {
  EXPECT_CONTAINS(config_error([](json& j) { j["rope_ratio"] = 1e300; }), "rope_ratio");
  EXPECT_CONTAINS(config_error([](json& j) { j["layernorm_epsilon"] = 1e300; }), "layernorm_epsilon");
  EXPECT_CONTAINS(config_error([](json& j) { j["layernorm_epsilon"] = 0.5; }), "layernorm_epsilon");
  EXPECT_CONTAINS(config_error([](json& j) { j["rope_ratio"] = "2"; }), "rope_ratio");
}

TEST(FilesConfig, TokenIdsInsideTheVocabulary) {
  EXPECT_CONTAINS(config_error([](json& j) { j["eos_token_id"] = 512; }), "eos_token_id");
  EXPECT_CONTAINS(config_error([](json& j) { j["eos_token_id"] = 8.5; }), "eos_token_id");
  EXPECT_CONTAINS(config_error([](json& j) { j["eos_token_id"] = -1; }), "eos_token_id");
  EXPECT_CONTAINS(config_error([](json& j) { j["pad_token_id"] = 100000; }), "pad_token_id");
  EXPECT_CONTAINS(config_error([](json& j) { j["num_layers"] = 8.5; }), "num_layers");
  EXPECT_CONTAINS(config_error([](json& j) { j["num_layers"] = 4294967298ll; }), "num_layers");
  EXPECT_EQ(config_error([](json& j) { j["eos_token_id"] = json::array({2, 5}); }), "<no Error thrown>");
}

// ------------------------------------------------------------------ 4. shard paths

TEST(FilesIndex, ShardOutsideTheFolderIsRefused) {
  auto root = test::temp_dir("files_index_escape");
  fs::create_directories(root / "ckpt");
  std::vector<float> v = {1, 2};
  write_safetensors((root / "outside.safetensors").string(), {{"a", DType::F32, {2}, v.data(), 8}});
  spit(root / "ckpt" / "model.safetensors.index.json", R"({"weight_map": {"a": "../outside.safetensors"}})");
  std::string e = test::error_of([&] { SafetensorsSet::open((root / "ckpt").string()); });
  EXPECT_CONTAINS(e, "\"a\"");
  EXPECT_CONTAINS(e, "../outside.safetensors");
  EXPECT_CONTAINS(e, "outside");
  spit(root / "ckpt" / "model.safetensors.index.json",
       R"({"weight_map": {"a": ")" + (root / "outside.safetensors").string() + "\"}}");
  e = test::error_of([&] { SafetensorsSet::open((root / "ckpt").string()); });
  EXPECT_CONTAINS(e, "\"a\"");
  EXPECT_CONTAINS(e, "absolute");
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

// ------------------------------------------------------------------ 6. adapter_config.json values

void set_field(const fs::path& dir, const std::string& key, const std::string& raw_value) {
  json j = json::parse(slurp(dir / "adapter_config.json"));
  j.erase(key);
  std::string s = j.dump();
  s.insert(1, "\"" + key + "\": " + raw_value + ", ");
  spit(dir / "adapter_config.json", s);
}

TEST(FilesAdapter, RankAndAlphaMustBeExact) {
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  for (const char* r : {"8.5", "4294967304", "-3", "\"8\""}) {
    auto d = copy_adapter("lora", "files_rank");
    set_field(d, "r", r);
    SCOPED_TRACE(r);
    EXPECT_CONTAINS(test::error_of([&] { load_adapter(d.string(), c); }), "\"r\"");
  }
  auto d = copy_adapter("lora", "files_alpha");
  set_field(d, "lora_alpha", "1e39");
  EXPECT_CONTAINS(test::error_of([&] { load_adapter(d.string(), c); }), "lora_alpha");
  d = copy_adapter("vera", "files_d_initial");
  set_field(d, "d_initial", "1e39");
  EXPECT_CONTAINS(test::error_of([&] { load_adapter(d.string(), c); }), "d_initial");
}

TEST(FilesAdapter, AbsurdRankFailsBeforeAllocating) {
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  auto d = copy_adapter("lora", "files_rank_huge");
  set_field(d, "r", "2147483647");
  std::string e = test::error_of([&] { load_adapter(d.string(), c); });
  EXPECT_CONTAINS(e, "memory");
}

// ------------------------------------------------------------------ 7. non-finite weights

TEST(FilesFinite, NonFiniteBaseWeightsNameTheTensor) {
  const std::string qkv = "transformer.encoder.layers.1.self_attention.query_key_value.weight";
  const std::string norm = "transformer.encoder.layers.0.input_layernorm.weight";
  struct Case {
    const char* src;
    std::string tensor;
    float value;
    const char* dtype;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const Case& k : {Case{"tiny-f32", qkv, nan, "fp32"}, Case{"tiny-f32", qkv, inf, "bf16"},
                        Case{"tiny-f32", norm, nan, "fp32"}, Case{"tiny-f16", qkv, -inf, "fp16"},
                        Case{"tiny-bf16", qkv, nan, "bf16"}, Case{"tiny-bf16", qkv, inf, "fp32"}}) {
    SCOPED_TRACE(fmt::format("{} {} {} as {}", k.src, k.tensor, k.value, k.dtype));
    auto dir = copy_checkpoint(test::golden_path(k.src), "files_nonfinite", [&](auto& n, DType dt, auto& b) {
      if (n == k.tensor) put_value(dt, b, 37, k.value);
    });
    std::string e = test::error_of([&] { load_model(dir.string(), k.dtype); });
    EXPECT_CONTAINS(e, k.tensor);
    EXPECT_CONTAINS(e, "not finite");
  }
}

TEST(FilesFinite, NonFiniteAdapterTensorsNameTheTensor) {
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  for (const char* m : {"lora", "vera"}) {
    auto d = copy_adapter(m, std::string("files_nonfinite_") + m);
    SafetensorsFile f((d / "adapter_model.safetensors").string());
    std::map<std::string, std::vector<uint8_t>> bytes;
    std::vector<TensorToWrite> out;
    std::string victim;
    for (const auto& [n, t] : f.tensors()) {
      auto& b = bytes[n];
      b.assign(t.data, t.data + t.nbytes);
      if (victim.empty() && (n.find("lora_B") != std::string::npos || n.find("vera_lambda_d") != std::string::npos)) {
        victim = n;
        put_value(t.dtype, b, 1, std::numeric_limits<float>::quiet_NaN());
      }
      out.push_back({n, t.dtype, t.shape, b.data(), b.size()});
    }
    write_safetensors((d / "adapter_model.safetensors").string(), out);
    std::string e = test::error_of([&] { load_adapter(d.string(), c); });
    EXPECT_CONTAINS(e, victim);
    EXPECT_CONTAINS(e, "not finite");
  }
}

// Finite weights that overflow in use (3e38 in the final norm: the logits become inf) must not be served
// as a reply of id 5 repeated: generation stops with an error, greedy and sampled.
TEST(FilesFinite, LogitsThatOverflowAreAnErrorNotAReply) {
  auto dir = copy_checkpoint(test::golden_path("tiny-f32"), "files_overflow", [&](auto& n, DType dt, auto& b) {
    if (n == "transformer.encoder.final_layernorm.weight")
      for (size_t i = 0; i < b.size() / 4; ++i) put_value(dt, b, i, 3e38f);
  });
  Model m = load_model(dir.string(), "fp32");  // every weight is finite: it loads
  auto ops = make_ops(Backend::Cpu);
  for (bool greedy : {true, false}) {
    SCOPED_TRACE(greedy ? "greedy" : "sampled");
    GenerateOptions o;
    o.max_new_tokens = 3;
    o.sampling.greedy = greedy;
    std::string e = test::error_of([&] { generate(m, *ops, {{1, 2, 3}}, o); });
    EXPECT_CONTAINS(e, "logits are not finite");
  }
  {  // the server's scheduler: each request ends with an error, greedy (its id would be 5) and sampled
    serve::Scheduler sched(m, *ops, serve::SchedulerOptions{2, 8, 16, 32, KvDtype::F32});
    std::vector<std::pair<serve::FinishReason, std::string>> ends(2);
    std::vector<int> tokens(2, 0);
    for (int k = 0; k < 2; ++k) {
      serve::Request q;
      q.prompt = {1, 2, 3};
      q.max_tokens = 3;
      q.sampling.greedy = k == 0;
      if (k == 1) q.sampling.temperature = 0.8f;
      serve::SequenceEvents ev;
      ev.on_token = [&tokens, k](int32_t) { return ++tokens[size_t(k)], true; };
      ev.on_finish = [&ends, k](serve::FinishReason r, const std::string& err) { ends[size_t(k)] = {r, err}; };
      ASSERT_TRUE(sched.submit(std::move(q), std::move(ev)));
    }
    sched.run_until_idle();
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(ends[size_t(k)].first, serve::FinishReason::Error) << k;
      EXPECT_CONTAINS(ends[size_t(k)].second, "logits are not finite");
      EXPECT_EQ(tokens[size_t(k)], 0) << k;
    }
  }
  auto r = test::run_cli("generate --tokenizer bytes --ids '1 2 3' -n 3 --model " + dir.string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "logits are not finite");
}

TEST(FilesFinite, MergeRefusesANonFiniteResult) {
  // lora_B of 3e38 (finite) makes W + s·B·A overflow to inf.
  auto d = copy_adapter("lora", "files_merge_overflow");
  SafetensorsFile f((d / "adapter_model.safetensors").string());
  std::map<std::string, std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> out;
  for (const auto& [n, t] : f.tensors()) {
    auto& b = bytes[n];
    b.assign(t.data, t.data + t.nbytes);
    if (n.find("lora_B") != std::string::npos)
      for (size_t i = 0; i < size_t(t.numel()); ++i) put_value(t.dtype, b, i, 3e38f);
    if (n.find("lora_A") != std::string::npos)
      for (size_t i = 0; i < size_t(t.numel()); ++i) put_value(t.dtype, b, i, 1.0f);
    out.push_back({n, t.dtype, t.shape, b.data(), b.size()});
  }
  write_safetensors((d / "adapter_model.safetensors").string(), out);
  auto o = test::temp_dir("files_merge_overflow_out");
  std::string e = test::error_of([&] { merge_checkpoint(train_golden_path("tiny-f32"), d.string(), o.string()); });
  EXPECT_CONTAINS(e, "not finite");
  EXPECT_FALSE(fs::exists(o / "model.safetensors"));
}

// ------------------------------------------------------------------ 8. merge over a sharded folder

TEST(FilesMerge, OutputFolderWithAShardedCheckpointIsReplaced) {
  auto out = test::temp_dir("files_merge_stale");
  for (const auto& e : fs::directory_iterator(test::golden_path("tiny-sharded")))
    fs::copy_file(e.path(), out / e.path().filename());
  spit(out / "notes.txt", "mine");
  merge_checkpoint(train_golden_path("tiny-f32"), train_golden_path("lora"), out.string());
  EXPECT_FALSE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out / "model-00001-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(out / "model-00002-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(fs::exists(out / "notes.txt")) << "files that are no checkpoint are left alone";
  // The merged weights are what loads.
  auto ref = test::temp_dir("files_merge_fresh");
  merge_checkpoint(train_golden_path("tiny-f32"), train_golden_path("lora"), ref.string());
  Model a = load_model(out.string(), "fp32"), b = load_model(ref.string(), "fp32");
  const Matrix &ma = a.weights().layers[0].dense, &mb = b.weights().layers[0].dense;
  for (int64_t r = 0; r < ma.rows; ++r)
    for (int64_t c = 0; c < ma.cols; ++c) ASSERT_EQ(ma.at(r, c), mb.at(r, c));
}

TEST(FilesMerge, ShardsNoIndexListsGoByTheirNameOnly) {
  // Without an index, a file goes when its name is a shard's (model-<digits>-of-<digits>.safetensors) and
  // only then: near misses are someone's files.
  auto out = test::temp_dir("files_merge_shard_names");
  const std::vector<std::string> shards = {"model-00001-of-00002.safetensors", "model-3-of-3.safetensors"};
  const std::vector<std::string> kept = {"model-1-of-x.safetensors",         "model-00001-of-00002.safetensors.bak",
                                         "xmodel-00001-of-00002.safetensors", "model--of-2.safetensors",
                                         "model-00001-of-.safetensors",       "model-00001-00002.safetensors"};
  for (const auto& n : shards) spit(out / n, "old shard");
  for (const auto& n : kept) spit(out / n, "mine");
  merge_checkpoint(train_golden_path("tiny-f32"), train_golden_path("lora"), out.string());
  for (const auto& n : shards) EXPECT_FALSE(fs::exists(out / n)) << n;
  for (const auto& n : kept) EXPECT_TRUE(fs::exists(out / n)) << n;
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
}

// ------------------------------------------------------------------ 9. found while fuzzing (fuzz/)
// The crashing inputs are also in fuzz/corpus/<target>/regress_*.

TEST(FilesFuzzRegressions, ShardNameTooLongIsAnErrorNotAnException) {
  // fuzz_st_index: a weight_map shard name longer than NAME_MAX made std::filesystem throw
  // filesystem_error (not glmlab::Error) — "internal error" in the CLI, std::terminate in the target.
  auto root = test::temp_dir("files_index_long");
  fs::create_directories(root / "ckpt");
  const std::string shard = std::string(300, 'd') + ".safetensors";
  spit(root / "ckpt" / "model.safetensors.index.json", R"({"weight_map": {"a": ")" + shard + R"("}})");
  std::string e = test::error_of([&] { SafetensorsSet::open((root / "ckpt").string()); });
  EXPECT_CONTAINS(e, "File name too long");
  EXPECT_CONTAINS(e, std::string(300, 'd'));
  // A whole checkpoint path that is too long: the loader names it too.
  e = test::error_of([&] { load_model((root / std::string(300, 'x')).string()); });
  EXPECT_CONTAINS(e, "File name too long");
}

TEST(FilesFuzzRegressions, IntMinHiddenSizeOverMinusOneHeads) {
  // The default kv_channels divided INT_MIN by -1 (UBSan: not representable; SIGFPE on x86).
  std::string e = config_error([](json& j) {
    j["hidden_size"] = std::numeric_limits<int>::min();
    j["num_attention_heads"] = -1;
    j.erase("kv_channels");
  });
  EXPECT_CONTAINS(e, "must be positive");
}

TEST(FilesFuzzRegressions, QuantizationNamesMustBeStrings) {
  // nlohmann's value() threw its own type_error (uncaught, std::terminate) for a non-string.
  EXPECT_CONTAINS(config_error([](json& j) { j["glmlab_quantization"] = {{"bits", 4}, {"format", 1}}; }),
                  "glmlab_quantization.format must be a string");
  for (std::string key : {"quant_method", "data_type", "checkpoint_format", "packing_format"})
    EXPECT_CONTAINS(config_error([&](json& j) { j["quantization_config"] = {{"bits", 4}, {key, json::array()}}; }),
                    "quantization_config." + key + " must be a string");
}

TEST(FilesFuzzRegressions, ShapeProductsStayInsideInt64) {
  // No element, but 2^32 × (2^31 + 1) overflowed int64 in TensorInfo::numel() before the 0.
  auto dir = test::temp_dir("files_numel_overflow");
  std::string p = write_raw(dir / "a.safetensors",
                            R"({"x": {"dtype": "F32", "shape": [4294967296, 2147483649, 0], "data_offsets": [0, 0]}})", "");
  EXPECT_CONTAINS(open_error(p), "too large");
}

TEST(FilesFuzzRegressions, AdapterRankBeyondTheFileFailsBeforeAllocating) {
  // "r": 81426666 beside a small adapter_model.safetensors allocated 2.6 GB (fits memory, so no memory
  // error) before the first tensor was compared; now the values the file holds bound the allocation.
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  auto d = copy_adapter("lora", "files_rank_beyond_file");
  set_field(d, "r", "65536");  // 33 M values (268 MB with gradients) beside a file of 11776
  EXPECT_CONTAINS(test::error_of([&] { load_adapter(d.string(), c); }), "far more than");
}

TEST(FilesFuzzRegressions, GoldenFileNeedsTokensAndInt32Ids) {
  auto dir = test::temp_dir("files_golden_regressions");
  const std::string path = (dir / "golden.safetensors").string();
  Model m = load_model(test::golden_path("tiny-f32"), "fp32");
  auto ops = make_ops(Backend::CpuRef);
  // input_ids [1, 0] with a decode step: run_parity read position_ids[-1].
  const int64_t three = 3;
  write_safetensors(path, {{"input_ids", DType::I64, {1, 0}, nullptr, 0},
                           {"attention_mask", DType::I64, {1, 0}, nullptr, 0},
                           {"position_ids", DType::I64, {1, 0}, nullptr, 0},
                           {"step1_ids", DType::I64, {1}, &three, 8}});
  EXPECT_CONTAINS(test::error_of([&] { golden_shape(path); }), "at least one sequence of at least one token");
  EXPECT_CONTAINS(test::error_of([&] { run_parity(m, *ops, path, {}); }), "at least one sequence of at least one token");
  // 2^32 + 3 was silently token 3.
  const int64_t id = (int64_t(1) << 32) + 3, one = 1, zero = 0;
  write_safetensors(path, {{"input_ids", DType::I64, {1, 1}, &id, 8}, {"attention_mask", DType::I64, {1, 1}, &one, 8},
                           {"position_ids", DType::I64, {1, 1}, &zero, 8}});
  EXPECT_CONTAINS(test::error_of([&] { run_parity(m, *ops, path, {}); }), "is outside [0, 2147483647]");
}

}  // namespace
}  // namespace glmlab
