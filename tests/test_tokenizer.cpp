// The C++ tokenizer against the oracle (tools/reference/glm_tokenizer.py via tokenizer_golden.jsonl) on
// every record of AdvertiseGen dev.json, against the reference vectors of the facts page (§2.2, §2.3),
// decoding, the byte-level fallback, and the errors for missing or bad tokenizer files.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

using test::real_tokenizer;

using test::expect_error;

using Ids = std::vector<int32_t>;
using nlohmann::json;

struct DevRecord {
  std::string content, summary;
};

std::vector<DevRecord> read_dev_json() {
  std::ifstream in(test::dev_json_path());
  EXPECT_TRUE(in) << test::dev_json_path();
  std::vector<DevRecord> recs;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line);
    recs.push_back({j.at("content").get<std::string>(), j.at("summary").get<std::string>()});
  }
  return recs;
}

// ---------------------------------------------------------------------------- the oracle, record by record

TEST(TokenizerOracle, EveryDevRecordMatchesIdForId) {
  auto recs = read_dev_json();
  ASSERT_EQ(recs.size(), 1070u);  // facts §5: dev has 1,070 records
  std::ifstream in(test::golden_path("tokenizer_golden.jsonl"));
  ASSERT_TRUE(in) << "run tools/reference/make_golden.py first";
  std::string line;
  size_t n = 0, bad_chat = 0, bad_content = 0, bad_summary = 0;
  while (std::getline(in, line)) {
    json g = json::parse(line);
    size_t ln = g.at("line").get<size_t>();
    ASSERT_EQ(ln, n + 1) << "golden records must follow dev.json's lines in order";
    ASSERT_LE(ln, recs.size());
    const DevRecord& r = recs[ln - 1];
    Ids chat = real_tokenizer().build_chat_input(r.content);
    Ids content = real_tokenizer().encode(r.content);
    Ids summary = real_tokenizer().encode(r.summary);
    // EXPECT with a cap on the messages, so one systematic bug does not print 3,000 failures.
    if (chat != g.at("chat_ids").get<Ids>() && ++bad_chat <= 3) ADD_FAILURE() << "chat_ids differ on line " << ln;
    if (content != g.at("content_ids").get<Ids>() && ++bad_content <= 3)
      ADD_FAILURE() << "content_ids differ on line " << ln;
    if (summary != g.at("summary_ids").get<Ids>() && ++bad_summary <= 3)
      ADD_FAILURE() << "summary_ids differ on line " << ln;
    ++n;
  }
  EXPECT_EQ(n, recs.size());
  EXPECT_EQ(bad_chat, 0u);
  EXPECT_EQ(bad_content, 0u);
  EXPECT_EQ(bad_summary, 0u);
}

TEST(TokenizerOracle, DecodeRoundTripsEveryDevRecord) {
  size_t bad = 0;
  for (const auto& r : read_dev_json()) {
    for (const std::string* s : {&r.content, &r.summary}) {
      std::string back = real_tokenizer().decode(real_tokenizer().encode(*s));
      if (back != *s && ++bad <= 3) ADD_FAILURE() << "decode(encode(s)) != s for: " << *s << "\n got: " << back;
    }
  }
  EXPECT_EQ(bad, 0u);
}

// ---------------------------------------------------------------------------- facts page §2.2, §2.3

TEST(TokenizerFacts, SpecialIdsAndNames) {
  EXPECT_EQ(tok::kMask, 64789);
  EXPECT_EQ(tok::kGMask, 64790);
  EXPECT_EQ(tok::kSMask, 64791);
  EXPECT_EQ(tok::kSop, 64792);
  EXPECT_EQ(tok::kEop, 64793);
  EXPECT_EQ(tok::kSystem, 64794);
  EXPECT_EQ(tok::kUser, 64795);
  EXPECT_EQ(tok::kAssistant, 64796);
  EXPECT_EQ(tok::kObservation, 64797);
  EXPECT_EQ(real_tokenizer().vocab_size(), 64798);
  EXPECT_EQ(tok::kEos, 2);
  EXPECT_EQ(tok::kUnk, 0);
  const std::vector<std::pair<int32_t, std::string>> names = {
      {64789, "[MASK]"}, {64790, "[gMASK]"},  {64791, "[sMASK]"},      {64792, "sop"},
      {64793, "eop"},    {64794, "<|system|>"}, {64795, "<|user|>"}, {64796, "<|assistant|>"},
      {64797, "<|observation|>"}};
  for (auto& [id, name] : names) {
    auto n = Tokenizer::special_name(id);
    ASSERT_TRUE(n.has_value()) << id;
    EXPECT_EQ(*n, name);
    EXPECT_EQ(real_tokenizer().decode({id}), name);  // special ids render as their names
  }
  EXPECT_FALSE(Tokenizer::special_name(64788).has_value());
  EXPECT_FALSE(Tokenizer::special_name(64798).has_value());
  EXPECT_FALSE(Tokenizer::special_name(2).has_value());
  EXPECT_EQ(Tokenizer::role_id("system"), 64794);
  EXPECT_EQ(Tokenizer::role_id("user"), 64795);
  EXPECT_EQ(Tokenizer::role_id("assistant"), 64796);
  EXPECT_EQ(Tokenizer::role_id("observation"), 64797);
  expect_error([] { Tokenizer::role_id("admin"); }, {"admin"});
}

