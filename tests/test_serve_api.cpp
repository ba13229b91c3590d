// The OpenAI API layer of `glmlab serve` without a server (serve/http/openai_api.h, metrics.h): every
// bad request is a 400 naming its field, the JSON shapes of replies and chunks, the Prometheus text,
// and the holdback of streamed text that may begin a stop string; the server's listen backlog. The server
// itself is tested through the `openai` client in tools/reference/tests/test_serve.py (CTest serve_openai).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "model/loader.h"
#include "serve/http/metrics.h"
#include "serve/http/openai_api.h"
#include "serve/http/server.h"
#include "serve/scheduler.h"

namespace glmlab::serve::http {
namespace {

using json = nlohmann::json;
constexpr int kContext = 64;

const Tokenizer& tok() {
  static Tokenizer t = Tokenizer::byte_fallback();
  return t;
}

ParsedRequest chat(const std::string& body) { return parse_request(Endpoint::Chat, body, tok(), kContext, 7); }
ParsedRequest completion(const std::string& body) {
  return parse_request(Endpoint::Completion, body, tok(), kContext, 7);
}

// The ApiError a body raises (status 0 when it parses).
ApiError error_of(Endpoint ep, const std::string& body) {
  try {
    parse_request(ep, body, tok(), kContext, 7);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "<parsed>");
}

TEST(ServeApi, ParsesAChatRequest) {
  auto p = chat(R"({"model": "x", "messages": [{"role": "system", "content": "be brief"},
                   {"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 5, "stream": true,
                   "stream_options": {"include_usage": true}, "stop": ["a", "bc"], "seed": 42})");
  EXPECT_EQ(p.endpoint, Endpoint::Chat);
  EXPECT_EQ(p.model, "x");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[1].content, "hi");
  EXPECT_EQ(p.request.prompt, tok().build_chat_input("hi", {{"system", "be brief", ""}}));
  EXPECT_EQ(p.request.max_tokens, 5);
  EXPECT_TRUE(p.request.sampling.greedy);  // temperature 0 is argmax
  EXPECT_EQ(p.request.sampling.seed, 42u);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"a", "bc"}));
}

TEST(ServeApi, DefaultsAreOpenAIs) {
  auto p = chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_FALSE(p.request.sampling.greedy);
  EXPECT_FLOAT_EQ(p.request.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(p.request.sampling.top_p, 1.0f);
  EXPECT_EQ(p.request.sampling.top_k, 0);
  EXPECT_EQ(p.request.sampling.seed, 7u);  // the server's per-request seed
  EXPECT_EQ(p.request.max_tokens, kContext - int(p.request.prompt.size()));  // what fits the context
  EXPECT_FALSE(p.stream);
  EXPECT_FALSE(p.include_usage);
  EXPECT_TRUE(p.stop.empty());
  // null means "the default", as in OpenAI's API.
  auto q = chat(R"({"messages": [{"role": "user", "content": "hi"}], "temperature": null, "max_tokens": null,
                   "seed": null, "n": 1, "top_p": 0.5, "stop": "x"})");
  EXPECT_EQ(q.request.max_tokens, p.request.max_tokens);
  EXPECT_FLOAT_EQ(q.request.sampling.top_p, 0.5f);
  EXPECT_EQ(q.stop, std::vector<std::string>{"x"});
}

TEST(ServeApi, ParsesTextPartsAndCompletionPrompts) {
  auto p = chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                   {"type": "text", "text": "b"}], "name": "me"}]})");
  EXPECT_EQ(p.messages[0].content, "ab");
  auto c = completion(R"({"prompt": "once upon", "max_tokens": 3, "temperature": 0.7, "top_p": 0.9, "top_k": 5})");
  EXPECT_EQ(c.request.prompt, tok().encode_with_prefix("once upon"));
  EXPECT_EQ(c.prompt_text, "once upon");
  EXPECT_FALSE(c.request.sampling.greedy);
  EXPECT_FLOAT_EQ(c.request.sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(c.request.sampling.top_p, 0.9f);
  EXPECT_EQ(c.request.sampling.top_k, 5);
  EXPECT_EQ(completion(R"({"prompt": ["x"]})").prompt_text, "x");
}

