#include "serve/http/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <random>

#include "serve/http/chat_page.h"
#include "serve/http/metrics.h"
#include "serve/http/openai_api.h"
#include "util/error.h"

namespace glmlab::serve::http {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
constexpr auto kPoll = std::chrono::milliseconds(100);  // how often a waiting reply checks its client

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_body(e)), "application/json");
}

// One request's reply as the scheduler's thread produces it and the connection's thread sends it.
struct Job {
  Job(const Tokenizer& tok, std::vector<std::string> stop, std::shared_ptr<Metrics> m)
      : decoder(tok), stops(std::move(stop)), metrics(std::move(m)) {}

  // Scheduler thread: decode, hold back a possible stop string, hand over the rest.
  bool on_token(int32_t) noexcept;
  void on_finish(FinishReason r, const std::string& err) noexcept;
  bool is_done() {
    std::lock_guard<std::mutex> lk(mu);
    return done;
  }

  std::mutex mu;
  std::condition_variable cv;
  ReplyDecoder decoder;        // scheduler thread only
  StopStrings stops;           // under mu
  std::string pending;         // text not sent yet (streaming), under mu
  std::string text;            // the whole reply so far, under mu
  int64_t generated = 0;       // tokens, under mu
  bool done = false;           // under mu
  FinishReason reason = FinishReason::Error;
  std::string error;
  Clock::time_point submitted, first, last;
  uint64_t seq = 0;            // the scheduler's id, set before the reply is written
  std::shared_ptr<Metrics> metrics;
};

bool Job::on_token(int32_t id) noexcept {
  try {
    std::string fresh = decoder.push(id);
    std::lock_guard<std::mutex> lk(mu);
    auto now = Clock::now();
    if (generated++ == 0) {
      first = now;
      metrics->observe_ttft(seconds(now - submitted));
    }
    last = now;
    std::string safe = stops.push(fresh);
    pending += safe;
    text += safe;
    cv.notify_all();
    return !stops.stopped();
  } catch (const std::exception& e) {  // a decoding failure ends this reply, never the scheduler
    std::lock_guard<std::mutex> lk(mu);
    error = e.what();
    return false;
  }
}

void Job::on_finish(FinishReason r, const std::string& err) noexcept {
  std::string rest, decode_error;
  try {
    rest = decoder.flush();
  } catch (const std::exception& e) {
    decode_error = e.what();
  }
  std::lock_guard<std::mutex> lk(mu);
  if (error.empty()) error = decode_error;
  if (!error.empty() && r != FinishReason::Cancelled) r = FinishReason::Error;  // decoding failed
  std::string safe = stops.push(rest);
  safe += stops.flush();
  pending += safe;
  text += safe;
  if (stops.stopped() && r == FinishReason::Length) r = FinishReason::Stop;  // the last piece held a stop string
  reason = r;
  if (error.empty()) error = err;
  done = true;
  metrics->count_finish(r);
  if (generated >= 2) metrics->observe_tpot(seconds(last - first) / double(generated - 1));
  cv.notify_all();
}

