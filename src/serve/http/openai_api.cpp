#include "serve/http/openai_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "util/error.h"
#include "util/json.h"

namespace glmlab::serve::http {

using json = nlohmann::json;

ApiError::ApiError(int status_, std::string message_, std::string param_, std::string type_, std::string code_)
    : status(status_), message(std::move(message_)), type(std::move(type_)), param(std::move(param_)),
      code(std::move(code_)) {}

ApiError bad_request(std::string param, std::string message) {
  return ApiError(400, std::move(message), std::move(param));
}

json error_body(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return {{"error", err}};
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "a value";
  }
}

[[noreturn]] void wrong_type(const std::string& param, const json& v, const char* expected) {
  throw bad_request(param, fmt::format("'{}' must be {}, got {} ({})", param, expected, type_name(v), json_excerpt(v)));
}

// The value of `key` in `obj`, or nullptr when it is absent or null (OpenAI: null = the default).
const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_bool(const json& obj, const char* key, bool def) {
  const json* v = field(obj, key);
  if (!v) return def;
  if (!v->is_boolean()) wrong_type(key, *v, "a boolean");
  return v->get<bool>();
}

// A finite number in [lo, hi] (or (lo, hi] with lo_open).
double get_number(const json& obj, const char* key, double lo, double hi, bool lo_open, double def) {
  const json* v = field(obj, key);
  if (!v) return def;
  if (!v->is_number()) wrong_type(key, *v, "a number");
  double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
    throw bad_request(key, fmt::format("'{}' must be in {}{}, {}], got {}", key, lo_open ? "(" : "[", lo, hi,
                                       json_excerpt(*v)));
  return x;
}

// A JSON integer (not 2.0, not "2") in [lo, hi].
int64_t get_int(const json& obj, const char* key, int64_t lo, int64_t hi, int64_t def) {
  const json* v = field(obj, key);
  if (!v) return def;
  if (!v->is_number_integer()) wrong_type(key, *v, "an integer");
  bool ok = v->is_number_unsigned() ? v->get<uint64_t>() <= uint64_t(hi) && int64_t(v->get<uint64_t>()) >= lo
                                    : v->get<int64_t>() >= lo && v->get<int64_t>() <= hi;
  if (!ok)
    throw bad_request(key, fmt::format("'{}' must be an integer in [{}, {}], got {}", key, lo, hi, json_excerpt(*v)));
  return v->is_number_unsigned() ? int64_t(v->get<uint64_t>()) : v->get<int64_t>();
}

// A field that is accepted only with the value that means "off" (an OpenAI feature glmlab lacks).
void require_default(const json& obj, const char* key, const json& off, const char* what) {
  const json* v = field(obj, key);
  if (!v) return;
  bool same = (v->is_number() && off.is_number()) ? v->get<double>() == off.get<double>() : *v == off;
  if (!same) throw bad_request(key, fmt::format("'{}' is not supported by this server ({}); got {}", key, what,
                                                json_excerpt(*v)));
}

std::string text_content(const json& c, const std::string& param) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) wrong_type(param, c, "a string or an array of text parts");
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    std::string p = fmt::format("{}[{}]", param, i);
    if (!part.is_object()) wrong_type(p, part, "an object {\"type\": \"text\", \"text\": ...}");
    for (auto it = part.begin(); it != part.end(); ++it)
      if (it.key() != "type" && it.key() != "text")
        throw bad_request(p + "." + it.key(), fmt::format("unknown field '{}.{}'", p, it.key()));
    auto t = part.find("type");
    if (t == part.end() || !t->is_string() || *t != "text")
      throw bad_request(p + ".type", fmt::format("'{}.type' must be \"text\" (only text parts are supported)", p));
    auto x = part.find("text");
    if (x == part.end() || !x->is_string()) throw bad_request(p + ".text", fmt::format("'{}.text' must be a string", p));
    out += x->get<std::string>();
  }
  return out;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) throw bad_request("messages", "'messages' is required");
  if (!it->is_array()) wrong_type("messages", *it, "an array of messages");
  if (it->empty()) throw bad_request("messages", "'messages' must hold at least one message");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    std::string p = fmt::format("messages[{}]", i);
    if (!m.is_object()) wrong_type(p, m, "an object with 'role' and 'content'");
    for (auto f = m.begin(); f != m.end(); ++f)
      if (f.key() != "role" && f.key() != "content" && f.key() != "name")
        throw bad_request(p + "." + f.key(), fmt::format("unknown field '{}.{}'", p, f.key()));
    auto role = m.find("role");
    if (role == m.end()) throw bad_request(p + ".role", fmt::format("'{}.role' is required", p));
    if (!role->is_string()) wrong_type(p + ".role", *role, "a string");
    auto content = m.find("content");
    if (content == m.end()) throw bad_request(p + ".content", fmt::format("'{}.content' is required", p));
    if (auto name = m.find("name"); name != m.end() && !name->is_string()) wrong_type(p + ".name", *name, "a string");
    ChatMessage cm;
    cm.role = role->get<std::string>();
    cm.content = content->is_null() ? std::string() : text_content(*content, p + ".content");
    out.push_back(std::move(cm));
  }
  return out;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  auto one = [&](const json& s, const std::string& p) {
    if (!s.is_string()) wrong_type(p, s, "a string");
    if (s.get_ref<const std::string&>().empty()) throw bad_request(p, fmt::format("'{}' must not be empty", p));
    out.push_back(s.get<std::string>());
  };
  if (v->is_string()) {
    one(*v, "stop");
  } else if (v->is_array()) {
    if (v->size() > size_t(kMaxStopStrings))
      throw bad_request("stop", fmt::format("'stop' holds at most {} strings, got {}", kMaxStopStrings, v->size()));
    for (size_t i = 0; i < v->size(); ++i) one((*v)[i], fmt::format("stop[{}]", i));
  } else {
    wrong_type("stop", *v, "a string or an array of strings");
  }
  return out;
}

