// The device-resident engine (see device_engine.h).
//
// Why a second composition of the forward pass beside Model::forward: Model::forward allocates its
// activations per call, writes the KV cache from the host, takes the cache length as a host value and
// can keep a tape for training. A step that is recorded once and replayed must instead read every
// buffer from a fixed address, take the slot from device memory and keep no tape. The op sequence is the
// same, call for call (tests/test_engine.cpp holds the two to the same logits).
#include "model/device_engine.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "util/error.h"
#include "util/units.h"

namespace glmlab {
namespace {

constexpr int kFirstBucket = 128;

int64_t step_rows(const ModelConfig& c, const EngineLimits& l) {
  return l.step_tokens > 0 ? l.step_tokens : int64_t(l.batch) * l.capacity;
}
int64_t logit_rows(const EngineLimits& l) { return std::max(l.logits_rows, l.batch); }

}  // namespace

int decode_bucket(int slot, int capacity) {
  int b = kFirstBucket;
  while (b <= slot && b < capacity) b *= 2;
  return std::min(b, capacity);
}

EnginePlan plan_engine(const ModelConfig& c, const ModelWeights& w, const EngineLimits& l) {
  EnginePlan p;
  const uint64_t C = uint64_t(c.hidden_size);
  p.weights = DeviceWeights::bytes(w);
  const uint64_t BS = uint64_t(l.batch) * uint64_t(l.capacity);
  p.kv_cache = 2 * device_aligned(uint64_t(c.num_layers) * BS * uint64_t(c.kv_dim()) * 4) + device_aligned(BS);
  const uint64_t N = uint64_t(step_rows(c, l));
  p.workspaces = 3 * device_aligned(N * C * 4) + device_aligned(N * uint64_t(c.qkv_dim()) * 4) +
                 device_aligned(N * uint64_t(c.q_dim()) * 4) + device_aligned(N * 2 * uint64_t(c.ffn_hidden_size) * 4) +
                 device_aligned(N * uint64_t(c.ffn_hidden_size) * 4) + device_aligned(uint64_t(l.batch) * C * 4) +
                 device_aligned(uint64_t(logit_rows(l)) * uint64_t(c.vocab_size) * 4) +
                 device_aligned((1 + 2 * N) * 4) + device_aligned(uint64_t(l.batch) * 4);
  return p;
}

DeviceEngine::DeviceEngine(std::unique_ptr<Device> device, const Model& model, EngineLimits limits)
    : dev_(std::move(device)), cfg_(model.config()), lim_(limits) {
  if (model.adapter())
    fail("device engine: adapters are applied unmerged on the host engine only; merge the adapter first: "
         "glmlab merge --model SPEC --adapter DIR -o OUT, then load OUT");
  if (lim_.batch < 1 || lim_.capacity < 1)
    fail("device engine: batch {} and capacity {} must be positive", lim_.batch, lim_.capacity);
  if (lim_.capacity > cfg_.seq_length)
    fail("device engine: capacity {} is beyond the model's seq_length {}", lim_.capacity, cfg_.seq_length);
  const ModelWeights& w = model.weights();
  plan_ = plan_engine(cfg_, w, lim_);
  const uint64_t free = dev_->free_bytes();
  if (plan_.total() > free)
    fail("device engine on {}: needs {:.2f} GiB of device memory (weights {:.2f} GiB, KV cache {:.2f} GiB for {} "
         "sequences × {} tokens in fp32, workspaces {:.2f} GiB for {} tokens a step) but only {:.2f} GiB are free; "
         "lower --batch or the token count, or use --dtype int8/int4",
         dev_->name(), gib(plan_.total()), gib(plan_.weights), gib(plan_.kv_cache), lim_.batch, lim_.capacity,
         gib(plan_.workspaces), step_rows(cfg_, lim_), gib(free));

  // Weights: one allocation, uploaded once.
  weights_ = DeviceWeights(*dev_, w);

  // KV cache [L][Bmax, Smax, G, D] for K and V, then key_valid [Bmax, Smax].
  const size_t BS = size_t(lim_.batch) * size_t(lim_.capacity);
  const size_t kv_one = device_aligned(size_t(cfg_.num_layers) * BS * size_t(cfg_.kv_dim()) * 4);
  kv_ = DeviceBuffer(*dev_, plan_.kv_cache, "KV cache");
  k_ = kv_.f();
  v_ = reinterpret_cast<float*>(kv_.get<uint8_t>() + kv_one);
  valid_ = kv_.get<uint8_t>() + 2 * kv_one;
  valid_host_.assign(BS, 0);

  // Workspaces for the largest step.
  const size_t N = size_t(step_rows(cfg_, lim_)), C = size_t(cfg_.hidden_size), F = size_t(cfg_.ffn_hidden_size);
  work_ = DeviceBuffer(*dev_, plan_.workspaces, "activation workspaces");
  uint8_t* wb = work_.get<uint8_t>();
  size_t wo = 0;
  auto take = [&](size_t bytes) {
    void* p = wb + wo;
    wo += device_aligned(bytes);
    return p;
  };
  x_ = static_cast<float*>(take(N * C * 4));
  xl_ = static_cast<float*>(take(N * C * 4));
  h_ = static_cast<float*>(take(N * C * 4));
  qkv_ = static_cast<float*>(take(N * size_t(cfg_.qkv_dim()) * 4));
  ctx_ = static_cast<float*>(take(N * size_t(cfg_.q_dim()) * 4));
  u_ = static_cast<float*>(take(N * 2 * F * 4));
  act_ = static_cast<float*>(take(N * F * 4));
  last_ = static_cast<float*>(take(size_t(lim_.batch) * C * 4));
  logits_ = static_cast<float*>(take(size_t(logit_rows(lim_)) * size_t(cfg_.vocab_size) * 4));
  inputs_ = static_cast<int32_t*>(take((1 + 2 * N) * 4));
  next_ = static_cast<int32_t*>(take(size_t(lim_.batch) * 4));
  if (wo != plan_.workspaces) fail("device engine: workspace plan {} bytes but {} laid out (internal error)", plan_.workspaces, wo);
}

DeviceEngine::~DeviceEngine() {
  if (dev_) dev_->drop_graphs();
}

void DeviceEngine::reset(int batch, int capacity) {
  if (batch < 1 || batch > lim_.batch)
    fail("device engine: a batch of {} sequences, but the engine was made for at most {}", batch, lim_.batch);
  if (capacity < 1 || capacity > lim_.capacity)
    fail("device engine: {} tokens per sequence, but the engine was made for at most {} (its KV cache)", capacity,
         lim_.capacity);
  B_ = batch;
  S_ = capacity;
  len_ = 0;
  std::fill(valid_host_.begin(), valid_host_.end(), 0);
  dev_->upload(valid_, valid_host_.data(), valid_host_.size());
}

void DeviceEngine::prepare(const StepInput& in) {
  const int B = in.B, T = in.T, Smax = lim_.capacity;
  const int64_t N = int64_t(B) * T, V = cfg_.vocab_size;
  if (B_ == 0) fail("device engine: step before reset");
  if (B != B_) fail("device engine: batch of {} sequences but the engine was reset for {}", B, B_);
  if (T < 1) fail("device engine: a step needs at least one token per sequence");
  if (in.ids.size() != size_t(N) || in.pos.size() != size_t(N) || in.valid.size() != size_t(N))
    fail("device engine: input arrays must hold B·T = {} entries", N);
  if (!in.segment.empty()) fail("device engine: packed segments are not supported (training runs on the host engine)");
  if (len_ + T > S_) fail("device engine: {} cached + {} new tokens exceed the capacity {} of this reset", len_, T, S_);
  if (N > step_rows(cfg_, lim_))
    fail("device engine: a step of {} tokens (B {} × T {}) is beyond the engine's workspaces ({} tokens)", N, B, T,
         step_rows(cfg_, lim_));
  for (int64_t n = 0; n < N; ++n) {
    if (in.ids[size_t(n)] < 0 || in.ids[size_t(n)] >= V)
      fail("token id {} (sequence {}, position {}) is outside the vocabulary [0, {})", in.ids[size_t(n)], n / T, n % T, V);
    if (in.pos[size_t(n)] < 0 || in.pos[size_t(n)] >= cfg_.seq_length)
      fail("position {} (sequence {}) is beyond the model's seq_length {}: the sequence is too long", in.pos[size_t(n)],
           n / T, cfg_.seq_length);
  }
  // key_valid: the new slots, then rows 0..B-1 up to the last written slot in one upload.
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) valid_host_[size_t(b) * Smax + len_ + t] = in.valid[size_t(b) * T + t];
  dev_->upload(valid_, valid_host_.data(), size_t(B - 1) * Smax + len_ + T);
  // [slot | ids N | pos N]
  staged_.resize(size_t(1 + 2 * N));
  staged_[0] = len_;
  std::copy(in.ids.begin(), in.ids.end(), staged_.begin() + 1);
  std::copy(in.pos.begin(), in.pos.end(), staged_.begin() + 1 + N);
  dev_->upload(inputs_, staged_.data(), staged_.size() * 4);
}

