// glmlab bench train: training speed of the fine-tuning loop (lab::train, the very loop of `glmlab
// train`) for each (base dtype, QAT, method) combination: W warm-up steps (run, not counted), then N
// timed steps, each split into forward / backward / optimizer.
//
// Runs: for every dtype of `dtypes` and every QAT level of `qats` the base is `dtype` (QAT "none") or
// the quantized `qat` weights (int8 / int4: forward and backward read the quantized weights); a base
// reached twice (--dtype int8 --qat int8) runs once. Each base is loaded once and every method trains
// a fresh adapter on it with the same seed, data order and micro-batches.
//
// Per step (StepTimes of model/backward.h, StepLog of lab/train_loop.h):
//   forward  = the layers' forward (with tape) + the head's forward (final norm, output layer, fused
//              cross-entropy with its gradient over the labelled rows)
//   backward = the head's backward (output layer and final norm input gradients) + the layers in reverse
//   optimizer = gradient clipping + the last-good snapshot + AdamW
//   other    = step − (forward + backward + optimizer): building the micro-batch, zeroing gradients
//
// FLOPs of a step (useful work, the same formula for every engine, see train_step_flops): per sample of
// n real tokens (packed samples counted separately), L layers, P = matrix parameters of a layer
// (QKV·C + C·Q + 2F·C + C·F), H heads of D, and M = labelled rows of the step (rows with a target):
//   forward  = Σ_samples L·(2·P·n + 2·H·D·n(n+1)) + 2·V·C·M + adapter_fwd
//   backward = Σ_samples L_b·(2·P·n + 4·H·D·n(n+1)) − [lowest adapted layer: 2·QKV·C·n]
//              + 2·V·C·M + 2·adapter_fwd
// with L_b = layers from the lowest adapted one up (below it nothing needs a gradient), attention
// 2·H·D·n(n+1) = QKᵀ and PV over the causal triangle (its backward: dP, dQ, dK, dV = twice that),
// adapter_fwd = Σ adapted linears 2·r·(in + out)·n (LoRA A and B; VeRA A_sl and B_sl), the adapters'
// backward counted as twice their forward (input and parameter gradients). No weight gradient of the
// frozen base is computed or counted; padding is not counted; elementwise work (norms, rotary, SwiGLU,
// softmax) is not counted.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lab/bench/bench_infer.h"
#include "lab/machine.h"
#include "lab/probe.h"
#include "lab/train/train_loop.h"

