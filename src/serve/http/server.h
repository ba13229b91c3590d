// `glmlab serve`'s HTTP front end over a running serve::Scheduler (cpp-httplib, one thread per open
// connection from a fixed pool):
//   POST /v1/chat/completions, POST /v1/completions  OpenAI-compatible, streamed as server-sent events
//   GET  /v1/models, /health, /metrics (Prometheus text), /  (the chat page)
// Every request is parsed by openai_api.h, its ids submitted to the scheduler, and its reply written by
// the connection's thread as the scheduler's callbacks hand over decoded text. A client that goes away
// (a failed write, or the socket found closed while waiting) cancels its sequence. Limits: the body
// size (413), the queue (429 + Retry-After), read/write timeouts, keep-alive; --api-key guards /v1/*.
#pragma once
#include <memory>
#include <string>

#include "model/tokenizer.h"
#include "serve/scheduler.h"

namespace glmlab::serve::http {

class Metrics;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0 = a free port chosen by the system
  std::string api_key;               // non-empty: /v1/* needs "Authorization: Bearer KEY"
  std::string model_name = "glmlab";  // what /v1/models and replies call the model
  size_t max_body_bytes = 1 << 20;   // larger request bodies get 413
  int threads = 0;                   // connection threads; 0 = max_batch + max_queue + 4
  int read_timeout_s = 30;           // a client that sends nothing for this long is dropped
  int write_timeout_s = 30;          // a client that reads nothing for this long is dropped (and cancelled)
  int keep_alive_s = 5;              // idle keep-alive connections are closed after this
  int keep_alive_max = 100;          // requests per connection
};

class Server {
 public:
  // The scheduler (started by the caller) and tokenizer must outlive the server. `context`: tokens per
  // sequence the scheduler allows (prompt + reply).
  Server(Scheduler& sched, const Tokenizer& tok, int context, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port; returns the port (the real one for port 0). Error when it cannot bind.
  int bind();
  // Serves until shutdown() has finished (or the listening socket fails: then returns false).
  bool listen();
  // From any thread except a signal handler: stops accepting connections (new ones are refused, new
  // requests on open connections get 503), waits up to drain_seconds for the requests in flight to
  // finish, then cancels the rest (scheduler.shutdown(false)) and waits for their replies to end.
  // listen() returns once the connections' threads are done (at most keep_alive_s later).
  void shutdown(double drain_seconds);
  // From any thread while shutdown() drains: stop waiting and cancel what runs now (a second Ctrl-C).
  void hurry();
  // Requests accepted by the scheduler whose replies are not finished yet.
  int in_flight() const;
  Metrics& metrics();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace glmlab::serve::http
