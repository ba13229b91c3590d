// glmlab bench serve: a load benchmark of a running OpenAI-compatible server (glmlab serve, or any
// other). AdvertiseGen records are replayed as chat requests (one user message = the record's content,
// the chat layout bench infer's prompts use), at several concurrency levels (closed loop: c clients, each
// sending its next request when its previous reply ended) or Poisson arrival rates (open loop), and
// every request's time to first token (TTFT), time per output token (TPOT) and end-to-end latency are
// measured from the server-sent events as they arrive.
//
// This file holds the parts without sockets (glmlab_core never includes httplib): the SSE parser, the
// state of one streamed reply, the request body, the arrival schedule, the summary of a run and the
// Prometheus text parser. The HTTP client that drives them is lab/bench/http/bench_serve_client.h
// (library glmlab_http); the report files are bench_serve_report.h.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lab/bench/bench_infer.h"
#include "lab/machine.h"

namespace glmlab::lab {

// Server-sent events (text/event-stream) cut into events, whatever chunks the bytes arrive in: a chunk
// may end in the middle of a line, of an event or of a UTF-8 character (bytes are kept until their line
// is complete). An event's data is its "data:" lines (one space after the colon dropped) joined by "\n";
// it is complete at a blank line. Comments (":..."), other fields and events without data are skipped;
// "\r\n" line ends are accepted.
class SseParser {
 public:
  // Calls on_data for each event completed by these bytes, in order.
  void feed(std::string_view bytes, const std::function<void(const std::string& data)>& on_data);
  size_t buffered() const { return line_.size() + data_.size(); }  // bytes of an incomplete event

 private:
  std::string line_;  // the incomplete last line
  std::string data_;  // the data lines of the current event so far
  bool has_data_ = false;
};

// What one chat completion told, streamed (fed event by event) or whole.
struct ChatReply {
  int64_t content_chunks = 0;                  // stream events whose delta held non-empty content
  double first_content_s = -1, last_content_s = -1;  // their arrival, seconds since the request was sent
  std::string text;                            // the content, concatenated
  std::string finish_reason;
  bool done = false;                           // "[DONE]" (stream) or a whole body with choices
  int64_t prompt_tokens = -1, completion_tokens = -1;  // usage; -1 = not sent
  std::string error;                           // an error event, malformed JSON or a missing part
};

// Takes a chat completion stream's events one by one.
class ChatStream {
 public:
  void on_event(const std::string& data, double t_s);
  // After the stream ended: the reply, with `error` set when it did not end with [DONE].
  ChatReply finish() const;

