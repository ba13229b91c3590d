// TEMP (http branch only): a stand-in for the continuous-batching scheduler that the lead is writing on
// main, so that the HTTP server can be run end to end before it lands. It keeps scheduler.h's contract
// (submit / cancel / stats / callbacks / shutdown) but runs each request alone, one after another,
// through generate() on the scheduler's thread. Replace with main's scheduler.cpp when merging.
#include "serve/scheduler.h"

#include <algorithm>

#include "model/tokenizer.h"
#include "util/error.h"

namespace glmlab::serve {

namespace {
struct StopNow {};    // on_token returned false
struct Cancelled {};  // cancel() was called for the running request
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "error";
}

struct Scheduler::Seq {
  uint64_t id = 0;
  Request req;
  SequenceEvents ev;
};

Scheduler::Scheduler(const Model& model, Ops& ops, SchedulerOptions opt) : model_(model), ops_(ops), opt_(opt) {
  if (opt_.max_batch < 1) fail("max_batch must be at least 1, got {}", opt_.max_batch);
  if (opt_.max_queue < 0) fail("max_queue must be at least 0, got {}", opt_.max_queue);
  if (opt_.prefill_chunk < 1) fail("prefill_chunk must be at least 1, got {}", opt_.prefill_chunk);
  const int seq = model_.config().seq_length;
  if (opt_.context == 0) opt_.context = std::min(seq, 2048);
  if (opt_.context < 1 || opt_.context > seq)
    fail("context {} is outside [1, {}] (the model's seq_length)", opt_.context, seq);
  stats_.max_batch = opt_.max_batch;
  stats_.context = opt_.context;
}

Scheduler::~Scheduler() { shutdown(false); }

uint64_t Scheduler::kv_bytes(const ModelConfig& c, const SchedulerOptions& opt) {
  int ctx = opt.context > 0 ? opt.context : std::min(c.seq_length, 2048);
  return KVCache::bytes_needed(c, opt.max_batch, ctx);
}

std::optional<uint64_t> Scheduler::submit(Request req, SequenceEvents ev) {
  if (req.prompt.empty()) fail("the prompt is empty");
  for (int32_t id : req.prompt)
    if (id < 0 || id >= model_.config().vocab_size)
      fail("prompt id {} is outside the vocabulary [0, {})", id, model_.config().vocab_size);
  if (req.max_tokens < 0) fail("max_tokens {} is negative", req.max_tokens);
  if (int64_t(req.prompt.size()) + req.max_tokens > opt_.context)
    fail("{} prompt tokens + {} new tokens exceed the context of {} tokens", req.prompt.size(), req.max_tokens,
         opt_.context);
  std::lock_guard<std::mutex> lk(mu_);
  if (closing_ || int(queue_.size()) >= opt_.max_queue + opt_.max_batch - int(stats_.running)) {
    ++stats_.rejected;
    return std::nullopt;
  }
  auto s = std::make_unique<Seq>();
  s->id = next_id_++;
  s->req = std::move(req);
  s->ev = std::move(ev);
  uint64_t id = s->id;
  queue_.push_back(std::move(s));
  ++stats_.submitted;
  stats_.queued = int64_t(queue_.size());
  cv_.notify_all();
  return id;
}

void Scheduler::cancel(uint64_t id) {
  std::unique_ptr<Seq> victim;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if ((*it)->id == id) {
        victim = std::move(*it);
        queue_.erase(it);
        stats_.queued = int64_t(queue_.size());
        break;
      }
    if (!victim) cancels_.push_back(id);
  }
  if (victim) finish(*victim, FinishReason::Cancelled, "");
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void Scheduler::finish(Seq& s, FinishReason r, const std::string& err) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (r == FinishReason::Cancelled) ++stats_.cancelled;
    else if (r == FinishReason::Error) ++stats_.errors;
    else ++stats_.finished;
  }
  if (s.ev.on_finish) s.ev.on_finish(r, err);
}

bool Scheduler::step() {
  std::unique_ptr<Seq> s;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.empty()) return false;
    s = std::move(queue_.front());
    queue_.pop_front();
    stats_.queued = int64_t(queue_.size());
    stats_.running = 1;
    cancels_.erase(std::remove(cancels_.begin(), cancels_.end(), s->id), cancels_.end());
  }
  auto cancelled = [&] {
    std::lock_guard<std::mutex> lk(mu_);
    return std::find(cancels_.begin(), cancels_.end(), s->id) != cancels_.end() ||
           (closing_ && !finish_on_close_);
  };
  FinishReason reason = FinishReason::Length;
  std::string err;
  if (s->req.max_tokens > 0) {
    GenerateOptions g;
    g.max_new_tokens = s->req.max_tokens;
    g.min_new_tokens = s->req.min_tokens;
    g.stop_ids = s->req.stop_ids;
    g.sampling = s->req.sampling;
    g.on_token = [&](int, int32_t id) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        ++stats_.generated_tokens;
      }
      if (cancelled()) throw Cancelled{};
      if (s->ev.on_token && !s->ev.on_token(id)) throw StopNow{};
    };
    try {
      {
        std::lock_guard<std::mutex> lk(mu_);
        stats_.prompt_tokens += int64_t(s->req.prompt.size());
        ++stats_.steps;
      }
      auto res = generate(model_, ops_, {s->req.prompt}, g);
      reason = res.stopped[0] ? FinishReason::Stop : FinishReason::Length;
    } catch (const StopNow&) {
      reason = FinishReason::Stop;
    } catch (const Cancelled&) {
      reason = FinishReason::Cancelled;
    } catch (const std::exception& e) {
      reason = FinishReason::Error;
      err = e.what();
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.running = 0;
    cancels_.erase(std::remove(cancels_.begin(), cancels_.end(), s->id), cancels_.end());
  }
  finish(*s, reason, err);
  return true;
}

void Scheduler::run_until_idle() {
  while (step()) {
  }
}

void Scheduler::start() {
  thread_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return closing_ || !queue_.empty(); });
        if (closing_ && (queue_.empty() || !finish_on_close_)) break;
      }
      step();
    }
  });
}

void Scheduler::shutdown(bool finish_running) {
  std::deque<std::unique_ptr<Seq>> dropped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!closing_) finish_on_close_ = finish_running;
    else if (!finish_running) finish_on_close_ = false;
    closing_ = true;
    if (!finish_on_close_) dropped.swap(queue_);
    stats_.queued = int64_t(queue_.size());
    cv_.notify_all();
  }
  for (auto& s : dropped) finish(*s, FinishReason::Cancelled, "");
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

}  // namespace glmlab::serve
