// Benchmark summaries (see bench_summary.h).
#include "lab/bench/bench_summary.h"

#include <algorithm>
#include <cmath>

namespace glmlab::lab {

Spread spread_of(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = std::clamp(q, 0.0, 1.0) * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos));
  size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

namespace {
double ratio(double a, double b) { return b > 0 ? a / b : 0; }
}  // namespace

RunSummary summarize_run(const std::vector<GroupResult>& groups, const std::vector<RecordResult>& records,
                         const ModelFacts& facts, int batch, int reps, double probe_gbs, double probe_gflops) {
  RunSummary s;
  s.dtype = facts.dtype;
  s.batch = batch;
  s.reps = reps;
  s.facts = facts;
  std::vector<double> wall, thr, pre, dec, p50, p90, ttft, gbs, gflops;
  for (int rep = 0; rep < reps; ++rep) {
    double w = 0, ps = 0, ds = 0, flops = 0;
    int64_t in = 0, out = 0, dec_tokens = 0, steps = 0, group_dec_tokens = 0;
    bool dec_from_groups = false;
    for (const auto& g : groups) {
      if (g.rep != rep) continue;
      if (g.decode_tokens >= 0) dec_from_groups = true, group_dec_tokens += g.decode_tokens;
      w += g.wall_s;
      ps += g.prefill_s;
      ds += g.decode_s;
      flops += g.prefill_flops;
      in += g.input_tokens;
      out += g.output_tokens;
      steps += g.decode_steps;
    }
    std::vector<double> lat, first;
    size_t n = 0;
    for (const auto& r : records) {
      if (r.rep != rep) continue;
      ++n;
      lat.push_back(r.total_s);
      first.push_back(r.prefill_s);
      dec_tokens += std::max<int32_t>(0, r.output_tokens - 1);  // the first token comes from the prefill
    }
    if (dec_from_groups) dec_tokens = group_dec_tokens;
    if (rep == 0) {
      s.records = n;
      s.input_tokens = in;
      s.output_tokens = out;
    }
    wall.push_back(w);
    thr.push_back(ratio(double(out), w));
    pre.push_back(ratio(double(in), ps));
    dec.push_back(ratio(double(dec_tokens), ds));
    p50.push_back(percentile(lat, 0.5));
    p90.push_back(percentile(lat, 0.9));
    ttft.push_back(percentile(first, 0.5));
    gbs.push_back(ratio(double(facts.decode_bytes_per_step) * double(steps), ds) / 1e9);
    gflops.push_back(ratio(flops, ps) / 1e9);
  }
  s.wall_s = spread_of(wall);
  s.throughput_tps = spread_of(thr);
  s.prefill_tps = spread_of(pre);
  s.decode_tps = spread_of(dec);
  s.latency_p50_s = spread_of(p50);
  s.latency_p90_s = spread_of(p90);
  s.ttft_p50_s = spread_of(ttft);
  s.decode_gbs = spread_of(gbs);
  s.prefill_gflops = spread_of(gflops);
  s.decode_gbs_of_probe = ratio(s.decode_gbs.median, probe_gbs);
  s.prefill_gflops_of_probe = ratio(s.prefill_gflops.median, probe_gflops);
  return s;
}

void set_batch_gains(std::vector<RunSummary>& runs) {
  for (auto& r : runs) {
    r.batch_gain = 0;
    // The base: batch 1 of the same dtype, static when there is one (batch 1 is the same work either way).
    const RunSummary* base = nullptr;
    for (const auto& b : runs)
      if (b.dtype == r.dtype && b.batch == 1 && b.throughput_tps.median > 0 && (!base || b.schedule == "static"))
        base = &b;
    if (base) r.batch_gain = r.throughput_tps.median / base->throughput_tps.median;
  }
}

}  // namespace glmlab::lab
