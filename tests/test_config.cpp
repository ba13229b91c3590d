// ModelConfig: the real chatglm3-6b config.json, the 32k variant, every rejected field, the JSON round
// trip, and the parameter counts of the facts page (§1.3, §1.7) including LoRA and VeRA.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "lab/model_info.h"
#include "model/config.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

using nlohmann::json;

const std::string kReal = "data/chatglm3/config.json";
const std::string k32k = "data/chatglm3/config.chatglm3-6b-32k.json";

json real_json() { return json::parse(read_file(test::shared_path(kReal))); }

// Every field that changes the math.
void expect_same_math(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.ffn_hidden_size, b.ffn_hidden_size);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.kv_channels, b.kv_channels);
  EXPECT_EQ(a.num_groups, b.num_groups);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.seq_length, b.seq_length);
  EXPECT_EQ(a.layernorm_eps, b.layernorm_eps);
  EXPECT_EQ(a.rope_ratio, b.rope_ratio);
  EXPECT_EQ(a.add_qkv_bias, b.add_qkv_bias);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
}

// ---------------------------------------------------------------------------- real files

TEST(ConfigReal, ChatGLM3_6bEqualsThePreset) {
  ModelConfig c = ModelConfig::from_file(test::shared_path(kReal));
  expect_same_math(c, ModelConfig::preset("chatglm3-6b"));
  // And the values themselves (facts §1.1; the stored file says seq_length 8192).
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.ffn_hidden_size, 13696);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.kv_channels, 128);
  EXPECT_EQ(c.num_groups, 2);
  EXPECT_EQ(c.vocab_size, 65024);
  EXPECT_EQ(c.seq_length, 8192);
  EXPECT_FLOAT_EQ(c.layernorm_eps, 1e-5f);
  EXPECT_EQ(c.rope_ratio, 1.0f);
  EXPECT_EQ(c.rope_base(), 10000.0f);
  EXPECT_TRUE(c.add_qkv_bias);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.torch_dtype, DType::F16);
  EXPECT_EQ(c.q_dim(), 4096);
  EXPECT_EQ(c.kv_dim(), 256);
  EXPECT_EQ(c.qkv_dim(), 4608);
  EXPECT_EQ(c.rot_dim(), 64);
  EXPECT_EQ(c.name, test::shared_path(kReal));  // messages name the file it came from
}

TEST(ConfigReal, The32kConfigReadsQuantizationBit) {
  // THUDM's quantization_bit 4 is accepted (issue 4); whether a linear is stored quantized is decided
  // by its tensors when the weights load (model/quant_load.h).
  ModelConfig c = ModelConfig::from_file(test::shared_path(k32k));
  EXPECT_EQ(c.quant.method, QuantConfig::Method::Thudm);
  EXPECT_EQ(c.quant.bits, 4);
  EXPECT_EQ(c.quant.group_size, 0);  // per row
  json j = real_json();
  j["quantization_bit"] = 3;
  std::string msg = test::error_of([&] { ModelConfig::from_json(j, "my/config.json"); });
  EXPECT_CONTAINS(msg, "quantization_bit 3");
  EXPECT_CONTAINS(msg, "my/config.json");
}

TEST(ConfigReal, The32kConfigWithoutQuantizationReadsRopeRatio) {
  json j = json::parse(read_file(test::shared_path(k32k)));
  ASSERT_EQ(j.at("quantization_bit").get<int>(), 4);
  j.erase("quantization_bit");
  ModelConfig c = ModelConfig::from_json(j, "32k");
  EXPECT_EQ(c.rope_ratio, 50.0f);
  EXPECT_EQ(c.rope_base(), 500000.0f);
  EXPECT_EQ(c.seq_length, 32768);
  expect_same_math(c, ModelConfig::preset("chatglm3-6b-32k"));
  // quantization_bit 0 is the default and accepted.
  j["quantization_bit"] = 0;
  EXPECT_EQ(ModelConfig::from_json(j, "32k").rope_ratio, 50.0f);
}

// ---------------------------------------------------------------------------- rejected configs

