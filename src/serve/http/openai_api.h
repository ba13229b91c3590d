// The OpenAI-compatible API as pure functions (no sockets, no threads): a request body parsed and
// checked into a scheduler Request plus what the reply needs (stream, stop strings), the JSON of
// replies, stream chunks and errors, the holdback of streamed text that may begin a stop string, and
// the bearer-key check. server.cpp wires these to httplib; tests/test_serve_api.cpp tests them alone.
//
// Defaults (OpenAI's): temperature 1, top_p 1, no stop strings, max_tokens = what fits the context
// after the prompt, a fresh random seed per request unless `seed` is given. vLLM's benchmark extensions
// `min_tokens` (stop ids are ignored before that many tokens) and `ignore_eos` (always) default to off. temperature 0 is greedy
// decoding (argmax, exactly what `glmlab generate` does without --sample).
#pragma once
#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"
#include "serve/scheduler.h"

namespace glmlab::serve::http {

enum class Endpoint { Chat, Completion };  // POST /v1/chat/completions, POST /v1/completions

// An error answered to the client: the HTTP status and the OpenAI error body
// {"error": {"message", "type", "param", "code"}} (an empty param or code is null).
struct ApiError : std::exception {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
  ApiError(int status, std::string message, std::string param = {}, std::string type = "invalid_request_error",
           std::string code = {});
  const char* what() const noexcept override { return message.c_str(); }
};
// A 400 invalid_request_error naming `param`.
ApiError bad_request(std::string param, std::string message);
nlohmann::json error_body(const ApiError& e);

constexpr int kMaxStopStrings = 4;

struct ParsedRequest {
  Endpoint endpoint = Endpoint::Chat;
  Request request;                   // prompt ids, max_tokens, min_tokens (ignore_eos: = max_tokens), sampling
                                     // (stop ids: the scheduler's default)
  std::vector<ChatMessage> messages;  // Chat: the messages as given
  std::string prompt_text;           // Completion: the prompt as given
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage: a last chunk with usage, no choices
  std::vector<std::string> stop;     // stop strings, each non-empty, at most kMaxStopStrings
  std::string model;                 // the client's "model" (any name is accepted)
};

// Parses and checks a request body. `context`: tokens per sequence (prompt + reply) the scheduler
// allows; `default_seed`: the sampling seed when the body has no "seed". Throws ApiError (status 400,
// param = the field, e.g. "temperature", "messages[1].role", "stop[2]") for malformed JSON, a missing
// or wrongly typed field, a value out of range, an unknown field, an unknown role, or a prompt that
// does not fit the context.
ParsedRequest parse_request(Endpoint endpoint, std::string_view body, const Tokenizer& tok, int context,
                            uint64_t default_seed);

// What a reply carries besides its text.
struct ReplyHeader {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& u);  // {prompt_tokens, completion_tokens, total_tokens}

// "stop" for FinishReason::Stop (a stop id or stop string), "length" for Length; the others have no
// OpenAI name and are sent as errors, so they return nullptr.
const char* openai_finish_reason(FinishReason r);

// A whole (non-streamed) reply: chat.completion or text_completion.
nlohmann::json completion_json(Endpoint ep, const ReplyHeader& h, const std::string& text, const char* finish_reason,
                               const Usage& usage);
// A stream chunk. Chat: the first chunk has role (first = true) and content "", content chunks have
// {"content": text}, the final one an empty delta and finish_reason. Completion: {"text": text}.
// finish_reason nullptr = null.
nlohmann::json chunk_json(Endpoint ep, const ReplyHeader& h, const std::string& text, bool first,
                          const char* finish_reason);
// The stream_options.include_usage chunk: "choices": [] and "usage".
nlohmann::json usage_chunk_json(Endpoint ep, const ReplyHeader& h, const Usage& usage);
// GET /v1/models.
nlohmann::json models_json(const std::string& model, int64_t created);

// JSON text for the wire: compact, invalid UTF-8 (a byte-level reply can hold any byte) replaced by U+FFFD.
std::string dump(const nlohmann::json& j);
// One server-sent event: "data: JSON\n\n".
std::string sse_event(const nlohmann::json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// Stop strings over streamed text. push() takes newly decoded text and returns the part that is safe
// to send: text that cannot be the beginning of a stop string is released; a tail that is a proper
// prefix of some stop string is held back until more text decides it. When the text so far holds a
// stop string, push() returns the text before the earliest one, stopped() becomes true and everything
// after is dropped (the reply stops there: a longer stop string that began earlier but is not complete
// yet does not count).
// flush() (at the end of the reply) releases what is still held back.
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops = {});
  std::string push(std::string_view text);
  std::string flush();
  bool stopped() const { return stopped_; }
  size_t held() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// True when `authorization` (the Authorization header) is "Bearer KEY" with KEY == key; compares in
// time independent of where the keys differ.
bool api_key_matches(std::string_view authorization, std::string_view key);

}  // namespace glmlab::serve::http
