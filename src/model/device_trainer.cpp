// The device-resident trainer (see device_trainer.h). Every function mirrors its host twin in
// model/backward.cpp, model/adapters.cpp (LoRA) and model/optimizer.cpp op for op; host loops over
// elements became Ops (add, scale) or Device copies.
#include "model/device_trainer.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "util/error.h"
#include "util/units.h"

namespace glmlab {
namespace {


Matrix f32_view(const float* data, int64_t rows, int64_t cols) { return Matrix{DType::F32, rows, cols, data}; }

// The pieces of one layer's tape, in floats, for N rows.
std::vector<uint64_t> tape_floats(const ModelConfig& c, uint64_t N) {
  const uint64_t C = uint64_t(c.hidden_size), F = uint64_t(c.ffn_hidden_size);
  return {N * C,                     // x
          N * uint64_t(c.qkv_dim()), // qkv
          N * uint64_t(c.q_dim()),   // ctx
          N * uint64_t(c.num_heads), // lse
          N * C,                     // h
          N * 2 * F,                 // u
          N, N,                      // r1, r2
          N * uint64_t(c.kv_dim()),  // k
          N * uint64_t(c.kv_dim())}; // v
}

// The largest output (out = true) or input of an adapted linear.
uint64_t max_adapted(const Adapter& a, bool out) {
  uint64_t m = 0;
  for (int l = 0; l < a.num_layers(); ++l)
    for (Target t : kTargets)
      if (a.adapts(l, t)) m = std::max(m, uint64_t(out ? a.dims(t).out : a.dims(t).in));
  return m;
}

uint64_t frozen_count(const Adapter& a) {
  uint64_t n = 0;
  for (const auto& p : a.params())
    if (!p.trainable) n += uint64_t(p.numel());
  return n;
}

int64_t head_chunk(const ModelConfig& c, int64_t N) {
  return std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(8) << 20) / c.vocab_size));  // ≤ 32 MB of logits
}

// Floats (or int32/bytes, counted as 4-byte units) of every workspace, in allocation order.
std::vector<uint64_t> work_pieces(const ModelConfig& c, const Adapter& a, uint64_t N) {
  const uint64_t C = uint64_t(c.hidden_size), F = uint64_t(c.ffn_hidden_size), r = uint64_t(a.config().rank);
  const uint64_t out = max_adapted(a, true), in = max_adapted(a, false), ch = uint64_t(head_chunk(c, int64_t(N)));
  const uint64_t V = uint64_t(c.vocab_size);
  return {N * C, N * C, N * C, N * F, N,                    // x, xl, tmp, act, inv
          N * C, N * C, N * F, N * 2 * F, N * C,            // dx, dh, dact, du, dxl
          N * uint64_t(c.q_dim()), N * uint64_t(c.qkv_dim()), N * uint64_t(c.kv_dim()), N * uint64_t(c.kv_dim()),
          N * r, N * r, N * r, N * out, N * out,            // za, zb, zc, wa, dys
          N * in, N * in, r * in,                           // xd, dxd (dropout), asl (VeRA's A slice)
          ch * V, ch * C, ch, ch * C,                       // z, hxl, hinv, hdxl
          N, N, N, N, 1,                                    // ids, pos, targets, segment, zero (int32)
          (N + 3) / 4};                                     // valid (bytes)
}

uint64_t sum_aligned(const std::vector<uint64_t>& floats) {
  uint64_t b = 0;
  for (uint64_t f : floats) b += device_aligned(f * 4);
  return b;
}

}  // namespace

TrainerPlan plan_trainer(const Model& model, const Adapter& adapter, const TrainerLimits& limits) {
  const ModelConfig& c = model.config();
  const uint64_t N = uint64_t(std::max<int64_t>(limits.rows, 0));
  TrainerPlan p;
  p.weights = DeviceWeights::bytes(model.weights());
  p.adapter = 7 * device_aligned(uint64_t(adapter.trainable_count()) * 4) + device_aligned(frozen_count(adapter) * 4);
  const int lowest = adapter.lowest_adapted_layer();
  const uint64_t taped = uint64_t(c.num_layers - lowest) + (lowest > 0 ? 1 : 0);  // + one shared below
  p.tape = taped * sum_aligned(tape_floats(c, N));
  p.workspaces = sum_aligned(work_pieces(c, adapter, N));
  return p;
}

