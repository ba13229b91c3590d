// glmlab bench infer: inference speed per record and per dtype (lab/bench_infer.h), with the report
// files of lab/bench_outputs.h; glmlab bench compare: the ratio table of two summary.json files.
// The `bench` group itself comes from bench_group.h so that other benchmarks (bench train) join it.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/bench_group.h"
#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "dist/comm.h"
#include "lab/bench/bench_compare.h"
#include "lab/bench/bench_dist.h"
#include "lab/bench/bench_infer.h"
#include "lab/bench/bench_outputs.h"
#include "lab/bench/bench_report.h"
#include "lab/data/advertisegen.h"
#include "lab/data/sample.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace glmlab::cli {
namespace {

// The embedded default (no --data): the plan's question, every weight dtype side by side on records
// generated to their full reference lengths (no cap), so the 3-D plot shows the spread of output
// lengths; 6 records keep the no-argument run (random:small, byte tokenizer: 268–442 output tokens a
// record, 4 dtypes) near a minute on 2 cores. Each applies only where its option is not given.
constexpr size_t kInferSampleRecords = 6;
constexpr const char* kDefaultSampleDtypes = "fp16,bf16,int8,int4";

struct BenchArgs {
  ModelArgs m;
  std::string data;
  size_t records = 0;
  std::vector<int> batches = {1};
  std::vector<std::string> schedules = {"static"};
  std::string static_groups = "sorted";
  int prefill_chunk = 256;
  std::string kv_dtype;
  int reps = 1, warmup = 1, max_new_tokens = 0;
  bool stop_at_eos = false, json = false, no_progress = false;
  std::string out, probe = "full";
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) out.push_back(item);
  }
  if (out.empty()) out.push_back("");  // the model's default dtype
  return out;
}

