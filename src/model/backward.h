// The fine-tuning loss and the whole-model backward pass to the adapter's parameters: forward with a
// tape, masked cross-entropy computed over chunks of rows (the [tokens, V] logits never exist whole),
// then the layers in reverse. Base weights are frozen: only input gradients flow through them, and
// layers below the lowest adapted one are skipped.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/adapters.h"
#include "model/model.h"

namespace glmlab {

// One batch: B rows of T tokens. labels follow transformers' convention: labels[b, t] is the target for
// token t (−100 = ignored); the logits at position t are scored against labels[b, t + 1].
struct TrainBatch {
  StepInput in;                 // ids, position ids, valid (padding), segment (packed samples)
  std::vector<int32_t> labels;  // [B·T]
  int64_t label_count() const;  // labels[b, t] != −100 with t ≥ 1: the tokens the loss is taken on
};

struct LossResult {
  double loss_sum = 0;  // Σ of the token losses (natural log)
  int64_t tokens = 0;   // labelled tokens
  double mean() const { return tokens ? loss_sum / double(tokens) : 0.0; }
};

struct StepTimes {
  double forward_s = 0, head_s = 0, backward_s = 0;  // head = final norm, output layer, loss and its backward
  double head_backward_s = 0;  // the part of head_s spent in the backward of the output layer and final norm
};

// The batch's shapes, labels, token ids and positions against the model (an Error naming the first bad
// entry); both trainers call it before anything runs.
void check_batch(const ModelConfig& c, const TrainBatch& b);
// Each token's target: labels shifted left by one within a row (the last position predicts nothing, −100).
std::vector<int32_t> shifted_targets(const TrainBatch& b);

// Buffers of loss_and_backward kept between its calls (a training run owns one): the forward's tape and
// the backward's activations and gradients grow to the largest micro-batch and are reused, so a step
// neither maps fresh memory (page faults, the kernel clearing each page) nor zero-fills what it overwrites.
struct TrainWorkspace {
  ForwardTape tape;
  std::vector<float> dx, dh, xl, inv, act, dact, du, dxl, dctx, dqkv, dk, dv;
};

// Loss of the batch, and adapter gradients += grad_scale · ∂(loss_sum)/∂θ (grad_scale = 1/tokens gives
// the mean's gradient; with accumulation, 1 / the tokens of all micro-batches). model.adapter() must be
// &adapter. The adapter's training flag and dropout key are used as they are.
// layer_done(l), when given, is called as soon as the gradients of layer l's adapter parameters are
// complete (layers in reverse order, down to the lowest adapted one): data parallelism starts reducing
// them while the layers below are still computed. ws: buffers to reuse (nullptr: this call's own).
LossResult loss_and_backward(Ops& ops, const Model& model, Adapter& adapter, const TrainBatch& batch,
                             double grad_scale, StepTimes* times = nullptr,
                             const std::function<void(int layer)>& layer_done = {}, TrainWorkspace* ws = nullptr);

// The loss alone (no tape, no gradients), with whatever adapter the model has.
LossResult loss_only(Ops& ops, const Model& model, const TrainBatch& batch);

}  // namespace glmlab