DeviceTrainer::DeviceTrainer(std::unique_ptr<Device> device, const Model& model, const Adapter& adapter,
                             TrainerLimits limits)
    : dev_(std::move(device)), cfg_(model.config()), acfg_(adapter.config()), lim_(limits) {
  adapter.check_fits(cfg_);
  if (lim_.rows < 1) fail("device trainer: a micro-batch of {} tokens (expected at least 1)", lim_.rows);
  lowest_ = adapter.lowest_adapted_layer();
  if (lowest_ >= cfg_.num_layers) fail("device trainer: the adapter adapts no layer: nothing to train");
  plan_ = plan_trainer(model, adapter, lim_);
  const uint64_t free = dev_->free_bytes();
  if (plan_.total() > free)
    fail("device trainer on {}: needs {:.2f} GiB of device memory (weights {:.2f} GiB, adapter with gradients and "
         "AdamW moments {:.2f} GiB, activation tape {:.2f} GiB and workspaces {:.2f} GiB for {} tokens a "
         "micro-batch) but only {:.2f} GiB are free; lower the micro-batch (-b or --max-length) or use --dtype "
         "int8/int4",
         dev_->name(), gib(plan_.total()), gib(plan_.weights), gib(plan_.adapter), gib(plan_.tape),
         gib(plan_.workspaces), lim_.rows, gib(free));

  weights_ = DeviceWeights(*dev_, model.weights());

  // Adapter: flat value / grad / m / v buffers over the trainable parameters, in the adapter's order.
  const auto& params = adapter.params();
  int64_t frozen = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    offset_.push_back(p.trainable ? P_ : -1);
    frozen_offset_.push_back(p.trainable ? -1 : frozen);
    if (p.trainable) P_ += p.numel();
    if (!p.trainable) frozen += p.numel();
    if (p.name == "base_model.vera_A") vera_a_ = int(i), vera_max_in_ = p.shape.at(1);
    if (p.name == "base_model.vera_B") vera_b_ = int(i);
  }
  if (acfg_.method == AdapterMethod::Vera && (vera_a_ < 0 || vera_b_ < 0))
    fail("device trainer: a VeRA adapter without its shared vera_A / vera_B");
  for (Target t : kTargets) dims_.push_back(adapter.dims(t));
  first_param_.assign(size_t(cfg_.num_layers) * kNumTargets, -1);
  for (int l = 0; l < cfg_.num_layers; ++l)
    for (Target t : kTargets) first_param_[size_t(l) * kNumTargets + size_t(t)] = adapter.param_index(l, t);
  const uint64_t pb = device_aligned(uint64_t(P_) * 4);
  adapter_buf_ = DeviceBuffer(*dev_, 7 * pb + device_aligned(uint64_t(frozen) * 4),
                              "adapter values, gradients and AdamW moments");
  value_ = adapter_buf_.f();
  grad_ = reinterpret_cast<float*>(adapter_buf_.get<uint8_t>() + pb);
  m_ = reinterpret_cast<float*>(adapter_buf_.get<uint8_t>() + 2 * pb);
  v_ = reinterpret_cast<float*>(adapter_buf_.get<uint8_t>() + 3 * pb);
  keep_ = reinterpret_cast<float*>(adapter_buf_.get<uint8_t>() + 4 * pb);
  frozen_ = reinterpret_cast<float*>(adapter_buf_.get<uint8_t>() + 7 * pb);
  pb_ = pb;
  upload(adapter);

  // Tape: one set per layer from the lowest adapted, one shared by the layers below it.
  const uint64_t N = uint64_t(lim_.rows);
  tape_buf_ = DeviceBuffer(*dev_, plan_.tape, "activation tape");
  uint8_t* tb = tape_buf_.get<uint8_t>();
  uint64_t to = 0;
  auto take_tape = [&]() {
    float* p[10] = {};
    const auto pieces = tape_floats(cfg_, N);
    for (size_t i = 0; i < 10; ++i) {
      p[i] = reinterpret_cast<float*>(tb + to);
      to += device_aligned(pieces[i] * 4);
    }
    return Tape{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]};
  };
  const Tape shared = lowest_ > 0 ? take_tape() : Tape{};
  for (int l = 0; l < cfg_.num_layers; ++l) tape_.push_back(l < lowest_ ? shared : take_tape());
  if (to != plan_.tape) fail("device trainer: tape plan {} bytes but {} laid out (internal error)", plan_.tape, to);

  // Workspaces.
  work_buf_ = DeviceBuffer(*dev_, plan_.workspaces, "training workspaces");
  uint8_t* wb = work_buf_.get<uint8_t>();
  uint64_t wo = 0;
  const auto pieces = work_pieces(cfg_, adapter, N);
  size_t k = 0;
  auto take = [&]() -> void* {
    void* p = wb + wo;
    wo += device_aligned(pieces[k++] * 4);
    return p;
  };
  x_ = static_cast<float*>(take());
  xl_ = static_cast<float*>(take());
  tmp_ = static_cast<float*>(take());
  act_ = static_cast<float*>(take());
  inv_ = static_cast<float*>(take());
  dx_ = static_cast<float*>(take());
  dh_ = static_cast<float*>(take());
  dact_ = static_cast<float*>(take());
  du_ = static_cast<float*>(take());
  dxl_ = static_cast<float*>(take());
  dctx_ = static_cast<float*>(take());
  dqkv_ = static_cast<float*>(take());
  dk_ = static_cast<float*>(take());
  dv_ = static_cast<float*>(take());
  za_ = static_cast<float*>(take());
  zb_ = static_cast<float*>(take());
  zc_ = static_cast<float*>(take());
  wa_ = static_cast<float*>(take());
  dys_ = static_cast<float*>(take());
  xd_ = static_cast<float*>(take());
  dxd_ = static_cast<float*>(take());
  asl_ = static_cast<float*>(take());
  z_ = static_cast<float*>(take());
  hxl_ = static_cast<float*>(take());
  hinv_ = static_cast<float*>(take());
  hdxl_ = static_cast<float*>(take());
  ids_ = static_cast<int32_t*>(take());
  pos_ = static_cast<int32_t*>(take());
  targets_ = static_cast<int32_t*>(take());
  segment_ = static_cast<int32_t*>(take());
  zero_ = static_cast<int32_t*>(take());
  valid_ = static_cast<uint8_t*>(take());
  if (wo != plan_.workspaces || k != pieces.size())
    fail("device trainer: workspace plan {} bytes but {} laid out (internal error)", plan_.workspaces, wo);
  chunk_ = head_chunk(cfg_, lim_.rows);
  dev_->fill(zero_, 0, 4);
}

