// AdamW, the warm-up + linear-decay schedule and gradient clipping (see optimizer.h). The update
// follows torch.optim.AdamW's single-tensor code operation by operation in fp32, so ten steps give the
// oracle's losses.
#include "model/optimizer.h"

#include <cmath>

#include "util/error.h"

namespace glmlab {

double linear_schedule(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return double(step) / double(std::max<int64_t>(1, warmup));
  return std::max(0.0, double(total - step) / double(std::max<int64_t>(1, total - warmup)));
}

double clip_grad_norm(Adapter& adapter, double max_norm) {
  double ss = 0;
  for (auto& p : adapter.params())
    for (float g : p.grad) ss += double(g) * g;
  const double norm = std::sqrt(ss);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (auto& p : adapter.params())
        for (auto& g : p.grad) g = float(g * coef);
  }
  return norm;
}

AdamW::AdamW(const Adapter& adapter, AdamWConfig cfg) : cfg_(cfg) {
  for (auto& p : adapter.params()) {
    if (!p.trainable) continue;
    m_.emplace_back(p.value.size(), 0.0f);
    v_.emplace_back(p.value.size(), 0.0f);
  }
}

AdamWStep adamw_step(const AdamWConfig& cfg, int64_t t, double lr) {
  // Scalars computed in double and rounded to fp32 once, as torch passes Python floats to fp32 kernels.
  const double bc1 = 1.0 - std::pow(cfg.beta1, double(t)), bc2 = 1.0 - std::pow(cfg.beta2, double(t));
  AdamWStep s;
  s.decay = float(1.0 - lr * cfg.weight_decay);
  s.w1 = float(1.0 - cfg.beta1);
  s.b2 = float(cfg.beta2);
  s.w2 = float(1.0 - cfg.beta2);
  s.step_size = float(lr / bc1);
  s.bc2_sqrt = float(std::sqrt(bc2));
  s.eps = float(cfg.eps);
  return s;
}

void AdamW::step(Adapter& adapter, double lr) {
  ++t_;
  const AdamWStep s = adamw_step(cfg_, t_, lr);
  size_t k = 0;
  for (auto& p : adapter.params()) {
    if (!p.trainable) continue;
    auto &m = m_[k], &v = v_[k];
    if (m.size() != p.value.size()) fail("AdamW: optimizer state does not match parameter {}", p.name);
    adamw_update(p.value.data(), p.grad.data(), m.data(), v.data(), int64_t(p.value.size()), s);
    ++k;
  }
}

}  // namespace glmlab
