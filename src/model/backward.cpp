// Loss and backward pass of the whole model to the adapter parameters (see backward.h). Per layer, in
// reverse (shapes: N = B·T rows, C hidden, F ffn, Q = H·D, KV = G·D):
//   out = h + W4·swiglu(W_h4·rmsnorm2(h))     (+ adapters on W_h4 [2F, C], W4 [C, F])
//   h   = x + Wd·attention(rope(Wqkv·rmsnorm1(x) + b))   (+ adapters on Wqkv [Q+2KV, C], Wd [C, Q])
// The tape holds x, qkv (post-rotary), ctx, lse, h, u and the 1/rms values; the normed inputs and
// swiglu's output are recomputed; keys and values are read from the training KV cache.
#include "model/backward.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace glmlab {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Final norm, output layer and loss over the rows of x [N, C] that have a target, gathered in chunks
// (rows without one contribute neither loss nor gradient). With dx, also the gradient:
// dx[N, C] += grad_scale · ∂loss_sum/∂x.
double head(Ops& ops, const Model& model, const float* x, int64_t N, const std::vector<int32_t>& targets,
            double grad_scale, float* dx, double* backward_s = nullptr) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int64_t C = c.hidden_size, V = c.vocab_size;
  std::vector<int64_t> rows_with_target;
  for (int64_t r = 0; r < N; ++r)
    if (targets[size_t(r)] != -100) rows_with_target.push_back(r);
  const int64_t M = int64_t(rows_with_target.size());
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(M, (int64_t(8) << 20) / V));  // ≤ 32 MB of logits
  std::vector<float> xs(size_t(chunk * C)), xl(size_t(chunk * C)), inv(static_cast<size_t>(chunk)),
      dxl(size_t(chunk * C)), dxs(size_t(chunk * C));
  // The logits (up to 32 MB) in a buffer this thread keeps between steps: allocated and zeroed per call
  // they cost a fresh mapping's page faults and a memset every micro-batch (~9% of a random:small LoRA
  // step on an AMX Xeon). Every element used is written by the matmul before it is read.
  thread_local std::vector<float> z;
  if (z.size() < size_t(chunk * V)) z.resize(size_t(chunk * V));
  std::vector<int32_t> y(static_cast<size_t>(chunk));
  double loss = 0;
  for (int64_t r0 = 0; r0 < M; r0 += chunk) {
    const int64_t rows = std::min(chunk, M - r0);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = rows_with_target[size_t(r0 + i)];
      std::copy(x + r * C, x + (r + 1) * C, xs.begin() + i * C);
      y[size_t(i)] = targets[size_t(r)];
    }
    ops.rmsnorm(xs.data(), w.final_norm.data(), rows, C, c.layernorm_eps, xl.data(), inv.data());
    ops.matmul(xl.data(), rows, w.output, nullptr, z.data());
    loss += ops.cross_entropy(z.data(), y.data(), rows, V, float(grad_scale));
    if (!dx) continue;
    const double tb = now_s();  // the fused cross-entropy's gradient counts as forward (it comes with the loss)
    std::fill(dxl.begin(), dxl.begin() + rows * C, 0.0f);
    ops.matmul_backward_input(z.data(), rows, w.output, dxl.data());
    std::fill(dxs.begin(), dxs.begin() + rows * C, 0.0f);
    ops.rmsnorm_backward(dxl.data(), xs.data(), w.final_norm.data(), inv.data(), rows, C, c.layernorm_eps, dxs.data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = rows_with_target[size_t(r0 + i)];
      for (int64_t k = 0; k < C; ++k) dx[r * C + k] += dxs[size_t(i * C + k)];
    }
    if (backward_s) *backward_s += now_s() - tb;
  }
  return loss;
}

}  // namespace

std::vector<int32_t> shifted_targets(const TrainBatch& b) {
  const int B = b.in.B, T = b.in.T;
  std::vector<int32_t> y(size_t(B) * T, -100);
  for (int r = 0; r < B; ++r)
    for (int t = 0; t + 1 < T; ++t) y[size_t(r) * T + t] = b.labels[size_t(r) * T + t + 1];
  return y;
}

