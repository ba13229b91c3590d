// Writes every output of an inference benchmark into one folder, each file atomically:
// summary.json, summary.csv, records.jsonl, records.csv, prompts.jsonl (what a peer needs to run the
// same work), config.json (the model's config, for the peer), scatter3d.png, scatter3d.html,
// tokens_per_s.png. The data files come first; a chart that cannot be drawn (no gnuplot) is reported
// in `warnings` and the other files are still written. The folder is published as a whole
// (publish_folder in util/file.h): it ends up the complete new report or stays as it was (absent, or
// the previous report); a folder holding anything but these files is refused, not overwritten.
#pragma once
#include <string>
#include <vector>

#include "lab/bench/bench_report.h"

namespace glmlab::lab {

struct BenchOutputs {
  std::vector<std::string> files;     // paths written
  std::vector<std::string> warnings;  // charts that failed, with the reason
};

// The names above: the files a previous report may have left in the folder it replaces.
const std::vector<std::string>& bench_output_names();
BenchOutputs write_bench_outputs(const std::string& dir, const BenchReport& r, const BenchMeta& meta);

}  // namespace glmlab::lab