void DeviceEngine::issue(int B, int T, int P, Logits mode, bool greedy) {
  const ModelConfig& c = cfg_;
  Ops& ops = dev_->ops();
  const int64_t N = int64_t(B) * T, C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels, Smax = lim_.capacity;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  const int32_t* slot = inputs_;
  const int32_t* ids = inputs_ + 1;
  const int32_t* pos = inputs_ + 1 + N;
  const size_t layer_kv = size_t(lim_.batch) * size_t(Smax) * size_t(KVd);

  ops.embedding(weights_.embedding, ids, N, x_);
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayerWeights& lw = weights_.layers[size_t(l)];
    float* k = k_ + size_t(l) * layer_kv;
    float* v = v_ + size_t(l) * layer_kv;
    // Attention block: h = x + dense(attention(rope(qkv(norm(x))))).
    ops.rmsnorm(x_, lw.input_norm, N, C, c.layernorm_eps, xl_, nullptr);
    ops.matmul(xl_, N, lw.qkv, lw.qkv_bias, qkv_);
    ops.rope(qkv_, N, QKV, H + G, D, pos, c.rope_base());  // Q heads, then K heads
    ops.kv_store(qkv_, QKV, Qd, B, T, KVd, k, Smax, slot);
    ops.kv_store(qkv_, QKV, Qd + KVd, B, T, KVd, v, Smax, slot);
    ops.attention(qkv_, QKV, KVView{k, v, valid_, Smax, nullptr}, B, T, P, H, G, D, ctx_, nullptr);
    ops.matmul(ctx_, N, lw.dense, nullptr, h_);
    ops.add(h_, x_, N * C);  // = x + dense (the same sum as Model::forward, a + b == b + a in IEEE)
    // MLP block: x = h + four_h_to_h(swiglu(h_to_4h(norm(h)))).
    ops.rmsnorm(h_, lw.post_norm, N, C, c.layernorm_eps, xl_, nullptr);
    ops.matmul(xl_, N, lw.h_to_4h, nullptr, u_);
    ops.swiglu(u_, N, F, act_);
    ops.matmul(act_, N, lw.four_h_to_h, nullptr, x_);
    ops.add(x_, h_, N * C);
  }
  if (mode == Logits::None && !greedy) return;
  // Final norm and output layer on the rows asked for (T == 1: every row is a last row).
  const float* src = x_;
  int64_t rows = N;
  if (mode != Logits::All && T > 1) {
    for (int b = 0; b < B; ++b) dev_->copy(last_ + int64_t(b) * C, x_ + (int64_t(b) * T + T - 1) * C, size_t(C) * 4);
    src = last_;
    rows = B;
  }
  ops.rmsnorm(src, weights_.final_norm, rows, C, c.layernorm_eps, xl_, nullptr);
  ops.matmul(xl_, rows, weights_.output, nullptr, logits_);
  if (greedy) ops.argmax(logits_, rows, V, next_);
}

