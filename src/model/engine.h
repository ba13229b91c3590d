// The inference engine interface that generate() and bench infer drive: a model with its KV cache on
// some back end. reset() starts B new sequences; step() runs T new tokens of each after what the cache
// holds and returns logits on the host, or (step_greedy) only the B next ids, picked where the logits
// are (on a GPU: argmax on the device, so a [B, V] logits matrix never crosses the bus).
//
//   HostEngine   = Model::forward + host Ops + KVCache (adapters, tapes and training stay there).
//   DeviceEngine = the whole model in a Device's memory (model/device_engine.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace glmlab {

// Error naming the sequence and id when a logit is NaN or infinite: weights (or an adapter) that overflow
// in their dtype must give an error, not a reply of id 5 repeated.
// first_row: the sequence number of the first row (for the message).
void check_logits_finite(const float* logits, int64_t rows, int64_t V, int64_t first_row = 0);

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string device_name() const = 0;   // "cpu", "cpu-ref", or the GPU's name
  // Empties the cache for `batch` sequences of at most `capacity` tokens each (prompt + new tokens).
  virtual void reset(int batch, int capacity) = 0;
  virtual int length() const = 0;                // slots filled since reset
  // Runs `in` (in.B == the batch of reset) and writes logits: Last -> [B, V], All -> [B·T, V].
  virtual void step(const StepInput& in, Logits mode, std::vector<float>& logits) = 0;
  // Runs `in` and writes the greedy next id of each sequence (argmax of its last logits). The host
  // engine refuses non-finite logits (check_logits_finite); the device argmax maps a row with NaN/Inf to
  // 5, as sample_token and THUDM's InvalidScoreLogitsProcessor do.
  virtual void step_greedy(const StepInput& in, std::vector<int32_t>& next) = 0;
};

// Model::forward over host ops. Neither the model nor the ops are owned.
class HostEngine final : public Engine {
 public:
  HostEngine(const Model& model, Ops& ops) : model_(model), ops_(ops) {}
  const ModelConfig& config() const override { return model_.config(); }
  std::string device_name() const override { return std::string(ops_.name()); }
  void reset(int batch, int capacity) override;
  int length() const override { return cache_ ? cache_->length() : 0; }
  void step(const StepInput& in, Logits mode, std::vector<float>& logits) override;
  void step_greedy(const StepInput& in, std::vector<int32_t>& next) override;
  KVCache* cache() { return cache_.get(); }

 private:
  const Model& model_;
  Ops& ops_;
  std::unique_ptr<KVCache> cache_;
  std::vector<float> logits_;
};

}  // namespace glmlab
