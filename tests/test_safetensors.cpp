// safetensors: round trips, compatibility with Python's safetensors, every header corruption giving a
// clear Error, sharded checkpoint folders, and atomic writes that leave nothing behind on failure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "test_util.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace glmlab;

namespace {

using test::expect_error;
using test::run_shell;
using test::slurp;

// The sample tensors: exactly representable values, so sums printed by Python are exact.
struct Sample {
  std::vector<float> f32{0.5f, -1.25f, 2.f, 3.5f, 4.f, -0.75f};  // sum 8
  std::vector<uint16_t> f16, bf16;
  std::vector<int8_t> i8{-128, -1, 0, 1, 127};                     // sum -1
  std::vector<int64_t> i64{int64_t(1) << 40, -5, 7};                // sum 1099511627778
  float scalar = 42.f;
  Sample() {
    for (float v : {1.f, 2.5f, -0.5f, 1024.f}) f16.push_back(f32_to_f16(v));  // sum 1027
    for (float v : {1.f, -2.f, 3.5f, 256.f}) bf16.push_back(f32_to_bf16(v));  // sum 258.5
  }
  std::vector<TensorToWrite> tensors() const {
    return {{"e.i64", DType::I64, {3}, i64.data(), i64.size() * 8},
            {"a.f32", DType::F32, {2, 3}, f32.data(), f32.size() * 4},
            {"c.bf16", DType::BF16, {2, 2}, bf16.data(), bf16.size() * 2},
            {"b.f16", DType::F16, {4}, f16.data(), f16.size() * 2},
            {"d.i8", DType::I8, {5}, i8.data(), i8.size()},
            {"f.scalar", DType::F32, {}, &scalar, 4},
            {"g.empty", DType::F32, {0, 3}, nullptr, 0}};
  }
};

// Writes [8-byte length][header][data] by hand, for headers our writer would never produce.
std::string write_raw_filled(const fs::path& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << std::string(data_bytes, '\x01');
  return path.string();
}

void write_index(const fs::path& dir, const std::map<std::string, std::string>& weight_map) {
  std::string j = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
  for (const auto& [k, v] : weight_map) j += fmt::format("{}\"{}\": \"{}\"", j.back() == '{' ? "" : ", ", k, v);
  std::ofstream(dir / "model.safetensors.index.json") << j << "}}";
}

}  // namespace

TEST(Safetensors, RoundTripExactBytesShapesAndMetadata) {
  auto dir = test::temp_dir("safetensors_roundtrip");
  Sample s;
  std::string path = (dir / "t.safetensors").string();
  write_safetensors(path, s.tensors(), {{"format", "pt"}, {"note", "glmlab test"}});

  std::string raw = slurp(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  EXPECT_EQ(raw[8], '{');

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "glmlab test"}}));
  ASSERT_EQ(f.tensors().size(), 7u);
  for (const auto& w : s.tensors()) {
    const TensorInfo& t = f.tensors().at(w.name);
    EXPECT_EQ(t.dtype, w.dtype) << w.name;
    EXPECT_EQ(t.shape, w.shape) << w.name;
    EXPECT_EQ(t.nbytes, w.nbytes) << w.name;
    EXPECT_EQ(t.file, path);
    if (w.nbytes) {
      EXPECT_EQ(std::memcmp(t.data, w.data, w.nbytes), 0) << w.name;
    }
  }
  // Data laid out in name order, contiguous from the block start to the end of the file (the header's
  // offsets: TensorInfo::data of a tensor the layout leaves misaligned, e.g. e.i64 after the 5 bytes
  // of d.i8, points to an aligned copy).
  const auto header = nlohmann::json::parse(raw.substr(8, n));
  uint64_t next = 0;
  for (const auto& [name, t] : f.tensors()) {
    EXPECT_EQ(header[name]["data_offsets"][0].get<uint64_t>(), next) << name;
    next += t.nbytes;
    EXPECT_EQ(header[name]["data_offsets"][1].get<uint64_t>(), next) << name;
    if (t.nbytes) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << name;
  }
  EXPECT_EQ(next, raw.size() - 8 - n);
  EXPECT_EQ(f.tensors().at("a.f32").shape_str(), "[2, 3]");
  EXPECT_EQ(f.tensors().at("a.f32").numel(), 6);
  EXPECT_EQ(f.tensors().at("f.scalar").numel(), 1);
  EXPECT_EQ(f.tensors().at("f.scalar").shape_str(), "[]");
  EXPECT_EQ(f.tensors().at("g.empty").numel(), 0);
  EXPECT_FLOAT_EQ(bf16_to_f32(reinterpret_cast<const uint16_t*>(f.tensors().at("c.bf16").data)[3]), 256.f);

  auto set = SafetensorsSet::open(path);  // a single file works as a set
  EXPECT_EQ(set.names().size(), 7u);
  EXPECT_EQ(set.total_bytes(), 24u + 8 + 8 + 5 + 24 + 4);
  EXPECT_EQ(std::memcmp(set.get("d.i8").data, s.i8.data(), 5), 0);
  EXPECT_EQ(set.find("nope"), nullptr);

  write_safetensors((dir / "nometa.safetensors").string(), s.tensors());  // no __metadata__ when empty
  EXPECT_EQ(slurp(dir / "nometa.safetensors").find("__metadata__"), std::string::npos);
  EXPECT_TRUE(SafetensorsFile((dir / "nometa.safetensors").string()).metadata().empty());
}