TEST(ConfigErrors, InvalidJsonNamesFileAndByte) {
  auto dir = test::temp_dir("config_invalid_json");
  std::string path = (dir / "config.json").string();
  write_file_atomic(path, "{\"model_type\": \"chatglm\", \"num_layers\": 28,, }");
  std::string msg = test::error_of([&] { ModelConfig::from_file(path); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "not valid JSON");
  EXPECT_CONTAINS(msg, "byte 44");  // the second comma
  // A missing file names the path too.
  std::string missing = (dir / "nope.json").string();
  EXPECT_CONTAINS(test::error_of([&] { ModelConfig::from_file(missing); }), missing);
}

struct BadCase {
  const char* what;
  std::function<void(json&)> edit;
  std::vector<std::string> needles;
};

TEST(ConfigErrors, EachBadFieldIsNamed) {
  const std::vector<BadCase> cases = {
      {"model_type llama", [](json& j) { j["model_type"] = "llama"; }, {"model_type", "llama"}},
      {"model_type missing", [](json& j) { j.erase("model_type"); }, {"model_type"}},
      {"missing num_layers", [](json& j) { j.erase("num_layers"); }, {"num_layers", "missing"}},
      {"missing hidden_size", [](json& j) { j.erase("hidden_size"); }, {"hidden_size", "missing"}},
      {"missing seq_length", [](json& j) { j.erase("seq_length"); }, {"seq_length", "missing"}},
      {"hidden_size string", [](json& j) { j["hidden_size"] = "4096"; }, {"hidden_size", "wrong type", "\"4096\""}},
      {"num_layers list", [](json& j) { j["num_layers"] = json::array({28}); }, {"num_layers", "wrong type"}},
      {"hidden_size fractional", [](json& j) { j["hidden_size"] = 4096.5; }, {"hidden_size", "integer"}},
      {"num_layers beyond int", [](json& j) { j["num_layers"] = 10'000'000'000LL; }, {"num_layers", "out of range"}},
      {"heads below int", [](json& j) { j["num_attention_heads"] = -10'000'000'000LL; },
       {"num_attention_heads", "out of range"}},
      {"multi_query_attention string", [](json& j) { j["multi_query_attention"] = "yes"; },
       {"multi_query_attention", "wrong type"}},
      {"rmsnorm false", [](json& j) { j["rmsnorm"] = false; }, {"rmsnorm"}},
      {"post_layer_norm false", [](json& j) { j["post_layer_norm"] = false; }, {"post_layer_norm"}},
      {"add_bias_linear true", [](json& j) { j["add_bias_linear"] = true; }, {"add_bias_linear"}},
      {"residual post layernorm", [](json& j) { j["apply_residual_connection_post_layernorm"] = true; },
       {"apply_residual_connection_post_layernorm"}},
      {"rmsnorm not a bool", [](json& j) { j["rmsnorm"] = 0; }, {"rmsnorm"}},
      {"heads not a multiple of groups", [](json& j) { j["multi_query_group_num"] = 3; },
       {"num_attention_heads", "multi_query_group_num", "3"}},
      {"negative hidden_size", [](json& j) { j["hidden_size"] = -4096; }, {"hidden_size", "-4096"}},
      {"negative num_layers", [](json& j) { j["num_layers"] = -1; }, {"num_layers", "-1"}},
      {"zero ffn", [](json& j) { j["ffn_hidden_size"] = 0; }, {"ffn_hidden_size"}},
      {"negative vocab", [](json& j) { j["padded_vocab_size"] = -65024; }, {"padded_vocab_size"}},
      {"negative kv_channels", [](json& j) { j["kv_channels"] = -128; }, {"kv_channels"}},
      {"negative seq_length", [](json& j) { j["seq_length"] = -8192; }, {"seq_length"}},
      {"multi_query without groups", [](json& j) { j.erase("multi_query_group_num"); }, {"multi_query_group_num"}},
      {"torch_dtype int8", [](json& j) { j["torch_dtype"] = "int8"; }, {"torch_dtype", "int8"}},
      {"quantization_bit 5", [](json& j) { j["quantization_bit"] = 5; }, {"quantization_bit"}},
      {"pre_seq_len", [](json& j) { j["pre_seq_len"] = 128; }, {"pre_seq_len"}},
      {"negative eps", [](json& j) { j["layernorm_epsilon"] = -1e-5; }, {"layernorm_epsilon"}},
      {"rope_ratio 0", [](json& j) { j["rope_ratio"] = 0; }, {"rope_ratio"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    json j = real_json();
    c.edit(j);
    std::string msg = test::error_of([&] { ModelConfig::from_json(j, "my/config.json"); });
    EXPECT_CONTAINS(msg, "my/config.json");
    for (const auto& n : c.needles) EXPECT_CONTAINS(msg, n);
  }
  EXPECT_CONTAINS(test::error_of([] { ModelConfig::from_json(json::array({1, 2}), "arr.json"); }), "JSON object");
}

TEST(ConfigErrors, AcceptedVariations) {
  // The unchanged file loads (so each case above fails for its own edit), and so do harmless variations.
  EXPECT_NO_THROW(ModelConfig::from_json(real_json(), "ok"));
  json j = real_json();
  j["eos_token_id"] = json::array({2, 64795});  // some configs list several eos ids
  j["rmsnorm"] = nullptr;                        // null = default
  j["quantization_bit"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, "ok").eos_token_id, 2);
  // Without multi_query_attention every head has its own KV group.
  j = real_json();
  j.erase("multi_query_attention");
  j.erase("multi_query_group_num");
  EXPECT_EQ(ModelConfig::from_json(j, "mha").num_groups, 32);
  // kv_channels defaults to hidden / heads.
  j = real_json();
  j.erase("kv_channels");
  EXPECT_EQ(ModelConfig::from_json(j, "kv").kv_channels, 128);
  // vocab_size is the fallback for padded_vocab_size.
  j = real_json();
  j.erase("padded_vocab_size");
  j["vocab_size"] = 1000;
  EXPECT_EQ(ModelConfig::from_json(j, "v").vocab_size, 1000);
}

TEST(ConfigPresets, UnknownPresetListsTheNames) {
  std::string msg = test::error_of([] { ModelConfig::preset("chatglm4"); });
  EXPECT_CONTAINS(msg, "chatglm4");
  for (auto& n : ModelConfig::preset_names()) EXPECT_CONTAINS(msg, n);
  ModelConfig tiny = ModelConfig::preset("tiny");
  EXPECT_EQ(tiny.seq_length, 512);  // the CLI tests rely on it
  EXPECT_EQ(tiny.vocab_size, 65024);
}

// ---------------------------------------------------------------------------- round trip

TEST(ConfigRoundTrip, ToJsonFromJson) {
  for (const auto& name : ModelConfig::preset_names()) {
    SCOPED_TRACE(name);
    ModelConfig a = ModelConfig::preset(name);
    a.torch_dtype = name == "tiny" ? DType::BF16 : name == "small" ? DType::F32 : DType::F16;
    json j = a.to_json();
    EXPECT_EQ(j.at("model_type"), "chatglm");
    ModelConfig b = ModelConfig::from_json(json::parse(j.dump()), "round trip");
    expect_same_math(a, b);
  }
  // Non-default fields survive as well.
  ModelConfig a = ModelConfig::preset("tiny");
  a.add_qkv_bias = false;
  a.num_groups = a.num_heads;  // no multi-query attention
  a.layernorm_eps = 3e-6f;
  a.rope_ratio = 7.5f;
  a.eos_token_id = 5;
  a.pad_token_id = 3;
  ModelConfig b = ModelConfig::from_json(a.to_json(), "rt");
  expect_same_math(a, b);
  // The real file survives too.
  ModelConfig r = ModelConfig::from_file(test::shared_path(kReal));
  expect_same_math(r, ModelConfig::from_json(r.to_json(), "rt"));
}

// ---------------------------------------------------------------------------- parameter counts

TEST(ConfigParams, ChatGLM3_6bCounts) {
  ModelConfig c = ModelConfig::preset("chatglm3-6b");
  EXPECT_EQ(c.layer_params(), 203'960'832);
  EXPECT_EQ(c.total_params(), 6'243'584'000);
  EXPECT_EQ(c.total_params() + lora_params(c, 8, {"query_key_value"}), 6'245'533'696);  // THUDM's notebook
  // The real file gives the same numbers.
  EXPECT_EQ(ModelConfig::from_file(test::shared_path(kReal)).total_params(), 6'243'584'000);
  // Without the qkv bias: 4608 fewer per layer.
  c.add_qkv_bias = false;
  EXPECT_EQ(c.layer_params(), 203'960'832 - 4608);
}

TEST(ConfigParams, LoraAndVeraCounts) {
  ModelConfig c = ModelConfig::preset("chatglm3-6b");
  const std::vector<std::string> all = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  EXPECT_EQ(lora_params(c, 8, {"query_key_value"}), 1'949'696);
  EXPECT_EQ(lora_params(c, 8, all), 14'823'424);
  EXPECT_EQ(lora_params(c, 16, {"query_key_value"}), 2 * 1'949'696);
  EXPECT_EQ(vera_params(c, 256, {"query_key_value"}), 136'192);
  EXPECT_EQ(vera_params(c, 256, all), 1'154'048);
  // Per-linear shapes (in, out) behind those numbers.
  EXPECT_EQ(linear_shape(c, "query_key_value").in, 4096);
  EXPECT_EQ(linear_shape(c, "query_key_value").out, 4608);
  EXPECT_EQ(linear_shape(c, "dense_h_to_4h").out, 27392);
  EXPECT_EQ(linear_shape(c, "dense_4h_to_h").in, 13696);
  EXPECT_EQ(group_digits(6'243'584'000), "6,243,584,000");
  EXPECT_EQ(group_digits(136'192), "136,192");
  EXPECT_EQ(group_digits(999), "999");
}

TEST(ConfigParams, UnknownTargetAndBadRankAreErrors) {
  ModelConfig c = ModelConfig::preset("chatglm3-6b");
  EXPECT_CONTAINS(test::error_of([&] { lora_params(c, 8, {"q_proj"}); }), "q_proj");
  EXPECT_CONTAINS(test::error_of([&] { vera_params(c, 256, {"query_key_value", "o_proj"}); }), "o_proj");
  EXPECT_CONTAINS(test::error_of([&] { lora_params(c, 0, {"query_key_value"}); }), "rank");
  EXPECT_CONTAINS(test::error_of([&] { lora_params(c, -8, {"query_key_value"}); }), "-8");
  EXPECT_CONTAINS(test::error_of([&] { vera_params(c, 0, {"query_key_value"}); }), "rank");
}

}  // namespace
}  // namespace glmlab
