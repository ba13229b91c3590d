// The socket-free parts of glmlab bench serve (see bench_serve.h).
#include "lab/bench/bench_serve.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include <fmt/format.h>

#include "lab/data/advertisegen.h"
#include "lab/bench/bench_summary.h"
#include "util/error.h"

namespace glmlab::lab {

using json = nlohmann::json;

void SseParser::feed(std::string_view bytes, const std::function<void(const std::string&)>& on_data) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) {
      line_.append(bytes.substr(pos));
      return;
    }
    line_.append(bytes.substr(pos, nl - pos));
    pos = nl + 1;
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) {  // a blank line ends the event
      if (has_data_) on_data(data_);
      data_.clear();
      has_data_ = false;
    } else if (line_[0] != ':') {
      size_t colon = line_.find(':');
      std::string_view field = std::string_view(line_).substr(0, colon);
      if (field == "data") {
        std::string_view value = colon == std::string::npos ? std::string_view() : std::string_view(line_).substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
        if (has_data_) data_ += '\n';
        data_.append(value);
        has_data_ = true;
      }
    }
    line_.clear();
  }
}

namespace {

// usage {prompt_tokens, completion_tokens} into r when present and well-formed.
void take_usage(const json& j, ChatReply& r) {
  auto u = j.find("usage");
  if (u == j.end() || !u->is_object()) return;
  auto num = [&](const char* k) -> int64_t {
    auto it = u->find(k);
    return it != u->end() && it->is_number_integer() ? it->get<int64_t>() : -1;
  };
  r.prompt_tokens = num("prompt_tokens");
  r.completion_tokens = num("completion_tokens");
}

std::string error_message(const json& j) {
  const json& e = j["error"];
  if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
  return e.dump();
}

}  // namespace

void ChatStream::on_event(const std::string& data, double t_s) {
  if (!r_.error.empty() || r_.done) return;
  if (data == "[DONE]") {
    r_.done = true;
    return;
  }
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    r_.error = fmt::format("a stream event is not a JSON object: {}", data.substr(0, 200));
    return;
  }
  if (j.contains("error")) {
    r_.error = "the stream ended with an error: " + error_message(j);
    return;
  }
  take_usage(j, r_);
  auto ch = j.find("choices");
  if (ch == j.end() || !ch->is_array()) {
    r_.error = "a stream event has no \"choices\" array";
    return;
  }
  for (const json& c : *ch) {
    if (!c.is_object()) continue;
    if (auto d = c.find("delta"); d != c.end() && d->is_object())
      if (auto t = d->find("content"); t != d->end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
        r_.text += t->get<std::string>();
        if (r_.content_chunks++ == 0) r_.first_content_s = t_s;
        r_.last_content_s = t_s;
      }
    if (auto f = c.find("finish_reason"); f != c.end() && f->is_string()) r_.finish_reason = f->get<std::string>();
  }
}

ChatReply ChatStream::finish() const {
  ChatReply r = r_;
  if (r.error.empty() && !r.done) r.error = "the stream ended without \"data: [DONE]\"";
  if (r.error.empty() && r.completion_tokens < 0) r.error = "the stream sent no usage (stream_options.include_usage)";
  return r;
}

ChatReply parse_chat_completion(std::string_view body) {
  ChatReply r;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    r.error = fmt::format("the reply is not a JSON object: {}", std::string(body.substr(0, 200)));
    return r;
  }
  if (j.contains("error")) {
    r.error = error_message(j);
    return r;
  }
  take_usage(j, r);
  auto ch = j.find("choices");
  if (ch == j.end() || !ch->is_array() || ch->empty() || !(*ch)[0].is_object()) {
    r.error = "the reply has no choices";
    return r;
  }
  const json& c = (*ch)[0];
  if (auto m = c.find("message"); m != c.end() && m->is_object())
    if (auto t = m->find("content"); t != m->end() && t->is_string()) r.text = t->get<std::string>();
  if (auto f = c.find("finish_reason"); f != c.end() && f->is_string()) r.finish_reason = f->get<std::string>();
  r.done = true;
  if (r.completion_tokens < 0) r.error = "the reply has no usage";
  return r;
}