void check_batch(const ModelConfig& c, const TrainBatch& b) {
  const size_t N = size_t(std::max(b.in.B, 0)) * size_t(std::max(b.in.T, 0));
  if (b.labels.size() != N) fail("training batch: {} labels for {} tokens", b.labels.size(), N);
  if (b.in.ids.size() != N || b.in.pos.size() != N || b.in.valid.size() != N ||
      (!b.in.segment.empty() && b.in.segment.size() != N))
    fail("training batch: ids, positions, valid flags and segments must hold B·T = {} entries each", N);
  for (size_t i = 0; i < N; ++i) {
    if (b.labels[i] != -100 && (b.labels[i] < 0 || b.labels[i] >= c.vocab_size))
      fail("training batch: label {} (row {}, position {}) is outside the vocabulary [0, {})", b.labels[i],
           i / size_t(b.in.T), i % size_t(b.in.T), c.vocab_size);
    if (b.in.ids[i] < 0 || b.in.ids[i] >= c.vocab_size)
      fail("token id {} (sequence {}, position {}) is outside the vocabulary [0, {})", b.in.ids[i], i / size_t(b.in.T),
           i % size_t(b.in.T), c.vocab_size);
    if (b.in.pos[i] < 0 || b.in.pos[i] >= c.seq_length)
      fail("position {} (sequence {}) is beyond the model's seq_length {}: the sequence is too long", b.in.pos[i],
           i / size_t(b.in.T), c.seq_length);
  }
}

int64_t TrainBatch::label_count() const {
  int64_t n = 0;
  for (int r = 0; r < in.B; ++r)
    for (int t = 1; t < in.T; ++t) n += labels[size_t(r) * in.T + t] != -100;
  return n;
}

LossResult loss_only(Ops& ops, const Model& model, const TrainBatch& batch) {
  check_batch(model.config(), batch);
  const ModelConfig& c = model.config();
  KVCache cache(c, batch.in.B, batch.in.T);
  ForwardTape tape;
  tape.keep_layers = false;  // only final_x
  std::vector<float> none;
  model.forward(ops, batch.in, cache, Logits::None, none, &tape);
  const auto targets = shifted_targets(batch);
  LossResult r;
  r.tokens = batch.label_count();
  r.loss_sum = head(ops, model, tape.final_x.data(), int64_t(batch.in.B) * batch.in.T, targets, 1.0, nullptr);
  return r;
}

