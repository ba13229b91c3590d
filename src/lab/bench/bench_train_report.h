// The training benchmark's outputs: summary JSON (schema "glmlab-bench-train/1", shared with the
// PyTorch + PEFT peer tools/reference/train_peer.py), summary CSV (one row per run), per-step JSON
// lines (every timed step of every run), the micro-batches and the model config (what the peer needs
// to run the very same steps), the text table, and the chart (samples/s per run beside the stacked
// forward / backward / optimizer time of a step). Every file is written atomically.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lab/bench/bench_train.h"

namespace glmlab::lab {

struct BenchTrainMeta {
  std::string model_spec;   // e.g. "random:small"
  std::string data;         // a file path, or "<embedded sample>"
  size_t records = 0;       // records read
  std::string tokenizer;    // "bytes" or the tokenizer.model path
  std::string command;
  SampleLimits limits;
  int threads = 0;
  BenchTrainOptions options;
};

nlohmann::json train_summary_json(const BenchTrainReport& r, const BenchTrainMeta& meta);
nlohmann::json train_run_json(const TrainRunSummary& s);
std::string train_steps_jsonl(const BenchTrainReport& r);
std::string train_summary_csv(const BenchTrainReport& r);
// One line per micro-batch (warm-up first): {"batch", "warmup", "samples", "B", "T", "input_ids",
// "position_ids", "valid", "segment" (null unless packed), "labels"}, each array [B·T] row-major.
std::string train_batches_jsonl(const BenchTrainReport& r, int warmup_steps, int samples_per_batch);
// One row per run: samples/s, tokens/s, step time and its split, backward ÷ forward, GFLOP/s (of the
// GEMM probe), peak RSS, first and last loss.
std::string train_table(const BenchTrainReport& r);

// summary.json, summary.csv, steps.jsonl, batches.jsonl, config.json, then training.png (a chart that
// cannot be drawn is a warning; the other files are still written). The folder is published as a
// whole (publish_folder in util/file.h): the complete new report, or as it was; a folder holding
// anything but these files is refused, not overwritten.
struct BenchTrainOutputs {
  std::vector<std::string> files, warnings;
};
// The names above: the files a previous report may have left in the folder it replaces.
const std::vector<std::string>& bench_train_output_names();
BenchTrainOutputs write_bench_train_outputs(const std::string& dir, const BenchTrainReport& r,
                                            const BenchTrainMeta& meta);
void write_training_png(const std::string& path, const BenchTrainReport& r, const std::string& title);

// "lora bf16", "vera int8 QAT": the run's label in tables and charts.
std::string run_label(const TrainRunSummary& s);

}  // namespace glmlab::lab