const std::set<std::string>& known_fields(Endpoint ep) {
  static const std::set<std::string> chat = {
      "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
      "top_p", "top_k", "stop", "seed", "n", "presence_penalty", "frequency_penalty", "user", "logit_bias",
      "logprobs", "top_logprobs", "ignore_eos", "min_tokens"};
  static const std::set<std::string> completion = {
      "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed",
      "n", "presence_penalty", "frequency_penalty", "user", "logit_bias", "logprobs", "echo", "best_of", "suffix",
      "ignore_eos", "min_tokens"};
  return ep == Endpoint::Chat ? chat : completion;
}

}  // namespace

ParsedRequest parse_request(Endpoint ep, std::string_view body_text, const Tokenizer& tok, int context,
                            uint64_t default_seed) {
  json body;
  std::string perr;
  if (!try_parse_json(body_text, body, perr)) throw bad_request("", "the request body is not valid JSON: " + perr);
  if (!body.is_object()) throw bad_request("", fmt::format("the request body must be a JSON object, got {}", type_name(body)));
  const auto& known = known_fields(ep);
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!known.count(it.key()))
      throw bad_request(it.key(), fmt::format("Unrecognized request argument supplied: {}", it.key()));

  ParsedRequest p;
  p.endpoint = ep;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) wrong_type("model", *m, "a string");
    p.model = m->get<std::string>();
  }
  if (const json* u = field(body, "user"); u && !u->is_string()) wrong_type("user", *u, "a string");

  p.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", *so, "an object");
    if (!p.stream) throw bad_request("stream_options", "'stream_options' is only allowed when 'stream' is true");
    for (auto it = so->begin(); it != so->end(); ++it)
      if (it.key() != "include_usage")
        throw bad_request("stream_options." + it.key(), fmt::format("unknown field 'stream_options.{}'", it.key()));
    if (auto iu = so->find("include_usage"); iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean()) wrong_type("stream_options.include_usage", *iu, "a boolean");
      p.include_usage = iu->get<bool>();
    }
  }

  // Sampling. temperature 0 = greedy (exactly argmax); otherwise temperature / top_p / top_k with a seed.
  const double temperature = get_number(body, "temperature", 0, 2, false, 1.0);
  const double top_p = get_number(body, "top_p", 0, 1, true, 1.0);
  const int64_t top_k = get_int(body, "top_k", 0, std::numeric_limits<int32_t>::max(), 0);
  uint64_t seed = default_seed;
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer()) wrong_type("seed", *s, "an integer");
    seed = s->is_number_unsigned() ? s->get<uint64_t>() : uint64_t(s->get<int64_t>());
  }
  get_int(body, "n", 1, 1, 1);  // one choice per request
  require_default(body, "presence_penalty", 0, "only 0");
  require_default(body, "frequency_penalty", 0, "only 0");
  if (const json* lb = field(body, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
    throw bad_request("logit_bias", "'logit_bias' is not supported by this server (only {} or null)");
  if (ep == Endpoint::Chat) {
    require_default(body, "logprobs", false, "only false");
    require_default(body, "top_logprobs", 0, "only 0");
  } else {
    require_default(body, "logprobs", 0, "only 0 or null");
    require_default(body, "echo", false, "only false");
    require_default(body, "best_of", 1, "only 1");
    require_default(body, "suffix", "", "only \"\" or null");
  }
  p.stop = parse_stop(body);

  // The prompt in ChatGLM3's layout.
  const char* prompt_field = ep == Endpoint::Chat ? "messages" : "prompt";
  if (ep == Endpoint::Chat) {
    p.messages = parse_messages(body);
    try {
      p.request.prompt = tok.build_chat(p.messages);
    } catch (const Error& e) {
      // Name the message whose role the chat layout refused, when that is what failed.
      std::string param = "messages";
      for (size_t i = 0; i < p.messages.size(); ++i) {
        try {
          Tokenizer::role_id(p.messages[i].role);
        } catch (const Error&) {
          param = fmt::format("messages[{}].role", i);
          break;
        }
      }
      throw bad_request(param, e.what());
    }
  } else {
    const json* pr = field(body, "prompt");
    if (!pr) throw bad_request("prompt", "'prompt' is required");
    if (pr->is_array() && pr->size() == 1 && (*pr)[0].is_string()) pr = &(*pr)[0];
    if (!pr->is_string()) wrong_type("prompt", *pr, "a string (or an array of one string)");
    p.prompt_text = pr->get<std::string>();
    p.request.prompt = tok.encode_with_prefix(p.prompt_text);
  }

  // Lengths: prompt + reply must fit the context.
  const int64_t n = int64_t(p.request.prompt.size());
  if (n >= context)
    throw bad_request(prompt_field, fmt::format("This model's maximum context length is {} tokens (prompt + reply). "
                                                "However, your {} resulted in {} tokens, which leaves no room for a reply.",
                                                context, prompt_field, n));
  const char* max_field = "max_tokens";
  if (ep == Endpoint::Chat && field(body, "max_completion_tokens")) {
    if (field(body, "max_tokens"))
      throw bad_request("max_completion_tokens", "give 'max_tokens' or 'max_completion_tokens', not both");
    max_field = "max_completion_tokens";
  }
  const int64_t max_tokens = get_int(body, max_field, 1, std::numeric_limits<int32_t>::max(), context - n);
  if (n + max_tokens > context)
    throw bad_request(max_field, fmt::format("This model's maximum context length is {} tokens (prompt + reply). "
                                             "However, you requested {} tokens ({} in the {}, {} for the reply); "
                                             "at most {} fit.", context, n + max_tokens, n, prompt_field, max_tokens,
                                             context - n));
  p.request.max_tokens = int(max_tokens);
  // vLLM's extensions for benchmarks: min_tokens = the stop ids (eos, <|user|>, <|observation|>) do not end
  // the reply before that many tokens; ignore_eos = they never do (min_tokens = max_tokens). Stop strings
  // still apply.
  const bool ignore_eos = get_bool(body, "ignore_eos", false);
  const int64_t min_tokens = get_int(body, "min_tokens", 0, std::numeric_limits<int32_t>::max(), 0);
  if (min_tokens > max_tokens)
    throw bad_request("min_tokens", fmt::format("'min_tokens' ({}) must not exceed '{}' ({})", min_tokens, max_field,
                                                max_tokens));
  p.request.min_tokens = ignore_eos ? p.request.max_tokens : int(min_tokens);

  SamplingParams& sp = p.request.sampling;
  sp.greedy = temperature == 0;
  sp.temperature = float(temperature);
  sp.top_p = float(top_p);
  sp.top_k = int(top_k);
  sp.seed = seed;
  return p;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

const char* openai_finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    default: return nullptr;
  }
}