std::string chat_request_body(const std::string& model, const std::string& content, int max_tokens, bool forced,
                              bool stream) {
  json b = {{"model", model},
            {"messages", json::array({{{"role", "user"}, {"content", content}}})},
            {"temperature", 0},
            {"max_tokens", max_tokens},
            {"stream", stream}};
  if (stream) b["stream_options"] = {{"include_usage", true}};
  if (forced) b["ignore_eos"] = true;
  return b.dump(-1, ' ', false, json::error_handler_t::replace);
}

ServerUrl parse_server_url(const std::string& url) {
  auto bad = [&](const char* why) -> ServerUrl {
    fail("--url {}: {} (expected http://HOST:PORT, optionally with a path such as /v1)", url, why);
  };
  size_t sep = url.find("://");
  if (sep == std::string::npos) return bad("no scheme");
  std::string scheme = url.substr(0, sep);
  if (scheme != "http" && scheme != "https") return bad("the scheme must be http or https");
  size_t path_at = url.find('/', sep + 3);
  std::string host = url.substr(sep + 3, path_at == std::string::npos ? std::string::npos : path_at - sep - 3);
  if (host.empty()) return bad("no host");
  if (host.find_first_of("?#@ ") != std::string::npos) return bad("a malformed host");
  ServerUrl u;
  u.origin = scheme + "://" + host;
  std::string path = path_at == std::string::npos ? "" : url.substr(path_at);
  if (path.find_first_of("?#") != std::string::npos) return bad("a query or fragment");
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
  u.prefix = path;
  return u;
}

std::vector<double> poisson_arrivals(size_t n, double rate, uint64_t seed) {
  if (!(rate > 0) || !std::isfinite(rate)) fail("--rate must be a positive number of requests/s (got {})", rate);
  std::mt19937_64 gen(seed);
  std::vector<double> t(n, 0.0);
  for (size_t i = 1; i < n; ++i) {
    // u in (0, 1]: -log(u) / rate is exponential with mean 1/rate (53 random bits, never log(0)).
    double u = (double(gen() >> 11) + 1.0) * 0x1.0p-53;
    t[i] = t[i - 1] - std::log(u) / rate;
  }
  return t;
}

std::map<std::string, double> parse_prometheus(std::string_view text) {
  std::map<std::string, double> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) continue;
    std::string value(line.substr(sp + 1));
    char* end = nullptr;
    double v = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || *end) continue;
    out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

std::vector<ServePrompt> make_serve_prompts(const std::vector<Record>& records, const Tokenizer& tok,
                                            int max_new_tokens, bool stop_at_eos) {
  // make_prompts with a seq_length that never cuts: the server's context decides.
  auto bp = make_prompts(records, tok, max_new_tokens, stop_at_eos, std::numeric_limits<int>::max() / 2);
  std::vector<ServePrompt> out;
  for (size_t i = 0; i < bp.size(); ++i)
    out.push_back({bp[i].index, records[i].content, int32_t(bp[i].input.size()), bp[i].target_tokens});
  return out;
}

void check_token_counts(ServeRequest& r, bool forced) {
  if (!r.ok()) return;
  auto bad = [&](std::string why) {
    r.error_kind = "tokens";
    r.error = std::move(why);
  };
  if (r.prompt_tokens != r.expected_prompt_tokens)
    bad(fmt::format("the server counted {} prompt tokens, this tokenizer {} (is --tokenizer the server's?)",
                    r.prompt_tokens, r.expected_prompt_tokens));
  else if (forced && r.completion_tokens != r.target_tokens)
    bad(fmt::format("{} completion tokens, the forced length is {} (does the server honour ignore_eos?)",
                    r.completion_tokens, r.target_tokens));
  else if (!forced && r.completion_tokens > r.target_tokens)
    bad(fmt::format("{} completion tokens, more than max_tokens {}", r.completion_tokens, r.target_tokens));
  else if (r.content_chunks > r.completion_tokens)
    bad(fmt::format("{} content chunks for {} completion tokens", r.content_chunks, r.completion_tokens));
}