void DeviceTrainer::upload(const Adapter& adapter, const std::vector<std::vector<float>>* m,
                           const std::vector<std::vector<float>>* v, int64_t steps) {
  const auto& params = adapter.params();
  if (params.size() != offset_.size()) fail("device trainer: the adapter has {} parameters, the trainer {}", params.size(), offset_.size());
  size_t k = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (offset_[i] < 0) {
      dev_->upload(frozen_ + frozen_offset_[i], p.value.data(), p.value.size() * 4);
      continue;
    }
    dev_->upload(value_ + offset_[i], p.value.data(), p.value.size() * 4);
    if (m && v) {
      if (k >= m->size() || k >= v->size() || (*m)[k].size() != p.value.size() || (*v)[k].size() != p.value.size())
        fail("device trainer: optimizer state does not match parameter {}", p.name);
      dev_->upload(m_ + offset_[i], (*m)[k].data(), p.value.size() * 4);
      dev_->upload(v_ + offset_[i], (*v)[k].data(), p.value.size() * 4);
    }
    ++k;
  }
  if (!(m && v)) {
    dev_->fill(m_, 0, size_t(P_) * 4);
    dev_->fill(v_, 0, size_t(P_) * 4);
  }
  dev_->fill(grad_, 0, size_t(P_) * 4);
  t_ = steps;
}

