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

void AdamW::step(Adapter& adapter, double lr) {
  ++t_;
  // Scalars computed in double and rounded to fp32 once, as torch passes Python floats to fp32 kernels.
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_)), bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float w1 = float(1.0 - cfg_.beta1), b2 = float(cfg_.beta2), w2 = float(1.0 - cfg_.beta2);
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2)), eps = float(cfg_.eps);
  const float decay = float(1.0 - lr * cfg_.weight_decay);
  size_t k = 0;
  for (auto& p : adapter.params()) {
    if (!p.trainable) continue;
    auto &m = m_[k], &v = v_[k];
    if (m.size() != p.value.size()) fail("AdamW: optimizer state does not match parameter {}", p.name);
    for (size_t i = 0; i < p.value.size(); ++i) {
      const float g = p.grad[i];
      p.value[i] *= decay;
      m[i] += w1 * (g - m[i]);  // torch: exp_avg.lerp_(grad, 1 − β1)
      v[i] = v[i] * b2 + w2 * g * g;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p.value[i] -= step_size * (m[i] / denom);
    }
    ++k;
  }
}

}  // namespace glmlab
