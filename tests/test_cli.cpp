// The glmlab binary end to end (through test::run_cli): info, tokenize, generate and parity, and the
// exit status 1 plus a message naming the problem for each kind of bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"
#include "util/file.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::run_cli;

// Single-quotes `s` for the shell.
std::string q(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

std::string tok_arg() { return "--tokenizer " + q(test::tokenizer_path()); }

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The last line of the output (CLI tools print their result there).
std::string last_line(const std::string& out) {
  std::string s = trim(out);
  auto nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

// A copy of the golden tiny-f32 checkpoint whose config.json is `edit`ed.
std::string checkpoint_with_config(const std::string& name, const std::function<void(json&)>& edit) {
  auto dir = test::temp_dir(name);
  const std::string src = test::golden_path("tiny-f32");
  fs::copy_file(src + "/model.safetensors", dir / "model.safetensors");
  json cfg = json::parse(read_file(src + "/config.json"));
  edit(cfg);
  write_file_atomic((dir / "config.json").string(), cfg.dump(2));
  return dir.string();
}

// ---------------------------------------------------------------------------- info

TEST(CliInfo, ChatGLM3_6bCounts) {
  auto r = run_cli("info --model random:chatglm3-6b");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "6,243,584,000");
  EXPECT_CONTAINS(r.out, "203,960,832");
  EXPECT_CONTAINS(r.out, "1,949,696");
  EXPECT_CONTAINS(r.out, "136,192");
  // Other targets and ranks reach the counts.
  r = run_cli("info --model random:chatglm3-6b --lora-targets query_key_value,dense,dense_h_to_4h,dense_4h_to_h "
              "--vera-targets query_key_value,dense,dense_h_to_4h,dense_4h_to_h");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "14,823,424");
  EXPECT_CONTAINS(r.out, "1,154,048");
}

TEST(CliInfo, JsonParses) {
  auto r = run_cli("info --model random:chatglm3-6b --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j.at("total_params").get<int64_t>(), 6'243'584'000);
  EXPECT_EQ(j.at("per_layer_params").get<int64_t>(), 203'960'832);
  EXPECT_EQ(j.at("lora").at("trainable_params").get<int64_t>(), 1'949'696);
  EXPECT_EQ(j.at("vera").at("trainable_params").get<int64_t>(), 136'192);
  EXPECT_EQ(j.at("config").at("num_layers").get<int>(), 28);
}

TEST(CliInfo, CheckpointFolderAndDot) {
  auto dir = test::temp_dir("cli_dot");
  std::string dot = (dir / "arch.dot").string();
  auto r = run_cli("info --model " + q(test::golden_path("tiny-f32")) + " --dot " + q(dot));
  ASSERT_EQ(r.rc, 0) << r.out;
  // tiny: 2 × (64 + 128·64 + 128 + 64·64 + 64 + 192·64 + 64·96) + 2·512·64 + 64 = 127,552
  EXPECT_CONTAINS(r.out, "127,552");
  ASSERT_TRUE(fs::exists(dot));
  std::string text = read_file(dot);
  EXPECT_EQ(text.rfind("digraph", 0), 0u) << text.substr(0, 80);
  EXPECT_CONTAINS(text, "query_key_value [128, 64]");
  EXPECT_EQ(trim(text).back(), '}');
}

TEST(CliInfo, UnknownLoraTargetExits1) {
  auto r = run_cli("info --model random:chatglm3-6b --lora-targets q_proj");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "q_proj");
}

// ---------------------------------------------------------------------------- tokenize

TEST(CliTokenize, ChatLayout) {
  auto r = run_cli("tokenize " + tok_arg() + " --chat 你好");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "64790 64792 64795 30910 13 36474 54591 64796");
  r = run_cli("tokenize " + tok_arg() + " --prefix 你好");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "64790 64792 36474 54591");
  r = run_cli("tokenize " + tok_arg() + " " + q("类型#裤*版型#宽松"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "30910 33467 31010 56532 30998 55090 54888 31010 40833");
  // --system "" is an empty <|system|> turn, as THUDM keeps it; no --system, no system turn.
  r = run_cli("tokenize " + tok_arg() + " --chat --system " + q("") + " Hello");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "64790 64792 64794 30910 13 64795 30910 13 13755 64796");
  r = run_cli("tokenize " + tok_arg() + " --chat Hello");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "64790 64792 64795 30910 13 13755 64796");
}