TEST(Safetensors, ReadableByPythonSafetensors) {
  fs::path py = GLMLAB_PYTHON;  // the oracle's Python that CMake was given (-DGLMLAB_PYTHON; default .venv)
  ASSERT_TRUE(fs::exists(py)) << py << " is missing: run scripts/setup.sh";
  auto dir = test::temp_dir("safetensors_python");
  Sample s;
  std::string path = (dir / "t.safetensors").string();
  write_safetensors(path, s.tensors(), {{"format", "pt"}, {"who", "glmlab"}});
  std::ofstream(dir / "check.py") << R"(import json, sys
from safetensors import safe_open
from safetensors.torch import load_file
d = load_file(sys.argv[1])
for k in sorted(d):
    t = d[k]
    total = float(t.double().sum()) if t.is_floating_point() else int(t.sum())
    print(k, str(t.dtype), list(t.shape), total)
with safe_open(sys.argv[1], framework="pt") as f:
    print("meta", json.dumps(f.metadata(), sort_keys=True))
import torch
from safetensors.torch import save_file
save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.bfloat16),
           "ids": torch.tensor([7, -8], dtype=torch.int64)}, sys.argv[2], metadata={"from": "python"})
)";
  std::string back = (dir / "py.safetensors").string();
  auto r = run_shell(fmt::format("{} {} {} {}", py.string(), (dir / "check.py").string(), path, back));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out,
            "a.f32 torch.float32 [2, 3] 8.0\n"
            "b.f16 torch.float16 [4] 1027.0\n"
            "c.bf16 torch.bfloat16 [2, 2] 258.5\n"
            "d.i8 torch.int8 [5] -1\n"
            "e.i64 torch.int64 [3] 1099511627778\n"
            "f.scalar torch.float32 [] 42.0\n"
            "g.empty torch.float32 [0, 3] 0.0\n"
            "meta {\"format\": \"pt\", \"who\": \"glmlab\"}\n");

  SafetensorsFile f(back);  // and the other way round: a file written by Python, read by us
  EXPECT_EQ(f.metadata().at("from"), "python");
  const TensorInfo& w = f.tensors().at("w");
  EXPECT_EQ(w.dtype, DType::BF16);
  EXPECT_EQ(w.shape_str(), "[2, 3]");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(bf16_to_f32(reinterpret_cast<const uint16_t*>(w.data)[i]), float(i));
  const TensorInfo& ids = f.tensors().at("ids");
  EXPECT_EQ(ids.dtype, DType::I64);
  EXPECT_EQ(reinterpret_cast<const int64_t*>(ids.data)[1], -8);
}

