#include "serve/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/dtype.h"
#include "util/error.h"
#include "util/parse.h"

namespace glmlab::serve {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "?";
}

struct Scheduler::Seq {
  uint64_t id = 0;
  Request req;
  SequenceEvents ev;
  int row = -1;
  int prefilled = 0;        // prompt tokens in the cache
  int32_t last = -1;        // the newest generated id (input of the next decode), −1 before the first
  int generated = 0;
  bool done = false;
  std::mt19937_64 rng;
};

namespace {

int default_context(const ModelConfig& c, int context) { return context > 0 ? context : std::min(c.seq_length, 2048); }

SchedulerOptions checked(const ModelConfig& c, SchedulerOptions o) {
  check_int_range(o.max_batch, "max_batch", 1, 4096);
  check_int_range(o.max_queue, "max_queue", 0, 1 << 20);
  check_int_range(o.prefill_chunk, "prefill_chunk", 1, 1 << 20);
  check_int_range(o.context, "context", 0, c.seq_length);
  o.context = default_context(c, o.context);
  return o;
}

}  // namespace

uint64_t Scheduler::kv_bytes(const ModelConfig& c, const SchedulerOptions& opt) {
  return KVCache::bytes_needed(c, std::max(opt.max_batch, 1), default_context(c, opt.context), opt.kv_dtype);
}

Scheduler::Scheduler(const Model& model, Ops& ops, SchedulerOptions opt)
    : model_(model), ops_(ops), opt_(checked(model.config(), opt)) {
  cache_ = std::make_unique<KVCache>(model.config(), opt_.max_batch, opt_.context, opt_.kv_dtype);
  for (int r = opt_.max_batch - 1; r >= 0; --r) free_rows_.push_back(r);
  stats_.max_batch = opt_.max_batch;
  stats_.context = opt_.context;
}

Scheduler::~Scheduler() {
  try {
    shutdown(false);
  } catch (...) {
  }
}

std::optional<uint64_t> Scheduler::submit(Request req, SequenceEvents ev) {
  const ModelConfig& c = model_.config();
  if (req.prompt.empty()) fail("the prompt is empty");
  for (size_t i = 0; i < req.prompt.size(); ++i)
    if (req.prompt[i] < 0 || req.prompt[i] >= c.vocab_size)
      fail("prompt token {} (id {}) is outside the vocabulary [0, {})", i, req.prompt[i], c.vocab_size);
  if (req.max_tokens < 0 || req.min_tokens < 0 || req.min_tokens > req.max_tokens)
    fail("need 0 <= min_tokens ({}) <= max_tokens ({})", req.min_tokens, req.max_tokens);
  if (int64_t(req.prompt.size()) + req.max_tokens > opt_.context)
    fail("the prompt's {} tokens plus max_tokens {} exceed the context of {} tokens", req.prompt.size(),
         req.max_tokens, opt_.context);
  if (!req.sampling.greedy) {
    check_finite_range(req.sampling.temperature, "temperature", 0, std::numeric_limits<float>::max());
    check_finite_range(req.sampling.top_p, "top_p", 0, 1);
    check_int_range(req.sampling.top_k, "top_k", 0, std::numeric_limits<int>::max());
  }
  auto s = std::make_unique<Seq>();
  s->req = std::move(req);
  s->ev = std::move(ev);
  s->rng.seed(s->req.sampling.seed);
  std::lock_guard lk(mu_);
  if (closing_ || int64_t(queue_.size()) >= opt_.max_queue) {
    ++stats_.rejected;
    return std::nullopt;
  }
  s->id = next_id_++;
  const uint64_t id = s->id;
  queue_.push_back(std::move(s));
  ++stats_.submitted;
  stats_.queued = int64_t(queue_.size());
  cv_.notify_all();
  return id;
}