void DeviceEngine::run(const StepInput& in, Logits mode, bool greedy) {
  if (greedy) mode = Logits::Last;
  if (mode == Logits::All && in.T > 1 && int64_t(in.B) * in.T > logit_rows(lim_))
    fail("device engine: logits of all {} positions asked for, but the engine holds {} rows of logits "
         "(EngineLimits::logits_rows)", int64_t(in.B) * in.T, logit_rows(lim_));
  prepare(in);
  const int B = in.B, T = in.T;
  if (T > 1) {
    issue(B, T, len_, mode, greedy);  // prefill: eager, P = the real length
    ++eager_;
  } else {
    const int bucket = decode_bucket(len_, lim_.capacity);
    const int kind = greedy ? 2 : mode == Logits::None ? 0 : 1;  // T == 1: All and Last are the same rows
    const auto key = std::make_tuple(B, bucket, kind);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      dev_->replay(it->second);
      ++replays_;
    } else {
      issue(B, 1, bucket - 1, mode, greedy);
      ++eager_;
      if (dev_->graphs()) {
        dev_->begin_capture();
        try {
          issue(B, 1, bucket - 1, mode, greedy);
        } catch (...) {
          dev_->end_capture();
          throw;
        }
        graphs_[key] = dev_->end_capture();
      }
    }
  }
  len_ += T;
}

void DeviceEngine::step(const StepInput& in, Logits mode, std::vector<float>& logits) {
  run(in, mode, false);
  if (mode == Logits::None) return;
  const int64_t rows = mode == Logits::All ? int64_t(in.B) * in.T : in.B;
  logits.resize(size_t(rows * cfg_.vocab_size));
  dev_->download(logits.data(), logits_, logits.size() * 4);
}

void DeviceEngine::step_greedy(const StepInput& in, std::vector<int32_t>& next) {
  run(in, Logits::Last, true);
  next.resize(size_t(in.B));
  dev_->download(next.data(), next_, next.size() * 4);
}

}  // namespace glmlab
