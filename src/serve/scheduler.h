// Continuous batching (issue 15): a pool of per-sequence KV slots and a scheduler that, at every step,
// admits waiting requests up to max_batch, prefills new prompts in chunks of at most prefill_chunk tokens
// (so a long prompt never stalls the running decodes for its whole prefill), decodes every running
// sequence in the same forward call (Model::forward_ragged), and retires those that stop: a stop id, the
// token limit, the caller's on_token returning false (stop strings), or cancel().
//
// The scheduler knows ids only; the chat layout, decoding and stop strings belong to the caller (the
// HTTP server, bench infer). Each sequence owns one row of the KV cache with its own length and
// positions, so nothing is left-padded and a finished sequence's row is reused by the next request.
//
// Threading: submit(), cancel() and stats() may be called from any thread. The steps run on the
// thread that calls step() / run_until_idle(), or on the scheduler's own thread after start().
// Callbacks (on_token, on_finish) are called on the stepping thread, never under a lock the caller
// could need: they may call cancel() or submit(), and should return quickly (queue the text).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "model/generate.h"
#include "model/model.h"
#include "ops/ops.h"

namespace glmlab::serve {

enum class FinishReason { Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct Request {
  std::vector<int32_t> prompt;       // ids, chat layout already applied; not empty
  int max_tokens = 128;              // most new tokens (0 allowed: finishes with Length at once)
  int min_tokens = 0;                // forced length for benchmarks: stop ids are ignored before it
  SamplingParams sampling;           // greedy, or temperature / top_p / top_k with its own seed
  std::vector<int32_t> stop_ids = {2, 64795, 64797};  // eos, <|user|>, <|observation|>
};

struct SequenceEvents {
  // Each generated id (a stop id is not passed). Return false to finish the sequence now with
  // FinishReason::Stop (a stop string was seen), true to go on.
  std::function<bool(int32_t id)> on_token;
  // Called exactly once per accepted request, after its last on_token. `error` is set for Error.
  std::function<void(FinishReason reason, const std::string& error)> on_finish;
};

struct SchedulerOptions {
  int max_batch = 8;        // KV slots = most sequences decoding at once
  int max_queue = 64;       // most requests waiting for a slot; submit() refuses more
  int prefill_chunk = 256;  // most prompt tokens prefilled in one step (decodes come first)
  int context = 0;          // tokens per slot (prompt + new); 0 = min(seq_length, 2048)
  KvDtype kv_dtype = KvDtype::BF16;  // the slots' keys and values (fp32: exact against generate())
};

struct SchedulerStats {
  int64_t queued = 0, running = 0;                  // now
  int64_t submitted = 0, finished = 0, cancelled = 0, rejected = 0, errors = 0;  // since start
  int64_t prompt_tokens = 0, generated_tokens = 0;  // prefilled, and generated (all sequences)
  int64_t steps = 0;                                 // forward calls
  int max_batch = 0, context = 0;
};

class Scheduler {
 public:
  // The model and ops must outlive the scheduler. The KV cache of max_batch × context tokens is
  // allocated here after a memory check (Error with the bytes needed when it does not fit).
  Scheduler(const Model& model, Ops& ops, SchedulerOptions opt);
  ~Scheduler();  // stops the thread (cancelling what runs)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const { return opt_; }
  // Bytes of the KV slots for these options (the formula the memory check uses).
  static uint64_t kv_bytes(const ModelConfig& c, const SchedulerOptions& opt);

  // Queues a request. Error (nothing queued) when the request is invalid: empty prompt, an id outside
  // the vocabulary, prompt + max_tokens over the slot's context, bad sampling values. Returns its id,
  // or nullopt when the queue already holds max_queue requests (the caller answers 429). After
  // shutdown() began, returns nullopt too.
  std::optional<uint64_t> submit(Request req, SequenceEvents ev);
  // Finishes a queued or running request with Cancelled and frees its slot before the next step. A
  // finished or unknown id is ignored.
  void cancel(uint64_t id);
  SchedulerStats stats() const;

  // One scheduling step (admit, one forward call, sample, retire). Returns false when there was
  // nothing to do. Not to be mixed with start().
  bool step();
  // Steps until nothing is queued or running.
  void run_until_idle();

  // A thread that steps while there is work and sleeps otherwise.
  void start();
  // Refuses new requests; with `finish`, lets running and queued requests complete, otherwise cancels
  // them; then joins the thread. Idempotent.
  void shutdown(bool finish);

 private:
  struct Seq;
  void finish(Seq& s, FinishReason r, const std::string& err);

  const Model& model_;
  Ops& ops_;
  SchedulerOptions opt_;
  std::unique_ptr<KVCache> cache_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Seq>> queue_;   // guarded by mu_
  std::vector<uint64_t> cancels_;            // guarded by mu_
  std::vector<std::unique_ptr<Seq>> running_;  // stepping thread only
  std::vector<int> free_rows_;               // stepping thread only
  SchedulerStats stats_;                     // guarded by mu_
  uint64_t next_id_ = 1;                     // guarded by mu_
  bool closing_ = false;                     // guarded by mu_
  bool finish_on_close_ = true;
  std::thread thread_;
  std::vector<float> logits_;
  std::vector<int32_t> greedy_ids_;  // stepping thread only
};

}  // namespace glmlab::serve
