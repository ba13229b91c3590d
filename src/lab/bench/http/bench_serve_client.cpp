// glmlab bench serve's HTTP client and runs (see bench_serve_client.h).
#include "lab/bench/http/bench_serve_client.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "lab/progress.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {

using clock = std::chrono::steady_clock;
using json = nlohmann::json;
double secs(clock::duration d) { return std::chrono::duration<double>(d).count(); }

constexpr time_t kConnectTimeoutS = 5;
constexpr size_t kMaxBodyBytes = size_t(64) << 20;  // a non-streamed or error body kept for parsing

std::unique_ptr<httplib::Client> make_client(const ServerUrl& u, double timeout_s) {
  auto c = std::make_unique<httplib::Client>(u.origin);
  if (!c->is_valid()) fail("--url {}: cpp-httplib cannot connect to this address", u.origin);
  auto t = std::chrono::duration<double>(std::max(0.001, timeout_s));
  c->set_connection_timeout(kConnectTimeoutS, 0);
  c->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(t));
  c->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(t));
  c->set_keep_alive(true);
  c->set_tcp_nodelay(true);
  return c;
}

httplib::Headers auth_headers(const std::string& api_key) {
  httplib::Headers h;
  if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
  return h;
}

// An error body's message ({"error": {"message"}}), else its beginning.
std::string body_message(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
      j["error"]["message"].is_string())
    return j["error"]["message"].get<std::string>();
  return body.substr(0, 200);
}

struct GetResult {
  bool reached = false;
  int status = 0;
  std::string body, error;
};

GetResult http_get(httplib::Client& c, const std::string& path, const httplib::Headers& h) {
  GetResult g;
  auto res = c.Get(path.c_str(), h);
  if (!res) {
    g.error = httplib::to_string(res.error());
    return g;
  }
  g.reached = true;
  g.status = res->status;
  g.body = res->body;
  return g;
}

// Everything the runs share.
struct Ctx {
  const std::vector<ServePrompt>& prompts;
  const BenchServeOptions& o;
  ServerUrl url;
  std::string model;  // sent as "model"
  Progress* progress = nullptr;
  std::mutex progress_mu;
  void tick() {
    if (!progress) return;
    std::lock_guard<std::mutex> lk(progress_mu);
    progress->add(1);
  }
};

// One chat completion, timed. t0: when the repetition began.
ServeRequest send_one(Ctx& ctx, httplib::Client& cli, const ServePrompt& p, clock::time_point t0) {
  const BenchServeOptions& o = ctx.o;
  ServeRequest r;
  r.index = p.index;
  r.expected_prompt_tokens = p.prompt_tokens;
  r.target_tokens = p.target_tokens;

  httplib::Request req;
  req.method = "POST";
  req.path = ctx.url.api("/chat/completions");
  req.headers = auth_headers(o.api_key);
  req.set_header("Content-Type", "application/json");
  if (o.stream) req.set_header("Accept", "text/event-stream");
  req.body = chat_request_body(ctx.model, p.content, p.target_tokens, o.forced, o.stream);

  httplib::Response res;
  SseParser sse;
  ChatStream stream;
  std::string body;
  bool timed_out = false;
  const auto sent = clock::now();
  r.start_s = secs(sent - t0);
  // The body as it arrives: the status line and headers are already in `res`.
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    const double t = secs(clock::now() - sent);
    if (t > o.timeout_s) {
      timed_out = true;
      return false;
    }
    if (res.status == 200 && o.stream)
      sse.feed(std::string_view(data, n), [&](const std::string& ev) { stream.on_event(ev, t); });
    else if (body.size() < kMaxBodyBytes)
      body.append(data, n);
    return true;
  };
  httplib::Error err = httplib::Error::Success;
  const bool done = cli.send(req, res, err);
  r.e2e_s = secs(clock::now() - sent);
  r.status = res.status > 0 ? res.status : 0;

  if (timed_out || (!done && r.e2e_s >= o.timeout_s)) {
    r.error_kind = "timeout";
    r.error = fmt::format("no complete reply within --timeout {} s", o.timeout_s);
    return r;
  }
  if (!done || err != httplib::Error::Success) {
    r.error_kind = "connection";
    r.error = httplib::to_string(err);
    return r;
  }
  if (res.status != 200) {
    r.error_kind = fmt::format("http_{}", res.status);
    r.error = body_message(body);
    return r;
  }
  ChatReply reply = o.stream ? stream.finish() : parse_chat_completion(body);
  r.prompt_tokens = reply.prompt_tokens;
  r.completion_tokens = reply.completion_tokens;
  r.content_chunks = reply.content_chunks;
  r.finish_reason = reply.finish_reason;
  if (reply.first_content_s >= 0) r.ttft_s = reply.first_content_s;
  if (reply.content_chunks >= 2 && reply.completion_tokens >= 2)
    r.tpot_s = (reply.last_content_s - reply.first_content_s) / double(reply.completion_tokens - 1);
  if (!reply.error.empty()) {
    r.error_kind = "parse";
    r.error = reply.error;
    return r;
  }
  check_token_counts(r, o.forced);
  return r;
}