TEST(ServeApi, EveryBadChatRequestIs400NamingItsField) {
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  auto with = [&](const std::string& extra) { return "{" + user + ", " + extra + "}"; };
  const std::string too_long(size_t(kContext), 'x');  // byte tokenizer: one token per byte
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},                                           // not JSON
      {"{\"messages\": [", ""},                           // truncated
      {"[1, 2]", ""},                                     // not an object
      {with("\"temperature\": NaN"), ""},                 // NaN is not JSON
      {with("\"temperature\": 1e400"), ""},               // overflows a double
      {R"({"messages": [], "messages": []})", ""},         // duplicate key
      {"{}", "messages"},
      {R"({"messages": null})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": [5]})", "messages[0]"},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role"},
      {R"({"messages": [{"role": 1, "content": "hi"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "hi"}]})", "messages[1].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 42}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]})",
       "messages[0].content[0].image_url"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image"}]}]})", "messages[0].content[0].type"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", "messages[0].content[0].text"},
      {R"({"messages": [{"role": "user", "content": "hi", "tool_calls": []}]})", "messages[0].tool_calls"},
      {R"({"messages": [{"role": "user", "content": "hi", "name": 3}]})", "messages[0].name"},
      {R"({"messages": [{"role": "user", "content": ")" + too_long + R"("}]})", "messages"},
      {with("\"model\": 5"), "model"},
      {with("\"foo\": 1"), "foo"},
      {with("\"tools\": []"), "tools"},
      {with("\"temperature\": \"0.5\""), "temperature"},
      {with("\"temperature\": -0.1"), "temperature"},
      {with("\"temperature\": 2.01"), "temperature"},
      {with("\"temperature\": true"), "temperature"},
      {with("\"top_p\": 0"), "top_p"},
      {with("\"top_p\": 1.5"), "top_p"},
      {with("\"top_p\": -1"), "top_p"},
      {with("\"top_k\": -1"), "top_k"},
      {with("\"top_k\": 1.5"), "top_k"},
      {with("\"max_tokens\": -1"), "max_tokens"},
      {with("\"max_tokens\": 0"), "max_tokens"},
      {with("\"max_tokens\": 1.5"), "max_tokens"},
      {with("\"max_tokens\": 2.0"), "max_tokens"},
      {with("\"max_tokens\": \"10\""), "max_tokens"},
      {with("\"max_tokens\": true"), "max_tokens"},
      {with("\"max_tokens\": 99999999999999999999"), "max_tokens"},
      {with("\"max_tokens\": 64"), "max_tokens"},  // prompt + 64 > the context of 64
      {with("\"max_completion_tokens\": 0"), "max_completion_tokens"},
      {with("\"max_completion_tokens\": 2, \"max_tokens\": 2"), "max_completion_tokens"},
      {with("\"stop\": 5"), "stop"},
      {with("\"stop\": \"\""), "stop"},
      {with("\"stop\": [\"a\", 1]"), "stop[1]"},
      {with("\"stop\": [\"a\", \"\"]"), "stop[1]"},
      {with("\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]"), "stop"},
      {with("\"seed\": 1.5"), "seed"},
      {with("\"seed\": \"1\""), "seed"},
      {with("\"n\": 2"), "n"},
      {with("\"n\": 0"), "n"},
      {with("\"stream\": \"yes\""), "stream"},
      {with("\"stream_options\": {\"include_usage\": true}"), "stream_options"},  // without stream
      {with("\"stream\": true, \"stream_options\": 1"), "stream_options"},
      {with("\"stream\": true, \"stream_options\": {\"include_usage\": 1}"), "stream_options.include_usage"},
      {with("\"stream\": true, \"stream_options\": {\"x\": 1}"), "stream_options.x"},
      {with("\"presence_penalty\": 0.5"), "presence_penalty"},
      {with("\"frequency_penalty\": -1"), "frequency_penalty"},
      {with("\"logit_bias\": {\"5\": 1}"), "logit_bias"},
      {with("\"logprobs\": true"), "logprobs"},
      {with("\"user\": 5"), "user"},
  };
  for (const auto& [body, param] : cases) {
    ApiError e = error_of(Endpoint::Chat, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body << " -> " << e.message;
    EXPECT_FALSE(e.message.empty());
    json j = error_body(e);
    EXPECT_EQ(j["error"]["type"], "invalid_request_error") << body;
    EXPECT_EQ(j["error"]["param"], param.empty() ? json(nullptr) : json(param)) << body;
    EXPECT_TRUE(j["error"]["code"].is_null());
    EXPECT_EQ(j["error"]["message"], e.message);
  }
  // The limits themselves are accepted.
  for (const char* ok : {"\"temperature\": 0", "\"temperature\": 2", "\"top_p\": 1", "\"top_p\": 1e-9",
                         "\"max_tokens\": 1", "\"seed\": -5", "\"seed\": 18446744073709551615", "\"n\": 1",
                         "\"presence_penalty\": 0", "\"logit_bias\": {}", "\"logprobs\": false",
                         "\"stop\": [\"a\", \"b\", \"c\", \"d\"]", "\"max_completion_tokens\": 3"})
    EXPECT_EQ(error_of(Endpoint::Chat, with(ok)).status, 0) << ok << ": " << error_of(Endpoint::Chat, with(ok)).message;
  // The longest prompt that leaves room for one token, and max_tokens filling the context exactly.
  const std::string fits(size_t(kContext - 6), 'x');  // + [gMASK] sop <|user|> "\n" ... <|assistant|>
  auto p = chat(R"({"messages": [{"role": "user", "content": ")" + fits + R"("}]})");
  EXPECT_EQ(int(p.request.prompt.size()) + p.request.max_tokens, kContext);
  EXPECT_EQ(error_of(Endpoint::Chat, R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": )" +
                                         std::to_string(kContext - int(chat(with("\"n\": 1")).request.prompt.size())) + "}")
                .status,
            0);
}