namespace glmlab::lab {

struct BenchTrainOptions {
  std::vector<std::string> methods = {"lora", "vera"};
  std::vector<std::string> qats = {"none", "int8"};
  std::vector<std::string> dtypes = {"bf16"};  // base dtypes of the QAT-"none" runs ("" = the model's default)
  int steps = 3;                               // timed steps per run
  int warmup_steps = 1;                        // run first, not counted
  TrainOptions train;                          // batch size, packing, seed, AdamW...: as glmlab train
  ProbeLevel probe = ProbeLevel::Full;         // fp32 GEMM probe (Quick: 1024³ × 3)
  bool progress = true;
  std::string device = "cpu";
  // Non-null: each run trains on a Device from this (the device-resident trainer, model/device_trainer.h);
  // the host instruction peaks then do not apply and are not probed.
  std::function<std::unique_ptr<Device>()> make_device;
  // Data parallelism: train.comm with several ranks. Each rank reports; rank 0 gets the job's figures.
};

// One combination, in run order.
struct TrainRunSpec {
  std::string method;  // lora | vera
  std::string qat;     // none | int8 | int4
  std::string dtype;   // the base as asked ("" = default); for QAT runs = qat
};

// The runs of the options, after checking them: unknown method / QAT level / dtype, steps < 1,
// warm-up < 0, batch size < 1, empty lists are errors naming the option.
std::vector<TrainRunSpec> plan_train_runs(const BenchTrainOptions& o);

struct TrainFlops {
  double forward = 0, backward = 0;
  double total() const { return forward + backward; }
};
// The formula above for one micro-batch.
TrainFlops train_step_flops(const ModelConfig& c, const Adapter& adapter, const TrainBatch& batch);
// Real tokens of each sample of a micro-batch (rows of a padded batch; segments of a packed one).
std::vector<int64_t> sample_lengths(const TrainBatch& batch);

struct TrainStepRecord {
  size_t run = 0;                 // index into BenchTrainReport::runs
  int64_t step = 0;               // 1-based among the timed steps
  int64_t batch_number = 0;       // micro-batch number (0-based, warm-up included): BenchTrainReport::batches
  double loss = 0, grad_norm = 0, lr = 0;
  int64_t samples = 0, tokens = 0, labelled = 0;
  double step_s = 0, forward_s = 0, backward_s = 0, optimizer_s = 0, other_s = 0;
  double layers_forward_s = 0, head_forward_s = 0, head_backward_s = 0, layers_backward_s = 0;
  TrainFlops flops;
  double comm_s = 0;              // exposed communication of the step (data parallelism)
  double imbalance_s = 0;         // of which waiting for a slower rank
};

struct TrainRunSummary {
  TrainRunSpec spec;
  std::string dtype;               // as loaded (e.g. "bf16", "int8")
  int rank = 0;
  float alpha = 0, dropout = 0;
  bool rslora = false;
  std::vector<std::string> targets;
  int64_t trainable = 0;           // trainable adapter parameters
  int batch = 0, steps = 0, warmup_steps = 0;
  bool pack = false;
  int64_t samples = 0, tokens = 0, labelled = 0;  // over the timed steps
  double seconds = 0;              // Σ step time of the timed steps
  double samples_per_s = 0, tokens_per_s = 0;     // totals / seconds
  Spread step_s, forward_s, backward_s, optimizer_s, other_s;  // per step
  double backward_over_forward = 0;               // Σ backward / Σ forward
  double flops_per_step = 0;                      // mean over the timed steps
  double gflops = 0, gflops_of_probe = 0;         // Σ FLOPs / Σ step time; ÷ limit_gflops
  std::string limit;                              // the peak of the unit the products run on (lab/probe.h)
  double limit_gflops = 0;
  double loss_first = 0, loss_last = 0;
  uint64_t weight_bytes = 0, peak_rss_bytes = 0;  // peak over this run's steps (model resident)
  bool peak_rss_is_phase = true;
  double load_s = 0;
  // Data parallelism (ranks > 1, `mpirun -np N bench train`): samples/s above are the whole job's.
  int ranks = 1;
  std::vector<double> rank_samples_per_s;   // each rank's own samples ÷ its step time
  Spread comm_exposed_s;                    // per step: time in communication calls the step paid
  Spread imbalance_s;                       // per step: waiting for a slower rank's compute (part of the above)
  Spread comm_only_s;                       // per step: max(0, exposed − imbalance): the communication itself
  double comm_exposed_share = 0;            // Σ exposed ÷ Σ step time
  double allreduce_s = 0;                   // one blocking all-reduce of the gradient bytes (median of 5)
  double comm_only_share = 0;               // Σ comm_only ÷ Σ step time
  double comm_hidden = 0;                   // 1 − comm_only per step ÷ allreduce_s, in [0, 1]
  size_t grad_bytes = 0, grad_buckets = 0;
  double single_rank_samples_per_s = 0;     // rank 0 alone, same per-rank batch, same steps, same run
  double scaling_efficiency = 0;            // samples/s ÷ (ranks × single_rank_samples_per_s)
};

struct BenchTrainReport {
  ModelConfig config;
  MachineInfo machine;
  bool probed = false;
  ProbeResult gemm_gflops;
  ComputeProbe compute;  // instruction peaks
  std::vector<TrainRunSummary> runs;
  std::vector<TrainStepRecord> steps;
  std::vector<TrainBatch> batches;  // micro-batch 0 .. warm-up + steps − 1 (the same for every run)
  size_t samples_available = 0;
  double wall_s = 0;                // probes and loading included
};

// Loads the base model of one dtype ("" = its default); the CLI's loader, so every model option applies.
using TrainLoader = std::function<BenchModel(const std::string& dtype)>;
// The adapter configuration of a method (the CLI's --rank/--targets/... through make_adapter_config).
using AdapterConfigFn = std::function<AdapterConfig(const std::string& method)>;

BenchTrainReport run_bench_train(const std::vector<TrainSample>& samples, const TrainLoader& load,
                                 const AdapterConfigFn& adapter_config, const BenchTrainOptions& o);

}  // namespace glmlab::lab