TEST(TokenizerFacts, ChatLayoutOfNiHao) {
  EXPECT_EQ(real_tokenizer().build_chat_input("你好"), (Ids{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}));
  EXPECT_EQ(real_tokenizer().encode_with_prefix("你好"), (Ids{64790, 64792, 36474, 54591}));  // tokenizer.encode("你好")
  // The tool-call header of §3: <|assistant|> + sp.encode("get_current_weather\n").
  EXPECT_EQ(real_tokenizer().build_single_message("assistant", "get_current_weather", ""),
            (Ids{64796, 634, 30962, 8545, 30962, 27564, 13}));
  // ChatGLMTokenizer.decode: the "▁" of "\n" (30910) after <|user|> is a space.
  EXPECT_EQ(real_tokenizer().decode(real_tokenizer().build_chat_input("你好")), "[gMASK]sop<|user|> \n 你好<|assistant|>");
}

TEST(TokenizerFacts, SentencePieceEncodings) {
  const std::vector<std::pair<std::string, Ids>> vectors = {
      {"\n", {30910, 13}},
      {"你好", {36474, 54591}},
      {"\n你好", {30910, 13, 39701}},
      {"Hello world", {13755, 993}},
      {" hello", {265, 15616, 30914}},
      {"hello  world\n\nx", {24954, 265, 8515, 13, 13, 30948}},
      {"  ", {2951}},
      {"a\tb", {260, 12, 30931}},
      {"2023年", {30910, 30943, 30940, 30943, 30966, 54540}},
      {"类型#裤*版型#宽松", {30910, 33467, 31010, 56532, 30998, 55090, 54888, 31010, 40833}},
      {"<|user|>", {906, 31007, 4865, 31007, 30994}},  // role-token text stays text
      {"<UNK>", {906, 5234, 30984, 30994}},            // §2.3: the literal placeholder of the summaries
  };
  for (auto& [text, ids] : vectors) EXPECT_EQ(real_tokenizer().encode(text), ids) << "text: \"" << text << "\"";
}

TEST(TokenizerFacts, SystemPromptExampleIs43Ids) {
  // The system text of chatglm.cpp's test (the oracle's test_chat_input_with_system_prompt uses the same).
  const std::string system =
      "You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's instructions carefully. "
      "Respond using markdown.";
  Ids ids = real_tokenizer().build_chat_input("你好", {{"system", system, ""}});
  ASSERT_EQ(ids.size(), 43u);
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + 8), (Ids{64790, 64792, 64794, 30910, 13, 809, 383, 22011}));
  EXPECT_EQ(Ids(ids.end() - 7, ids.end()), (Ids{30930, 64795, 30910, 13, 36474, 54591, 64796}));
  // The middle is exactly sp.encode(system) (build_single_message, no separators between turns).
  Ids sys = real_tokenizer().encode(system);
  EXPECT_EQ(Ids(ids.begin() + 5, ids.begin() + 5 + long(sys.size())), sys);
  EXPECT_EQ(5 + sys.size() + 6, ids.size());
}

TEST(TokenizerFacts, HistoryAndRolesFollowBuildSingleMessage) {
  std::vector<ChatMessage> history = {{"user", "你好", ""}, {"assistant", "Hello world", ""}};
  Ids ids = real_tokenizer().build_chat_input("\n", history, "observation");
  Ids want = {64790, 64792, 64795, 30910, 13, 36474, 54591, 64796, 30910, 13, 13755, 993,
              64797, 30910, 13, 30910, 13, 64796};
  EXPECT_EQ(ids, want);
  expect_error([] { real_tokenizer().build_chat_input("x", {}, "boss"); }, {"boss"});
}

// ---------------------------------------------------------------------------- decoding

TEST(TokenizerDecode, RoundTripsAndSpecials) {
  for (std::string s : {"Hello world", " hello", "hello  world\n\nx", "a\tb", "2023年", "类型#裤*版型#宽松",
                        "<|user|>", "  leading and trailing  "})
    EXPECT_EQ(real_tokenizer().decode(real_tokenizer().encode(s)), s);
  // Special ids decode as their names, and like THUDM's ChatGLMTokenizer.decode the text is decoded
  // as a whole: the "▁" of "▁Hello" after them is a space (SPTokenizer.decode, run by run, drops it).
  Ids ids = {tok::kGMask, tok::kSop};
  for (int32_t id : real_tokenizer().encode("Hello world")) ids.push_back(id);
  ids.push_back(tok::kEop);
  EXPECT_EQ(real_tokenizer().decode(ids), "[gMASK]sop Hello worldeop");
}

