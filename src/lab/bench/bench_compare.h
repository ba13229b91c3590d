// Side-by-side comparison of two benchmark summaries (summary.json of glmlab bench infer, or of the
// PyTorch peer tools/reference/bench_peer.py, which writes the same schema): the runs are matched by
// (dtype, batch) and every ratio is written so that > 1 means A is better — A/B for rates
// (tokens/s, GB/s), B/A for times and memory.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace glmlab::lab {

// bench train summaries (schema "glmlab-bench-train/1", glmlab or tools/reference/train_peer.py) are matched
// by (method, dtype, QAT) instead, with samples/s, tokens/s, step and split times, backward ÷ forward,
// GFLOP/s and peak RSS; a summary's "skipped" runs are listed. bench serve summaries
// ("glmlab-bench-serve/1") are matched by run (c4 = concurrency 4, r2.5 = 2.5 requests/s) with output
// tokens/s, requests/s, TTFT, TPOT and e2e latency percentiles and errors. Mixing schemas is an Error.
// Markdown table; runs present in only one file are listed as unmatched. Throws Error for a file
// that is not a benchmark summary (no "runs" array).
std::string compare_summaries(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace glmlab::lab
