// `glmlab data`: AdvertiseGen statistics (stats), the tiny.json selection (tiny) and the embedded
// sample (sample). The definitions live in src/lab (advertisegen.h, data_stats.h, tiny.h, sample.h).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cli/checks.h"
#include "cli/commands.h"
#include "lab/data/data_scan.h"
#include "lab/data/data_stats.h"
#include "lab/data/sample.h"
#include "lab/data/stats_text.h"
#include "lab/data/tiny.h"
#include "lab/plots/histogram_png.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using namespace glmlab;

struct DataOptions {
  std::vector<std::string> files;
  std::string tokenizer;
  bool skip_bad = false;
  int threads = 0;
  size_t max_line_bytes = size_t(1) << 20;
  // stats
  bool json = false;
  std::string png;
  size_t bins = 20;
  // tiny
  std::string out;
  size_t n = 100;
  // sample
  size_t sample_n = 100;
  uint64_t seed = 0;
};

// --tokenizer PATH, or "bytes" for the byte-level fallback; default $GLMLAB_TOKENIZER.
Tokenizer load_tokenizer(const std::string& option) {
  std::string path = option;
  if (path.empty())
    if (const char* env = std::getenv("GLMLAB_TOKENIZER")) path = env;
  if (path.empty())
    fail("token counts need ChatGLM3's tokenizer.model: pass --tokenizer PATH (or set GLMLAB_TOKENIZER), "
         "or --tokenizer bytes for the byte-level fallback");
  if (path == "bytes") return Tokenizer::byte_fallback();
  return Tokenizer::from_file(path);
}

lab::ScanOptions scan_options(const DataOptions& o) {
  lab::ScanOptions s;
  s.read.skip_bad = o.skip_bad;
  s.read.max_line_bytes = o.max_line_bytes;
  s.threads = o.threads;
  return s;
}

void add_input_options(CLI::App* cmd, DataOptions& o) {
  cmd->add_option("files", o.files, "AdvertiseGen JSON-lines files, merged in this order")->required();
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer.model path, or 'bytes' (default: $GLMLAB_TOKENIZER)");
  cmd->add_flag("--skip-bad", o.skip_bad, "skip bad records and report how many, instead of failing");
  cmd->add_option("--threads", o.threads, "threads for tokenizing (default: all cores)")
      ->check(cli::IntIn(0, cli::kMaxThreads));
  cmd->add_option("--max-line-bytes", o.max_line_bytes, "longest accepted line in bytes")
      ->capture_default_str()
      ->check(cli::UintIn(1));
}

void run_stats(const DataOptions& o) {
  Tokenizer tok = load_tokenizer(o.tokenizer);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  auto t0 = std::chrono::steady_clock::now();
  lab::Scan scan = lab::scan_files(o.files, tok, scan_options(o));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  lab::DataStats stats = lab::compute_stats(scan, o.bins);
  if (!o.png.empty())
    lab::write_histograms_png(o.png, stats.histograms,
                              fmt::format("AdvertiseGen lengths in tokens ({} records)", stats.count));
  if (o.json) {
    auto j = lab::stats_to_json(stats);
    j["tokenizer"] = tok.is_byte_fallback() ? "bytes" : "sentencepiece";
    j["seconds"] = seconds;
    j["threads"] = threads;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("%s", lab::format_stats_text(stats).c_str());
  std::printf("\nmeasured in %.2f s (%.0f records/s, %d threads, %s tokenizer)\n", seconds,
              double(stats.count + stats.skipped.count) / std::max(seconds, 1e-9), threads,
              tok.is_byte_fallback() ? "byte-level" : "SentencePiece");
  if (!o.png.empty()) std::printf("histograms written to %s\n", o.png.c_str());
}

void run_tiny(const DataOptions& o) {
  Tokenizer tok = load_tokenizer(o.tokenizer);
  lab::ScanOptions so = scan_options(o);
  lab::Scan scan = lab::scan_files(o.files, tok, so);
  lab::TinySelection sel = lab::select_tiny(scan, o.n);
  lab::write_tiny(scan, sel, o.out, so.read);
  if (scan.skipped.count) {
    std::printf("skipped %zu bad record(s)\n", scan.skipped.count);
    for (const auto& m : scan.skipped.first) std::printf("  skipped %s\n", m.c_str());
  }
  if (sel.total_records < o.n)
    std::printf("only %zu records, fewer than --n %zu: taking all of them\n", sel.total_records, o.n);
  std::printf("tiny: %zu of %zu records written to %s, total tokens %d..%d (input+output, shortest first)\n",
              sel.picks.size(), sel.total_records, o.out.c_str(), sel.picks.front().len.total_tokens(),
              sel.picks.back().len.total_tokens());
}

void run_sample(const DataOptions& o) {
  // The records and their text are both held: check the memory for both before allocating either.
  const size_t per = lab::kSampleRecordMaxBytes + lab::kSampleLineMaxBytes;
  const uint64_t need = o.sample_n > UINT64_MAX / per ? UINT64_MAX : uint64_t(o.sample_n) * per;
  check_memory(need, fmt::format("data sample -n {}", o.sample_n));
  auto records = lab::embedded_sample(o.sample_n, o.seed);
  std::string text;
  for (const auto& r : records) text += lab::format_record_line(r.content, r.summary) + "\n";
  if (o.out.empty() || o.out == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  write_file_atomic(o.out, text);
  std::printf("sample: %zu records (seed %llu) written to %s\n", records.size(), (unsigned long long)o.seed,
              o.out.c_str());
}

glmlab::cli::RegisterCommand register_data([](CLI::App& app) {
  auto* data = app.add_subcommand("data", "AdvertiseGen data: statistics in tokens, tiny.json, the embedded sample");
  data->require_subcommand(1);

  auto so = std::make_shared<DataOptions>();
  auto* stats = data->add_subcommand("stats", "records, and min/mean/median/p90/p95/p99/max of input, output and "
                                              "input+output lengths in tokens and characters, with histograms");
  add_input_options(stats, *so);
  stats->add_flag("--json", so->json, "print JSON instead of text");
  stats->add_option("--png", so->png, "also draw the token histograms into this PNG (gnuplot)");
  stats->add_option("--bins", so->bins, "most histogram bins")->capture_default_str()->check(cli::UintIn(1, 1 << 20));
  stats->callback([so] { run_stats(*so); });

  auto to = std::make_shared<DataOptions>();
  auto* tiny = data->add_subcommand("tiny", "merge files, sort by input+output tokens, take n records at even "
                                            "intervals (shortest and longest included), write JSON lines");
  add_input_options(tiny, *to);
  tiny->add_option("-o,--out", to->out, "output JSON-lines file (written atomically)")->required();
  tiny->add_option("-n,--n", to->n, "number of records")->capture_default_str()->check(cli::UintIn(2, 1 << 30));
  tiny->callback([to] { run_tiny(*to); });

  auto mo = std::make_shared<DataOptions>();
  auto* sample = data->add_subcommand("sample", "write the embedded AdvertiseGen-like sample as JSON lines");
  sample->add_option("-n,--n", mo->sample_n, "number of records")->check(cli::UintIn())->capture_default_str();
  sample->add_option("-o,--out", mo->out, "output file (default: standard output)");
  sample->add_option("--seed", mo->seed, "generator seed")->check(cli::UintIn())->capture_default_str();
  sample->callback([mo] { run_sample(*mo); });
});

}  // namespace
