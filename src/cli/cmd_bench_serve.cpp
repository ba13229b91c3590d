// glmlab bench serve: a load benchmark of a running OpenAI-compatible server (lab/bench/bench_serve.h,
// the HTTP client lab/bench/http/bench_serve_client.h), with the report files of
// lab/bench/bench_serve_report.h. Joins the `bench` group of bench_group.h.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "cli/bench_group.h"
#include "cli/checks.h"
#include "cli/commands.h"
#include "lab/bench/bench_report.h"
#include "lab/bench/bench_serve.h"
#include "lab/bench/bench_serve_report.h"
#include "lab/bench/http/bench_serve_client.h"
#include "lab/data/advertisegen.h"
#include "lab/data/sample.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::cli {
namespace {

// The no-argument defaults: the embedded sample's first 16 records, at most 32 tokens (bench infer's own
// default compares four dtypes on 6 records at their reference lengths since issue 16).
constexpr size_t kServeSampleRecords = 16;
constexpr int kDefaultSampleCap = 32;

struct ServeBenchArgs {
  lab::BenchServeOptions o;
  std::string data, tokenizer, out;
  size_t records = 0;
  int max_new_tokens = 0;
  bool stop_at_eos = false, json = false, no_progress = false;
};

void run_serve_bench(ServeBenchArgs& a, const CLI::App& cmd) {
  const bool embedded = a.data.empty();
  if (embedded && cmd.count("--records") == 0) a.records = kServeSampleRecords;
  if (embedded && cmd.count("--max-new-tokens") == 0) a.max_new_tokens = kDefaultSampleCap;
  if (cmd.count("--concurrency") == 0 && cmd.count("--rate") > 0) a.o.concurrency.clear();  // rates alone
  if (a.o.api_key.empty())
    if (const char* env = std::getenv("GLMLAB_API_KEY"); env && *env) a.o.api_key = env;
  a.o.forced = !a.stop_at_eos;
  a.o.progress = !a.no_progress;
  lab::parse_server_url(a.o.url);  // a malformed --url fails before anything is read

  // The server's tokenizer (prompt token counts are checked against its usage, targets come from it).
  std::string tok_path = a.tokenizer;
  if (tok_path.empty())
    if (const char* env = std::getenv("GLMLAB_TOKENIZER"); env && *env) tok_path = env;
  Tokenizer tok = tok_path.empty() || tok_path == "bytes" ? Tokenizer::byte_fallback() : Tokenizer::from_file(tok_path);

  std::vector<lab::Record> records;
  if (embedded) {
    records = lab::embedded_sample(a.records ? a.records : 100);
  } else {
    records = lab::read_records({a.data}, lab::ReadOptions{});
    if (a.records && records.size() > a.records) records.resize(a.records);
  }
  auto prompts = lab::make_serve_prompts(records, tok, a.max_new_tokens, a.stop_at_eos);
  const std::string dir = a.out.empty() ? default_out_dir("bench-serve") : a.out;
  check_folder_publishable(dir, lab::bench_serve_output_names());

  lab::BenchServeMeta meta;
  meta.command = command_line();
  meta.data = embedded ? "<embedded sample>" : a.data;
  meta.tokenizer = tok.is_byte_fallback() ? "bytes" : tok_path;
  meta.max_new_tokens = a.max_new_tokens;
  meta.options = a.o;

  int64_t in_tok = 0, out_tok = 0;
  for (const auto& p : prompts) {
    in_tok += p.prompt_tokens;
    out_tok += p.target_tokens;
  }
  std::fprintf(stderr,
               "bench serve: %s, %zu records of %s (tokenizer %s): %lld prompt tokens, %lld %s output tokens%s; "
               "concurrency %s%s; %d rep(s) after %d warm-up request(s) per run; %s\n",
               a.o.url.c_str(), prompts.size(), meta.data.c_str(), meta.tokenizer.c_str(), (long long)in_tok,
               (long long)out_tok, a.stop_at_eos ? "most" : "forced",
               a.max_new_tokens ? fmt::format(" (capped at {} per record)", a.max_new_tokens).c_str() : "",
               a.o.concurrency.empty() ? "none" : fmt::format("{}", fmt::join(a.o.concurrency, ",")).c_str(),
               a.o.rates.empty() ? "" : fmt::format(", rate {} req/s (Poisson, seed {})", fmt::join(a.o.rates, ","),
                                                    a.o.seed).c_str(),
               a.o.reps, a.o.warmup, a.o.stream ? "streamed" : "not streamed");

  lab::BenchServeReport report = lab::run_bench_serve(prompts, a.o);
  lab::BenchServeOutputs files = lab::write_bench_serve_outputs(dir, report, meta);
  for (const auto& w : files.warnings) std::fprintf(stderr, "bench serve: warning: %s\n", w.c_str());

  int64_t total = 0, errors = 0;
  std::string first_error;
  for (const auto& r : report.requests) {
    ++total;
    if (!r.ok()) {
      ++errors;
      if (first_error.empty()) first_error = fmt::format("{} ({})", r.error_kind, r.error);
    }
  }
  if (errors)
    std::fprintf(stderr, "bench serve: warning: %lld of %lld requests failed (see requests.csv); the first: %s\n",
                 (long long)errors, (long long)total, first_error.c_str());

  if (a.json) {
    std::printf("%s\n", lab::serve_summary_json(report, meta).dump(2).c_str());
    return;
  }
  std::printf("client:  %s\n", lab::one_line(report.machine).c_str());
  std::printf("\n%s\n", lab::serve_markdown_table(report).c_str());
  std::printf("out tok/s = completion tokens of the successful requests / wall time of the run; TTFT = first content "
              "chunk, TPOT = (last − first chunk) / (tokens − 1), e2e = whole reply, each measured by this client; "
              "median (min–max) over %d rep(s); %.1f s in all\n",
              a.o.reps, report.wall_s);
  std::printf("outputs in %s: ", dir.c_str());
  for (size_t i = 0; i < files.files.size(); ++i)
    std::printf("%s%s", i ? ", " : "", std::filesystem::path(files.files[i]).filename().c_str());
  std::printf("\n");
}

RegisterCommand register_bench_serve([](CLI::App& app) {
  CLI::App* bench = bench_group(app);
  auto a = std::make_shared<ServeBenchArgs>();
  auto* cmd = bench->add_subcommand(
      "serve", "load benchmark of a running OpenAI-compatible server (glmlab serve or another): AdvertiseGen records "
               "as chat requests at several concurrency levels or Poisson rates; output tokens/s, requests/s, TTFT, "
               "TPOT and end-to-end latency percentiles; JSON/CSV and a throughput-latency chart");
  cmd->add_option("--url", a->o.url, "the server (http://HOST:PORT; a trailing /v1 is accepted)")->capture_default_str();
  cmd->add_option("--api-key", a->o.api_key, "sent as 'Authorization: Bearer KEY' (default: $GLMLAB_API_KEY)");
  cmd->add_option("--data", a->data, "AdvertiseGen JSON-lines file (default: the embedded sample)");
  cmd->add_option("--records", a->records, "use the first N records (default: all of --data; 16 of the sample)")
      ->check(UintIn());
  cmd->add_option("--tokenizer", a->tokenizer,
                  "the server's tokenizer.model, or 'bytes', for the targets and the prompt token check (default: "
                  "$GLMLAB_TOKENIZER, else bytes, as glmlab serve with a random model)");
  cmd->add_option("--concurrency", a->o.concurrency,
                  "closed-loop runs, comma-separated: N clients each sending its next request when its reply ended")
      ->delimiter(',')
      ->check(IntIn(1, 4096))
      ->capture_default_str();
  cmd->add_option("--rate", a->o.rates,
                  "open-loop runs, comma-separated requests/s: Poisson arrivals (exponential gaps from --seed); alone, "
                  "no concurrency runs")
      ->delimiter(',')
      ->check(FiniteIn(1e-6, 1e6));
  cmd->add_option("--max-concurrency", a->o.max_concurrency, "rate runs: the most requests in flight")
      ->check(IntIn(1, 4096))
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "seed of the Poisson arrival times")->check(UintIn())->capture_default_str();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "cap on tokens per request (0 = none; default 32 on the "
                                                         "embedded sample)")
      ->check(IntAtLeast(0));
  cmd->add_flag("--stop-at-eos", a->stop_at_eos,
                "free-running replies (the model's end token stops them) instead of the forced reference length");
  cmd->add_flag("--stream,!--no-stream", a->o.stream,
                "stream the replies (default; TTFT and TPOT need it) or ask for whole replies")
      ->capture_default_str();
  cmd->add_option("--reps", a->o.reps, "repetitions of each run (medians and min/max over them)")
      ->check(IntIn(1, 1000))
      ->capture_default_str();
  cmd->add_option("--warmup", a->o.warmup, "requests sent and discarded before each run")
      ->check(IntIn(0, 100000))
      ->capture_default_str();
  cmd->add_option("--timeout", a->o.timeout_s, "seconds one request may take")
      ->check(FiniteIn(0.001, 86400))
      ->capture_default_str();
  cmd->add_option("--out,-o", a->out, "output folder (default: out/bench-serve-<timestamp>)");
  cmd->add_flag("--json", a->json, "print summary.json to stdout instead of the table");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar on stderr");
  cmd->callback([a, cmd] { run_serve_bench(*a, *cmd); });
});

}  // namespace
}  // namespace glmlab::cli
