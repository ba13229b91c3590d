// The chat API of issue 15 against the oracle (tools/reference/glm_tokenizer.py via chat_golden.json,
// itself checked against THUDM's tokenization_chatglm.py): build_chat of message lists, decoding as
// ChatGLMTokenizer.decode, and ReplyDecoder's streamed pieces against the whole decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "test_util.h"
#include "util/error.h"

namespace glmlab {
namespace {

using test::real_tokenizer;

using Ids = std::vector<int32_t>;
using nlohmann::json;

const Tokenizer& bytes() {
  static Tokenizer t = Tokenizer::byte_fallback();
  return t;
}

json chat_golden() {
  std::ifstream in(test::golden_path("chat_golden.json"));
  EXPECT_TRUE(in) << "run tools/reference/make_golden.py first";
  return json::parse(in);
}

std::vector<ChatMessage> messages_of(const json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j)
    out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>(), m.value("metadata", "")});
  return out;
}

// Strict UTF-8: no overlong forms, surrogates or code points above U+10FFFF, nothing cut off.
bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uint8_t(s[i]);
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < len; ++k) {
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
    }
    const uint32_t min = len == 1 ? 0 : len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
    i += len;
  }
  return true;
}

// Streams `ids` through a ReplyDecoder; checks every piece and returns their concatenation.
std::string stream(const Tokenizer& tok, const Ids& ids, size_t* bad_pieces = nullptr, std::string* flushed = nullptr) {
  ReplyDecoder dec(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string piece = dec.push(id);
    if (!valid_utf8(piece) && bad_pieces) ++*bad_pieces;
    all += piece;
  }
  std::string rest = dec.flush();
  if (!valid_utf8(rest) && bad_pieces) ++*bad_pieces;
  all += rest;
  if (flushed) *flushed = rest;
  EXPECT_EQ(dec.text(), all);
  return all;
}

// ---------------------------------------------------------------------------- build_chat

TEST(ChatLayout, EveryGoldenMessageListMatchesTheOracle) {
  json g = chat_golden();
  std::set<std::string> names;
  for (const auto& c : g.at("chat")) {
    const std::string name = c.at("name");
    names.insert(name);
    EXPECT_EQ(real_tokenizer().build_chat(messages_of(c.at("messages"))), c.at("ids").get<Ids>()) << name;
  }
  for (std::string want : {"system_user", "empty_system", "multi_turn", "tool_call_and_observation",
                           "interpreter_metadata", "last_message_metadata_is_not_used", "chinese_and_emoji"})
    EXPECT_TRUE(names.count(want)) << want;
}

TEST(ChatLayout, AnEmptySystemMessageIsAnEmptySystemTurn) {
  std::vector<ChatMessage> m = {{"system", "", ""}, {"user", "Hello", ""}};
  EXPECT_EQ(real_tokenizer().build_chat(m), (Ids{64790, 64792, 64794, 30910, 13, 64795, 30910, 13, 13755, 64796}));
  EXPECT_EQ(real_tokenizer().build_chat_input("Hello", {{"system", "", ""}}), real_tokenizer().build_chat(m));
  EXPECT_EQ(real_tokenizer().build_chat({{"user", "Hello", ""}}), (Ids{64790, 64792, 64795, 30910, 13, 13755, 64796}));
}

TEST(ChatLayout, TheLastMessageIsTheQueryWithoutMetadata) {
  std::vector<ChatMessage> history = {{"user", "hi", ""}, {"assistant", "```python\nx\n```", "interpreter"}};
  std::vector<ChatMessage> m = history;
  m.push_back({"observation", "1024", "ignored"});
  EXPECT_EQ(real_tokenizer().build_chat(m), real_tokenizer().build_chat_input("1024", history, "observation"));
  // The history's metadata is kept: <|assistant|> + sp.encode("interpreter\n").
  Ids ids = real_tokenizer().build_chat(m);
  Ids header = real_tokenizer().build_single_message("assistant", "interpreter", "");
  EXPECT_NE(std::search(ids.begin(), ids.end(), header.begin(), header.end()), ids.end());
  EXPECT_EQ(ids.back(), tok::kAssistant);
}

