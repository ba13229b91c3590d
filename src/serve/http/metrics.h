// The server's counters and latency histograms, written as Prometheus text (exposition format 0.0.4)
// for GET /metrics. Thread-safe: handlers and the scheduler's callbacks record, /metrics renders.
//
//   glmlab_requests_total{endpoint,status}        counter: HTTP requests answered, by route and status
//   glmlab_prompt_tokens_total                     counter: prompt tokens prefilled (scheduler)
//   glmlab_generation_tokens_total                 counter: tokens generated (scheduler)
//   glmlab_requests_finished_total{reason}         counter: sequences ended: stop, length, cancelled, error
//   glmlab_queue_depth                             gauge:   requests waiting for a slot
//   glmlab_running_sequences                       gauge:   sequences holding a slot
//   glmlab_max_batch, glmlab_context_tokens        gauges:  the configuration
//   glmlab_time_to_first_token_seconds             histogram: submit -> first generated token
//   glmlab_time_per_output_token_seconds           histogram: per request, (last - first token) / (n - 1)
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/scheduler.h"

namespace glmlab::serve::http {

// Cumulative buckets with upper bounds `bounds` (ascending) plus +Inf, a sum and a count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // "# HELP", "# TYPE name histogram", name_bucket{le=...} lines (cumulative, +Inf last), _sum, _count.
  std::string render(std::string_view name, std::string_view help) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), bounds_.size() + 1 with +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Bounds in seconds used for the latency histograms.
std::vector<double> ttft_buckets();
std::vector<double> tpot_buckets();

class Metrics {
 public:
  Metrics();
  void count_request(std::string_view endpoint, int status);
  void count_finish(FinishReason r);
  void observe_ttft(double seconds);
  void observe_tpot(double seconds);
  // Everything above plus the scheduler's numbers.
  std::string render(const SchedulerStats& s) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> finished_;
  Histogram ttft_, tpot_;
};

}  // namespace glmlab::serve::http