// vLLM's benchmark extensions: min_tokens (stop ids ignored before it) and ignore_eos (min = max).
TEST(ServeApi, MinTokensAndIgnoreEos) {
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  auto with = [&](const std::string& extra) { return "{" + user + ", " + extra + "}"; };
  EXPECT_EQ(chat(with("\"max_tokens\": 5")).request.min_tokens, 0);  // off by default
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"min_tokens\": 3")).request.min_tokens, 3);
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"min_tokens\": 5")).request.min_tokens, 5);
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"min_tokens\": null, \"ignore_eos\": null")).request.min_tokens, 0);
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"ignore_eos\": true")).request.min_tokens, 5);
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"ignore_eos\": false")).request.min_tokens, 0);
  EXPECT_EQ(chat(with("\"max_tokens\": 5, \"ignore_eos\": true, \"min_tokens\": 2")).request.min_tokens, 5);
  EXPECT_EQ(chat(with("\"max_completion_tokens\": 4, \"ignore_eos\": true")).request.min_tokens, 4);
  // ignore_eos with the default max_tokens: the reply fills the context.
  auto p = chat(with("\"ignore_eos\": true"));
  EXPECT_EQ(p.request.min_tokens, p.request.max_tokens);
  EXPECT_EQ(int(p.request.prompt.size()) + p.request.min_tokens, kContext);
  auto q = completion(R"({"prompt": "a", "max_tokens": 6, "min_tokens": 2})");
  EXPECT_EQ(q.request.min_tokens, 2);
  EXPECT_EQ(completion(R"({"prompt": "a", "max_tokens": 6, "ignore_eos": true})").request.min_tokens, 6);

  const std::vector<std::pair<std::string, std::string>> cases = {
      {with("\"min_tokens\": -1"), "min_tokens"},
      {with("\"min_tokens\": 1.5"), "min_tokens"},
      {with("\"min_tokens\": \"3\""), "min_tokens"},
      {with("\"min_tokens\": true"), "min_tokens"},
      {with("\"max_tokens\": 5, \"min_tokens\": 6"), "min_tokens"},
      {with("\"max_completion_tokens\": 2, \"min_tokens\": 3"), "min_tokens"},
      {with("\"min_tokens\": 64"), "min_tokens"},  // more than fits the context after the prompt
      {with("\"ignore_eos\": \"yes\""), "ignore_eos"},
      {with("\"ignore_eos\": 1"), "ignore_eos"},
  };
  for (const auto& [body, param] : cases) {
    ApiError e = error_of(Endpoint::Chat, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body << " -> " << e.message;
  }
  EXPECT_NE(error_of(Endpoint::Chat, with("\"max_completion_tokens\": 2, \"min_tokens\": 3")).message.find(
                "max_completion_tokens"),
            std::string::npos);
  EXPECT_EQ(error_of(Endpoint::Completion, R"({"prompt": "a", "max_tokens": 2, "min_tokens": 3})").param, "min_tokens");
  EXPECT_EQ(error_of(Endpoint::Completion, R"({"prompt": "a", "ignore_eos": 0})").param, "ignore_eos");
}

