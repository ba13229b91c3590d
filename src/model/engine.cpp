#include "model/engine.h"

#include "util/error.h"

namespace glmlab {

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
  next.resize(size_t(in.B));
  ops_.argmax(logits_.data(), in.B, model_.config().vocab_size, next.data());
}

}  // namespace glmlab
