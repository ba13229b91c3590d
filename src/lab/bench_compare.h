// Side-by-side comparison of two benchmark summaries (summary.json of glmlab bench infer, or of the
// PyTorch peer tools/reference/bench_peer.py, which writes the same schema): the runs are matched by
// (dtype, batch) and every ratio is written so that > 1 means A is better — A/B for rates
// (tokens/s, GB/s), B/A for times and memory.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace glmlab::lab {

// Markdown table; runs present in only one file are listed as unmatched. Throws Error for a file
// that is not a benchmark summary (no "runs" array).
std::string compare_summaries(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace glmlab::lab