TEST(ServeApi, EveryBadCompletionRequestIs400NamingItsField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{}", "prompt"},
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": ["a", "b"]})", "prompt"},
      {R"({"prompt": [1, 2]})", "prompt"},
      {R"({"prompt": ")" + std::string(size_t(kContext), 'x') + R"("})", "prompt"},
      {R"({"prompt": "a", "messages": []})", "messages"},  // a chat field
      {R"({"prompt": "a", "echo": true})", "echo"},
      {R"({"prompt": "a", "best_of": 2})", "best_of"},
      {R"({"prompt": "a", "suffix": "z"})", "suffix"},
      {R"({"prompt": "a", "logprobs": 2})", "logprobs"},
      {R"({"prompt": "a", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "a", "temperature": 3})", "temperature"},
      {R"({"prompt": "a", "max_completion_tokens": 3})", "max_completion_tokens"},  // chat only
  };
  for (const auto& [body, param] : cases) {
    ApiError e = error_of(Endpoint::Completion, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body << " -> " << e.message;
  }
}

TEST(ServeApi, ReplyJsonShapes) {
  ReplyHeader h{"chatcmpl-1", 1700000000, "m"};
  json r = completion_json(Endpoint::Chat, h, "hello", "stop", {10, 3});
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"], "chatcmpl-1");
  EXPECT_EQ(r["created"], 1700000000);
  EXPECT_EQ(r["model"], "m");
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["message"], (json{{"role", "assistant"}, {"content", "hello"}}));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"], (json{{"prompt_tokens", 10}, {"completion_tokens", 3}, {"total_tokens", 13}}));

  json t = completion_json(Endpoint::Completion, h, "abc", "length", {1, 2});
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "abc");
  EXPECT_FALSE(t["choices"][0].contains("message"));
  EXPECT_EQ(t["choices"][0]["finish_reason"], "length");

  json first = chunk_json(Endpoint::Chat, h, "", true, nullptr);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  json mid = chunk_json(Endpoint::Chat, h, "wor", false, nullptr);
  EXPECT_EQ(mid["choices"][0]["delta"], (json{{"content", "wor"}}));
  json last = chunk_json(Endpoint::Chat, h, "", false, "length");
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  json u = usage_chunk_json(Endpoint::Chat, h, {4, 5});
  EXPECT_TRUE(u["choices"].is_array() && u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 9);
  json tc = chunk_json(Endpoint::Completion, h, "x", false, nullptr);
  EXPECT_EQ(tc["object"], "text_completion");
  EXPECT_EQ(tc["choices"][0]["text"], "x");

  json m = models_json("chatglm3-6b", 5);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "chatglm3-6b");
  EXPECT_EQ(m["data"][0]["object"], "model");

  EXPECT_EQ(openai_finish_reason(FinishReason::Stop), std::string("stop"));
  EXPECT_EQ(openai_finish_reason(FinishReason::Length), std::string("length"));
  EXPECT_EQ(openai_finish_reason(FinishReason::Cancelled), nullptr);
  EXPECT_EQ(openai_finish_reason(FinishReason::Error), nullptr);
}