TEST(Safetensors, TruncatedOrLyingFilesGiveClearErrors) {
  auto dir = test::temp_dir("safetensors_truncated");
  Sample s;
  std::string good = (dir / "good.safetensors").string();
  write_safetensors(good, s.tensors());
  std::string raw = slurp(good);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  auto variant = [&](const std::string& name, std::string bytes) {
    std::ofstream((dir / name).string(), std::ios::binary) << bytes;
    return (dir / name).string();
  };

  std::string p = variant("tiny.safetensors", raw.substr(0, 5));
  expect_error([&] { SafetensorsFile f(p); }, {p, "only 5 bytes"});

  // Cut into the data block: the last tensor in the file ("f.scalar") now ends past it.
  p = variant("cut.safetensors", raw.substr(0, raw.size() - 2));
  expect_error([&] { SafetensorsFile f(p); },
               {p, fmt::format("header says tensor \"f.scalar\" ends at byte {} but the data block has only {} bytes",
                               raw.size() - 8 - n, raw.size() - 8 - n - 2)});

  p = variant("cut_header.safetensors", raw.substr(0, 8 + n / 2));
  expect_error([&] { SafetensorsFile f(p); }, {p, fmt::format("header length {} is larger than the file", n)});

  std::string absurd = raw;
  uint64_t huge = uint64_t(1) << 40;
  std::memcpy(absurd.data(), &huge, 8);
  p = variant("absurd.safetensors", absurd);
  expect_error([&] { SafetensorsFile f(p); }, {p, "absurd", "100 MB"});

  // Patch the header in place (same length, so the layout stays valid) so that offsets lie. Layout in
  // name order: a.f32 [0,24] b.f16 [24,32] c.bf16 [32,40] d.i8 [40,45] e.i64 [45,69] f.scalar [69,73].
  auto patch = [&](const std::string& from, const std::string& to) {
    std::string out = raw;
    size_t at = out.find(from);
    EXPECT_LT(at, 8 + n) << from;
    return at < 8 + n ? out.replace(at, from.size(), to) : out;
  };
  p = variant("overlap.safetensors", patch("\"data_offsets\":[45,69]", "\"data_offsets\":[ 0,24]"));
  expect_error([&] { SafetensorsFile f(p); }, {p, "\"a.f32\"", "\"e.i64\"", "overlap"});
  p = variant("beyond.safetensors", patch("\"data_offsets\":[69,73]", "\"data_offsets\":[69,99]"));
  expect_error([&] { SafetensorsFile f(p); },
               {p, "header says tensor \"f.scalar\" ends at byte 99 but the data block has only 73 bytes"});
  p = variant("size.safetensors", patch("\"data_offsets\":[69,73]", "\"data_offsets\":[69,72]"));
  expect_error([&] { SafetensorsFile f(p); }, {p, "tensor \"f.scalar\" has 3 bytes", "shape [] of F32 needs 4 bytes"});
  p = variant("dtype.safetensors", patch("\"dtype\":\"I8\"", "\"dtype\":\"Q8\""));
  expect_error([&] { SafetensorsFile f(p); }, {p, "tensor \"d.i8\"", "unsupported safetensors dtype \"Q8\""});
}

