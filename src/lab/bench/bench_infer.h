// glmlab bench infer: inference speed per record and per dtype, on AdvertiseGen-style records.
//
// Each record gives a prompt (lab::sample_ids input: the chat layout of its content) and a target
// length: by default generation is FORCED to the number of reference output ids (sample_ids output:
// "\n" + summary + eos), optionally capped, so that every dtype and back end does exactly the same
// work; with stop_at_eos generation runs free (stops at a stop id or the cap).
//
// Batching (batch > 1) is static with left padding: the prompts are sorted by (target length, prompt
// length), so sequences that finish together share a batch and little padding is computed, then cut
// into groups of `batch` (static_sorted = false: groups in the records' order, as a server that cannot
// know the reply lengths forms them). A group runs until its longest target; a sequence that has reached its own
// target keeps its slot (its extra tokens are computed but not counted). Per record: prefill time =
// the group's prefill (time to first token), total = until the record's own last token.
//
// Continuous batching (schedule "continuous", serve::Scheduler): all records are queued at once in data
// order; up to `batch` run together, a finished one's row goes to the next record at once, prompts are
// prefilled in chunks of prefill_chunk tokens beside the running decodes. Per record: prefill time =
// time to its first token since the run started (queueing included), total = until its last token.
// A step that prefilled any prompt tokens counts as prefill time, a step of decodes only as decode time.
//
// Shapes: B batch, T prompt tokens; L layers, C hidden, H heads, D head dim, V vocab (model/config.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lab/data/advertisegen.h"
#include "lab/machine.h"
#include "lab/probe.h"
#include "model/device_engine.h"
#include "model/engine.h"
#include "model/model.h"
#include "ops/ops.h"

namespace glmlab::lab {

// One benchmark prompt.
struct BenchPrompt {
  size_t index = 0;               // 0-based position among the records read
  std::vector<int32_t> input;     // sample_ids().input
  int32_t reference_tokens = 0;   // sample_ids().output.size()
  int32_t target_tokens = 0;      // forced length, or the most tokens when free-running
};

// Builds prompts. max_new_tokens > 0 caps the target; free-running without a cap uses twice the
// reference length. Targets are also cut so that prompt + target fits seq_length (a prompt that does
// not fit by itself is an error naming the record).
std::vector<BenchPrompt> make_prompts(const std::vector<Record>& records, const Tokenizer& tok, int max_new_tokens,
                                      bool stop_at_eos, int seq_length);

// A loaded model for one dtype (the CLI loads it, so every model option applies). engine: a
// DeviceEngine (then `device` is its Device) or null = a HostEngine over model + ops. The host model
// stays for its facts (weight bytes).
struct BenchModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Ops> ops;
  double load_seconds = 0;
  std::unique_ptr<Engine> engine;
  Device* device = nullptr;
  std::shared_ptr<const void> keep_alive;  // e.g. the adapter the model points to
};
// limits: the largest batch, tokens per sequence and prefill step of this benchmark (a DeviceEngine
// preallocates for them).
using BenchLoader = std::function<BenchModel(const std::string& dtype, const EngineLimits& limits)>;

enum class ProbeLevel { Off, Quick, Full };  // Quick: 256 MiB / 1024³, 3 reps (tests); Full: probe.h defaults

struct BenchInferOptions {
  std::vector<std::string> dtypes = {""};  // "" = the model's default dtype
  std::vector<int> batches = {1};
  std::vector<std::string> schedules = {"static"};  // static | continuous (host engine only)
  bool static_sorted = true;               // static groups sorted by length (knows the lengths), or arrival order
  int prefill_chunk = 256;                 // continuous: most prompt tokens per step
  KvDtype kv_dtype = KvDtype::BF16;        // continuous: the KV slots' dtype (static runs keep fp32)
  int reps = 1;
  int warmup = 1;                          // groups run and discarded first, per (dtype, batch)
  bool stop_at_eos = false;
  bool progress = true;                    // progress bar on stderr
  ProbeLevel probe = ProbeLevel::Full;
  std::string device = "cpu";              // recorded in the machine description
  bool device_engine = false;              // models run on a Device: its bandwidth probe replaces the CPU probes
  std::function<void()> after_probe;       // called once the probes are done (data parallelism: a barrier)
};

// One record of one repetition.
struct RecordResult {
  std::string dtype;
  std::string schedule = "static";
  int batch = 1, rep = 0, group = 0;
  size_t index = 0;
  int32_t input_tokens = 0, target_tokens = 0, output_tokens = 0;
  bool forced = true, stopped = false;     // stopped: ended on a stop id (free-running only)
  double prefill_s = 0, decode_s = 0, total_s = 0;
  std::vector<int32_t> output_ids;         // the counted generated tokens (what the record produced)
  double tokens_per_s() const { return total_s > 0 ? output_tokens / total_s : 0; }
};