void run_infer(BenchArgs& a, const CLI::App& cmd) {
  bool embedded = a.data.empty();
  if (embedded && cmd.count("--records") == 0) a.records = kInferSampleRecords;
  if (embedded && cmd.count("--dtype") == 0) a.m.dtype = kDefaultSampleDtypes;
  if (a.max_new_tokens < 0) fail("--max-new-tokens must be at least 0 (0 = no cap)");

  Tokenizer tok = load_tokenizer(a.m.tokenizer, a.m.model);
  std::vector<lab::Record> records;
  if (embedded) {
    records = lab::embedded_sample(a.records ? a.records : 100);
  } else {
    records = lab::read_records({a.data}, lab::ReadOptions{});
    if (a.records && records.size() > a.records) records.resize(a.records);
  }
  ModelConfig cfg = load_config(ModelSpec::parse(a.m.model));
  auto prompts = lab::make_prompts(records, tok, a.max_new_tokens, a.stop_at_eos, cfg.seq_length);
  // mpirun -np N: each rank runs its share of the records on its own engine; rank 0 writes the report.
  dist::Communicator& comm = dist::world();
  const bool lead = comm.rank() == 0;
  // The report folder is published whole at the end (publish_folder); one it may not replace is refused now.
  const std::string dir = a.out.empty() ? default_out_dir("bench-infer") : a.out;
  if (lead) check_folder_publishable(dir, lab::bench_output_names());
  const std::vector<lab::BenchPrompt> all_prompts = prompts;
  if (comm.size() > 1) prompts = lab::shard_prompts(all_prompts, comm.rank(), comm.size());

  lab::BenchInferOptions o;
  o.dtypes = split_list(a.m.dtype);
  o.batches = a.batches;
  o.schedules = a.schedules;
  o.static_sorted = a.static_groups == "sorted";
  o.prefill_chunk = a.prefill_chunk;
  // --fp32-activations keeps every activation fp32, the cached keys and values included.
  o.kv_dtype = kv_dtype_from_name(!a.kv_dtype.empty() ? a.kv_dtype : a.m.fp32_activations ? "fp32" : "bf16");
  o.reps = a.reps;
  o.warmup = a.warmup;
  o.stop_at_eos = a.stop_at_eos;
  o.progress = !a.no_progress;
  o.device = a.m.device;
  o.device_engine = wants_device_engine(a.m);
  if (o.device_engine) make_device(backend_from_name(a.m.device), true);  // fails early without CUDA
  o.probe = a.probe == "off" ? lab::ProbeLevel::Off : a.probe == "quick" ? lab::ProbeLevel::Quick : lab::ProbeLevel::Full;
  if (comm.size() > 1) {
    // Rank 0 probes the machine alone, then every rank starts together.
    if (!lead) o.probe = lab::ProbeLevel::Off;
    o.progress = o.progress && lead;
    o.after_probe = [&comm] { comm.barrier(); };
  }

  lab::BenchMeta meta;
  meta.model_spec = a.m.model;
  meta.data = embedded ? "<embedded sample>" : a.data;
  meta.tokenizer = tokenizer_source(tok, a.m);
  meta.adapter = a.m.adapter;
  meta.command = command_line();
  meta.max_new_tokens = a.max_new_tokens;
  meta.options = o;

  int64_t in_tok = 0, out_tok = 0;
  for (const auto& p : all_prompts) {
    in_tok += int64_t(p.input.size());
    out_tok += p.target_tokens;
  }
  if (lead)
  std::fprintf(stderr,
               "bench infer: %s, %zu records of %s (tokenizer %s): %lld prompt tokens, %lld %s output tokens%s; "
               "dtype %s, batch %s, %d rep(s) after %d warm-up group(s)%s\n",
               a.m.model.c_str(), all_prompts.size(), meta.data.c_str(), meta.tokenizer.c_str(), (long long)in_tok,
               (long long)out_tok, a.stop_at_eos ? "most" : "forced",
               a.max_new_tokens ? fmt::format(" (capped at {} per record)", a.max_new_tokens).c_str() : "",
               a.m.dtype.empty() ? "default" : a.m.dtype.c_str(), fmt::format("{}", fmt::join(a.batches, ",")).c_str(),
               a.reps, a.warmup,
               comm.size() > 1 ? fmt::format("; {} ranks ({}), records shared out", comm.size(), comm.backend()).c_str()
                               : "");

  lab::BenchLoader loader = [&](const std::string& dtype, const EngineLimits& limits) {
    ModelArgs one = a.m;
    one.dtype = dtype;
    Loaded L = load(one, /*allow_device=*/true, /*inference=*/true);
    lab::BenchModel bm;
    bm.load_seconds = L.load_seconds;
    bm.keep_alive = L.adapter;
    bm.model = std::make_unique<Model>(std::move(L.model));
    if (L.device) {
      auto e = make_engine(*bm.model, nullptr, std::move(L.device), limits);
      bm.device = &static_cast<DeviceEngine&>(*e).device();
      bm.engine = std::move(e);
    } else {
      bm.ops = std::move(L.ops);
    }
    return bm;
  };
  lab::BenchReport report = lab::run_bench_infer(std::move(prompts), loader, o);
  lab::gather_bench_infer(comm, report, all_prompts);
  if (!lead) return;

  lab::BenchOutputs files = lab::write_bench_outputs(dir, report, meta);
  for (const auto& w : files.warnings) std::fprintf(stderr, "bench: warning: %s\n", w.c_str());

  if (a.json) {
    std::printf("%s\n", lab::summary_json(report, meta).dump(2).c_str());
  } else {
    std::printf("machine: %s\n", lab::one_line(report.machine).c_str());
    if (report.device_probe)
      std::printf("limits:  %s memory %.1f GB/s (%.1f–%.1f; device-to-device copy, read + written), measured in this "
                  "run; no GEMM probe on the device\n",
                  report.device_name.c_str(), report.memory_gbs.median, report.memory_gbs.min, report.memory_gbs.max);
    else if (report.probed)
    {
      const ComputeProbe& c = report.compute;
      std::printf("limits:  memory read %.2f GB/s (%.2f–%.2f; best of: %s); peaks: fp32 FMA %.0f%s, bf16 dot %s%s, "
                  "int8 dot %.0f%s GOP/s; fp32 sgemm %.1f GFLOP/s (%.1f–%.1f); %d threads, measured in this run\n",
                  report.memory_gbs.median, report.memory_gbs.min, report.memory_gbs.max, report.memory_pattern.c_str(),
                  c.fp32_fma.median, c.fma_unit.empty() ? "" : (" (" + c.fma_unit + ")").c_str(),
                  c.bf16_unit.empty() ? "n/a" : fmt::format("{:.0f}", c.bf16_dot.median).c_str(),
                  c.bf16_unit.empty() ? "" : (" (" + c.bf16_unit + ")").c_str(), c.int8_dot.median,
                  c.int8_unit.empty() ? "" : (" (" + c.int8_unit + ")").c_str(), report.gemm_gflops.median, report.gemm_gflops.min, report.gemm_gflops.max, c.threads);
      for (const auto& s : report.runs)
        if (s.decode_gbs_of_probe > 1.0 || s.prefill_gflops_of_probe > 1.0)
          std::fprintf(stderr,
                       "bench: warning: %s batch %d reads above a probed limit (decode %.0f%%, prefill %.0f%% of %s): "
                       "the probe is not the machine's best; do not quote these percentages\n",
                       s.dtype.c_str(), s.batch, 100 * s.decode_gbs_of_probe, 100 * s.prefill_gflops_of_probe,
                       s.prefill_limit.c_str());
    }
    std::printf("\n%s\n", lab::markdown_table(report, a.m.model).c_str());
    if (report.dist.ranks > 1) {
      std::printf("%d ranks (%s): throughput = all ranks' tokens / the slowest rank's wall time; per rank:\n",
                  report.dist.ranks, report.dist.backend.c_str());
      for (const auto& x : report.dist.per_rank)
        std::printf("  rank %d (%s) %s b%d: %zu records, %lld tokens in %.2f s = %.1f tok/s\n", x.rank, x.host.c_str(),
                    x.dtype.c_str(), x.batch, x.records, (long long)x.output_tokens, x.wall_s, x.tokens_per_s);
    }
    std::printf("tok/s = generated tokens / wall time; median (min–max) over %d rep(s); load average %.2f at start, "
                "%.2f at end; %.1f s in all\n",
                a.reps, report.machine.load_start[0], report.machine.load_end[0], report.wall_s);
    std::printf("outputs in %s: ", dir.c_str());
    for (size_t i = 0; i < files.files.size(); ++i)
      std::printf("%s%s", i ? ", " : "", std::filesystem::path(files.files[i]).filename().c_str());
    std::printf("\n");
  }
}

