// The summary of one (dtype, batch) benchmark run from its measured groups and records: rates per
// repetition (generated tokens / wall time, prefill and decode tokens/s, latency p50/p90, achieved
// GB/s and GFLOP/s), then the median and min/max of each over the repetitions.
#pragma once
#include <vector>

#include "lab/bench/bench_infer.h"

namespace glmlab::lab {

Spread spread_of(std::vector<double> v);             // median (mean of the middle two), min, max
double percentile(std::vector<double> v, double q);  // linear interpolation, q in [0, 1]; 0 for none

// groups/records: only this (dtype, batch), all repetitions. probes: medians (0 = not measured).
RunSummary summarize_run(const std::vector<GroupResult>& groups, const std::vector<RecordResult>& records,
                         const ModelFacts& facts, int batch, int reps, double probe_gbs, double probe_gflops);

// Sets batch_gain of every run that has a batch-1 run of the same dtype.
void set_batch_gains(std::vector<RunSummary>& runs);

}  // namespace glmlab::lab