std::string route_label(const std::string& path) {
  for (const char* p : {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"})
    if (path == p) return p;
  return "other";
}

}  // namespace

struct Server::Impl {
  Impl(Scheduler& s, const Tokenizer& t, int ctx, ServerOptions o)
      : sched(s), tok(t), context(ctx), opt(std::move(o)), seeds(std::random_device{}()) {}

  void setup();
  void completion(Endpoint ep, const httplib::Request& req, httplib::Response& res);
  bool write_stream(Endpoint ep, Job& job, const ReplyHeader& h, const Usage& usage0, bool include_usage,
                    httplib::DataSink& sink);
  bool write_whole(Endpoint ep, Job& job, const ReplyHeader& h, const Usage& usage0, httplib::DataSink& sink);
  void release() {
    std::lock_guard<std::mutex> lk(mu);
    --in_flight;
    cv.notify_all();
  }

  Scheduler& sched;
  const Tokenizer& tok;
  int context;
  ServerOptions opt;
  httplib::Server svr;
  std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
  std::atomic<bool> draining{false};
  bool hurry = false;       // under mu: shutdown() stops waiting for the requests in flight
  std::atomic<int> listen_fd{-1};
  std::atomic<uint64_t> next_id{1};
  const int64_t started = int64_t(std::time(nullptr));
  mutable std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;        // under mu
  std::mt19937_64 seeds;    // under mu: a request's seed when it gives none
};

void Server::Impl::setup() {
  const SchedulerOptions& so = sched.options();
  const int threads = opt.threads > 0 ? opt.threads : so.max_batch + so.max_queue + 4;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  svr.set_payload_max_length(opt.max_body_bytes);
  svr.set_read_timeout(opt.read_timeout_s, 0);
  svr.set_write_timeout(opt.write_timeout_s, 0);
  svr.set_keep_alive_timeout(opt.keep_alive_s);
  svr.set_keep_alive_max_count(size_t(std::max(1, opt.keep_alive_max)));
  svr.set_tcp_nodelay(true);  // stream chunks leave at once
  // The listening socket: remembered so that shutdown() can stop accepting; no SO_REUSEPORT (httplib's
  // default), so a second server on the same port fails to bind instead of sharing it.
  svr.set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = int(sock);
  });

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    if (api_key_matches(req.get_header_value("Authorization"), opt.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    // httplib runs this handler before it reads the request body: the body is still on the socket, so
    // the connection must close (kept alive, its next request would be parsed from the unread body).
    res.set_header("Connection", "close");
    send_error(res, ApiError(401,
                             req.has_header("Authorization") ? "Incorrect API key provided."
                                                             : "Missing API key: send 'Authorization: Bearer KEY'.",
                             "", "invalid_request_error", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404)
      send_error(res, ApiError(404, fmt::format("no route for {} {}", req.method, req.path), "", "invalid_request_error",
                               "not_found"));
    else if (res.status == 413)
      send_error(res, ApiError(413, fmt::format("the request body is larger than {} bytes", opt.max_body_bytes), "",
                               "invalid_request_error", "request_too_large"));
    else
      send_error(res, ApiError(res.status, fmt::format("HTTP {}", res.status), "",
                               res.status < 500 ? "invalid_request_error" : "server_error"));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "internal error: " + what, "", "server_error"));
  });
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics->count_request(route_label(req.path), res.status);
  });

  svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(kChatPage), "text/html; charset=utf-8");
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = draining ? 503 : 200;
    res.set_content(draining ? R"({"status":"shutting down"})" : R"({"status":"ok"})", "application/json");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics->render(sched.stats()), "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump(models_json(opt.model_name, started)), "application/json");
  });
  auto post = [this](Endpoint ep) {
    return [this, ep](const httplib::Request& req, httplib::Response& res) {
      try {
        completion(ep, req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  svr.Post("/v1/chat/completions", post(Endpoint::Chat));
  svr.Post("/v1/completions", post(Endpoint::Completion));
  auto post_only = [](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Allow", "POST");
    send_error(res, ApiError(405, fmt::format("{} needs POST, not {}", req.path, req.method), "",
                             "invalid_request_error", "method_not_allowed"));
  };
  svr.Get("/v1/chat/completions", post_only);
  svr.Get("/v1/completions", post_only);
}

void Server::Impl::completion(Endpoint ep, const httplib::Request& req, httplib::Response& res) {
  if (draining) {
    res.set_header("Connection", "close");
    throw ApiError(503, "the server is shutting down", "", "server_error");
  }
  uint64_t seed;
  {
    std::lock_guard<std::mutex> lk(mu);
    seed = seeds();
  }
  ParsedRequest p = parse_request(ep, req.body, tok, context, seed);
  auto job = std::make_shared<Job>(tok, p.stop, metrics);
  ReplyHeader h{fmt::format("{}{:x}{:08x}", ep == Endpoint::Chat ? "chatcmpl-" : "cmpl-", next_id++,
                            uint32_t(seed)),
                int64_t(std::time(nullptr)), opt.model_name};
  Usage usage{int64_t(p.request.prompt.size()), 0};
  SequenceEvents ev;
  ev.on_token = [job](int32_t id) { return job->on_token(id); };
  ev.on_finish = [job](FinishReason r, const std::string& e) { job->on_finish(r, e); };

  {
    std::lock_guard<std::mutex> lk(mu);
    ++in_flight;  // before submit, so that shutdown() never misses an accepted request
  }
  job->submitted = Clock::now();
  std::optional<uint64_t> id;
  try {
    id = sched.submit(std::move(p.request), std::move(ev));
  } catch (const Error& e) {
    release();
    throw bad_request("", e.what());
  }
  if (!id) {
    release();
    if (draining) throw ApiError(503, "the server is shutting down", "", "server_error");
    res.set_header("Retry-After", "1");
    throw ApiError(429, "the server is busy: every slot is taken and the queue is full; retry later", "",
                   "rate_limit_error", "rate_limit_exceeded");
  }
  job->seq = *id;

  const bool stream = p.stream, include_usage = p.include_usage;
  if (stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
  }
  res.set_chunked_content_provider(
      stream ? "text/event-stream" : "application/json",
      [this, job, ep, h, usage, stream, include_usage](size_t, httplib::DataSink& sink) {
        return stream ? write_stream(ep, *job, h, usage, include_usage, sink) : write_whole(ep, *job, h, usage, sink);
      },
      [this, job](bool) {
        // The reply ended (sent, or the client left): a sequence still running is cancelled.
        if (!job->is_done()) sched.cancel(job->seq);
        release();
      });
}

bool Server::Impl::write_stream(Endpoint ep, Job& job, const ReplyHeader& h, const Usage& usage0, bool include_usage,
                                httplib::DataSink& sink) {
  auto send = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
  auto gone = [&] {  // the client left: free its slot now
    sched.cancel(job.seq);
    return false;
  };
  if (ep == Endpoint::Chat && !send(sse_event(chunk_json(ep, h, "", true, nullptr)))) return gone();
  bool done = false;
  while (!done) {
    std::string piece;
    {
      std::unique_lock<std::mutex> lk(job.mu);
      job.cv.wait_for(lk, kPoll, [&] { return job.done || !job.pending.empty(); });
      piece.swap(job.pending);
      done = job.done;
    }
    if (!piece.empty()) {
      if (!send(sse_event(chunk_json(ep, h, piece, false, nullptr)))) return gone();
    } else if (!done && !sink.is_writable()) {
      return gone();
    }
  }
  Usage usage = usage0;
  FinishReason reason;
  std::string error;
  {
    std::lock_guard<std::mutex> lk(job.mu);
    usage.completion_tokens = job.generated;
    reason = job.reason;
    error = job.error;
  }
  if (const char* fr = openai_finish_reason(reason)) {
    if (!send(sse_event(chunk_json(ep, h, "", false, fr)))) return false;
    if (include_usage && !send(sse_event(usage_chunk_json(ep, h, usage)))) return false;
    if (!send(std::string(kSseDone))) return false;
  } else {
    // An error event (as OpenAI sends one mid-stream), and no [DONE].
    ApiError e(500, reason == FinishReason::Cancelled ? "the server shut down before the reply was complete"
                                                      : "generation failed: " + error,
               "", "server_error");
    if (!send(sse_event(error_body(e)))) return false;
  }
  sink.done();
  return true;
}

bool Server::Impl::write_whole(Endpoint ep, Job& job, const ReplyHeader& h, const Usage& usage0,
                               httplib::DataSink& sink) {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(job.mu);
      if (job.cv.wait_for(lk, kPoll, [&] { return job.done; })) break;
    }
    if (!sink.is_writable()) {
      sched.cancel(job.seq);
      return false;
    }
  }
  Usage usage = usage0;
  std::string text;
  FinishReason reason;
  {
    std::lock_guard<std::mutex> lk(job.mu);
    usage.completion_tokens = job.generated;
    reason = job.reason;
    text = job.text;
  }
  const char* fr = openai_finish_reason(reason);
  // The status line (200) is already out: a reply that failed ends the connection without a complete
  // body, so that no client takes it for a finished reply.
  if (!fr) return false;
  std::string body = dump(completion_json(ep, h, text, fr, usage));
  if (!sink.write(body.data(), body.size())) return false;
  sink.done();
  return true;
}

Server::Server(Scheduler& sched, const Tokenizer& tok, int context, ServerOptions opt)
    : impl_(std::make_unique<Impl>(sched, tok, context, std::move(opt))) {
  impl_->setup();
}

Server::~Server() = default;

int Server::bind() {
  auto& s = *impl_;
  int port = s.opt.port;
  if (port == 0) {
    port = s.svr.bind_to_any_port(s.opt.host);
    if (port <= 0) port = -1;
  } else if (!s.svr.bind_to_port(s.opt.host, port)) {
    port = -1;
  }
  if (port < 0)
    fail("cannot listen on {}:{} (address in use, not an address of this machine, or a port that needs privileges)",
         s.opt.host, s.opt.port);
  // httplib listens with a backlog of 5 (compiled into Debian's libcpp-httplib): a burst of more clients
  // connecting at once had SYNs dropped, and each waited a 1 s retransmission for its first token. Listening
  // again on the bound socket raises the backlog (Linux takes the new value, capped by somaxconn).
  if (int fd = s.listen_fd.load(); fd >= 0) ::listen(fd, SOMAXCONN);
  return port;
}

bool Server::listen() { return impl_->svr.listen_after_bind() || impl_->draining; }

void Server::shutdown(double drain_seconds) {
  auto& s = *impl_;
  s.draining = true;
  // Stop accepting: accept() fails, httplib closes the socket and leaves its loop, then waits for the
  // connections' threads. Connecting now is refused.
  if (int fd = s.listen_fd.exchange(-1); fd >= 0) ::shutdown(fd, SHUT_RDWR);
  {
    std::unique_lock<std::mutex> lk(s.mu);
    s.cv.wait_for(lk, std::chrono::duration<double>(std::max(0.0, drain_seconds)),
                  [&] { return s.in_flight == 0 || s.hurry; });
  }
  s.sched.shutdown(/*finish=*/false);  // what is left is cancelled; its replies end with an error event
  std::unique_lock<std::mutex> lk(s.mu);
  s.cv.wait_for(lk, std::chrono::seconds(s.opt.write_timeout_s + 5), [&] { return s.in_flight == 0; });
}

void Server::hurry() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->hurry = true;
  impl_->cv.notify_all();
}

int Server::in_flight() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->in_flight;
}

Metrics& Server::metrics() { return *impl_->metrics; }

}  // namespace glmlab::serve::http
