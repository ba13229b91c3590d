// The fine-tuning loop behind `glmlab train`: micro-batches from a BatchStream, loss and backward
// (model/backward.h), gradient accumulation (the loss is the mean over every labelled token of the
// step's micro-batches), clipping, AdamW with warm-up + linear decay, checkpoints (PEFT adapter files +
// train_state.safetensors, each written atomically) every `save_every` steps and at the end, resume.
//
// Determinism: data order is a function of (seed, step); each micro-batch's dropout key is a hash of
// (seed, micro-batch number); every op sums in a fixed order. So a run resumed from a checkpoint gives
// the same losses, step for step, as one never interrupted.
// Data parallelism (TrainOptions::comm with several ranks): rank r takes its share of each global
// micro-batch (BatchStream), the loss is normalised by the labelled tokens of all ranks (all-reduced
// before the backward), and the adapter gradients are summed over the ranks in buckets while the
// backward runs (lab/train/grad_sync.h), so every rank clips and steps identically: the run equals one
// process with the global batch, up to the order of the floating-point sums. Rank 0 alone writes; a
// resume is read by rank 0 and broadcast, so it may use another number of ranks.
// A non-finite loss or gradient norm stops the run: the adapter and state from before the update that
// produced it (the last good one) are written to OUT and the report says so.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "lab/train/train_data.h"
#include "model/adapters.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/optimizer.h"
#include "ops/device.h"

namespace glmlab::lab {

struct TrainOptions {
  AdapterConfig adapter;
  AdamWConfig adam;              // adam.lr is the peak learning rate
  int64_t steps = 100;           // optimizer steps
  int64_t warmup = 0;            // warm-up steps
  int grad_accum = 1;            // micro-batches per step
  int batch_size = 4;            // samples per micro-batch
  double max_grad_norm = 1.0;    // 0 = no clipping
  bool pack = false;
  int pack_length = 0;           // packed rows: at least this long (0 = the longest sample of the batch)
  uint64_t seed = 42;
  std::string out;               // empty: no checkpoints
  int64_t save_every = 0;        // 0: only at the end
  bool resume = false;
  int64_t stop_after = -1;       // ≥ 0: stop (and save) after this many steps in total, as if interrupted
  std::string base;              // what the adapter is trained on (model, dtype, QAT, seed): a resume must match
  // Data parallelism (null: one process). Each rank runs batch_size samples per micro-batch; the global
  // batch of a step is batch_size × grad_accum × ranks, in the order of one process with that batch.
  dist::Communicator* comm = nullptr;
  size_t bucket_bytes = size_t(1) << 20;  // gradient all-reduce buckets
};

struct StepLog {
  int64_t step;                  // 1-based
  double loss, lr, grad_norm;
  int64_t samples, tokens;       // in this step (tokens: all real tokens of its micro-batches)
  double seconds;
  StepTimes times;
  double optimizer_s = 0;        // clipping, the last-good snapshot and the AdamW update
  int64_t labelled = 0;          // tokens the loss is taken on (all ranks)
  int64_t local_samples = 0;     // this rank's share of samples and tokens
  int64_t local_tokens = 0;
  double comm_exposed_s = 0;     // time the step spent in communication calls (data parallelism) ...
  double imbalance_s = 0;        // ... of which at least this long was waiting for a slower rank's compute
};

struct TrainReport {
  std::vector<double> losses;    // every step's loss from step 1 (including steps before a resume)
  int64_t first_step = 0;        // the step this invocation started from (0, or the resumed step)
  int64_t steps_done = 0;
  bool nan_stop = false;
  std::string message;           // why it stopped early, if it did
  double seconds = 0;            // this invocation's step time (excluding loading)
  int64_t samples = 0, tokens = 0;
  StepTimes times;               // summed over this invocation's steps
  double optimizer_seconds = 0;
  double comm_exposed_seconds = 0;
  double imbalance_seconds = 0;
  size_t grad_bytes = 0;         // gradient bytes all-reduced per step (0 in one process)
  size_t grad_buckets = 0;
};

// Trains `adapter` (already set on `model`) in place. `on_step` is called after every step.
// device (optional): the steps run on the device-resident trainer (model/device_trainer.h) in that
// Device's memory (the CUDA back end), the adapter and optimizer state coming to the host for checkpoints
// and at the end; with several ranks its gradients are summed in one blocking all-reduce after the
// backward (NCCL for a GPU, the world itself for a host device); null: the host trainer on `ops`.
TrainReport train(Ops& ops, Model& model, Adapter& adapter, const std::vector<TrainSample>& samples,
                  const TrainOptions& opt, const std::function<void(const StepLog&)>& on_step = {},
                  std::unique_ptr<Device> device = nullptr);

// JSON of what a resume must match: the options that change the run, and a hash of the samples.
std::string run_fingerprint(const TrainOptions& o, const std::vector<TrainSample>& samples);

}  // namespace glmlab::lab