TEST(TokenizerDecode, OutOfVocabularyIdsAreErrorsUnlessLenient) {
  for (int32_t id : {64798, 65023, 70000, -1}) {
    expect_error([&] { real_tokenizer().decode({13755, id}); }, {std::to_string(id)});
    EXPECT_NE(real_tokenizer().decode({13755, id}, /*lenient=*/true).find("<id:" + std::to_string(id) + ">"), std::string::npos);
  }
  // Like ChatGLMTokenizer.decode, the text decodes as a whole: only its first piece loses the "▁".
  EXPECT_EQ(real_tokenizer().decode({13755, 70000, 993}, true), "Hello<id:70000> world");
  EXPECT_EQ(real_tokenizer().decode({13755, tok::kGMask, 993}), "Hello[gMASK] world");
  // eos, bos and unk decode to "" (THUDM's convert_id_to_token), not SentencePiece's " ⁇ " for unk.
  EXPECT_EQ(real_tokenizer().decode({tok::kUnk, 13755, tok::kBos, 993, tok::kEos}), "Hello world");
}

TEST(TokenizerBytes, RealModelFallsBackToBytePieces) {
  // "☃" (U+2603) and "𠀀" (U+20000) are not pieces: SentencePiece emits their UTF-8 bytes as ids b + 3.
  for (std::string s : {"☃", "𠀀"}) {
    Ids want = {30910};  // the dummy-prefix "▁"
    for (unsigned char b : s) want.push_back(int32_t(b) + 3);
    EXPECT_EQ(real_tokenizer().encode(s), want) << s;
    EXPECT_EQ(real_tokenizer().decode(want), s);
  }
  // Byte ids in the middle of text decode to the bytes (here "a\tb": \t = 9 → id 12).
  EXPECT_EQ(real_tokenizer().decode({260, 12, 30931}), "a\tb");
}

TEST(TokenizerBytes, ByteLevelFallbackTokenizer) {
  Tokenizer t = Tokenizer::byte_fallback();
  EXPECT_TRUE(t.is_byte_fallback());
  EXPECT_FALSE(real_tokenizer().is_byte_fallback());
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  Ids ids = t.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[size_t(b)], b + 3);
  // Bytes that are not well-formed UTF-8 decode as U+FFFD, as the real vocabulary's byte pieces do.
  EXPECT_EQ(t.decode(ids), real_tokenizer().decode(ids));
  EXPECT_EQ(t.decode(Ids(ids.begin(), ids.begin() + 128)), all.substr(0, 128));
  EXPECT_EQ(t.encode("你好"), (Ids{0xE4 + 3, 0xBD + 3, 0xA0 + 3, 0xE5 + 3, 0xA5 + 3, 0xBD + 3}));
  EXPECT_EQ(t.decode(t.encode("你好")), "你好");
  // The chat layout still uses the real special ids.
  EXPECT_EQ(t.build_chat_input("A"), (Ids{64790, 64792, 64795, '\n' + 3, 'A' + 3, 64796}));
  EXPECT_EQ(t.decode(t.build_chat_input("A")), "[gMASK]sop<|user|>\nA<|assistant|>");
  // Only eos, bos and unk (as ""), the byte ids 3..258 and the special ids decode.
  for (int32_t id : {0, 1, 2}) EXPECT_EQ(t.decode({'a' + 3, id}), "a");
  for (int32_t id : {259, 30910, 64788, 64798, -5}) {
    expect_error([&] { t.decode({'a' + 3, id}); }, {std::to_string(id)});
    EXPECT_EQ(t.decode({'a' + 3, id}, /*lenient=*/true), "a<id:" + std::to_string(id) + ">");
  }
  EXPECT_EQ(t.decode({3, 258}), std::string("\x00\xEF\xBF\xBD", 4));
}

// ---------------------------------------------------------------------------- bad tokenizer files

TEST(TokenizerFiles, MissingFileNamesThePath) {
  auto dir = test::temp_dir("tokenizer_missing");
  std::string path = (dir / "no_such_tokenizer.model").string();
  expect_error([&] { Tokenizer::from_file(path); }, {path});
  expect_error([&] { Tokenizer::from_file(dir.string()); }, {dir.string()});  // a folder is not a file
}

TEST(TokenizerFiles, NotASentencePieceModelIsAClearError) {
  auto dir = test::temp_dir("tokenizer_bad");
  std::string path = (dir / "tokenizer.model").string();
  write_file_atomic(path, "this is not a SentencePiece model\n");
  expect_error([&] { Tokenizer::from_file(path); }, {path, "cannot load tokenizer"});
  std::string empty = (dir / "empty.model").string();
  write_file_atomic(empty, "");
  expect_error([&] { Tokenizer::from_file(empty); }, {empty});
  // A truncated copy of the real model is not loadable either.
  std::string real_bytes = read_file(test::tokenizer_path());
  ASSERT_EQ(real_bytes.size(), 1018370u);  // facts §2.1
  std::string cut = (dir / "truncated.model").string();
  write_file_atomic(cut, std::string_view(real_bytes).substr(0, real_bytes.size() / 2));
  expect_error([&] { Tokenizer::from_file(cut); }, {cut});
}

}  // namespace
}  // namespace glmlab