void DeviceTrainer::download(Adapter& adapter, std::vector<std::vector<float>>* m,
                             std::vector<std::vector<float>>* v) const {
  auto& params = adapter.params();
  if (params.size() != offset_.size()) fail("device trainer: the adapter has {} parameters, the trainer {}", params.size(), offset_.size());
  if (m) m->clear();
  if (v) v->clear();
  for (size_t i = 0; i < params.size(); ++i) {
    if (offset_[i] < 0) continue;
    auto& p = params[i];
    const size_t n = p.value.size();
    dev_->download(p.value.data(), value_ + offset_[i], n * 4);
    p.grad.resize(n);
    dev_->download(p.grad.data(), grad_ + offset_[i], n * 4);
    if (m) {
      m->emplace_back(n);
      dev_->download(m->back().data(), m_ + offset_[i], n * 4);
    }
    if (v) {
      v->emplace_back(n);
      dev_->download(v->back().data(), v_ + offset_[i], n * 4);
    }
  }
}

void DeviceTrainer::all_reduce_grads(dist::Communicator& comm) {
  if (comm.size() < 2) return;
  dev_->sync();
  comm.all_reduce_sum(grad_, size_t(P_));
}

void DeviceTrainer::zero_grad() { dev_->fill(grad_, 0, size_t(P_) * 4); }

double DeviceTrainer::clip_grad_norm(double max_norm) {
  const double norm = std::sqrt(dev_->ops().sum_squares(grad_, P_));
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) dev_->ops().scale(grad_, P_, coef);
  }
  return norm;
}

void DeviceTrainer::adamw_step(const AdamWConfig& cfg, double lr) {
  ++t_;
  dev_->ops().adamw(value_, grad_, m_, v_, P_, glmlab::adamw_step(cfg, t_, lr));
}

void DeviceTrainer::snapshot() {
  dev_->copy(keep_, value_, size_t(P_) * 4);
  dev_->copy(reinterpret_cast<uint8_t*>(keep_) + pb_, m_, size_t(P_) * 4);
  dev_->copy(reinterpret_cast<uint8_t*>(keep_) + 2 * pb_, v_, size_t(P_) * 4);
  keep_t_ = t_;
}

void DeviceTrainer::restore() {
  dev_->copy(value_, keep_, size_t(P_) * 4);
  dev_->copy(m_, reinterpret_cast<uint8_t*>(keep_) + pb_, size_t(P_) * 4);
  dev_->copy(v_, reinterpret_cast<uint8_t*>(keep_) + 2 * pb_, size_t(P_) * 4);
  t_ = keep_t_;
}

bool DeviceTrainer::values_finite() { return std::isfinite(dev_->ops().sum_squares(value_, P_)); }

const float* DeviceTrainer::dropped(int layer, Target t, const float* x, int64_t n) {
  if (acfg_.dropout == 0) return x;
  dev_->ops().dropout(x, n, Adapter::dropout_stream(dropout_key_, layer, t), acfg_.dropout, xd_);
  return xd_;
}

const float* DeviceTrainer::vera_a(int64_t in) {
  const float* A = frozen_ + frozen_offset_[size_t(vera_a_)];
  if (in == vera_max_in_) return A;
  dev_->copy2d(asl_, size_t(in) * 4, A, size_t(vera_max_in_) * 4, size_t(in) * 4, size_t(acfg_.rank));
  return asl_;
}

void DeviceTrainer::adapter_forward(int layer, Target t, const float* x, int64_t N, float* y) {
  const int s = first_param_[size_t(layer) * kNumTargets + size_t(t)];
  if (s < 0 || N == 0) return;
  Ops& ops = dev_->ops();
  const LinearDims d = dims_[size_t(t)];
  const int64_t r = acfg_.rank;
  const float* xd = dropped(layer, t, x, N * d.in);
  if (acfg_.method == AdapterMethod::Lora) {
    const float* A = value_ + offset_[size_t(s)];
    const float* Bm = value_ + offset_[size_t(s) + 1];
    ops.matmul(xd, N, f32_view(A, r, d.in), nullptr, za_);       // z = A·x   [N, r]
    ops.matmul(za_, N, f32_view(Bm, d.out, r), nullptr, wa_);    // w = B·z   [N, out]
    ops.scale(wa_, N * d.out, acfg_.scaling());                  // y += s·w (the host's fp32 s·w, then +)
    ops.add(y, wa_, N * d.out);
    return;
  }
  const float* lb = value_ + offset_[size_t(s)];
  const float* ld = value_ + offset_[size_t(s) + 1];
  const float* Bv = frozen_ + frozen_offset_[size_t(vera_b_)];  // vera_B[:out, :] is its first out rows
  ops.matmul(xd, N, f32_view(vera_a(d.in), r, d.in), nullptr, za_);  // z = A_sl·x
  ops.mul_cols(za_, N, r, ld);                                       // λd ⊙ z
  ops.matmul(za_, N, f32_view(Bv, d.out, r), nullptr, wa_);          // w = B_sl·(λd ⊙ z)
  ops.mul_cols(wa_, N, d.out, lb);                                   // y += λb ⊙ w
  ops.add(y, wa_, N * d.out);
}