TEST(ServeApi, WireTextIsServerSentEventsOfValidUtf8) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  // A byte-level reply can hold bytes that are not UTF-8: replaced, never an exception.
  std::string s = dump(json{{"t", std::string("a\xff") + "b"}});
  EXPECT_EQ(s, "{\"t\":\"a\xEF\xBF\xBD" "b\"}");
  EXPECT_EQ(json::parse(dump(json{{"t", "中文"}}))["t"], "中文");
  ApiError e(429, "busy", "", "rate_limit_error", "rate_limit_exceeded");
  EXPECT_EQ(error_body(e), json::parse(R"({"error": {"message": "busy", "type": "rate_limit_error",
                                                       "param": null, "code": "rate_limit_exceeded"}})"));
}

// ------------------------------------------------------------------------------------- stop strings

// Feeds `pieces` and returns what was released (flush included when no stop string was seen).
std::string run_stops(const std::vector<std::string>& stops, const std::vector<std::string>& pieces,
                      bool* stopped = nullptr) {
  StopStrings s(stops);
  std::string out;
  for (const auto& p : pieces) out += s.push(p);
  out += s.flush();
  if (stopped) *stopped = s.stopped();
  return out;
}

TEST(ServeApi, StopStringsHoldBackAPossibleStart) {
  StopStrings s({"STOP"});
  EXPECT_EQ(s.push("hello S"), "hello ");  // "S" may begin STOP
  EXPECT_EQ(s.held(), 1u);
  EXPECT_EQ(s.push("T"), "");
  EXPECT_EQ(s.held(), 2u);
  EXPECT_EQ(s.push("OP and more"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("later"), "");
  EXPECT_EQ(s.flush(), "");

  StopStrings f({"STOP"});
  EXPECT_EQ(f.push("a ST"), "a ");
  EXPECT_EQ(f.push("x"), "STx");  // a false start is released as soon as it cannot match
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.push("ST"), "");
  EXPECT_EQ(f.flush(), "ST");  // the end of the reply releases the rest

  bool stopped = false;
  EXPECT_EQ(run_stops({"cd", "b"}, {"abcd"}, &stopped), "a");  // the earliest stop string wins
  EXPECT_TRUE(stopped);
  EXPECT_EQ(run_stops({"aab"}, {"a", "a", "a", "b", "c"}, &stopped), "a");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(run_stops({"你好"}, {"说", "你", "好", "吗"}, &stopped), "说");
  EXPECT_EQ(run_stops({}, {"a", "b"}, &stopped), "ab");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(run_stops({"x"}, {"x"}, &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(ServeApi, StopStringsAgreeWithSearchingTheTextSoFar) {
  std::mt19937 rng(1);
  auto word = [&](int lo, int hi) {
    std::string w(size_t(std::uniform_int_distribution<int>(lo, hi)(rng)), 'a');
    for (char& c : w) c = char('a' + std::uniform_int_distribution<int>(0, 2)(rng));
    return w;
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    for (int k = std::uniform_int_distribution<int>(0, 4)(rng); k > 0; --k) stops.push_back(word(1, 4));
    std::string text = word(0, 30);
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      size_t n = std::min(text.size() - i, size_t(std::uniform_int_distribution<int>(0, 4)(rng)));
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    // The reply ends at the first piece after which the text so far holds a stop string, before the
    // earliest one in that text (a shorter stop string completing sooner wins over a longer one that
    // started before it: the text after the stop is never generated).
    size_t first = std::string::npos;
    std::string so_far;
    for (const auto& p : pieces) {
      so_far += p;
      for (const auto& s : stops) first = std::min(first, so_far.find(s));
      if (first != std::string::npos) break;
    }
    // Released text is a prefix of the answer at every step (never retracted, never past a stop).
    StopStrings st(stops);
    std::string out;
    for (const auto& p : pieces) {
      out += st.push(p);
      ASSERT_EQ(text.compare(0, out.size(), out), 0);
      if (first != std::string::npos)
        ASSERT_LE(out.size(), first) << "text " << text << ", piece " << p << ", stops " << ::testing::PrintToString(stops);
    }
    out += st.flush();
    ASSERT_EQ(out, first == std::string::npos ? text : text.substr(0, first)) << text;
    ASSERT_EQ(st.stopped(), first != std::string::npos) << text;
  }
}

TEST(ServeApi, ApiKeyCheck) {
  EXPECT_TRUE(api_key_matches("Bearer sk-1", "sk-1"));
  EXPECT_TRUE(api_key_matches("bearer sk-1", "sk-1"));
  EXPECT_FALSE(api_key_matches("Bearer sk-2", "sk-1"));
  EXPECT_FALSE(api_key_matches("Bearer sk-1x", "sk-1"));
  EXPECT_FALSE(api_key_matches("Bearer sk-", "sk-1"));
  EXPECT_FALSE(api_key_matches("Bearer ", "sk-1"));
  EXPECT_FALSE(api_key_matches("sk-1", "sk-1"));
  EXPECT_FALSE(api_key_matches("Basic sk-1", "sk-1"));
  EXPECT_FALSE(api_key_matches("", "sk-1"));
  EXPECT_FALSE(api_key_matches("Bearer ", ""));
}

// ------------------------------------------------------------------------------------------ metrics

// The Prometheus text exposition format, line by line: every sample belongs to a family declared by
// "# TYPE" before it; histogram buckets are cumulative and end with +Inf = _count.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (-?[0-9.e+-]+|\+Inf|NaN)$)");
  static const std::regex type_line(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex help_line(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  std::map<std::string, std::string> types;
  std::map<std::string, double> values;
  std::istringstream in(text);
  std::string line;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, type_line)) {
      EXPECT_EQ(types.count(m[1]), 0u) << "TYPE twice: " << line;
      types[m[1]] = m[2];
      continue;
    }
    if (std::regex_match(line, m, help_line)) continue;
    EXPECT_TRUE(std::regex_match(line, m, sample)) << "not a sample line: [" << line << "]";
    if (m.empty()) continue;
    std::string name = m[1];
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (family.size() > strlen(suffix) && family.compare(family.size() - strlen(suffix), std::string::npos, suffix) == 0 &&
          types.count(family.substr(0, family.size() - strlen(suffix))) &&
          types[family.substr(0, family.size() - strlen(suffix))] == "histogram")
        family = family.substr(0, family.size() - strlen(suffix));
    EXPECT_TRUE(types.count(family)) << "no # TYPE before " << line;
    std::string labels = m[2];
    values[name + labels] = std::stod(m[5]);
  }
  return values;
}

TEST(ServeApi, MetricsArePrometheusText) {
  Metrics m;
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 400);
  m.count_request("/health", 200);
  m.count_finish(FinishReason::Length);
  m.count_finish(FinishReason::Cancelled);
  for (double v : {0.003, 0.1, 0.2, 7.0, 1000.0}) m.observe_ttft(v);
  m.observe_tpot(0.02);
  SchedulerStats s;
  s.queued = 3;
  s.running = 2;
  s.prompt_tokens = 100;
  s.generated_tokens = 40;
  s.rejected = 1;
  s.max_batch = 8;
  s.context = 2048;
  auto v = parse_prometheus(m.render(s));
  EXPECT_EQ(v["glmlab_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"], 2);
  EXPECT_EQ(v["glmlab_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"], 1);
  EXPECT_EQ(v["glmlab_requests_total{endpoint=\"/health\",status=\"200\"}"], 1);
  EXPECT_EQ(v["glmlab_requests_finished_total{reason=\"length\"}"], 1);
  EXPECT_EQ(v["glmlab_requests_finished_total{reason=\"cancelled\"}"], 1);
  EXPECT_EQ(v.count("glmlab_requests_finished_total{reason=\"stop\"}"), 1u);
  EXPECT_EQ(v["glmlab_requests_finished_total{reason=\"stop\"}"], 0);
  EXPECT_EQ(v["glmlab_queue_depth"], 3);
  EXPECT_EQ(v["glmlab_running_sequences"], 2);
  EXPECT_EQ(v["glmlab_prompt_tokens_total"], 100);
  EXPECT_EQ(v["glmlab_generation_tokens_total"], 40);
  EXPECT_EQ(v["glmlab_rejected_requests_total"], 1);
  EXPECT_EQ(v["glmlab_max_batch"], 8);
  EXPECT_EQ(v["glmlab_context_tokens"], 2048);
  // Buckets: cumulative, a bound counts values equal to it, +Inf = _count.
  const std::string h = "glmlab_time_to_first_token_seconds";
  EXPECT_EQ(v[h + "_bucket{le=\"0.01\"}"], 1);
  EXPECT_EQ(v[h + "_bucket{le=\"0.1\"}"], 2);
  EXPECT_EQ(v[h + "_bucket{le=\"0.25\"}"], 3);
  EXPECT_EQ(v[h + "_bucket{le=\"5\"}"], 3);
  EXPECT_EQ(v[h + "_bucket{le=\"10\"}"], 4);
  EXPECT_EQ(v[h + "_bucket{le=\"60\"}"], 4);
  EXPECT_EQ(v[h + "_bucket{le=\"+Inf\"}"], 5);
  EXPECT_EQ(v[h + "_count"], 5);
  EXPECT_NEAR(v[h + "_sum"], 1007.303, 1e-9);
  double prev = 0;
  for (double b : ttft_buckets()) {
    double c = v[h + "_bucket{le=\"" + fmt::format("{}", b) + "\"}"];
    EXPECT_GE(c, prev) << b;
    prev = c;
  }
  EXPECT_EQ(v["glmlab_time_per_output_token_seconds_count"], 1);
  EXPECT_EQ(v["glmlab_time_per_output_token_seconds_bucket{le=\"0.025\"}"], 1);
  EXPECT_EQ(v["glmlab_time_per_output_token_seconds_bucket{le=\"0.01\"}"], 0);
}

