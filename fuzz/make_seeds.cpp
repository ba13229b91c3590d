// Writes the seed corpora of the fuzz targets: fuzz_make_seeds OUT_DIR writes OUT_DIR/<target>/<name>.
// Valid files come from glmlab's own writers (write_safetensors, save_adapter, save_train_state, a
// HostEngine run for the golden logits), so they match what the loaders expect; a few invalid ones are
// built by hand. The committed corpus in fuzz/corpus was made with it (scripts/fuzz.sh does not run it).
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "lab/train/train_state.h"
#include "model/adapters.h"
#include "model/config.h"
#include "model/engine.h"
#include "model/model.h"
#include "model/optimizer.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "ops/ops.h"
#include "util/file.h"

using namespace glmlab;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string out_root;

void put(const std::string& target, const std::string& name, std::string_view bytes) {
  fs::create_directories(out_root + "/" + target);
  fuzz::write_bytes(out_root + "/" + target + "/" + name, bytes);
}

// A safetensors file from a header text and a data block, with the length as written (no padding).
std::string st_bytes(const std::string& header, const std::string& block, int64_t length_delta = 0) {
  std::string out(8, '\0');
  uint64_t n = uint64_t(int64_t(header.size()) + length_delta);
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(n >> (8 * i));
  return out + header + block;
}

std::string written(const std::vector<TensorToWrite>& t, const std::map<std::string, std::string>& md = {}) {
  const std::string tmp = fuzz::scratch_path("seed.safetensors");
  write_safetensors(tmp, t, md);
  return read_file(tmp);
}

ModelConfig tiny() { return ModelConfig::from_json(json::parse(fuzz::kTinyConfigJson), "tiny"); }

void safetensors_seeds() {
  const float f[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
  const uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};   // f16
  const uint16_t bf[3] = {0x3f80, 0xbf80, 0x4000};          // bf16
  const int64_t i64[2] = {-1, 1LL << 40};
  const int32_t i32[3] = {1, -2, 3};
  const int8_t i8[5] = {1, -1, 127, -128, 0};
  const uint8_t u8[3] = {0, 128, 255};
  put("fuzz_safetensors", "valid_f32_meta", written({{"w", DType::F32, {2, 3}, f, sizeof f}}, {{"format", "pt"}}));
  put("fuzz_safetensors", "valid_all_dtypes",
      written({{"a.f16", DType::F16, {4}, h, sizeof h}, {"b.bf16", DType::BF16, {3}, bf, sizeof bf},
               {"c.i64", DType::I64, {2, 1}, i64, sizeof i64}, {"d.i32", DType::I32, {3}, i32, sizeof i32},
               {"e.i8", DType::I8, {5}, i8, sizeof i8}, {"f.u8", DType::U8, {3}, u8, sizeof u8},
               {"g.empty", DType::F32, {0, 4}, nullptr, 0}, {"h.scalar", DType::F32, {}, f, 4}}));
  // Valid but misaligned: header length 61 (not a multiple of 8), and an F32 after an odd count of F16.
  put("fuzz_safetensors", "misaligned",
      st_bytes(R"({"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"y":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})",
               std::string("\x00\x3c\x00\x00\x80\x3f\x00\x00\x00\x40", 10)));
  put("fuzz_safetensors", "empty_header", st_bytes("{}", ""));
  // Invalid: header length off by one, overlap, gap, duplicate key, bad dtype, negative dim, deep JSON.
  put("fuzz_safetensors", "bad_length_plus1",
      st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\1'), 1));
  put("fuzz_safetensors", "bad_overlap",
      st_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
               "abc"));
  put("fuzz_safetensors", "bad_gap",
      st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
               "abc"));
  put("fuzz_safetensors", "bad_duplicate",
      st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
               "a"));
  put("fuzz_safetensors", "bad_dtype_shape",
      st_bytes(R"({"a":{"dtype":"F64","shape":[-1, 9223372036854775807],"data_offsets":[0,18446744073709551615]},"__metadata__":{"k":1}})",
               ""));
  put("fuzz_safetensors", "bad_deep", st_bytes(std::string(100, '[') + std::string(100, ']'), ""));
  put("fuzz_safetensors", "bad_short", std::string("\x10\x00\x00", 3));
}

