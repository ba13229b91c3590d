// glmlab serve: the OpenAI-compatible HTTP server (serve/http/server.h) over the continuous-batching
// scheduler. Prints "glmlab serve: listening on http://HOST:PORT" to stderr once it accepts
// connections; SIGTERM / SIGINT stop accepting, let the requests in flight finish (at most
// --shutdown-timeout seconds, then they are cancelled) and exit 0.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <omp.h>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "serve/http/server.h"
#include "serve/scheduler.h"
#include "util/error.h"

namespace glmlab::cli {
namespace {

struct ServeArgs {
  ModelArgs m;
  std::string host = "127.0.0.1";
  int port = 8080;
  serve::SchedulerOptions sched;
  std::string api_key;
  std::string model_name;
  std::string kv_dtype;  // empty: bf16, fp32 with --fp32-activations
  double shutdown_timeout = 30;
};

// The self-pipe the signal handler writes to: the signal number, or 0 when the listener ended alone.
int g_wake[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  char c = char(sig);
  ssize_t r = ::write(g_wake[1], &c, 1);
  (void)r;
  errno = saved;
}

// What /v1/models calls the model: the checkpoint folder's name, or the random:PRESET spec.
std::string default_model_name(const std::string& spec) {
  if (spec.rfind("random:", 0) == 0) return spec;
  auto p = std::filesystem::path(spec);
  if (!p.has_filename()) p = p.parent_path();
  std::string name = p.filename().string();
  return name.empty() ? spec : name;
}

RegisterCommand register_serve([](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with streaming and continuous batching "
                                          "(docs/SERVING.md)");
  add_model_options(cmd, a->m);
  cmd->add_option("--host", a->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "TCP port (0 = a free port, printed when listening)")
      ->check(IntIn(0, 65535))
      ->capture_default_str();
  cmd->add_option("--max-batch", a->sched.max_batch, "most sequences decoded together (KV slots)")
      ->check(IntIn(1, 4096))
      ->capture_default_str();
  cmd->add_option("--max-queue", a->sched.max_queue, "most requests waiting for a slot; more get 429")
      ->check(IntIn(0, 100000))
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", a->sched.prefill_chunk, "most prompt tokens prefilled in one step")
      ->check(IntAtLeast(1))
      ->capture_default_str();
  cmd->add_option("--context", a->sched.context, "tokens per sequence, prompt + reply (0 = min(seq_length, 2048))")
      ->check(IntAtLeast(0))
      ->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv_dtype,
                  "the KV slots' dtype, bf16 or fp32 (default bf16; fp32 with --fp32-activations; fp32 replies "
                  "equal glmlab generate's)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  cmd->add_option("--api-key", a->api_key,
                  "require 'Authorization: Bearer KEY' on /v1/* (default: $GLMLAB_API_KEY; unset = no key)");
  cmd->add_option("--model-name", a->model_name, "the model's name in /v1/models and replies (default: from --model)");
  cmd->add_option("--shutdown-timeout", a->shutdown_timeout,
                  "seconds the requests in flight may run after SIGTERM/SIGINT before they are cancelled")
      ->check(FiniteIn(0, 86400))
      ->capture_default_str();
  cmd->callback([a] {
    if (a->api_key.empty())
      if (const char* env = std::getenv("GLMLAB_API_KEY"); env && *env) a->api_key = env;
    Loaded L = load(a->m, /*allow_device=*/false, /*inference=*/true);
    Tokenizer tok = load_tokenizer(a->m.tokenizer, a->m.model);
    const ModelConfig& c = L.model.config();
    if (a->sched.context > c.seq_length)
      fail("--context {} is more than the model's seq_length {}", a->sched.context, c.seq_length);

    a->sched.kv_dtype = kv_dtype_from_name(!a->kv_dtype.empty() ? a->kv_dtype : a->m.fp32_activations ? "fp32" : "bf16");
    serve::Scheduler sched(L.model, *L.ops, a->sched);
    int context = sched.stats().context;
    if (context <= 0) context = a->sched.context > 0 ? a->sched.context : std::min(c.seq_length, 2048);
    // The steps run on the scheduler's thread, which gets an OpenMP pool of its own. Loading left this
    // thread's pool idle: with both pools libgomp manages more threads than there are cores, and then it
    // spins only briefly before sleeping, so every parallel region of a step paid a futex wake-up of its
    // workers (random:small on 2 cores served 650 tokens/s where the same scheduler in-process ran 1150).
    // Releasing this thread's pool leaves one pool, which spins between regions as in bench infer.
    omp_pause_resource_all(omp_pause_soft);
    sched.start();

    serve::http::ServerOptions so;
    so.host = a->host;
    so.port = a->port;
    so.api_key = a->api_key;
    so.model_name = a->model_name.empty() ? default_model_name(a->m.model) : a->model_name;
    serve::http::Server server(sched, tok, context, so);
    const int port = server.bind();

    if (::pipe2(g_wake, O_CLOEXEC) != 0) fail("cannot create a pipe for the signal handler");
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    struct sigaction old_term = {}, old_int = {};
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);

    std::atomic<bool> listen_ok{true};
    std::thread listener([&] {
      listen_ok = server.listen();
      on_stop_signal(0);
    });
    std::fprintf(stderr, "glmlab serve: %s, %d slots of %d tokens (%s KV), queue %d, %s\n", so.model_name.c_str(),
                 a->sched.max_batch, context, a->sched.kv_dtype == KvDtype::F32 ? "fp32" : "bf16", a->sched.max_queue,
                 so.api_key.empty() ? "no API key" : "API key required");
    std::fprintf(stderr, "glmlab serve: listening on http://%s:%d\n", a->host.c_str(), port);
    std::fflush(stderr);

    char sig = 0;
    auto wait_wake = [&] {
      while (::read(g_wake[0], &sig, 1) < 0 && errno == EINTR) {
      }
    };
    wait_wake();
    std::thread drainer;
    if (sig != 0) {
      std::fprintf(stderr, "glmlab serve: %s: no new connections; %d requests in flight may finish (at most %g s; "
                   "a second signal cancels them now)\n", sig == SIGINT ? "SIGINT" : "SIGTERM", server.in_flight(),
                   a->shutdown_timeout);
      std::fflush(stderr);
      drainer = std::thread([&] { server.shutdown(a->shutdown_timeout); });
      // Until the listener ends (a 0 byte): a second signal stops the wait.
      for (wait_wake(); sig != 0; wait_wake()) {
        std::fprintf(stderr, "glmlab serve: cancelling the requests in flight\n");
        std::fflush(stderr);
        server.hurry();
      }
      drainer.join();
    } else {
      server.shutdown(0);
    }
    listener.join();
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGINT, &old_int, nullptr);
    ::close(g_wake[0]);
    ::close(g_wake[1]);
    auto st = sched.stats();
    std::fprintf(stderr, "glmlab serve: stopped after %lld requests (%lld cancelled, %lld refused)\n",
                 (long long)st.submitted, (long long)st.cancelled, (long long)st.rejected);
    if (!listen_ok) fail("the server stopped listening on {}:{} unexpectedly", a->host, port);
  });
});

}  // namespace
}  // namespace glmlab::cli