LossResult loss_and_backward(Ops& ops, const Model& model, Adapter& adapter, const TrainBatch& batch,
                             double grad_scale, StepTimes* times,
                             const std::function<void(int layer)>& layer_done, TrainWorkspace* ws) {
  if (model.adapter() != &adapter) fail("loss_and_backward: the model must have this adapter set");
  check_batch(model.config(), batch);
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int B = batch.in.B, T = batch.in.T, H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t N = int64_t(B) * T, C = c.hidden_size, F = c.ffn_hidden_size;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  const float eps = c.layernorm_eps;

  TrainWorkspace own;
  TrainWorkspace& W = ws ? *ws : own;
  // Every buffer sized for this batch; their contents are written (or zeroed below) before they are read.
  auto sized = [](std::vector<float>& v, int64_t n) -> std::vector<float>& {
    v.resize(size_t(n));
    return v;
  };
  double t0 = now_s();
  KVCache cache(c, B, T);
  ForwardTape& tape = W.tape;
  tape.keep_layers = true;
  std::vector<float> none;
  model.forward(ops, batch.in, cache, Logits::None, none, &tape);
  double t1 = now_s();

  LossResult res;
  res.tokens = batch.label_count();
  std::vector<float>& dx = sized(W.dx, N * C);
  std::fill(dx.begin(), dx.end(), 0.0f);
  double head_backward_s = 0;
  res.loss_sum = head(ops, model, tape.final_x.data(), N, shifted_targets(batch), grad_scale, dx.data(), &head_backward_s);
  double t2 = now_s();

  std::vector<float> &dh = sized(W.dh, N * C), &xl = sized(W.xl, N * C), &inv = sized(W.inv, N),
                     &act = sized(W.act, N * F), &dact = sized(W.dact, N * F), &du = sized(W.du, N * 2 * F),
                     &dxl = sized(W.dxl, N * C), &dctx = sized(W.dctx, N * Qd), &dqkv = sized(W.dqkv, N * QKV),
                     &dk = sized(W.dk, N * KVd), &dv = sized(W.dv, N * KVd);
  auto zero = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); };
  const int lowest = adapter.lowest_adapted_layer();
  for (int l = c.num_layers - 1; l >= lowest; --l) {
    const LayerWeights& lw = w.layers[size_t(l)];
    const LayerTape& lt = tape.layers[size_t(l)];
    // MLP block: out = h + W4·swiglu(u), u = W_h4·rmsnorm(h). dx holds ∂/∂out.
    dh = dx;
    ops.swiglu(lt.u.data(), N, F, act.data());
    zero(dact);
    ops.matmul_backward_input(dx.data(), N, lw.four_h_to_h, dact.data());
    adapter.backward(ops, l, Target::FourHToH, act.data(), dx.data(), N, dact.data());
    zero(du);
    ops.swiglu_backward(dact.data(), lt.u.data(), N, F, du.data());
    ops.rmsnorm(lt.h.data(), lw.post_norm.data(), N, C, eps, xl.data(), inv.data());
    zero(dxl);
    ops.matmul_backward_input(du.data(), N, lw.h_to_4h, dxl.data());
    adapter.backward(ops, l, Target::HTo4H, xl.data(), du.data(), N, dxl.data());
    ops.rmsnorm_backward(dxl.data(), lt.h.data(), lw.post_norm.data(), lt.inv_rms2.data(), N, C, eps, dh.data());

    // Attention block: h = x + Wd·ctx, ctx = attention(rope(q), rope(k), v).
    zero(dctx);
    ops.matmul_backward_input(dh.data(), N, lw.dense, dctx.data());
    adapter.backward(ops, l, Target::Dense, lt.ctx.data(), dh.data(), N, dctx.data());
    zero(dqkv);
    zero(dk);
    zero(dv);
    ops.attention_backward(lt.qkv.data(), QKV, cache.view(l), B, T, 0, H, G, D, lt.ctx.data(), lt.lse.data(),
                           dctx.data(), dqkv.data(), QKV, dk.data(), dv.data());
    for (int64_t n = 0; n < N; ++n) {  // the cache holds slots 0..T−1 of each row: [B, T, G, D] = [N, KV]
      std::copy(dk.begin() + n * KVd, dk.begin() + (n + 1) * KVd, dqkv.begin() + n * QKV + Qd);
      std::copy(dv.begin() + n * KVd, dv.begin() + (n + 1) * KVd, dqkv.begin() + n * QKV + Qd + KVd);
    }
    ops.rope_backward(dqkv.data(), N, QKV, H + G, D, batch.in.pos.data(), c.rope_base());
    ops.rmsnorm(lt.x.data(), lw.input_norm.data(), N, C, eps, xl.data(), inv.data());
    const bool need_dx = l > lowest;  // nothing below the lowest adapted layer needs a gradient
    if (need_dx) {
      zero(dxl);
      ops.matmul_backward_input(dqkv.data(), N, lw.qkv, dxl.data());
    }
    adapter.backward(ops, l, Target::Qkv, xl.data(), dqkv.data(), N, need_dx ? dxl.data() : nullptr);
    if (need_dx) {
      dx = dh;
      ops.rmsnorm_backward(dxl.data(), lt.x.data(), lw.input_norm.data(), lt.inv_rms1.data(), N, C, eps, dx.data());
    }
    if (layer_done) layer_done(l);
  }
  double t3 = now_s();
  if (times) *times = StepTimes{t1 - t0, t2 - t1, t3 - t2, head_backward_s};
  return res;
}

}  // namespace glmlab