TEST(ChatLayout, EmptyListsAndUnknownRolesAreErrors) {
  try {
    real_tokenizer().build_chat({});
    ADD_FAILURE() << "no Error for an empty message list";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at least one message"), std::string::npos) << e.what();
  }
  try {
    real_tokenizer().build_chat({{"system", "s", ""}, {"user", "u", ""}, {"function", "f", ""}});
    ADD_FAILURE() << "no Error for the role \"function\"";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("\"function\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("message 2"), std::string::npos) << msg;
  }
  EXPECT_THROW(bytes().build_chat({{"User", "u", ""}}), Error);  // roles are case-sensitive, as THUDM's assert
}

// ---------------------------------------------------------------------------- decode

TEST(ChatDecode, EveryGoldenIdListMatchesChatGLMTokenizerDecode) {
  json g = chat_golden();
  size_t n = 0;
  for (const auto& d : g.at("decode")) {
    const std::string name = d.at("name");
    EXPECT_EQ(real_tokenizer().decode(d.at("ids").get<Ids>()), d.at("text").get<std::string>()) << name;
    ++n;
  }
  EXPECT_GE(n, 15u);
}

TEST(ChatDecode, ARoleTokenFollowedByASpacePieceKeepsTheSpace) {
  Ids ids = {tok::kAssistant};
  for (int32_t id : real_tokenizer().encode("Hello world")) ids.push_back(id);  // 13755 "▁Hello", 993 "▁world"
  EXPECT_EQ(real_tokenizer().decode(ids), "<|assistant|> Hello world");
  EXPECT_EQ(real_tokenizer().decode({tok::kAssistant, 30910, 13, 36474, 54591}), "<|assistant|> \n 你好");
  EXPECT_EQ(real_tokenizer().decode(real_tokenizer().build_chat_input("你好")), "[gMASK]sop<|user|> \n 你好<|assistant|>");
  // Only the text's first piece loses its "▁", also after eos, bos and unk, which decode to "".
  EXPECT_EQ(real_tokenizer().decode({13755, 993}), "Hello world");
  EXPECT_EQ(real_tokenizer().decode({2, 1, 0, 13755, 0, 993, 2}), "Hello world");
  // sentencepiece 0.2 (THUDM's) drops one "▁" at the start, not every "▁" while the text is empty.
  EXPECT_EQ(real_tokenizer().decode({30910, 30910, 13755}), "  Hello");
}

TEST(ChatDecode, ByteFallbackDecodesLikeTheRealVocabulary) {
  // Ids 3..258 are the real vocabulary's byte pieces, so both tokenizers decode them alike, U+FFFD for
  // every byte that is not part of a well-formed UTF-8 character.
  std::mt19937 rng(7);
  const std::vector<int> interesting = {0x00, 0x41, 0x7F, 0x80, 0xA0, 0xBD, 0xBF, 0xC0, 0xC1, 0xC3, 0xE0, 0xE4,
                                        0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xF8, 0xFF, 0x9F, 0x98, 0x81};
  for (int trial = 0; trial < 2000; ++trial) {
    Ids ids;
    size_t n = rng() % 9;
    for (size_t i = 0; i < n; ++i) {
      int r = int(rng() % 10);
      ids.push_back(r < 7 ? interesting[rng() % interesting.size()] + 3 : r < 9 ? int32_t(rng() % 256) + 3 : tok::kEos);
    }
    ASSERT_EQ(bytes().decode(ids), real_tokenizer().decode(ids)) << "trial " << trial;
  }
  EXPECT_EQ(bytes().decode({0xE4 + 3, 0xBD + 3, 0xA0 + 3}), "你");
  EXPECT_EQ(bytes().decode({0xE4 + 3, 0xBD + 3}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(bytes().decode({0xE4 + 3, tok::kEos, 0xBD + 3, 0xA0 + 3}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---------------------------------------------------------------------------- ReplyDecoder

TEST(ChatReplyDecoder, EveryDevSummaryStreamsToItsDecode) {
  std::ifstream in(test::dev_json_path());
  ASSERT_TRUE(in) << test::dev_json_path();
  std::string line;
  size_t n = 0, bad = 0, bad_pieces = 0, late = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const std::string summary = json::parse(line).at("summary").get<std::string>();
    for (const Tokenizer* tok : {&real_tokenizer(), &bytes()}) {
      // A reply as the model writes it: the header "\n", the text, then eos.
      Ids ids = tok->encode("\n" + summary);
      ids.push_back(tok::kEos);
      std::string flushed;
      std::string streamed = stream(*tok, ids, &bad_pieces, &flushed);
      if (streamed != tok->decode(ids, true) && ++bad <= 3)
        ADD_FAILURE() << "streamed != decode for: " << summary << "\n got: " << streamed;
      if (!flushed.empty()) ++late;  // whole characters are never held back to the end
    }
    ++n;
  }
  EXPECT_EQ(n, 1070u);
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(bad_pieces, 0u);
  EXPECT_EQ(late, 0u);
}

TEST(ChatReplyDecoder, HoldsBackAByteSplitCharacterAndNothingElse) {
  for (const Tokenizer* tok : {&real_tokenizer(), &bytes()}) {
    ReplyDecoder d(*tok);
    EXPECT_EQ(d.push('A' + 3), "A");
    EXPECT_EQ(d.push(0xF0 + 3), "");  // 😀 = F0 9F 98 80
    EXPECT_EQ(d.push(0x9F + 3), "");
    EXPECT_EQ(d.push(0x98 + 3), "");
    EXPECT_EQ(d.push(0x80 + 3), "😀");
    EXPECT_EQ(d.push(0xE4 + 3), "");
    EXPECT_EQ(d.push('B' + 3), "\xEF\xBF\xBD" "B");  // a broken character is final as soon as it is broken
    EXPECT_EQ(d.push(0xBD + 3), "\xEF\xBF\xBD");    // a stray continuation byte can never join anything
    EXPECT_EQ(d.push(0xC3 + 3), "");
    EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // the reply ends inside a character
    EXPECT_EQ(d.text(), "A😀\xEF\xBF\xBD" "B\xEF\xBF\xBD\xEF\xBF\xBD");
  }
  ReplyDecoder d(real_tokenizer());
  EXPECT_EQ(d.push(tok::kAssistant), "<|assistant|>");
  EXPECT_EQ(d.push(13755), " Hello");  // after a role token the "▁" is a space
  ReplyDecoder e(real_tokenizer());
  EXPECT_EQ(e.push(tok::kEos), "");
  EXPECT_EQ(e.push(30910), "");  // the first "▁" is the dummy prefix ...
  EXPECT_EQ(e.push(30910), " ");  // ... the next one a space
  EXPECT_EQ(e.push(13755), " Hello");
}

TEST(ChatReplyDecoder, RandomIdListsStreamToTheirDecode) {
  std::mt19937 rng(15);
  const Ids specials = {tok::kUnk, tok::kBos, tok::kEos, tok::kGMask, tok::kSop, tok::kUser, tok::kAssistant,
                        tok::kObservation, 30910, 13, 64798, -1};
  for (const Tokenizer* tok : {&real_tokenizer(), &bytes()}) {
    size_t bad_pieces = 0;
    for (int trial = 0; trial < 3000; ++trial) {
      Ids ids;
      size_t n = rng() % 16;
      for (size_t i = 0; i < n; ++i) {
        int r = int(rng() % 10);
        if (r < 5) ids.push_back(int32_t(rng() % 256) + 3);  // bytes: characters, broken ones, strays
        else if (r < 7) ids.push_back(specials[rng() % specials.size()]);
        else if (tok->is_byte_fallback()) ids.push_back(0xE0 + int32_t(rng() % 0x20) + 3);  // lead bytes
        else ids.push_back(int32_t(rng() % 64789));
      }
      ASSERT_EQ(stream(*tok, ids, &bad_pieces), tok->decode(ids, true)) << "trial " << trial;
    }
    EXPECT_EQ(bad_pieces, 0u);
  }
}

TEST(ChatReplyDecoder, GoldenIdListsStreamToTheOraclesText) {
  json g = chat_golden();
  for (const auto& d : g.at("decode"))
    EXPECT_EQ(stream(real_tokenizer(), d.at("ids").get<Ids>()), d.at("text").get<std::string>()) << d.at("name");
}

TEST(ChatReplyDecoder, LongRepliesTakeLinearTime) {
  // 300,000 ids: re-decoding the whole reply on every id would be ~10^11 byte operations.
  std::string piece = "你好，世界！Hello 😀 ";
  Ids one = bytes().encode(piece);
  Ids ids;
  while (ids.size() < 300000) ids.insert(ids.end(), one.begin(), one.end());
  ReplyDecoder d(bytes());
  size_t total = 0;
  for (int32_t id : ids) total += d.push(id).size();
  total += d.flush().size();
  EXPECT_EQ(total, ids.size());  // every byte comes out once, as it was
  EXPECT_EQ(d.text().substr(0, piece.size()), piece);
}

}  // namespace
}  // namespace glmlab
