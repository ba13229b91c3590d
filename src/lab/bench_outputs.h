// Writes every output of an inference benchmark into one folder, each file atomically:
// summary.json, summary.csv, records.jsonl, records.csv, prompts.jsonl (what a peer needs to run the
// same work), config.json (the model's config, for the peer), scatter3d.png, scatter3d.html,
// tokens_per_s.png. The data files come first; a chart that cannot be drawn (no gnuplot) is reported
// in `warnings` and the other files are still written.
#pragma once
#include <string>
#include <vector>

#include "lab/bench_report.h"

namespace glmlab::lab {

struct BenchOutputs {
  std::vector<std::string> files;     // paths written
  std::vector<std::string> warnings;  // charts that failed, with the reason
};

BenchOutputs write_bench_outputs(const std::string& dir, const BenchReport& r, const BenchMeta& meta);

}  // namespace glmlab::lab