// Sends prompts[0..n) with `threads` clients; arrivals (seconds since the start) or empty = as fast as
// the clients are free. Returns the requests in record order.
std::vector<ServeRequest> run_requests(Ctx& ctx, size_t n, int threads, const std::vector<double>& arrivals,
                                       bool count_progress) {
  std::vector<ServeRequest> out(n);
  std::atomic<size_t> next{0};
  const int T = int(std::min<size_t>(size_t(std::max(1, threads)), std::max<size_t>(1, n)));
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (int t = 0; t < T; ++t) clients.push_back(make_client(ctx.url, ctx.o.timeout_s));
  const auto t0 = clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < T; ++t)
    pool.emplace_back([&, t] {
      for (;;) {
        const size_t i = next.fetch_add(1);
        if (i >= n) return;
        if (!arrivals.empty()) std::this_thread::sleep_until(t0 + std::chrono::duration_cast<clock::duration>(
                                                                       std::chrono::duration<double>(arrivals[i])));
        out[i] = send_one(ctx, *clients[size_t(t)], ctx.prompts[i], t0);
        out[i].seq = i;
        if (!arrivals.empty()) out[i].scheduled_s = arrivals[i];
        if (count_progress) ctx.tick();
      }
    });
  for (auto& th : pool) th.join();
  return out;
}

// glmlab's /metrics as {"name": value} for the counters and gauges (no histogram buckets).
json read_metrics(httplib::Client& c, const ServerUrl& u) {
  GetResult g = http_get(c, u.root("/metrics"), {});
  if (!g.reached || g.status != 200) return nullptr;
  auto samples = parse_prometheus(g.body);
  if (!samples.count("glmlab_generation_tokens_total")) return nullptr;
  json out = json::object();
  for (const auto& [k, v] : samples)
    if (k.rfind("glmlab_", 0) == 0 && k.find("_bucket") == std::string::npos) out[k] = v;
  return out;
}

