// Text rendering of data statistics (see stats_text.h).
#include "lab/data/stats_text.h"

#include <fmt/format.h>

#include <algorithm>

namespace glmlab::lab {

namespace {

std::string num(double v) {
  return v == double(int64_t(v)) ? fmt::format("{}", int64_t(v)) : fmt::format("{:.2f}", v);
}

}  // namespace

std::string format_histogram(const std::string& title, const Histogram& h, int bar_width) {
  std::string out = fmt::format("{} (bin width {}):\n", title, h.width);
  size_t peak = 0;
  for (size_t c : h.counts) peak = std::max(peak, c);
  for (size_t i = 0; i < h.counts.size(); ++i) {
    const int64_t lo = h.lo + int64_t(i) * h.width, hi = lo + h.width - 1;
    const int bar = peak ? int((h.counts[i] * size_t(bar_width) + peak - 1) / peak) : 0;
    out += fmt::format("  {:>6}-{:<6} {:<{}} {}\n", lo, hi, std::string(size_t(bar), '#'), bar_width, h.counts[i]);
  }
  return out;
}

std::string format_stats_text(const DataStats& stats) {
  std::string out = fmt::format("records: {}", stats.count);
  if (stats.skipped.count) out += fmt::format(" ({} bad record(s) skipped)", stats.skipped.count);
  out += fmt::format(" from {} file(s)\n", stats.files.size());
  for (const auto& m : stats.skipped.first) out += fmt::format("  skipped {}\n", m);
  out += "input = [gMASK] sop <|user|> \\n content <|assistant|>; output = \\n summary eos; chars = code points\n\n";
  out += fmt::format("{:<16}{:>8}{:>10}{:>9}{:>9}{:>9}{:>9}{:>8}\n", "metric", "min", "mean", "median", "p90", "p95",
                     "p99", "max");
  for (const auto& [name, s] : stats.metrics)
    out += fmt::format("{:<16}{:>8}{:>10.2f}{:>9}{:>9}{:>9}{:>9}{:>8}\n", name, num(s.min), s.mean, num(s.median),
                       num(s.p90), num(s.p95), num(s.p99), num(s.max));
  for (const auto& [name, h] : stats.histograms) out += "\n" + format_histogram(name, h);
  return out;
}

}  // namespace glmlab::lab