void st_index_seeds() {
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  put("fuzz_st_index", "valid",
      json{{"metadata", {{"total_size", 48}}}, {"weight_map", {{"a", s1}, {"b", s1}, {"c", s2}}}}.dump(2));
  put("fuzz_st_index", "bad_missing_tensor", json{{"weight_map", {{"a", s1}, {"c", s2}}}}.dump());
  put("fuzz_st_index", "bad_wrong_shard", json{{"weight_map", {{"a", s2}, {"b", s1}, {"c", s2}}}}.dump());
  put("fuzz_st_index", "bad_extra_tensor", json{{"weight_map", {{"a", s1}, {"b", s1}, {"c", s2}, {"d", s2}}}}.dump());
  put("fuzz_st_index", "bad_paths",
      json{{"weight_map", {{"a", "../" + s1}, {"b", "/etc/passwd"}, {"c", "other.bin"}, {"d", "nope"}, {"e", ""}}}}.dump());
  put("fuzz_st_index", "bad_not_shard", json{{"weight_map", {{"x", "other.bin"}}}}.dump());
  put("fuzz_st_index", "bad_types", R"({"weight_map": {"a": 1, "b": null}, "metadata": []})");
}

void config_seeds() {
  put("fuzz_config", "tiny", fuzz::kTinyConfigJson);
  put("fuzz_config", "chatglm3_6b", ModelConfig::preset("chatglm3-6b").to_json().dump(2));
  put("fuzz_config", "chatglm3_6b_32k", ModelConfig::preset("chatglm3-6b-32k").to_json().dump());
  json q = tiny().to_json();
  q["glmlab_quantization"] = {{"bits", 4}, {"group_size", 32}, {"format", "glmlab-v1"}};
  put("fuzz_config", "glmlab_quant", q.dump());
  q.erase("glmlab_quantization");
  q["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"sym", true},
                              {"checkpoint_format", "gptq"}, {"data_type", "int"}};
  put("fuzz_config", "gptq_quant", q.dump());
  q.erase("quantization_config");
  q["quantization_bit"] = 8;
  q["eos_token_id"] = {2, 3};
  q["rope_ratio"] = 500.0;
  q["multi_query_attention"] = false;
  put("fuzz_config", "thudm_quant_eos_list", q.dump());
  put("fuzz_config", "bad_sizes",
      R"({"model_type":"chatglm","num_layers":1000000000,"hidden_size":-8,"ffn_hidden_size":8.5,"num_attention_heads":0,
"seq_length":"32","padded_vocab_size":4294967304,"layernorm_epsilon":1e39,"pre_seq_len":null})");
}

void adapter_seeds() {
  const ModelConfig m = tiny();
  const std::string sep = "\n==== adapter_model.safetensors ====\n";
  auto folder = [&](const std::string& name, AdapterConfig c) {
    const std::string dir = fuzz::scratch_path("seed-adapter");
    fs::remove_all(dir);
    Adapter a = Adapter::create(m, c);
    for (auto& p : a.params())
      for (size_t i = 0; i < p.value.size(); ++i) p.value[i] = 0.01f * float(i % 7) - 0.02f;
    save_adapter(dir, a);
    put("fuzz_adapter", name, read_file(dir + "/adapter_config.json") + sep + read_file(dir + "/adapter_model.safetensors"));
    return read_file(dir + "/adapter_config.json");
  };
  AdapterConfig lora = AdapterConfig::lora_defaults();
  lora.rank = 2;
  folder("lora_qkv", lora);
  lora.targets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  lora.rslora = true;
  folder("lora_all_rslora", lora);
  AdapterConfig vera = AdapterConfig::vera_defaults();
  vera.rank = 4;
  vera.targets = {"query_key_value"};
  std::string cfg = folder("vera_qkv", vera);
  put("fuzz_adapter", "bad_no_weights", cfg);
  put("fuzz_adapter", "bad_config",
      R"({"peft_type":"LORA","r":2147483647,"lora_alpha":1e39,"target_modules":["query_key_value","mlp"],"use_dora":true})" + sep +
          st_bytes("{}", ""));
}

void train_state_seeds() {
  const ModelConfig m = tiny();
  AdapterConfig c = AdapterConfig::lora_defaults();
  c.rank = 2;
  c.targets = {"query_key_value", "dense"};
  Adapter a = Adapter::create(m, c);
  AdamW opt(a, AdamWConfig{});
  opt.set_steps(3);
  for (size_t k = 0; k < opt.m().size(); ++k)
    for (size_t i = 0; i < opt.m()[k].size(); ++i) {
      opt.m()[k][i] = 1e-3f * float(i % 5);
      opt.v()[k][i] = 1e-6f * float(i % 3);
    }
  const std::string dir = fuzz::scratch_path("seed-run");
  fs::remove_all(dir);
  lab::TrainState st;
  st.step = 3;
  st.losses = {2.5, 2.25, 2.0};
  st.run = R"({"method":"lora","rank":2})";
  lab::save_train_state(dir, a, opt, st);
  put("fuzz_train_state", "valid", read_file(dir + "/train_state.safetensors"));
  st.step = 0;
  st.losses = {};
  st.run = "";
  opt.set_steps(0);
  lab::save_train_state(dir, a, opt, st);
  put("fuzz_train_state", "valid_step0", read_file(dir + "/train_state.safetensors"));
  const float p[4] = {0, 0, 0, 0};
  put("fuzz_train_state", "bad_metadata",
      written({{"param.x", DType::F32, {2, 2}, p, sizeof p}},
              {{"step", "2abc"}, {"optimizer_steps", "-1"}, {"losses", "[1e400, \"x\"]"}, {"run", "{}"}}));
}

