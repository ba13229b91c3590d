// The optimizer side of fine-tuning, as torch and transformers do it: AdamW (decoupled weight decay,
// bias correction; torch.optim.AdamW's single-tensor update, step for step), the linear schedule with
// warm-up (transformers' get_linear_schedule_with_warmup), and gradient clipping by the global L2 norm
// (torch.nn.utils.clip_grad_norm_). Acts on an Adapter's trainable parameters.
#pragma once
#include <cstdint>
#include <vector>

#include "model/adapters.h"
#include "ops/ops.h"

namespace glmlab {

struct AdamWConfig {  // doubles, as torch's Python-side hyper-parameters
  double lr = 5e-5;  // peak learning rate
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

// lr factor at optimizer step `step` (0-based): step/warmup during warm-up, then linear decay to 0 at
// `total`. As transformers: the first step of a warm-up runs with lr 0.
double linear_schedule(int64_t step, int64_t warmup, int64_t total);

// Global L2 norm of the trainable gradients; when it exceeds max_norm (> 0), scales them by
// max_norm / (norm + 1e-6) as torch does. Returns the norm before clipping.
double clip_grad_norm(Adapter& adapter, double max_norm);

// The fp32 scalars of AdamW step t (1-based) at learning rate lr, for adamw_update / Ops::adamw.
AdamWStep adamw_step(const AdamWConfig& cfg, int64_t t, double lr);

class AdamW {
 public:
  AdamW(const Adapter& adapter, AdamWConfig cfg);
  const AdamWConfig& config() const { return cfg_; }
  // One update of every trainable parameter with learning rate lr (the schedule already applied):
  //   p −= lr·wd·p;  m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;
  //   p −= lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps)
  void step(Adapter& adapter, double lr);
  int64_t steps() const { return t_; }

  // State for checkpoints: step count and the moments, one pair per trainable parameter (in order).
  std::vector<std::vector<float>>& m() { return m_; }
  std::vector<std::vector<float>>& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig cfg_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace glmlab