TEST(CliTokenize, DecodeRoundTrip) {
  const std::string text = "Hello world, 你好 2023年";
  auto enc = run_cli("tokenize " + tok_arg() + " " + q(text));
  ASSERT_EQ(enc.rc, 0) << enc.out;
  std::string ids = last_line(enc.out);
  auto dec = run_cli("tokenize " + tok_arg() + " --decode " + q(ids));
  ASSERT_EQ(dec.rc, 0) << dec.out;
  EXPECT_EQ(last_line(dec.out), text);
  // Special ids render as their names; commas separate too.
  dec = run_cli("tokenize " + tok_arg() + " --decode " + q("64790,64792,64795,30910,13,36474,54591,64796"));
  ASSERT_EQ(dec.rc, 0) << dec.out;
  EXPECT_EQ(trim(dec.out), "[gMASK]sop<|user|> \n 你好<|assistant|>");  // the "▁" after <|user|> is a space
}

TEST(CliTokenize, FindsTheTokenizerBesideTheCheckpointOrInTheEnvironment) {
  const std::string chat = "64790 64792 64795 30910 13 36474 54591 64796";
  std::string dir = checkpoint_with_config("cli_tok_beside", [](json&) {});
  // Without a tokenizer anywhere: the byte-level fallback (你 = E4 BD A0 → 231 192 163, ...).
  const char* saved = std::getenv("GLMLAB_TOKENIZER");
  std::string saved_value = saved ? saved : "";
  unsetenv("GLMLAB_TOKENIZER");
  auto r = run_cli("tokenize --model " + q(dir) + " --chat 你好");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "64790 64792 64795 13 231 192 163 232 168 192 64796");
  // $GLMLAB_TOKENIZER.
  setenv("GLMLAB_TOKENIZER", test::tokenizer_path().c_str(), 1);
  r = run_cli("tokenize --model " + q(dir) + " --chat 你好");
  EXPECT_EQ(last_line(r.out), chat) << r.out;
  // tokenizer.model beside the checkpoint wins over the environment.
  setenv("GLMLAB_TOKENIZER", "/nonexistent/tokenizer.model", 1);
  fs::copy_file(test::tokenizer_path(), fs::path(dir) / "tokenizer.model");
  r = run_cli("tokenize --model " + q(dir) + " --chat 你好");
  EXPECT_EQ(last_line(r.out), chat) << r.out;
  // ... and --tokenizer over both.
  r = run_cli("tokenize --model " + q(dir) + " --tokenizer bytes --chat 你好");
  EXPECT_EQ(last_line(r.out), "64790 64792 64795 13 231 192 163 232 168 192 64796") << r.out;
  if (saved)
    setenv("GLMLAB_TOKENIZER", saved_value.c_str(), 1);
  else
    unsetenv("GLMLAB_TOKENIZER");
}

TEST(CliTokenize, BadInputsExit1) {
  auto r = run_cli("tokenize " + tok_arg() + " --decode " + q("13755 70000"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "70000");
  r = run_cli("tokenize " + tok_arg() + " --decode " + q("13755 abc"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "abc");
  const std::string missing = (test::temp_dir("cli_tok_missing") / "tokenizer.model").string();
  r = run_cli("tokenize --tokenizer " + q(missing) + " hello");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, missing);
}

// ---------------------------------------------------------------------------- generate

TEST(CliGenerate, RandomTinyFromIds) {
  auto r = run_cli("generate --model random:tiny -n 5 --ids " + q("1 2 3") + " --threads 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "tokens/s");
  EXPECT_CONTAINS(r.out, "prefill: 3 tokens");
}

TEST(CliGenerate, TextPromptWithTheRealTokenizer) {
  auto r = run_cli("generate --model random:tiny -n 3 --threads 1 " + tok_arg() + " 你好");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "prefill: 8 tokens");  // the chat layout of "你好" is 8 ids
}

TEST(CliGenerate, MissingTokenizerFileExits1NamingIt) {
  const std::string missing = (test::temp_dir("cli_gen_missing") / "tokenizer.model").string();
  auto r = run_cli("generate --model random:tiny -n 2 --tokenizer " + q(missing) + " hello");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, missing);
  EXPECT_CONTAINS(r.out, "glmlab: error:");
}