void golden_seeds() {
  const ModelConfig cfg = tiny();
  const Model model(cfg, random_weights(cfg, DType::F32, 1));
  auto ops = make_ops(Backend::CpuRef);
  HostEngine engine(model, *ops);
  const int B = 2, T = 3, V = cfg.vocab_size, steps = 2;
  StepInput in;
  in.B = B;
  in.T = T;
  in.ids = {0, 5, 7, 3, 4, 9};  // sequence 0 left-padded by one
  in.pos = {0, 0, 1, 0, 1, 2};
  in.valid = {0, 1, 1, 1, 1, 1};
  engine.reset(B, T + steps);
  std::vector<float> prefill;
  engine.step(in, Logits::All, prefill);
  std::vector<int64_t> ids(in.ids.begin(), in.ids.end()), pos(in.pos.begin(), in.pos.end()),
      mask(in.valid.begin(), in.valid.end());
  std::vector<std::vector<int64_t>> step_ids = {{1, 2}, {11, 15}};
  std::vector<std::vector<float>> step_logits(steps);
  int next[2] = {2, 3};
  for (int s = 0; s < steps; ++s) {
    StepInput d;
    d.B = B;
    d.T = 1;
    d.ids = {int32_t(step_ids[size_t(s)][0]), int32_t(step_ids[size_t(s)][1])};
    d.pos = {next[0]++, next[1]++};
    d.valid = {1, 1};
    engine.step(d, Logits::Last, step_logits[size_t(s)]);
  }
  std::vector<TensorToWrite> t = {
      {"input_ids", DType::I64, {B, T}, ids.data(), ids.size() * 8},
      {"attention_mask", DType::I64, {B, T}, mask.data(), mask.size() * 8},
      {"position_ids", DType::I64, {B, T}, pos.data(), pos.size() * 8},
      {"prefill_logits", DType::F32, {B, T, V}, prefill.data(), prefill.size() * 4}};
  put("fuzz_golden", "prefill_only", written(t));
  for (int s = 0; s < steps; ++s) {
    t.push_back({fmt::format("step{}_ids", s + 1), DType::I64, {B}, step_ids[size_t(s)].data(), size_t(B) * 8});
    t.push_back({fmt::format("step{}_logits", s + 1), DType::F32, {B, V}, step_logits[size_t(s)].data(),
                 step_logits[size_t(s)].size() * 4});
  }
  put("fuzz_golden", "two_steps", written(t));
  // The same with the _fp32ref names (which the target compares with when the file holds them).
  std::vector<std::string> names;
  for (auto& x : t) names.push_back(x.name.find("logits") != std::string::npos ? x.name + "_fp32ref" : x.name);
  for (size_t i = 0; i < t.size(); ++i) t[i].name = names[i];
  put("fuzz_golden", "two_steps_fp32ref", written(t, {{"note", "x"}}));
  const int64_t one[1] = {3};
  put("fuzz_golden", "bad_shape",
      written({{"input_ids", DType::I64, {1, 1}, one, 8}, {"attention_mask", DType::I32, {2}, one, 8},
               {"position_ids", DType::I64, {1}, one, 8}}));
}

void records_seeds() {
  put("fuzz_records", "valid",
      "{\"content\": \"类型#裙*颜色#蓝色\", \"summary\": \"一条蓝色的裙子\"}\n"
      "{\"content\": \"a\", \"summary\": \"b\"}\n");
  put("fuzz_records", "bom_crlf_blank",
      "\xEF\xBB\xBF{\"content\": \"x\\u00e9\", \"summary\": \"y\"}\r\n  \t\r\n\n{\"summary\": \"s\", \"content\": \"c\"}");
  put("fuzz_records", "bad_lines",
      "{\"content\": \"ok\", \"summary\": \"ok\"}\n[1, 2]\n{\"content\": 1, \"summary\": \"x\"}\n{\"content\": \"x\"}\n"
      "{\"content\": \"\xff\xfe\", \"summary\": \"x\"}\n{\"content\": \"a\", \"content\": \"b\", \"summary\": \"c\"}\n"
      "{\"content\": \"a\", \"summary\": \"b\"\n" + std::string(70, '[') + "\n");
  put("fuzz_records", "blank_only", " \n\t\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds OUT_DIR\n");
    return 2;
  }
  out_root = argv[1];
  safetensors_seeds();
  st_index_seeds();
  config_seeds();
  adapter_seeds();
  train_state_seeds();
  golden_seeds();
  records_seeds();
  return 0;
}