TEST(Safetensors, BadHeadersGiveClearErrors) {
  auto dir = test::temp_dir("safetensors_badheader");
  struct Case {
    std::string header;
    size_t data;
    std::vector<std::string> expect;
  };
  std::vector<Case> cases = {
      {"{\"x\": {\"dtype\": \"F32\", ", 16, {"header is not valid JSON"}},
      {"garbage!", 16, {"header is not valid JSON"}},
      {"[1, 2]", 16, {"header is not a JSON object"}},
      {R"({"x": {"shape": [4], "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "missing \"dtype\""}},
      {R"({"x": {"dtype": "F32", "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "missing \"shape\""}},
      {R"({"x": {"dtype": "F32", "shape": [4]}})", 16, {"tensor \"x\"", "missing \"data_offsets\""}},
      {R"({"x": {"dtype": 5, "shape": [4], "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "\"dtype\" is not a string"}},
      {R"({"x": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "\"shape\" is not an array"}},
      {R"({"x": {"dtype": "F32", "shape": [4.5], "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "not an integer"}},
      {R"({"x": [1]})", 16, {"tensor \"x\"", "not a JSON object"}},
      {R"({"x": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "\"F99\""}},
      {R"({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", 16, {"tensor \"x\"", "negative dimension -4"}},
      {R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})", 16, {"tensor \"x\"", "[begin, end]"}},
      {R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0]}})", 16, {"tensor \"x\"", "[begin, end]"}},
      {R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [-4, 12]}})", 16, {"tensor \"x\"", "[begin, end]"}},
      {R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 400]}})", 16,
       {"header says tensor \"x\" ends at byte 400 but the data block has only 16 bytes"}},
      {R"({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 16,
       {"tensor \"x\" has 12 bytes", "shape [2, 2] of F32 needs 16 bytes"}},
      {R"({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 16]}})", 16,
       {"tensor \"x\" has 16 bytes", "shape [4] of BF16 needs 8 bytes"}},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 16, {"\"a\"", "\"b\"", "overlap"}},
      {R"({"__metadata__": {"k": 1}})", 0, {"__metadata__", "\"k\"", "not a string"}},
      {R"({"__metadata__": ["k"]})", 0, {"__metadata__ is not a JSON object"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string p = write_raw_filled(dir / fmt::format("case{}.safetensors", i), cases[i].header, cases[i].data);
    auto expect = cases[i].expect;
    expect.push_back(p);
    SCOPED_TRACE(cases[i].header);
    expect_error([&] { SafetensorsFile f(p); }, expect);
  }
  // Zero-size tensors may share an offset (the reference requires it to be where the previous tensor
  // ends: [4, 4] inside x would be an overlap), a header may be padded with spaces.
  std::string p = write_raw_filled(dir / "ok.safetensors",
                            R"({"e": {"dtype": "I8", "shape": [0], "data_offsets": [16, 16]},
                                "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}    )", 16);
  SafetensorsFile f(p);
  EXPECT_EQ(f.tensors().size(), 2u);
}

TEST(Safetensors, ShardedFolderWithIndex) {
  auto dir = test::temp_dir("safetensors_sharded");
  Sample s;
  auto all = s.tensors();
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), {all[0], all[1], all[2]});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), {all[3], all[4]});
  std::map<std::string, std::string> wm;
  for (int i = 0; i < 5; ++i) wm[all[i].name] = i < 3 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  write_index(dir, wm);

  auto set = SafetensorsSet::open(dir.string());
  EXPECT_EQ(set.names(), (std::vector<std::string>{"a.f32", "b.f16", "c.bf16", "d.i8", "e.i64"}));
  EXPECT_EQ(set.total_bytes(), 24u + 8 + 8 + 5 + 24);
  const TensorInfo& t = set.get("d.i8");
  EXPECT_NE(t.file.find("model-00002-of-00002"), std::string::npos);
  EXPECT_EQ(std::memcmp(t.data, s.i8.data(), 5), 0);
  EXPECT_EQ(set.get("e.i64").shape, (std::vector<int64_t>{3}));
  expect_error([&] { set.get("transformer.missing"); }, {"\"transformer.missing\"", dir.string()});

  // A plain model.safetensors folder, and a folder with neither.
  auto single = test::temp_dir("safetensors_single");
  write_safetensors((single / "model.safetensors").string(), all);
  EXPECT_EQ(SafetensorsSet::open(single.string()).names().size(), all.size());
  auto empty = test::temp_dir("safetensors_empty");
  expect_error([&] { SafetensorsSet::open(empty.string()); },
               {"no model.safetensors or model.safetensors.index.json in " + empty.string()});
  expect_error([&] { SafetensorsSet::open((empty / "nope").string()); }, {(empty / "nope").string(), "does not exist"});
}