void DeviceTrainer::adapter_backward(int layer, Target t, const float* x, const float* dy, int64_t N, float* dx) {
  const int s = first_param_[size_t(layer) * kNumTargets + size_t(t)];
  if (s < 0 || N == 0) return;
  Ops& ops = dev_->ops();
  const LinearDims d = dims_[size_t(t)];
  const int64_t r = acfg_.rank;
  const float* xd = dropped(layer, t, x, N * d.in);
  const float* A;  // [r, in]
  if (acfg_.method == AdapterMethod::Lora) {
    A = value_ + offset_[size_t(s)];
    const float* Bm = value_ + offset_[size_t(s) + 1];
    float* gA = grad_ + offset_[size_t(s)];
    float* gB = grad_ + offset_[size_t(s) + 1];
    dev_->copy(dys_, dy, size_t(N * d.out) * 4);
    ops.scale(dys_, N * d.out, acfg_.scaling());                             // s · dy
    ops.matmul(xd, N, f32_view(A, r, d.in), nullptr, za_);                   // z = A·x
    ops.matmul_backward_weight(dys_, za_, N, d.out, r, gB);                 // dB += (s·dy)ᵀ z
    dev_->fill(zb_, 0, size_t(N * r) * 4);
    ops.matmul_backward_input(dys_, N, f32_view(Bm, d.out, r), zb_);        // dz = s·dy·B
    ops.matmul_backward_weight(zb_, xd, N, r, d.in, gA);                    // dA += dzᵀ x
  } else {
    A = vera_a(d.in);
    const float* lb = value_ + offset_[size_t(s)];
    const float* ld = value_ + offset_[size_t(s) + 1];
    float* glb = grad_ + offset_[size_t(s)];
    float* gld = grad_ + offset_[size_t(s) + 1];
    const Matrix Bv = f32_view(frozen_ + frozen_offset_[size_t(vera_b_)], d.out, r);
    ops.matmul(xd, N, f32_view(A, r, d.in), nullptr, za_);                   // z = A_sl·x
    dev_->copy(zc_, za_, size_t(N * r) * 4);
    ops.mul_cols(zc_, N, r, ld);                                             // λd ⊙ z
    ops.matmul(zc_, N, Bv, nullptr, wa_);                                    // w = B_sl·(λd ⊙ z)
    ops.col_dot(dy, wa_, N, d.out, glb);                                     // dλb += Σ_n dy ⊙ w
    dev_->copy(dys_, dy, size_t(N * d.out) * 4);
    ops.mul_cols(dys_, N, d.out, lb);                                        // dw = λb ⊙ dy
    dev_->fill(zb_, 0, size_t(N * r) * 4);
    ops.matmul_backward_input(dys_, N, Bv, zb_);                             // d(λd ⊙ z) = dw·B_sl
    ops.col_dot(zb_, za_, N, r, gld);                                        // dλd += Σ_n d(λd ⊙ z) ⊙ z
    ops.mul_cols(zb_, N, r, ld);                                             // dz
  }
  if (!dx) return;
  if (xd == x) {
    ops.matmul_backward_input(zb_, N, f32_view(A, r, d.in), dx);            // dx += dz·A
    return;
  }
  dev_->fill(dxd_, 0, size_t(N * d.in) * 4);                                 // dx += dropout'(dz·A)
  ops.matmul_backward_input(zb_, N, f32_view(A, r, d.in), dxd_);
  ops.dropout(dxd_, N * d.in, Adapter::dropout_stream(dropout_key_, layer, t), acfg_.dropout, dxd_);
  ops.add(dx, dxd_, N * d.in);
}