TEST(CliGenerate, TokenIdOutsideTheVocabularyExits1) {
  auto r = run_cli("generate --model random:tiny -n 2 --ids " + q("1 2 99999"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "99999");
  r = run_cli("generate --model random:tiny -n 2 --ids " + q("1 -4 3"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "-4");
  r = run_cli("generate --model random:tiny -n 2 --ids " + q("1 x2 3"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "x2");
}

TEST(CliGenerate, PromptLongerThanSeqLengthExits1) {
  std::string ids;
  for (int i = 0; i < 600; ++i) ids += std::to_string(100 + i % 50) + " ";
  auto r = run_cli("generate --model random:tiny -n 5 --ids " + q(ids));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "seq_length");
  EXPECT_CONTAINS(r.out, "512");
}

TEST(CliGenerate, NoSuchModelExits1) {
  auto r = run_cli("generate --model nosuchdir -n 2 --ids 1");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "nosuchdir");
  EXPECT_CONTAINS(r.out, "random:PRESET");
  r = run_cli("generate --model random:nosuchpreset -n 2 --ids 1");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "nosuchpreset");
  r = run_cli("info --model nosuchdir");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "nosuchdir");
}

TEST(CliGenerate, BadConfigInACheckpointExits1NamingTheField) {
  std::string dir = checkpoint_with_config("cli_bad_config", [](json& j) { j.erase("num_layers"); });
  auto r = run_cli("generate --model " + q(dir) + " -n 2 --ids " + q("1 2 3"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "num_layers");
  EXPECT_CONTAINS(r.out, "config.json");
  dir = checkpoint_with_config("cli_bad_config2", [](json& j) { j["hidden_size"] = "64"; });
  r = run_cli("info --model " + q(dir));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "hidden_size");
  // The same folder with a good config generates (so the failures above are the config's).
  dir = checkpoint_with_config("cli_good_config", [](json&) {});
  r = run_cli("generate --model " + q(dir) + " -n 2 --ids " + q("1 2 3"));
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST(CliGenerate, CudaDeviceIsAClearError) {
  auto r = run_cli("generate --model random:tiny -n 2 --ids 1 --device cuda");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "cuda");
  EXPECT_CONTAINS(r.out, "glmlab: error:");
  r = run_cli("generate --model random:tiny -n 2 --ids 1 --device tpu");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "tpu");
}

// ---------------------------------------------------------------------------- parity

TEST(CliParity, GoldenTinyPasses) {
  auto r = run_cli("parity --model " + q(test::golden_path("tiny-f32")) + " --ref " +
                   q(test::golden_path("tiny-f32/golden.safetensors")));
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "PASS");
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST(CliParity, WrongModelFails) {
  auto r = run_cli("parity --model " + q(test::golden_path("tiny-f32")) + " --ref " +
                   q(test::golden_path("tiny-rope50-f32/golden.safetensors")));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "FAIL");
  EXPECT_CONTAINS(r.out, "tiny-rope50-f32/golden.safetensors");
  // A missing golden file is a clear error too.
  const std::string missing = (test::temp_dir("cli_parity_missing") / "golden.safetensors").string();
  r = run_cli("parity --model " + q(test::golden_path("tiny-f32")) + " --ref " + q(missing));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, missing);
}

}  // namespace
}  // namespace glmlab
