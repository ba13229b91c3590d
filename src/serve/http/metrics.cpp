#include "serve/http/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace glmlab::serve::http {

namespace {
// Prometheus numbers: integers as integers, others in shortest round-trip form.
std::string num(double v) { return fmt::format("{}", v); }

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double v) {
  size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());  // first bound >= v
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(std::string_view name, std::string_view help) const {
  std::string out;
  header(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, num(bounds_[i]), cum);
  }
  cum += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cum);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, num(sum_), name, count_);
  return out;
}

std::vector<double> ttft_buckets() { return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}; }
std::vector<double> tpot_buckets() { return {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5}; }

Metrics::Metrics() : ttft_(ttft_buckets()), tpot_(tpot_buckets()) {}

void Metrics::count_request(std::string_view endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_[{std::string(endpoint), status}];
}

void Metrics::count_finish(FinishReason r) {
  std::lock_guard<std::mutex> lk(mu_);
  ++finished_[finish_reason_name(r)];
}

void Metrics::observe_ttft(double seconds) {
  std::lock_guard<std::mutex> lk(mu_);
  ttft_.observe(seconds);
}

void Metrics::observe_tpot(double seconds) {
  std::lock_guard<std::mutex> lk(mu_);
  tpot_.observe(seconds);
}

std::string Metrics::render(const SchedulerStats& s) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::string out;
  header(out, "glmlab_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [key, n] : requests_)
    out += fmt::format("glmlab_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  header(out, "glmlab_requests_finished_total", "counter", "Sequences ended, by reason (stop, length, cancelled, error).");
  for (const char* r : {"stop", "length", "cancelled", "error"}) {
    auto it = finished_.find(r);
    out += fmt::format("glmlab_requests_finished_total{{reason=\"{}\"}} {}\n", r, it == finished_.end() ? 0 : it->second);
  }
  header(out, "glmlab_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  out += fmt::format("glmlab_prompt_tokens_total {}\n", s.prompt_tokens);
  header(out, "glmlab_generation_tokens_total", "counter", "Tokens generated.");
  out += fmt::format("glmlab_generation_tokens_total {}\n", s.generated_tokens);
  header(out, "glmlab_rejected_requests_total", "counter", "Requests refused because the queue was full (429).");
  out += fmt::format("glmlab_rejected_requests_total {}\n", s.rejected);
  header(out, "glmlab_queue_depth", "gauge", "Requests waiting for a slot.");
  out += fmt::format("glmlab_queue_depth {}\n", s.queued);
  header(out, "glmlab_running_sequences", "gauge", "Sequences holding a slot (prefilling or decoding).");
  out += fmt::format("glmlab_running_sequences {}\n", s.running);
  header(out, "glmlab_max_batch", "gauge", "Slots: the most sequences decoded together.");
  out += fmt::format("glmlab_max_batch {}\n", s.max_batch);
  header(out, "glmlab_context_tokens", "gauge", "Tokens per slot (prompt + reply).");
  out += fmt::format("glmlab_context_tokens {}\n", s.context);
  out += ttft_.render("glmlab_time_to_first_token_seconds", "Time from a request's acceptance to its first token.");
  out += tpot_.render("glmlab_time_per_output_token_seconds",
                      "Per request, the mean time between generated tokens after the first.");
  return out;
}

}  // namespace glmlab::serve::http
