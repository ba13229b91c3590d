// The device-resident trainer: fine-tuning with the model, the adapter, its gradients and AdamW's moments
// in a Device's memory (ops/device.h), the device twin of loss_and_backward + clip_grad_norm + AdamW
// (model/backward.h, model/optimizer.h). Per micro-batch only the inputs go up (ids, positions, valid
// flags, segments, targets) and one double per chunk of the loss comes down.
//
// At construction everything is planned and allocated once, after one check of the total against the
// device's free memory (an Error names weights, adapter, tape and workspaces and what is free):
//   weights     the model's, uploaded once (device_weights.h)
//   adapter     values, gradients, AdamW m and v of every trainable parameter, one flat buffer each,
//               and a snapshot of values, m and v (the last good state of a run)
//   tape        per layer from the lowest adapted one: x, qkv (post-rotary), ctx, lse, h, u, both
//               1/rms, and the layer's K and V [B, T, G, D] (the training KV cache)
//   workspaces  the forward's and backward's activations and gradients, the head's logits chunk
// for micro-batches of up to limits.rows = B·T tokens.
//
// The op sequence is loss_and_backward's, call for call: on a host Device (cpu-ref, cpu) the trainer gives
// the host trainer's loss and gradients (tests/test_device_trainer.cpp), on the CUDA device the same ops
// run as kernels. One difference by design: the head runs on chunks of consecutive rows, skipping chunks
// without a target, instead of gathering the labelled rows (rows without a target give exactly zero).
//
// LoRA and VeRA, with dropout (the host's masks: Adapter::dropout_stream and ops.h's dropout_kept).
#pragma once
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "model/backward.h"
#include "model/device_weights.h"
#include "model/optimizer.h"
#include "ops/device.h"

namespace glmlab {

struct TrainerLimits {
  int64_t rows = 0;  // most tokens (B·T) of one micro-batch
};

// Bytes the trainer allocates on the device (what the memory check uses).
struct TrainerPlan {
  uint64_t weights = 0, adapter = 0, tape = 0, workspaces = 0;
  uint64_t total() const { return weights + adapter + tape + workspaces; }
};
TrainerPlan plan_trainer(const Model& model, const Adapter& adapter, const TrainerLimits& limits);

class DeviceTrainer {
 public:
  // Uploads the model's weights and the adapter's values (gradients and moments start at zero). The
  // device is owned; `model` must outlive the trainer only for its config (the weights are copied).
  DeviceTrainer(std::unique_ptr<Device> device, const Model& model, const Adapter& adapter, TrainerLimits limits);

  // loss_and_backward on the device: the batch's loss, gradients += grad_scale · ∂loss_sum/∂θ.
  // times (optional): forward, head (loss and its backward) and backward, each ended by a device sync.
  LossResult loss_and_backward(const TrainBatch& batch, double grad_scale, StepTimes* times = nullptr);
  void zero_grad();
  // The dropout key of the next micro-batches (Adapter::set_dropout_key's, for the same masks).
  void set_dropout_key(uint64_t key) { dropout_key_ = key; }
  // Data parallelism: sums the gradients over the ranks of `comm` (after the stream's work is done). The
  // communicator must take this device's pointers: the MPI world for a host device, NCCL for a GPU.
  void all_reduce_grads(dist::Communicator& comm);
  // clip_grad_norm on the device gradients: the norm before clipping.
  double clip_grad_norm(double max_norm);
  // One AdamW step (the optimizer's step count advances) at learning rate lr.
  void adamw_step(const AdamWConfig& cfg, double lr);
  int64_t steps() const { return t_; }
  // The last good state for a run that stops on a non-finite update: snapshot() keeps values, moments and
  // the step count on the device, restore() puts them back. values_finite(): every value is finite.
  void snapshot();
  void restore();
  bool values_finite();

  // The device's values and gradients (and the moments, when given) into the adapter's host copies.
  void download(Adapter& adapter, std::vector<std::vector<float>>* m = nullptr,
                std::vector<std::vector<float>>* v = nullptr) const;
  // The adapter's host values into the device (after loading a checkpoint), moments when given.
  void upload(const Adapter& adapter, const std::vector<std::vector<float>>* m = nullptr,
              const std::vector<std::vector<float>>* v = nullptr, int64_t steps = 0);

  Device& device() { return *dev_; }
  const TrainerPlan& plan() const { return plan_; }
  int64_t trainable() const { return P_; }

 private:
  struct Tape {
    float *x, *qkv, *ctx, *lse, *h, *u, *r1, *r2, *k, *v;
  };
  // The adapter on (layer, t) where adapted (LoRA or VeRA, as Adapter::forward / backward): y += delta(x),
  // and its backward (gradients +=, dx += when not null).
  void adapter_forward(int layer, Target t, const float* x, int64_t N, float* y);
  void adapter_backward(int layer, Target t, const float* x, const float* dy, int64_t N, float* dx);
  // x [n values] with (layer, t)'s dropout mask applied (into xd_), or x itself without dropout.
  const float* dropped(int layer, Target t, const float* x, int64_t n);
  const float* vera_a(int64_t in);  // VeRA's vera_A[:, :in] as a contiguous [r, in]
  void forward(int B, int T);
  double head(int64_t N, const std::vector<int32_t>& targets, double grad_scale);

  std::unique_ptr<Device> dev_;
  ModelConfig cfg_;
  AdapterConfig acfg_;
  TrainerLimits lim_;
  TrainerPlan plan_;
  DeviceWeights weights_;
  int lowest_ = 0;
  std::vector<int> first_param_;    // [L, 4]: index of (layer, target)'s first parameter, −1 = not adapted
  std::vector<int64_t> offset_;     // per parameter of the adapter: its offset in the flat buffers (−1 frozen)
  std::vector<LinearDims> dims_;    // per target
  int64_t P_ = 0;                   // trainable values
  size_t pb_ = 0;                   // bytes of one flat buffer (P_ floats, aligned)
  int64_t t_ = 0;                   // AdamW steps taken
  DeviceBuffer adapter_buf_, tape_buf_, work_buf_;
  float *value_, *grad_, *m_, *v_, *keep_;  // keep_: values, m, v of the snapshot
  float* frozen_ = nullptr;                 // frozen parameters (VeRA's vera_A, vera_B)
  std::vector<int64_t> frozen_offset_;      // per parameter: its offset in frozen_ (−1 trainable)
  int vera_a_ = -1, vera_b_ = -1;           // indices of VeRA's shared projections
  int64_t vera_max_in_ = 0;
  uint64_t dropout_key_ = 0;
  int64_t keep_t_ = 0;
  std::vector<Tape> tape_;          // [L]; layers below lowest_ share the workspace tape
  // workspaces
  float *x_, *xl_, *tmp_, *act_, *inv_, *dx_, *dh_, *dact_, *du_, *dxl_, *dctx_, *dqkv_, *dk_, *dv_;
  float *za_, *zb_, *zc_, *wa_, *dys_;  // adapter: [N, r] ×3, [N, max out] ×2
  float *xd_, *dxd_, *asl_;             // dropout: [N, max in] ×2; VeRA's A slice [r, max in]
  float *z_, *hxl_, *hinv_, *hdxl_; // head chunk: logits [chunk, V], normed rows, 1/rms, their gradient
  int64_t chunk_ = 0;
  int32_t *ids_, *pos_, *targets_, *segment_, *zero_;
  uint8_t* valid_;
  bool segments_ = false;
};

}  // namespace glmlab
