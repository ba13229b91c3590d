// Statistics of measured AdvertiseGen records: min, mean, median, p90, p95, p99 and max of every
// length (tokens and characters), integer-width histograms, and the JSON form of it all.
//
// Percentile rule: numpy's default, method="linear" (Hyndman & Fan type 7). With the values sorted
// ascending x[0..N-1] and p in [0, 100]: h = (N-1) * (p/100), i = floor(h), g = h - i,
// value = x[i] + (x[i+1] - x[i]) * g when g < 0.5, else x[i+1] - (x[i+1] - x[i]) * (1 - g)
// (numpy's two-sided lerp, so the oracle's numbers match to the last bit). median = percentile 50.
// mean = (exact integer sum) / N.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lab/data/data_scan.h"

namespace glmlab::lab {

struct Summary {
  double min = 0, mean = 0, median = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};

// `sorted` ascending and non-empty; percent in [0, 100].
double percentile_linear(const std::vector<int32_t>& sorted, double percent);
Summary summarize(std::vector<int32_t> values);  // throws Error when empty

// Bins of equal integer width: bin i holds values in [lo + i*width, lo + (i+1)*width).
// width = max(1, ceil((max - min + 1) / max_bins)), lo = min, as many bins as needed to reach max.
struct Histogram {
  int64_t lo = 0;
  int64_t width = 1;
  std::vector<size_t> counts;
};
Histogram make_histogram(const std::vector<int32_t>& values, size_t max_bins = 20);

struct DataStats {
  std::vector<std::string> files;
  size_t count = 0;
  SkipLog skipped;
  // Metrics in print order: input_tokens, output_tokens, total_tokens, content_tokens,
  // summary_tokens, input_chars (= content), output_chars (= summary), total_chars.
  std::vector<std::pair<std::string, Summary>> metrics;
  // Histograms of input_tokens, output_tokens and total_tokens.
  std::vector<std::pair<std::string, Histogram>> histograms;
};
DataStats compute_stats(const Scan& scan, size_t max_bins = 20);  // throws Error when no records

// {"files": [...], "count": N, "skipped": K, "metrics": {name: {min, mean, ...}},
//  "histograms": {name: {"lo": .., "width": .., "counts": [...]}}}
nlohmann::json stats_to_json(const DataStats& stats);

}  // namespace glmlab::lab
