// glmlab bench train: training speed (samples/s, tokens/s, forward / backward / optimizer split, peak
// memory, GFLOP/s against the GEMM probe) of the `glmlab train` loop for each method × QAT × dtype
// (lab/bench_train.h), with the outputs of lab/bench_train_report.h. Joins the `bench` group.
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <omp.h>

#include "cli/bench_group.h"
#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_setup.h"
#include "dist/comm.h"
#include "lab/bench/bench_train.h"
#include "lab/bench/bench_train_report.h"
#include "lab/data/sample.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::cli {
namespace {

// The no-argument default: a few steps of each of 4 runs, well under a minute on 2 cores.
constexpr size_t kTrainSampleRecords = 16;

struct BenchTrainArgs {
  ModelArgs m;
  std::string data;
  size_t records = 0;
  std::vector<std::string> methods = {"lora", "vera"}, qats = {"none", "int8"}, dtypes = {"bf16"};
  AdapterArgs adapter;
  lab::BenchTrainOptions o;
  lab::SampleLimits limits;
  std::string out, probe = "full";
  int bucket_kb = 1024;
  bool json = false, no_progress = false;
};

void run_bench_train(BenchTrainArgs& a, const CLI::App& cmd) {
  if (!a.m.adapter.empty()) fail("bench train: --adapter is for inference; bench train trains fresh adapters");
  lab::BenchTrainOptions& o = a.o;
  o.methods = a.methods;
  // --device cuda (or --engine device): every run on the device-resident trainer; the bases are read on
  // the host and uploaded by the trainer.
  const bool on_device = wants_device_engine(a.m);
  if (on_device) {
    const Backend b = backend_from_name(a.m.device);
    const bool bf16 = !a.m.fp32_activations;
    make_device(b, bf16);  // fails here, before anything is loaded, without the back end
    o.make_device = [b, bf16] { return make_device(b, bf16); };
  }
  o.qats = a.qats;
  o.dtypes = a.dtypes;
  o.progress = !a.no_progress;
  o.device = a.m.device;
  o.probe = a.probe == "off" ? lab::ProbeLevel::Off : a.probe == "quick" ? lab::ProbeLevel::Quick : lab::ProbeLevel::Full;
  auto plan = lab::plan_train_runs(o);  // bad options fail here, before anything is loaded
  // mpirun -np N: data-parallel training runs (docs/DISTRIBUTED.md); rank 0 reports.
  dist::Communicator& comm = dist::world();
  const bool lead = comm.rank() == 0;
  // The report folder is published whole at the end (publish_folder); one it may not replace is refused now.
  const std::string dir = a.out.empty() ? default_out_dir("bench-train") : a.out;
  if (lead) check_folder_publishable(dir, lab::bench_train_output_names());
  o.train.comm = &comm;
  o.train.bucket_bytes = size_t(a.bucket_kb) * 1024;
  if (!lead) o.progress = false;

  const bool embedded = a.data.empty();
  if (embedded && cmd.count("--records") == 0) a.records = kTrainSampleRecords;
  apply_threads(a.m.threads);
  Tokenizer tok = load_tokenizer(a.m.tokenizer, a.m.model);
  std::vector<lab::Record> records;
  if (embedded) {
    records = lab::embedded_sample(a.records ? a.records : 100);
  } else {
    records = lab::read_records({a.data}, lab::ReadOptions{});
    if (a.records && records.size() > a.records) records.resize(a.records);
  }
  ModelConfig cfg = load_config(ModelSpec::parse(a.m.model));
  for (const auto& m : o.methods) Adapter::create(cfg, make_adapter_config(m, a.adapter, o.train.seed));  // rank, targets
  auto samples = train_samples(tok, records, a.limits, cfg, &comm);

  lab::BenchTrainMeta meta;
  meta.model_spec = a.m.model;
  meta.data = embedded ? "<embedded sample>" : a.data;
  meta.records = records.size();
  meta.tokenizer = tokenizer_source(tok, a.m);
  meta.command = command_line();
  meta.limits = a.limits;
  meta.threads = omp_get_max_threads();
  meta.options = o;

  int64_t tokens = 0;
  for (const auto& s : samples) tokens += int64_t(s.ids.size());
  if (lead)
  std::fprintf(stderr,
               "bench train: %s, %zu samples of %s (tokenizer %s, %lld tokens); %zu run(s): %d warm-up + %d timed "
               "steps of batch %d%s each\n",
               a.m.model.c_str(), samples.size(), meta.data.c_str(), meta.tokenizer.c_str(), (long long)tokens,
               plan.size(), o.warmup_steps, o.steps, o.train.batch_size, o.train.pack ? " (packed)" : "");

  lab::TrainLoader loader = [&](const std::string& dtype) {
    ModelArgs one = a.m;
    one.dtype = dtype;
    if (on_device) one.device = "cpu", one.engine = "host";
    Loaded L = load(one);
    lab::BenchModel bm;
    bm.load_seconds = L.load_seconds;
    bm.model = std::make_unique<Model>(std::move(L.model));
    bm.ops = std::move(L.ops);
    return bm;
  };
  lab::AdapterConfigFn adapter_config = [&](const std::string& method) {
    return make_adapter_config(method, a.adapter, o.train.seed);
  };
  lab::BenchTrainReport report = lab::run_bench_train(samples, loader, adapter_config, o);
  if (!lead) return;

  lab::BenchTrainOutputs files = lab::write_bench_train_outputs(dir, report, meta);
  for (const auto& w : files.warnings) std::fprintf(stderr, "bench train: warning: %s\n", w.c_str());

  if (a.json) {
    std::printf("%s\n", lab::train_summary_json(report, meta).dump(2).c_str());
    return;
  }
  std::printf("machine: %s\n", lab::one_line(report.machine).c_str());
  if (report.probed)
    std::printf("limits:  peaks fp32 FMA %.0f, bf16 dot %.0f%s GFLOP/s; fp32 sgemm %.1f GFLOP/s (%.1f–%.1f); each run "
                "against the peak of the unit its products run on; measured in this run\n",
                report.compute.fp32_fma.median, report.compute.bf16_dot.median,
                report.compute.bf16_unit.empty() ? "" : (" (" + report.compute.bf16_unit + ")").c_str(),
                report.gemm_gflops.median, report.gemm_gflops.min, report.gemm_gflops.max);
  std::printf("model:   %s; data %s, %zu samples; batch %d%s, %d warm-up + %d timed steps per run\n\n",
              a.m.model.c_str(), meta.data.c_str(), samples.size(), o.train.batch_size,
              o.train.pack ? " packed" : " padded", o.warmup_steps, o.steps);
  std::printf("%s\n", lab::train_table(report).c_str());
  for (const auto& s : report.runs) {
    if (s.ranks < 2) continue;
    std::string per;
    for (size_t r = 0; r < s.rank_samples_per_s.size(); ++r)
      per += fmt::format("{}{:.3g}", r ? ", " : "", s.rank_samples_per_s[r]);
    std::printf("%s %s%s on %d ranks: %.3g samples/s (per rank %s); one rank alone %.3g samples/s: scaling "
                "efficiency %.0f%%; %.1f KiB of gradients in %zu buckets per step, blocking all-reduce %.3g ms; per step "
                "%.3g ms in communication calls (%.1f%% of the step), of which %.3g ms waiting for the slower rank: "
                "%.3g ms of communication exposed (%.1f%% of the step, %.0f%% of the all-reduce hidden)\n",
                s.spec.method.c_str(), s.dtype.c_str(), s.spec.qat != "none" ? " QAT" : "", s.ranks, s.samples_per_s,
                per.c_str(), s.single_rank_samples_per_s, 100 * s.scaling_efficiency, double(s.grad_bytes) / 1024,
                s.grad_buckets, 1e3 * s.allreduce_s, 1e3 * s.comm_exposed_s.median, 100 * s.comm_exposed_share,
                1e3 * s.imbalance_s.median, 1e3 * s.comm_only_s.median, 100 * s.comm_only_share, 100 * s.comm_hidden);
  }
  std::printf("samples/s and tokens/s (real tokens) = totals of the timed steps / their time; step and split times: "
              "median (min–max) per step; forward includes the loss; bwd ÷ fwd = Σ backward / Σ forward; load "
              "average %.2f at start, %.2f at end; %.1f s in all\n",
              report.machine.load_start[0], report.machine.load_end[0], report.wall_s);
  std::printf("outputs in %s: ", dir.c_str());
  for (size_t i = 0; i < files.files.size(); ++i)
    std::printf("%s%s", i ? ", " : "", std::filesystem::path(files.files[i]).filename().c_str());
  std::printf("\n");
}

RegisterCommand register_bench_train([](CLI::App& app) {
  CLI::App* bench = bench_group(app);
  auto a = std::make_shared<BenchTrainArgs>();
  a->o.train.adam.lr = 5e-5;  // glmlab train's default (the recipe's)
  a->o.train.batch_size = 1;
  auto* cmd = bench->add_subcommand(
      "train", "training speed of glmlab train per method, QAT level and dtype: samples/s, tokens/s, forward / "
               "backward / optimizer time, peak memory, GFLOP/s against the GEMM probe; JSON, CSV, per-step JSONL, "
               "chart");
  add_model_options(cmd, a->m);
  if (auto* d = cmd->get_option_no_throw("--dtype")) cmd->remove_option(d);
  cmd->add_option("--dtype", a->dtypes, "base dtypes of the runs without QAT, comma-separated (fp32, fp16, bf16)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--method", a->methods, "adapter methods, comma-separated (lora, vera)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--qat", a->qats,
                  "QAT levels, comma-separated: none (the --dtype base), int8, int4 (train on the quantized base)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--data", a->data, "AdvertiseGen JSON-lines file, e.g. tiny.json (default: the embedded sample)");
  cmd->add_option("--records", a->records, "use the first N records (default: all of --data; 16 of the sample)")
      ->check(UintIn());
  cmd->add_option("--batch-size,-b", a->o.train.batch_size, "samples per step")->capture_default_str();
  cmd->add_option("--steps", a->o.steps, "timed steps per run")->capture_default_str();
  cmd->add_option("--warmup-steps", a->o.warmup_steps, "steps run first and not counted")->capture_default_str();
  add_adapter_options(cmd, a->adapter);
  cmd->add_flag("--pack", a->o.train.pack, "pack the samples of a batch into rows (block-diagonal causal mask)");
  cmd->add_option("--pack-length", a->o.train.pack_length, "packed row length (default: the longest sample)")
      ->check(IntAtLeast(0));
  cmd->add_option("--lr", a->o.train.adam.lr, "learning rate (constant decay over the run's steps)")
      ->check(FiniteIn(0))
      ->capture_default_str();
  cmd->add_option("--train-seed", a->o.train.seed, "seed of data order, dropout and adapter init")
      ->check(UintIn())
      ->capture_default_str();
  cmd->add_option("--max-input", a->limits.max_input, "recipe limit of input tokens")
      ->check(IntIn(1, kMaxSampleLimit))
      ->capture_default_str();
  cmd->add_option("--max-output", a->limits.max_output, "recipe limit of output tokens")
      ->check(IntIn(1, kMaxSampleLimit))
      ->capture_default_str();
  cmd->add_flag("--truncate", a->limits.truncate, "cut longer samples to max input + max output + 1 (the recipe)");
  cmd->add_option("--out,-o", a->out, "output folder (default: out/bench-train-<timestamp>)");
  cmd->add_option("--probe", a->probe, "fp32 GEMM probe: full (2048³ × 5), quick (1024³ × 3), off")
      ->check(CLI::IsMember({"full", "quick", "off"}))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print summary.json to stdout instead of the table");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar on stderr");
  cmd->add_option("--grad-bucket-kb", a->bucket_kb, "data parallelism: gradient all-reduce bucket size in KiB")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->callback([a, cmd] { run_bench_train(*a, *cmd); });
});

}  // namespace
}  // namespace glmlab::cli
