// The inference benchmark's outputs as text: summary JSON (one schema shared with the PyTorch peer,
// tools/reference/bench_peer.py), per-record JSON lines, CSV, the prompts (ids + target lengths, so a
// peer runs the very same work), and the markdown comparison table printed to stdout.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "lab/bench/bench_infer.h"

namespace glmlab::lab {

// What the report cannot know from the measurements alone.
struct BenchMeta {
  std::string model_spec;     // e.g. "random:small"
  std::string data;           // a file path, or "<embedded sample>"
  std::string tokenizer;      // "bytes" or the tokenizer.model path
  std::string adapter;        // the --adapter folder applied unmerged; empty = none
  std::string command;        // the command line
  int max_new_tokens = 0;     // the cap given (0 = none)
  BenchInferOptions options;
};

nlohmann::json summary_json(const BenchReport& r, const BenchMeta& meta);
nlohmann::json run_json(const RunSummary& s);
std::string records_jsonl(const BenchReport& r);
std::string records_csv(const BenchReport& r);
std::string summary_csv(const BenchReport& r);
std::string prompts_jsonl(const BenchReport& r);  // {"index","input_ids","reference_tokens","target_tokens"}

// One row per (dtype, batch): tokens/s with the spread over repetitions, prefill/decode tokens/s,
// latency, memory, GB/s and GFLOP/s as fractions of the probes, and speed relative to the first row.
std::string markdown_table(const BenchReport& r, const std::string& model_spec);

// "2025-01-01T12:00:00Z"
std::string utc_timestamp();
// A CSV field: quoted when it holds a comma, quote or newline.
std::string csv_field(const std::string& s);

// {"median", "min", "max"} of a spread, as the summaries write it.
nlohmann::json spread_json(const Spread& s);
// A number in a summary's text fields: 6 significant digits ("{:.6g}").
std::string fmt_g(double v);

// A number for tables: 3 significant digits around 1..1000, fewer decimals for larger values.
std::string fmt_num(double v);
// "37.1" or, with several repetitions, "37.1 (36.2–38.0)".
std::string fmt_spread(const Spread& s, int reps);

}  // namespace glmlab::lab