void Scheduler::cancel(uint64_t id) {
  std::lock_guard lk(mu_);
  cancels_.push_back(id);
  cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void Scheduler::finish(Seq& s, FinishReason r, const std::string& err) {
  if (s.done) return;
  s.done = true;
  {
    std::lock_guard lk(mu_);
    ++stats_.finished;
    if (r == FinishReason::Cancelled) ++stats_.cancelled;
    if (r == FinishReason::Error) ++stats_.errors;
  }
  if (s.ev.on_finish) {
    try {
      s.ev.on_finish(r, err);
    } catch (...) {  // the caller's callback must not take the scheduler down
    }
  }
}

bool Scheduler::step() {
  const ModelConfig& c = model_.config();
  const int V = c.vocab_size;
  // 1. Cancellations, then admissions into the rows they freed. The lock is never held in a callback.
  std::vector<std::unique_ptr<Seq>> dropped;  // cancelled while queued
  std::vector<uint64_t> cancelled;
  bool cancel_all = false, acted = false;
  {
    std::lock_guard lk(mu_);
    cancel_all = closing_ && !finish_on_close_;
    cancelled.swap(cancels_);
    for (uint64_t id : cancelled) {
      auto it = std::find_if(queue_.begin(), queue_.end(), [&](auto& q) { return q->id == id; });
      if (it != queue_.end()) {
        dropped.push_back(std::move(*it));
        queue_.erase(it);
      }
    }
    if (cancel_all)
      while (!queue_.empty()) dropped.push_back(std::move(queue_.front())), queue_.pop_front();
    stats_.queued = int64_t(queue_.size());
  }
  for (auto& s : dropped) finish(*s, FinishReason::Cancelled, "");
  acted = !dropped.empty();
  for (auto& s : running_)
    if (cancel_all || std::find(cancelled.begin(), cancelled.end(), s->id) != cancelled.end())
      finish(*s, FinishReason::Cancelled, ""), acted = true;

  auto retire = [&] {
    for (auto& s : running_)
      if (s->done && s->row >= 0) {
        cache_->clear_row(s->row);
        free_rows_.push_back(s->row);
        s->row = -1;
      }
    running_.erase(std::remove_if(running_.begin(), running_.end(), [](auto& s) { return s->done; }), running_.end());
    std::lock_guard lk(mu_);
    stats_.running = int64_t(running_.size());
  };
  retire();
  {
    std::lock_guard lk(mu_);
    while (!queue_.empty() && !free_rows_.empty()) {
      auto s = std::move(queue_.front());
      queue_.pop_front();
      s->row = free_rows_.back();
      free_rows_.pop_back();
      running_.push_back(std::move(s));
    }
    stats_.queued = int64_t(queue_.size());
  }
  for (auto& s : running_)
    if (!s->done && s->prefilled == 0 && s->req.max_tokens == 0) finish(*s, FinishReason::Length, ""), acted = true;
  retire();
  if (running_.empty()) return acted;

  // 2. The step: every decoding sequence one token, then prompt chunks up to prefill_chunk tokens.
  RaggedStep st;
  std::vector<Seq*> want;  // sequences whose run has logits, in run order
  std::vector<int> prefill_taken(running_.size(), 0);
  for (auto& s : running_)
    if (s->prefilled == int(s->req.prompt.size())) {
      const int pos = s->prefilled + s->generated - 1;  // the slot of the newest generated token
      st.runs.push_back({s->row, pos, 1, true});
      st.ids.push_back(s->last);
      want.push_back(s.get());
    }
  int budget = opt_.prefill_chunk;
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Seq& s = *running_[i];
    const int left = int(s.req.prompt.size()) - s.prefilled;
    if (left == 0) continue;
    const int n = std::min(left, budget);
    const bool last = n == left;
    st.runs.push_back({s.row, s.prefilled, n, last});
    st.ids.insert(st.ids.end(), s.req.prompt.begin() + s.prefilled, s.req.prompt.begin() + s.prefilled + n);
    if (last) want.push_back(&s);
    prefill_taken[i] = n;
    budget -= n;
    prompt_tokens += n;
  }

  try {
    model_.forward_ragged(ops_, st, *cache_, logits_);
  } catch (const std::exception& e) {
    for (auto& s : running_)
      if (std::find(want.begin(), want.end(), s.get()) != want.end() ||
          prefill_taken[size_t(&s - running_.data())] > 0)
        finish(*s, FinishReason::Error, e.what());
    retire();
    return true;
  }
  for (size_t i = 0; i < running_.size(); ++i) running_[i]->prefilled += prefill_taken[i];

  // 3. Sample each sequence's next id; stop, limit or the caller's verdict retire it.
  // The greedy ids of every row in one call (the first maximum, as generate(); threads over rows). A row
  // with Inf or NaN gets the reference's id 5, so only a 5 (or a sampled row) needs the finiteness scan.
  auto is_greedy = [](const Seq& s) { return s.req.sampling.greedy || s.req.sampling.temperature <= 0.0f; };
  const int32_t non_finite_id = V > 5 ? 5 : 0;
  greedy_ids_.assign(want.size(), -1);
  if (std::any_of(want.begin(), want.end(), [&](const Seq* s) { return is_greedy(*s); }))
    ops_.argmax(logits_.data(), int64_t(want.size()), V, greedy_ids_.data());
  int64_t generated = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    Seq& s = *want[k];
    if (s.done) continue;
    const float* row = logits_.data() + int64_t(k) * V;
    const bool greedy = is_greedy(s);
    if (!greedy || greedy_ids_[k] == non_finite_id)
      if (size_t bad = first_non_finite(row, DType::F32, size_t(V)); bad < size_t(V)) {  // vectorized scan
        finish(s, FinishReason::Error,
               fmt::format("the model's logits are not finite (id {}: {}): its weights or adapter overflow in this "
                           "dtype", bad, row[bad]));
        continue;
      }
    const int32_t id = greedy ? greedy_ids_[k] : sample_token(std::vector<float>(row, row + V), s.req.sampling, s.rng);
    const bool is_stop = std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), id) != s.req.stop_ids.end();
    if (is_stop && s.generated >= s.req.min_tokens) {
      finish(s, FinishReason::Stop, "");
      continue;
    }
    s.last = id;
    ++s.generated;
    ++generated;
    bool go_on = true;
    if (s.ev.on_token) {
      try {
        go_on = s.ev.on_token(id);
      } catch (const std::exception& e) {
        finish(s, FinishReason::Error, e.what());
        continue;
      }
    }
    if (!go_on)
      finish(s, FinishReason::Stop, "");
    else if (s.generated >= s.req.max_tokens)
      finish(s, FinishReason::Length, "");
  }
  {
    std::lock_guard lk(mu_);
    ++stats_.steps;
    stats_.prompt_tokens += prompt_tokens;
    stats_.generated_tokens += generated;
  }
  retire();
  return true;
}

void Scheduler::run_until_idle() {
  for (;;) {
    bool worked = step();
    if (worked) continue;
    std::lock_guard lk(mu_);
    if (queue_.empty() && running_.empty() && cancels_.empty()) return;
  }
}

void Scheduler::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return closing_ || !queue_.empty() || !running_.empty() || !cancels_.empty(); });
        if (closing_ && queue_.empty() && running_.empty() && cancels_.empty()) return;
      }
      step();
    }
  });
}

void Scheduler::shutdown(bool finish_work) {
  {
    std::lock_guard lk(mu_);
    if (!closing_) finish_on_close_ = finish_work;
    else if (!finish_work) finish_on_close_ = false;
    closing_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) {
    thread_.join();
    return;
  }
  // Without a thread: cancel what waits or runs (or step it to the end).
  if (finish_work) run_until_idle();
  else
    step();
}

}  // namespace glmlab::serve