 private:
  ChatReply r_;
};
// A whole (non-streamed) chat.completion body.
ChatReply parse_chat_completion(std::string_view body);

// The JSON body of one benchmark request: {"model", "messages": [{"role": "user", "content"}],
// "temperature": 0, "max_tokens", "stream" (+ "stream_options": {"include_usage": true})}, and
// "ignore_eos": true when `forced` (the reply is exactly max_tokens long).
std::string chat_request_body(const std::string& model, const std::string& content, int max_tokens, bool forced,
                              bool stream);

// --url: "http://HOST:PORT" with an optional path before "/v1" (OpenAI clients' base_url
// "http://HOST:PORT/v1" is accepted too). Error for another scheme or a malformed URL.
struct ServerUrl {
  std::string origin;  // "http://127.0.0.1:8080"
  std::string prefix;  // path before /v1, without a trailing slash ("" usually)
  std::string api(const std::string& path) const { return prefix + "/v1" + path; }  // api("/models")
  std::string root(const std::string& path) const { return prefix + path; }         // root("/metrics")
};
ServerUrl parse_server_url(const std::string& url);

// Poisson arrivals: n send times in seconds, the first at 0, then exponential gaps of mean 1/rate drawn
// from a generator seeded with `seed` (the same seed gives the same schedule on every machine).
std::vector<double> poisson_arrivals(size_t n, double rate, uint64_t seed);

// A Prometheus text page's samples: "name" or "name{labels}" (as written) -> value; comments skipped.
std::map<std::string, double> parse_prometheus(std::string_view text);

// One benchmark prompt: a record's content, the ids bench infer would run (sample_ids input, to check the
// server's usage.prompt_tokens) and the reply length (forced, or the most when free-running).
struct ServePrompt {
  size_t index = 0;
  std::string content;
  int32_t prompt_tokens = 0;
  int32_t target_tokens = 0;
};
// make_prompts' targets (no seq_length cut: the server refuses what its context cannot hold).
std::vector<ServePrompt> make_serve_prompts(const std::vector<Record>& records, const Tokenizer& tok,
                                            int max_new_tokens, bool stop_at_eos);

// One request of one repetition of one run (a line of requests.csv).
struct ServeRequest {
  std::string run;               // "c4" (concurrency 4) or "r2.5" (2.5 requests/s)
  int concurrency = 0;           // closed loop; 0 for a rate run
  double rate = 0;               // open loop; 0 for a concurrency run
  int rep = 0;
  size_t seq = 0;                // position in the repetition's order of records
  size_t index = 0;              // the record
  double scheduled_s = 0;        // rate runs: the Poisson arrival (since the repetition began)
  double start_s = 0;            // sent, since the repetition began
  double ttft_s = -1;            // first content chunk − sent (−1: none, e.g. not streamed)
  double tpot_s = -1;            // (last − first content chunk) / (completion tokens − 1) (−1: < 2 tokens)
  double e2e_s = 0;              // reply complete − sent
  int status = 0;                // HTTP status (0: no response)
  int64_t prompt_tokens = -1, expected_prompt_tokens = 0;   // the server's usage / this tokenizer's count
  int64_t completion_tokens = -1, target_tokens = 0;        // usage / the forced length (or the most)
  int64_t content_chunks = 0;
  std::string finish_reason;
  std::string error_kind;        // "" = ok; "http_401", "timeout", "connection", "parse", "tokens"
  std::string error;             // what went wrong, for the report
  bool ok() const { return error_kind.empty(); }
};

// Checks a finished request's counts: a prompt token count other than this tokenizer's, a reply
// length other than the forced one (or over the most when free-running), or more content chunks than
// tokens is a "tokens" error. Sets error_kind/error when the request was ok so far.
void check_token_counts(ServeRequest& r, bool forced);

// One repetition of one run.
struct ServeRepStats {
  int rep = 0;
  double wall_s = 0;                 // first send -> last reply complete
  int64_t ok = 0, errors = 0, output_tokens = 0;  // output_tokens: completion tokens of the ok requests
  double output_tps = 0, requests_per_s = 0;      // output_tokens / wall_s, ok / wall_s
  double ttft_s[3] = {0, 0, 0}, tpot_s[3] = {0, 0, 0}, e2e_s[3] = {0, 0, 0};  // p50, p90, p99 (NaN: none)
};

// One run (a concurrency level or a rate) over its repetitions.
struct ServeRunSummary {
  std::string run;
  int concurrency = 0;
  double rate = 0;
  int reps = 1;
  size_t requests = 0;                        // per repetition
  int64_t ok = 0, errors = 0;                 // all repetitions
  std::map<std::string, int64_t> errors_by_kind;
  int64_t output_tokens = 0;                  // all repetitions, ok requests
  Spread wall_s, output_tps, requests_per_s;  // median, min, max over the repetitions
  Spread ttft_s[3], tpot_s[3], e2e_s[3];      // p50, p90, p99: median, min, max over the repetitions
  std::vector<ServeRepStats> per_rep;
  nlohmann::json server_metrics;              // glmlab: {"before", "after", "delta"} of /metrics; null otherwise
};

// Percentile levels of the summaries.
inline constexpr double kServeQuantiles[3] = {0.5, 0.9, 0.99};

// The statistics of one repetition from its requests (NaN percentiles when no request was ok).
ServeRepStats serve_rep_stats(const std::vector<ServeRequest>& requests, int rep);
// A run's summary from all of its requests (every repetition).
ServeRunSummary summarize_serve_run(const std::vector<ServeRequest>& requests, const std::string& run,
                                    int concurrency, double rate, int reps);

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string api_key;
  std::vector<int> concurrency = {1, 2, 4, 8, 16};
  std::vector<double> rates;          // open-loop runs after the concurrency runs
  int max_concurrency = 64;           // rate runs: the most requests in flight (later arrivals wait)
  bool forced = true;                 // ignore_eos: each reply exactly its target length
  bool stream = true;
  int reps = 1;
  int warmup = 1;                     // requests sent and discarded before each run
  double timeout_s = 600;             // per request
  uint64_t seed = 0;                  // the Poisson schedule
  bool progress = true;
};

struct BenchServeReport {
  MachineInfo machine;                // the client's machine
  ServerUrl url;
  std::string model;                  // /v1/models' first id ("" when it could not be read)
  std::string model_error;            // why not
  bool glmlab_metrics = false;        // /metrics is glmlab's
  std::vector<ServePrompt> prompts;
  std::vector<ServeRequest> requests;  // every run, every repetition, in order
  std::vector<ServeRunSummary> runs;
  double wall_s = 0;
};

// What the report cannot know from the measurements.
struct BenchServeMeta {
  std::string command, data, tokenizer;
  int max_new_tokens = 0;
  BenchServeOptions options;
};

}  // namespace glmlab::lab
