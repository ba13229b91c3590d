#include "model/engine.h"

#include <cmath>

#include "util/error.h"

namespace glmlab {

void check_logits_finite(const float* logits, int64_t rows, int64_t V, int64_t first_row) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < V; ++i)
      if (!std::isfinite(logits[r * V + i]))
        fail("the model's logits are not finite (sequence {}, id {}: {}): its weights or adapter overflow in this "
             "dtype; refusing to generate from them (THUDM's generate would emit id 5 over and over)",
             first_row + r, i, logits[r * V + i]);
}

void HostEngine::reset(int batch, int capacity) {
  if (cache_ && cache_->batch() == batch && cache_->capacity() == capacity)
    cache_->reset();
  else {
    cache_.reset();  // free the old cache before the new one is checked against free memory
    cache_ = std::make_unique<KVCache>(model_.config(), batch, capacity);
  }
}

void HostEngine::step(const StepInput& in, Logits mode, std::vector<float>& logits) {
  if (!cache_) fail("engine: step before reset");
  model_.forward(ops_, in, *cache_, mode, logits);
}

void HostEngine::step_greedy(const StepInput& in, std::vector<int32_t>& next) {
  step(in, Logits::Last, logits_);
  const int64_t V = model_.config().vocab_size;
  next.resize(size_t(in.B));
  ops_.argmax(logits_.data(), in.B, V, next.data());
  // argmax gives 5 (0 when V ≤ 5) for a row with a NaN or Inf: only rows with that id need the scan that
  // turns it into the error (the scheduler does the same, serve/scheduler.cpp).
  const int32_t marker = V > 5 ? 5 : 0;
  for (int b = 0; b < in.B; ++b)
    if (next[size_t(b)] == marker) check_logits_finite(logits_.data() + int64_t(b) * V, 1, V, b);
}

}  // namespace glmlab
