// Length statistics and histograms (see data_stats.h).
#include "lab/data/data_stats.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace glmlab::lab {

double percentile_linear(const std::vector<int32_t>& sorted, double percent) {
  if (sorted.empty()) fail("percentile of an empty list");
  const size_t n = sorted.size();
  const double h = double(n - 1) * (percent / 100.0);
  const double fl = std::floor(h);
  size_t i = size_t(fl);
  if (i >= n - 1) return double(sorted[n - 1]);
  const double g = h - fl;
  const double a = sorted[i], b = sorted[i + 1], d = b - a;
  return g >= 0.5 ? b - d * (1.0 - g) : a + d * g;
}

Summary summarize(std::vector<int32_t> values) {
  if (values.empty()) fail("statistics of an empty list");
  std::sort(values.begin(), values.end());
  int64_t sum = 0;
  for (int32_t v : values) sum += v;
  Summary s;
  s.min = values.front();
  s.max = values.back();
  s.mean = double(sum) / double(values.size());
  s.median = percentile_linear(values, 50);
  s.p90 = percentile_linear(values, 90);
  s.p95 = percentile_linear(values, 95);
  s.p99 = percentile_linear(values, 99);
  return s;
}

Histogram make_histogram(const std::vector<int32_t>& values, size_t max_bins) {
  Histogram h;
  if (values.empty() || max_bins == 0) return h;
  auto [mn, mx] = std::minmax_element(values.begin(), values.end());
  const int64_t lo = *mn, span = int64_t(*mx) - lo + 1, bins = int64_t(max_bins);
  h.lo = lo;
  h.width = std::max<int64_t>(1, (span + bins - 1) / bins);
  h.counts.assign(size_t((span + h.width - 1) / h.width), 0);
  for (int32_t v : values) ++h.counts[size_t((v - lo) / h.width)];
  return h;
}

DataStats compute_stats(const Scan& scan, size_t max_bins) {
  if (scan.records.empty())
    fail("no valid records in the input ({} bad record(s) skipped)", scan.skipped.count);
  DataStats st;
  st.files = scan.files;
  st.count = scan.records.size();
  st.skipped = scan.skipped;
  using Get = int32_t (*)(const RecordLengths&);
  const std::vector<std::pair<const char*, Get>> metrics = {
      {"input_tokens", [](const RecordLengths& l) { return l.input_tokens; }},
      {"output_tokens", [](const RecordLengths& l) { return l.output_tokens; }},
      {"total_tokens", [](const RecordLengths& l) { return l.total_tokens(); }},
      {"content_tokens", [](const RecordLengths& l) { return l.content_tokens; }},
      {"summary_tokens", [](const RecordLengths& l) { return l.summary_tokens; }},
      {"input_chars", [](const RecordLengths& l) { return l.content_chars; }},
      {"output_chars", [](const RecordLengths& l) { return l.summary_chars; }},
      {"total_chars", [](const RecordLengths& l) { return l.total_chars(); }},
  };
  std::vector<int32_t> values(scan.records.size());
  for (size_t m = 0; m < metrics.size(); ++m) {
    for (size_t i = 0; i < values.size(); ++i) values[i] = metrics[m].second(scan.records[i].len);
    if (m < 3) st.histograms.emplace_back(metrics[m].first, make_histogram(values, max_bins));
    st.metrics.emplace_back(metrics[m].first, summarize(values));
  }
  return st;
}

nlohmann::json stats_to_json(const DataStats& stats) {
  nlohmann::json j;
  j["files"] = stats.files;
  j["count"] = stats.count;
  j["skipped"] = stats.skipped.count;
  j["skipped_first"] = stats.skipped.first;
  for (const auto& [name, s] : stats.metrics)
    j["metrics"][name] = {{"min", s.min},   {"mean", s.mean}, {"median", s.median}, {"p90", s.p90},
                          {"p95", s.p95},   {"p99", s.p99},   {"max", s.max}};
  for (const auto& [name, h] : stats.histograms)
    j["histograms"][name] = {{"lo", h.lo}, {"width", h.width}, {"counts", h.counts}};
  return j;
}

}  // namespace glmlab::lab