// A burst of clients connecting at once is queued by the kernel, not dropped: with httplib's backlog of
// 5, the connections past it lost their SYN and waited a 1 s retransmission for their first token. Here
// nothing accepts (bound, listen() not called): every one of 32 connections must still complete at once.
TEST(ServeServer, ListenBacklogHoldsABurstOfConnections) {
  static Model m = load_model("random:tiny", "bf16", 3);
  auto ops = make_ops(Backend::Cpu);
  Scheduler sched(m, *ops, SchedulerOptions{2, 4, 16, 64, KvDtype::F32});
  ServerOptions o;
  o.port = 0;
  Server server(sched, tok(), 64, o);
  const int port = server.bind();
  ASSERT_GT(port, 0);
  constexpr int kClients = 32;
  std::vector<pollfd> fds;
  for (int i = 0; i < kClients; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
    fds.push_back({fd, POLLOUT, 0});
  }
  // Established connections are writable at once; a dropped SYN keeps its socket unwritable for 1 s.
  int connected = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (connected < kClients && std::chrono::steady_clock::now() < deadline) {
    ::poll(fds.data(), fds.size(), 50);
    connected = 0;
    for (auto& p : fds) {
      int err = 0;
      socklen_t len = sizeof(err);
      if ((p.revents & POLLOUT) && ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) ++connected;
    }
  }
  for (auto& p : fds) ::close(p.fd);
  EXPECT_EQ(connected, kClients);
}

}  // namespace
}  // namespace glmlab::serve::http