TEST(Safetensors, ShardedIndexInconsistenciesAreErrors) {
  auto dir = test::temp_dir("safetensors_badindex");
  Sample s;
  auto all = s.tensors();
  auto by = [&](const std::string& name) { return *std::find_if(all.begin(), all.end(), [&](auto& t) { return t.name == name; }); };
  write_safetensors((dir / "s1.safetensors").string(), {by("a.f32"), by("b.f16")});
  write_safetensors((dir / "s2.safetensors").string(), {by("c.bf16")});
  std::string index = (dir / "model.safetensors.index.json").string();

  write_index(dir, {{"a.f32", "s1.safetensors"}, {"b.f16", "s1.safetensors"}, {"c.bf16", "s3.safetensors"}});
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "shard s3.safetensors is missing"});

  write_index(dir, {{"a.f32", "s1.safetensors"}, {"b.f16", "s1.safetensors"}, {"c.bf16", "s2.safetensors"},
                    {"z.extra", "s2.safetensors"}});
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "\"z.extra\"", "s2.safetensors"});

  write_index(dir, {{"a.f32", "s1.safetensors"}, {"c.bf16", "s2.safetensors"}});
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "\"b.f16\"", "does not list"});

  write_index(dir, {{"a.f32", "s1.safetensors"}, {"b.f16", "s2.safetensors"}, {"c.bf16", "s2.safetensors"}});
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "\"b.f16\"", "s1.safetensors", "s2.safetensors"});

  std::ofstream(index) << "{\"weight_map\": [";
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "not valid JSON"});
  std::ofstream(index) << "{\"metadata\": {}}";
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {index, "weight_map"});

  // The same tensor in two shards.
  write_safetensors((dir / "s2.safetensors").string(), {by("a.f32"), by("c.bf16")});
  write_index(dir, {{"a.f32", "s1.safetensors"}, {"b.f16", "s1.safetensors"}, {"c.bf16", "s2.safetensors"}});
  expect_error([&] { SafetensorsSet::open(dir.string()); }, {"\"a.f32\"", "is in both", "s1.safetensors", "s2.safetensors"});
}

TEST(Safetensors, FailedWritesLeaveNothingBehind) {
  auto dir = test::temp_dir("safetensors_atomic");
  Sample s;
  auto bad = s.tensors();
  bad[0].nbytes -= 8;  // e.i64, the last in name order: found after the header and the others are written
  std::string path = (dir / "t.safetensors").string();
  expect_error([&] { write_safetensors(path, bad); }, {path, "\"e.i64\" has 16 bytes", "needs 24 bytes"});
  EXPECT_TRUE(fs::is_empty(dir)) << "no target and no temporary file";

  // Overwriting: a failed write keeps the old file as it was.
  write_safetensors(path, s.tensors());
  std::string before = slurp(path);
  expect_error([&] { write_safetensors(path, bad); }, {path, "e.i64"});
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);

  std::string nowhere = (dir / "missing_dir" / "t.safetensors").string();
  expect_error([&] { write_safetensors(nowhere, s.tensors()); }, {nowhere});
  EXPECT_FALSE(fs::exists(dir / "missing_dir"));

  auto twice = s.tensors();
  twice.push_back(twice[0]);
  expect_error([&] { write_safetensors(path, twice); }, {path, "\"e.i64\" given twice"});
  auto neg = s.tensors();
  neg[1].shape = {-2, 3};
  expect_error([&] { write_safetensors(path, neg); }, {path, "\"a.f32\"", "invalid shape [-2, 3]"});
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}
