// The outputs of glmlab bench serve (lab/bench/bench_serve.h), all in one folder published as a whole
// (util/file.h publish_folder): summary.json (schema "glmlab-bench-serve/1"), summary.csv (one line per
// run), requests.csv (one line per request per repetition), throughput_latency.png (gnuplot: output
// tokens/s against TTFT p50 and e2e p50, one point per run); and the markdown table printed to stdout.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lab/bench/bench_serve.h"

namespace glmlab::lab {

nlohmann::json serve_summary_json(const BenchServeReport& r, const BenchServeMeta& meta);
nlohmann::json serve_run_json(const ServeRunSummary& s);
std::string serve_summary_csv(const BenchServeReport& r);
std::string serve_requests_csv(const BenchServeReport& r);
// One row per run: requests, errors, output tok/s, requests/s, TTFT / TPOT / e2e p50, p90, p99.
std::string serve_markdown_table(const BenchServeReport& r);
// Throws Error when gnuplot is missing or fails.
void write_throughput_latency_png(const std::string& path, const BenchServeReport& r, const std::string& title);

const std::vector<std::string>& bench_serve_output_names();
struct BenchServeOutputs {
  std::vector<std::string> files;     // paths written
  std::vector<std::string> warnings;  // a chart that could not be drawn, with the reason
};
BenchServeOutputs write_bench_serve_outputs(const std::string& dir, const BenchServeReport& r,
                                            const BenchServeMeta& meta);

}  // namespace glmlab::lab