RegisterCommand register_bench([](CLI::App& app) {
  CLI::App* bench = bench_group(app);

  auto a = std::make_shared<BenchArgs>();
  auto* infer = bench->add_subcommand(
      "infer", "inference speed per record and dtype: tokens/s, prefill/decode rates, latency, memory, GB/s and "
               "GFLOP/s against this machine's measured limits; JSON/CSV, 3-D scatter (PNG + HTML), tokens/s chart");
  add_model_options(infer, a->m);
  if (auto* d = infer->get_option_no_throw("--dtype"))
    d->description("weight dtypes, comma-separated (fp32, fp16, bf16, int8, int4); one run each, compared in one "
                   "table (default: fp16,bf16,int8,int4 on the embedded sample, the model's own dtype with --data)");
  infer->add_option("--data", a->data, "AdvertiseGen JSON-lines file (default: the embedded sample)");
  infer->add_option("--records", a->records, "use the first N records (default: all of --data; 6 of the sample)")
      ->check(UintIn());
  infer->add_option("--batch", a->batches,
                    "batch sizes, comma-separated (static: groups left-padded together; continuous: the most "
                    "sequences running at once)")
      ->delimiter(',')
      ->capture_default_str();
  infer->add_option("--schedule", a->schedules,
                    "static (groups run to their longest record), continuous (a finished sequence's slot goes to the "
                    "next record at once; host engine), or both comma-separated")
      ->delimiter(',')
      ->check(CLI::IsMember({"static", "continuous"}))
      ->capture_default_str();
  infer->add_option("--static-groups", a->static_groups,
                    "static batches: sorted (records sorted by length first: needs the reply lengths, as only a "
                    "benchmark knows them) or arrival (the records' order, as a server forms them)")
      ->check(CLI::IsMember({"sorted", "arrival"}))
      ->capture_default_str();
  infer->add_option("--prefill-chunk", a->prefill_chunk,
                    "continuous: most prompt tokens prefilled in one step beside the running decodes")
      ->check(IntAtLeast(1))
      ->capture_default_str();
  infer->add_option("--kv-dtype", a->kv_dtype,
                    "continuous: the KV slots' dtype, bf16 or fp32 (default bf16; fp32 with --fp32-activations)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  infer->add_option("--reps", a->reps, "repetitions (medians and min/max over them)")->capture_default_str();
  infer->add_option("--warmup", a->warmup, "groups run and discarded before measuring, per dtype and batch")
      ->capture_default_str();
  infer->add_flag("--stop-at-eos", a->stop_at_eos,
                  "free-running generation (stop ids end a record) instead of the forced reference length");
  infer->add_option("--max-new-tokens", a->max_new_tokens,
                    "cap on tokens per record (0 = none, the default: each record's reference length)")
      ->check(IntAtLeast(0));
  infer->add_option("--out,-o", a->out, "output folder (default: out/bench-infer-<timestamp>)");
  infer->add_option("--probe", a->probe, "machine-limit probes: full, quick, off")
      ->check(CLI::IsMember({"full", "quick", "off"}))
      ->capture_default_str();
  infer->add_flag("--json", a->json, "print summary.json to stdout instead of the table");
  infer->add_flag("--no-progress", a->no_progress, "no progress bar on stderr");
  infer->callback([a, infer] { run_infer(*a, *infer); });

  auto files = std::make_shared<std::vector<std::string>>();
  auto* compare = bench->add_subcommand(
      "compare", "ratio table of two summary.json files (glmlab or tools/reference/bench_peer.py), matched by dtype "
                 "and batch; bench train summaries (or tools/reference/train_peer.py) by method, dtype and QAT; bench serve "
                 "summaries by concurrency or rate; > 1 = A better");
  compare->add_option("A B", *files, "two summary.json files (or folders holding one)")->required()->expected(2);
  compare->callback([files] {
    nlohmann::json s[2];
    for (int i = 0; i < 2; ++i) {
      std::string path = (*files)[size_t(i)];
      if (is_dir(path)) path = (std::filesystem::path(path) / "summary.json").string();
      s[i] = read_json_file(path);
      if (!s[i].is_object() || !s[i].contains("runs")) fail("{}: not a benchmark summary (no \"runs\")", path);
    }
    std::printf("%s", lab::compare_summaries(s[0], s[1]).c_str());
  });
});

}  // namespace
}  // namespace glmlab::cli