void DeviceTrainer::forward(int B, int T) {
  Ops& ops = dev_->ops();
  const ModelConfig& c = cfg_;
  const int64_t N = int64_t(B) * T, C = c.hidden_size, F = c.ffn_hidden_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  const float eps = c.layernorm_eps;
  ops.embedding(weights_.embedding, ids_, N, x_);
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayerWeights& lw = weights_.layers[size_t(l)];
    const Tape& tp = tape_[size_t(l)];
    dev_->copy(tp.x, x_, size_t(N * C) * 4);
    // Attention block.
    ops.rmsnorm(x_, lw.input_norm, N, C, eps, xl_, tp.r1);
    ops.matmul(xl_, N, lw.qkv, lw.qkv_bias, tp.qkv);
    adapter_forward(l, Target::Qkv, xl_, N, tp.qkv);
    ops.rope(tp.qkv, N, QKV, H + G, D, pos_, c.rope_base());
    ops.kv_store(tp.qkv, QKV, Qd, B, T, KVd, tp.k, T, zero_);  // the training cache: slots 0..T−1
    ops.kv_store(tp.qkv, QKV, Qd + KVd, B, T, KVd, tp.v, T, zero_);
    const KVView kv{tp.k, tp.v, valid_, T, segments_ ? segment_ : nullptr};
    ops.attention(tp.qkv, QKV, kv, B, T, 0, H, G, D, tp.ctx, tp.lse);
    ops.matmul(tp.ctx, N, lw.dense, nullptr, tmp_);
    adapter_forward(l, Target::Dense, tp.ctx, N, tmp_);
    dev_->copy(tp.h, x_, size_t(N * C) * 4);
    ops.add(tp.h, tmp_, N * C);
    // MLP block.
    ops.rmsnorm(tp.h, lw.post_norm, N, C, eps, xl_, tp.r2);
    ops.matmul(xl_, N, lw.h_to_4h, nullptr, tp.u);
    adapter_forward(l, Target::HTo4H, xl_, N, tp.u);
    ops.swiglu(tp.u, N, F, act_);
    ops.matmul(act_, N, lw.four_h_to_h, nullptr, tmp_);
    adapter_forward(l, Target::FourHToH, act_, N, tmp_);
    dev_->copy(x_, tp.h, size_t(N * C) * 4);
    ops.add(x_, tmp_, N * C);
  }
}

double DeviceTrainer::head(int64_t N, const std::vector<int32_t>& targets, double grad_scale) {
  Ops& ops = dev_->ops();
  const int64_t C = cfg_.hidden_size, V = cfg_.vocab_size;
  double loss = 0;
  for (int64_t r0 = 0; r0 < N; r0 += chunk_) {
    const int64_t rows = std::min(chunk_, N - r0);
    if (std::all_of(targets.begin() + r0, targets.begin() + r0 + rows, [](int32_t y) { return y == -100; })) continue;
    const float* xs = x_ + r0 * C;
    ops.rmsnorm(xs, weights_.final_norm, rows, C, cfg_.layernorm_eps, hxl_, hinv_);
    ops.matmul(hxl_, rows, weights_.output, nullptr, z_);
    loss += ops.cross_entropy(z_, targets_ + r0, rows, V, float(grad_scale));
    dev_->fill(hdxl_, 0, size_t(rows * C) * 4);
    ops.matmul_backward_input(z_, rows, weights_.output, hdxl_);
    ops.rmsnorm_backward(hdxl_, xs, weights_.final_norm, hinv_, rows, C, cfg_.layernorm_eps, dx_ + r0 * C);
  }
  return loss;
}