// One group (one generate() call) of one repetition: what the summary's rates are computed from.
struct GroupResult {
  std::string dtype;
  std::string schedule = "static";
  int batch = 1, rep = 0, group = 0, sequences = 0;
  int64_t input_tokens = 0;      // real prompt tokens
  int64_t output_tokens = 0;     // counted (useful) generated tokens
  int64_t decode_steps = 0;      // forward calls after prefill (continuous: steps of decodes only)
  int64_t decode_tokens = -1;    // continuous: tokens of the decode-only steps (−1: from the records)
  double prefill_s = 0, decode_s = 0, wall_s = 0;
  double prefill_flops = 0;      // useful FLOPs of the prefill (real tokens only)
};

// Per (dtype, batch): the machine-independent facts of the loaded model.
struct ModelFacts {
  std::string dtype;             // as loaded (e.g. "bf16")
  uint64_t weight_bytes = 0;     // all matrices (ModelWeights::matrix_bytes)
  uint64_t decode_bytes_per_step = 0;  // matrices a decode step reads: all but the embedding table
  uint64_t kv_cache_bytes = 0;   // largest KV cache allocated (fp32)
  uint64_t peak_rss_bytes = 0;   // this dtype's phase: load + all its runs
  bool peak_rss_is_phase = true; // false: process peak so far (reset not allowed)
  double load_s = 0;
  uint64_t device_bytes = 0;     // device engine: weights + KV cache + workspaces allocated on the device
};

struct Spread {
  double median = 0, min = 0, max = 0;
};

struct RunSummary {
  std::string dtype;
  std::string schedule = "static";
  int batch = 1, reps = 1;
  size_t records = 0;
  int64_t input_tokens = 0, output_tokens = 0;   // per repetition
  Spread wall_s, throughput_tps, prefill_tps, decode_tps, latency_p50_s, latency_p90_s, ttft_p50_s;
  Spread decode_gbs, prefill_gflops;
  double decode_gbs_of_probe = 0, prefill_gflops_of_probe = 0;  // median ÷ probe median (0: no probe)
  std::string prefill_limit;        // the peak prefill_gflops_of_probe is against, e.g. "bf16 dot peak (AVX512-BF16)"
  double prefill_limit_gflops = 0;  // its median
  std::string decode_limit;         // the read bandwidth decode_gbs_of_probe is against
  double decode_limit_gbs = 0;      // its median
  double batch_gain = 0;                          // throughput ÷ batch-1 throughput of the same dtype (0: none)
  ModelFacts facts;
};

// Data-parallel runs (mpirun -np N bench infer, lab/bench_dist.h): each rank's share of one run.
struct RankRun {
  int rank = 0;
  std::string host, dtype;
  int batch = 1;
  size_t records = 0;
  int64_t input_tokens = 0, output_tokens = 0;  // per repetition
  double wall_s = 0;                            // median over the repetitions
  double tokens_per_s = 0;                      // output_tokens / wall_s
};
struct DistInfo {
  int ranks = 1;
  std::string backend;
  std::vector<RankRun> per_rank;
};

struct BenchReport {
  ModelConfig config;
  MachineInfo machine;
  bool probed = false;
  ProbeResult memory_gbs, gemm_gflops;  // on a device: memory_gbs = the device's copy probe, no GEMM probe
  std::string memory_pattern;           // the access pattern and allocation memory_gbs is the best of
  ComputeProbe compute;                 // instruction peaks (host runs)
  std::string device_name;              // the Device of a device-engine run ("" = host engine)
  bool device_probe = false;            // memory_gbs is the device's probe
  std::vector<BenchPrompt> prompts;
  std::vector<RecordResult> records;
  std::vector<GroupResult> groups;
  std::vector<RunSummary> runs;
  double wall_s = 0;  // whole benchmark, probes and loading included
  DistInfo dist;      // ranks > 1: the records and groups above are every rank's, the runs aggregated
};

// FLOPs of one prompt of T tokens: 2·(layer matrix params)·T + attention 2·L·H·D·T(T+1) (QKᵀ and PV
// over the causal triangle) + the output layer for the last token 2·V·C.
double prefill_flops(const ModelConfig& cfg, int64_t T);

// The engine limits covering every group of every batch size.
EngineLimits bench_limits(const std::vector<BenchPrompt>& prompts, const std::vector<int>& batches, bool sorted = true);

// Runs the benchmark: probes, then for each dtype: load, then for each batch size: warm-up, reps.
BenchReport run_bench_infer(std::vector<BenchPrompt> prompts, const BenchLoader& load, const BenchInferOptions& o);

}  // namespace glmlab::lab