// Waits (at most 10 s) until glmlab's server has nothing running or queued: its token counters are
// updated after a step's replies are handed over, so a reply can be complete a moment before them.
json read_metrics_when_idle(httplib::Client& c, const ServerUrl& u) {
  const auto deadline = clock::now() + std::chrono::seconds(10);
  for (;;) {
    json m = read_metrics(c, u);
    if (m.is_null()) return m;
    if (m.value("glmlab_running_sequences", 0.0) == 0 && m.value("glmlab_queue_depth", 0.0) == 0) return m;
    if (clock::now() > deadline) return m;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

json metrics_delta(const json& before, const json& after) {
  if (before.is_null() || after.is_null()) return nullptr;
  json d = json::object();
  for (auto it = after.begin(); it != after.end(); ++it) {
    const std::string& k = it.key();
    bool counter = k.find("_total") != std::string::npos || k.ends_with("_sum") || k.ends_with("_count");
    if (counter && before.contains(k)) d[k] = it->get<double>() - before[k].get<double>();
  }
  return {{"before", before}, {"after", after}, {"delta", d}};
}

}  // namespace

BenchServeReport run_bench_serve(const std::vector<ServePrompt>& prompts, const BenchServeOptions& o) {
  if (prompts.empty()) fail("bench serve: no records to send");
  if (o.reps < 1) fail("bench serve: --reps must be at least 1");
  if (o.warmup < 0) fail("bench serve: --warmup must be at least 0");
  if (o.concurrency.empty() && o.rates.empty()) fail("bench serve: give --concurrency levels or --rate values");
  for (int c : o.concurrency)
    if (c < 1) fail("bench serve: --concurrency levels must be at least 1 (got {})", c);
  for (double r : o.rates)
    if (!(r > 0) || !std::isfinite(r)) fail("bench serve: --rate values must be positive requests/s (got {})", r);
  if (o.max_concurrency < 1) fail("bench serve: --max-concurrency must be at least 1");
  if (!(o.timeout_s > 0)) fail("bench serve: --timeout must be positive");

  const auto t_start = clock::now();
  BenchServeReport rep;
  rep.machine = describe_machine("client");
  rep.url = parse_server_url(o.url);
  rep.prompts = prompts;

  // The server: reachable (or fail now, naming it), its model, and whether /metrics is glmlab's.
  auto probe = make_client(rep.url, std::min(o.timeout_s, 30.0));
  GetResult models = http_get(*probe, rep.url.api("/models"), auth_headers(o.api_key));
  if (!models.reached)
    fail("bench serve: cannot reach the server at {} ({}: GET {}): is it running, and is --url right?", o.url,
         models.error, rep.url.api("/models"));
  if (models.status == 200) {
    json j = json::parse(models.body, nullptr, false);
    if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
        j["data"][0].is_object() && j["data"][0].contains("id") && j["data"][0]["id"].is_string())
      rep.model = j["data"][0]["id"].get<std::string>();
    else
      rep.model_error = "GET /v1/models: no model id in the reply";
  } else {
    rep.model_error = fmt::format("GET /v1/models answered HTTP {}: {}", models.status, body_message(models.body));
  }
  if (!rep.model_error.empty() && o.progress) std::fprintf(stderr, "bench serve: warning: %s\n", rep.model_error.c_str());
  rep.glmlab_metrics = !read_metrics(*probe, rep.url).is_null();

  struct Level {
    std::string name;
    int concurrency = 0;
    double rate = 0;
  };
  std::vector<Level> levels;
  for (int c : o.concurrency) levels.push_back({fmt::format("c{}", c), c, 0});
  for (double r : o.rates) levels.push_back({fmt::format("r{:g}", r), 0, r});

  const size_t n = prompts.size();
  const size_t warm = std::min(n, size_t(o.warmup));
  Progress progress(int64_t(levels.size()) * int64_t(warm + size_t(o.reps) * n), "req", o.progress);
  Ctx ctx{prompts, o, rep.url, rep.model.empty() ? std::string("glmlab") : rep.model, &progress, {}};

  for (const Level& lv : levels) {
    const int threads = lv.rate > 0 ? o.max_concurrency : lv.concurrency;
    if (warm > 0) {
      progress.set_label(lv.name + " warm-up");
      run_requests(ctx, warm, std::min<int>(threads, int(warm)), {}, true);
    }
    json before = rep.glmlab_metrics ? read_metrics_when_idle(*probe, rep.url) : json();
    const std::vector<double> arrivals = lv.rate > 0 ? poisson_arrivals(n, lv.rate, o.seed) : std::vector<double>{};
    std::vector<ServeRequest> all;
    for (int r = 0; r < o.reps; ++r) {
      progress.set_label(fmt::format("{} rep {}/{}", lv.name, r + 1, o.reps));
      auto got = run_requests(ctx, n, threads, arrivals, true);
      for (auto& x : got) {
        x.run = lv.name;
        x.concurrency = lv.concurrency;
        x.rate = lv.rate;
        x.rep = r;
        all.push_back(std::move(x));
      }
    }
    ServeRunSummary s = summarize_serve_run(all, lv.name, lv.concurrency, lv.rate, o.reps);
    if (rep.glmlab_metrics) s.server_metrics = metrics_delta(before, read_metrics_when_idle(*probe, rep.url));
    rep.runs.push_back(std::move(s));
    rep.requests.insert(rep.requests.end(), all.begin(), all.end());
  }
  progress.finish();
  rep.machine.load_end = load_average();
  rep.wall_s = secs(clock::now() - t_start);
  return rep;
}

}  // namespace glmlab::lab