LossResult DeviceTrainer::loss_and_backward(const TrainBatch& batch, double grad_scale, StepTimes* times) {
  const int B = batch.in.B, T = batch.in.T;
  const int64_t N = int64_t(B) * T;
  if (N > lim_.rows)
    fail("device trainer: a micro-batch of {} × {} = {} tokens, but the trainer was made for at most {}", B, T, N,
         lim_.rows);
  check_batch(cfg_, batch);
  const ModelConfig& c = cfg_;
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  const float eps = c.layernorm_eps;
  Ops& ops = dev_->ops();

  // Inputs.
  const std::vector<int32_t> targets = shifted_targets(batch);
  dev_->upload(ids_, batch.in.ids.data(), size_t(N) * 4);
  dev_->upload(pos_, batch.in.pos.data(), size_t(N) * 4);
  dev_->upload(targets_, targets.data(), size_t(N) * 4);
  dev_->upload(valid_, batch.in.valid.data(), size_t(N));
  segments_ = !batch.in.segment.empty();
  if (segments_) dev_->upload(segment_, batch.in.segment.data(), size_t(N) * 4);

  const double t0 = times ? dev_->now() : 0;
  forward(B, T);
  const double t1 = times ? dev_->now() : 0;
  LossResult res;
  res.tokens = batch.label_count();
  dev_->fill(dx_, 0, size_t(N * C) * 4);
  res.loss_sum = head(N, targets, grad_scale);
  const double t2 = times ? dev_->now() : 0;

  for (int l = c.num_layers - 1; l >= lowest_; --l) {
    const DeviceLayerWeights& lw = weights_.layers[size_t(l)];
    const Tape& tp = tape_[size_t(l)];
    // MLP block: out = h + W4·swiglu(u), u = W_h4·rmsnorm(h). dx holds ∂/∂out.
    dev_->copy(dh_, dx_, size_t(N * C) * 4);
    ops.swiglu(tp.u, N, F, act_);
    dev_->fill(dact_, 0, size_t(N * F) * 4);
    ops.matmul_backward_input(dx_, N, lw.four_h_to_h, dact_);
    adapter_backward(l, Target::FourHToH, act_, dx_, N, dact_);
    dev_->fill(du_, 0, size_t(N * 2 * F) * 4);
    ops.swiglu_backward(dact_, tp.u, N, F, du_);
    ops.rmsnorm(tp.h, lw.post_norm, N, C, eps, xl_, inv_);
    dev_->fill(dxl_, 0, size_t(N * C) * 4);
    ops.matmul_backward_input(du_, N, lw.h_to_4h, dxl_);
    adapter_backward(l, Target::HTo4H, xl_, du_, N, dxl_);
    ops.rmsnorm_backward(dxl_, tp.h, lw.post_norm, tp.r2, N, C, eps, dh_);

    // Attention block: h = x + Wd·ctx, ctx = attention(rope(q), rope(k), v).
    dev_->fill(dctx_, 0, size_t(N * Qd) * 4);
    ops.matmul_backward_input(dh_, N, lw.dense, dctx_);
    adapter_backward(l, Target::Dense, tp.ctx, dh_, N, dctx_);
    dev_->fill(dqkv_, 0, size_t(N * QKV) * 4);
    dev_->fill(dk_, 0, size_t(N * KVd) * 4);
    dev_->fill(dv_, 0, size_t(N * KVd) * 4);
    const KVView kv{tp.k, tp.v, valid_, T, segments_ ? segment_ : nullptr};
    ops.attention_backward(tp.qkv, QKV, kv, B, T, 0, H, G, D, tp.ctx, tp.lse, dctx_, dqkv_, QKV, dk_, dv_);
    // The cache holds slots 0..T−1 of each row: [B, T, G, D] = [N, KV] into dqkv's K and V columns.
    dev_->copy2d(dqkv_ + Qd, size_t(QKV) * 4, dk_, size_t(KVd) * 4, size_t(KVd) * 4, size_t(N));
    dev_->copy2d(dqkv_ + Qd + KVd, size_t(QKV) * 4, dv_, size_t(KVd) * 4, size_t(KVd) * 4, size_t(N));
    ops.rope_backward(dqkv_, N, QKV, H + G, D, pos_, c.rope_base());
    ops.rmsnorm(tp.x, lw.input_norm, N, C, eps, xl_, inv_);
    const bool need_dx = l > lowest_;  // nothing below the lowest adapted layer needs a gradient
    if (need_dx) {
      dev_->fill(dxl_, 0, size_t(N * C) * 4);
      ops.matmul_backward_input(dqkv_, N, lw.qkv, dxl_);
    }
    adapter_backward(l, Target::Qkv, xl_, dqkv_, N, need_dx ? dxl_ : nullptr);
    if (need_dx) {
      dev_->copy(dx_, dh_, size_t(N * C) * 4);
      ops.rmsnorm_backward(dxl_, tp.x, lw.input_norm, tp.r1, N, C, eps, dx_);
    }
  }
  if (times) *times = StepTimes{t1 - t0, t2 - t1, dev_->now() - t2, 0};
  return res;
}

}  // namespace glmlab