namespace {
double pct_or_nan(const std::vector<double>& v, double q) { return v.empty() ? std::nan("") : percentile(v, q); }

// median/min/max of the finite values (NaN everywhere when there is none).
Spread finite_spread(const std::vector<double>& v) {
  std::vector<double> f;
  for (double x : v)
    if (std::isfinite(x)) f.push_back(x);
  if (f.empty()) return {std::nan(""), std::nan(""), std::nan("")};
  return spread_of(f);
}
}  // namespace

ServeRepStats serve_rep_stats(const std::vector<ServeRequest>& requests, int rep) {
  ServeRepStats s;
  s.rep = rep;
  std::vector<double> ttft, tpot, e2e;
  double first = std::numeric_limits<double>::infinity(), last = 0;
  for (const auto& r : requests) {
    if (r.rep != rep) continue;
    first = std::min(first, r.start_s);
    last = std::max(last, r.start_s + r.e2e_s);
    if (!r.ok()) {
      ++s.errors;
      continue;
    }
    ++s.ok;
    s.output_tokens += r.completion_tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    if (r.tpot_s >= 0) tpot.push_back(r.tpot_s);
    e2e.push_back(r.e2e_s);
  }
  s.wall_s = std::isfinite(first) ? last - first : 0;
  s.output_tps = s.wall_s > 0 ? double(s.output_tokens) / s.wall_s : 0;
  s.requests_per_s = s.wall_s > 0 ? double(s.ok) / s.wall_s : 0;
  for (int q = 0; q < 3; ++q) {
    s.ttft_s[q] = pct_or_nan(ttft, kServeQuantiles[q]);
    s.tpot_s[q] = pct_or_nan(tpot, kServeQuantiles[q]);
    s.e2e_s[q] = pct_or_nan(e2e, kServeQuantiles[q]);
  }
  return s;
}

ServeRunSummary summarize_serve_run(const std::vector<ServeRequest>& requests, const std::string& run,
                                    int concurrency, double rate, int reps) {
  ServeRunSummary s;
  s.run = run;
  s.concurrency = concurrency;
  s.rate = rate;
  s.reps = reps;
  for (const auto& r : requests) {
    if (r.rep == 0) ++s.requests;
    if (r.ok()) {
      ++s.ok;
      s.output_tokens += r.completion_tokens;
    } else {
      ++s.errors;
      ++s.errors_by_kind[r.error_kind];
    }
  }
  std::vector<double> wall, tps, rps, ttft[3], tpot[3], e2e[3];
  for (int rep = 0; rep < reps; ++rep) {
    ServeRepStats st = serve_rep_stats(requests, rep);
    wall.push_back(st.wall_s);
    tps.push_back(st.output_tps);
    rps.push_back(st.requests_per_s);
    for (int q = 0; q < 3; ++q) {
      ttft[q].push_back(st.ttft_s[q]);
      tpot[q].push_back(st.tpot_s[q]);
      e2e[q].push_back(st.e2e_s[q]);
    }
    s.per_rep.push_back(st);
  }
  s.wall_s = finite_spread(wall);
  s.output_tps = finite_spread(tps);
  s.requests_per_s = finite_spread(rps);
  for (int q = 0; q < 3; ++q) {
    s.ttft_s[q] = finite_spread(ttft[q]);
    s.tpot_s[q] = finite_spread(tpot[q]);
    s.e2e_s[q] = finite_spread(e2e[q]);
  }
  return s;
}

}  // namespace glmlab::lab