namespace {
json reason_json(const char* r) { return r ? json(r) : json(nullptr); }
}  // namespace

json completion_json(Endpoint ep, const ReplyHeader& h, const std::string& text, const char* finish_reason,
                     const Usage& usage) {
  json choice = {{"index", 0}, {"finish_reason", reason_json(finish_reason)}, {"logprobs", nullptr}};
  if (ep == Endpoint::Chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return {{"id", h.id},
          {"object", ep == Endpoint::Chat ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({choice})},
          {"usage", usage_json(usage)}};
}

json chunk_json(Endpoint ep, const ReplyHeader& h, const std::string& text, bool first, const char* finish_reason) {
  json choice = {{"index", 0}, {"finish_reason", reason_json(finish_reason)}, {"logprobs", nullptr}};
  if (ep == Endpoint::Chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty() || !finish_reason) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", h.id},
          {"object", ep == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({choice})}};
}

json usage_chunk_json(Endpoint ep, const ReplyHeader& h, const Usage& usage) {
  return {{"id", h.id},
          {"object", ep == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

json models_json(const std::string& model, int64_t created) {
  return {{"object", "list"},
          {"data", json::array({{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "glmlab"}}})}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + dump(j) + "\n\n"; }

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove_if(stops_.begin(), stops_.end(), [](const std::string& s) { return s.empty(); }),
               stops_.end());
}

std::string StopStrings::push(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  // The earliest complete stop string ends the reply (released text never held one).
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    std::string out = held_.substr(0, first);
    held_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k)
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStrings::flush() {
  if (stopped_) return {};
  std::string out;
  out.swap(held_);
  return out;
}

bool api_key_matches(std::string_view authorization, std::string_view key) {
  if (key.empty() || authorization.size() < 7) return false;
  std::string_view scheme = authorization.substr(0, 7);
  const std::string_view bearer = "bearer ";
  for (size_t i = 0; i < 7; ++i)
    if (std::tolower(static_cast<unsigned char>(scheme[i])) != bearer[i]) return false;
  std::string_view given = authorization.substr(7);
  unsigned diff = given.size() == key.size() ? 0u : 1u;
  for (size_t i = 0; i < given.size(); ++i) diff |= unsigned(uint8_t(given[i]) ^ uint8_t(key[i % key.size()]));
  return diff == 0;
}

}  // namespace glmlab::serve::http
