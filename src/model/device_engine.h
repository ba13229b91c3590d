// The device-resident inference engine: the whole model in a Device's memory (ops/device.h).
//
// At construction everything is planned and allocated once, after one check of the total against the
// device's free memory (an Error names weights, KV cache and workspaces and what is free):
//   weights     every matrix (data + scales), norm and bias, uploaded once
//   KV cache    fp32 K and V [L][Bmax, Smax, G, D] + key_valid [Bmax, Smax] (Smax = limits.capacity)
//   workspaces  activations for the largest step (limits.step_tokens rows), logits for limits.logits_rows
//   inputs      [slot | ids N | pos N] int32 and the next ids, uploaded / downloaded per step
// The layout never depends on reset(), so a recorded graph stays valid across sequences.
//
// Decode steps (T == 1) are bucketed by cache length: a step at slot s runs attention with
// P = bucket − 1 where bucket is the first of 128, 256, 512, … (capped at Smax) above s; key_valid hides
// the slots not written yet, so the result equals attention at P = s while the step's shape depends on
// the bucket only. The slot itself is read by kv_store from device memory. On a Device with graphs(),
// the first step of each (B, bucket, logits kind) runs eagerly and is then captured; later ones upload
// ids / pos / slot / key_valid and replay the graph. Prefill (T > 1) always runs eagerly.
//
// Not supported here (Errors): adapters applied unmerged (merge first: glmlab merge), packed segments.
#pragma once
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "model/device_weights.h"
#include "model/engine.h"
#include "ops/device.h"

namespace glmlab {

struct EngineLimits {
  int batch = 1;          // most sequences of a reset
  int capacity = 0;       // most tokens per sequence (prompt + generated)
  int step_tokens = 0;    // most B·T of one step (0 = batch · capacity)
  int logits_rows = 0;    // most rows of Logits::All (0 = batch: Last only, or All for T = 1)
};

// Bytes the engine allocates on the device for `cfg` with the weights of `w` (what the memory check uses).
struct EnginePlan {
  uint64_t weights = 0, kv_cache = 0, workspaces = 0;
  uint64_t total() const { return weights + kv_cache + workspaces; }
};
EnginePlan plan_engine(const ModelConfig& cfg, const ModelWeights& w, const EngineLimits& limits);

// Decode buckets: 128, 256, 512, … then `capacity` itself.
int decode_bucket(int slot, int capacity);

class DeviceEngine final : public Engine {
 public:
  // Uploads `model` (its host weights may be freed afterwards). The device is owned.
  DeviceEngine(std::unique_ptr<Device> device, const Model& model, EngineLimits limits);
  ~DeviceEngine() override;
  const ModelConfig& config() const override { return cfg_; }
  std::string device_name() const override { return std::string(dev_->name()); }
  void reset(int batch, int capacity) override;
  int length() const override { return len_; }
  void step(const StepInput& in, Logits mode, std::vector<float>& logits) override;
  void step_greedy(const StepInput& in, std::vector<int32_t>& next) override;

  Device& device() { return *dev_; }
  const EngineLimits& limits() const { return lim_; }
  const EnginePlan& plan() const { return plan_; }
  int graphs_recorded() const { return int(graphs_.size()); }
  int64_t replays() const { return replays_; }
  int64_t eager_steps() const { return eager_; }

 private:

  // Uploads this step's inputs and key_valid; returns rows of logits to compute (0 = none).
  void prepare(const StepInput& in);
  // Issues the step's kernels: the forward of N = B·T rows at cache position P, then the final norm +
  // output layer on `rows` rows, then (greedy) argmax.
  void issue(int B, int T, int P, Logits mode, bool greedy);
  void run(const StepInput& in, Logits mode, bool greedy);

  std::unique_ptr<Device> dev_;
  ModelConfig cfg_;
  EngineLimits lim_;
  EnginePlan plan_;
  DeviceWeights weights_;
  DeviceBuffer kv_, work_;
  // KV cache
  float *k_ = nullptr, *v_ = nullptr;
  uint8_t* valid_ = nullptr;
  std::vector<uint8_t> valid_host_;  // mirror of key_valid [Bmax, Smax]
  // workspaces
  float *x_, *xl_, *h_, *qkv_, *ctx_, *u_, *act_, *last_, *logits_;
  int32_t *inputs_, *next_;
  std::vector<int32_t> staged_;
  int B_ = 0, S_ = 0, len_ = 0;  // current batch, capacity asked for, slots filled
  std::map<std::tuple<int, int, int>, int> graphs_;  // (B, bucket, kind) -> graph
  int64_t replays_ = 0, eager_ = 0;
};

}  // namespace glmlab
