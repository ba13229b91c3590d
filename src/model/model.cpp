#include "model/model.h"

#include <algorithm>

#include "model/adapters.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {

KvDtype kv_dtype_from_name(std::string_view s) {
  if (s == "fp32" || s == "f32") return KvDtype::F32;
  if (s == "bf16") return KvDtype::BF16;
  fail("KV cache dtype \"{}\": expected fp32 or bf16", s);
}
const char* kv_dtype_name(KvDtype d) { return d == KvDtype::BF16 ? "bf16" : "fp32"; }

KVCache::KVCache(const ModelConfig& c, int batch, int capacity, KvDtype dtype)
    : L_(c.num_layers), B_(batch), S_(capacity), G_(c.num_groups), D_(c.kv_channels), dtype_(dtype) {
  if (batch <= 0 || capacity <= 0) fail("KV cache: batch {} and capacity {} must be positive", batch, capacity);
  check_memory(bytes_needed(c, batch, capacity, dtype),
               fmt::format("a KV cache of {} × {} tokens ({})", batch, capacity, kv_dtype_name(dtype)));
  size_t n = size_t(L_) * B_ * S_ * G_ * D_;
  if (dtype == KvDtype::BF16) {
    k16_.assign(n, 0);
    v16_.assign(n, 0);
  } else {
    k_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }
  valid_.assign(size_t(B_) * S_, 0);
  segment_.assign(size_t(B_) * S_, 0);
}

uint64_t KVCache::bytes_needed(const ModelConfig& c, int batch, int capacity, KvDtype dtype) {
  const uint64_t elem = dtype == KvDtype::BF16 ? 2 : 4;
  return uint64_t(c.num_layers) * 2 * uint64_t(batch) * capacity * c.num_groups * c.kv_channels * elem +
         uint64_t(batch) * capacity * 5;  // + key_valid (1 byte) and segment (4 bytes) per slot
}

KVView KVCache::view(int layer) const {
  size_t off = offset(layer, 0, 0);
  const int32_t* seg = segments_ ? segment_.data() : nullptr;
  if (dtype_ == KvDtype::BF16)
    return KVView{nullptr, nullptr, valid_.data(), S_, seg, k16_.data() + off, v16_.data() + off};
  return KVView{k_.data() + off, v_.data() + off, valid_.data(), S_, seg};
}
void KVCache::store(int layer, int b, int slot, const float* k, const float* v) {
  const size_t off = offset(layer, b, slot), n = size_t(G_) * D_;
  if (dtype_ == KvDtype::BF16) {
    for (size_t i = 0; i < n; ++i) k16_[off + i] = f32_to_bf16(k[i]), v16_[off + i] = f32_to_bf16(v[i]);
  } else {
    std::copy(k, k + n, k_.begin() + long(off));
    std::copy(v, v + n, v_.begin() + long(off));
  }
}
void KVCache::clear_row(int b) {
  std::fill(valid(b), valid(b) + S_, 0);
  std::fill(segment(b), segment(b) + S_, 0);
}
KVView KVCache::row_view(int layer, int b) const {
  const size_t off = offset(layer, b, 0);
  const uint8_t* valid = valid_.data() + size_t(b) * S_;
  const int32_t* seg = segments_ ? segment_.data() + size_t(b) * S_ : nullptr;
  if (dtype_ == KvDtype::BF16) return KVView{nullptr, nullptr, valid, S_, seg, k16_.data() + off, v16_.data() + off};
  return KVView{k_.data() + off, v_.data() + off, valid, S_, seg};
}
void KVCache::reset() {
  len_ = 0;
  std::fill(valid_.begin(), valid_.end(), 0);
  std::fill(segment_.begin(), segment_.end(), 0);
  segments_ = false;
}

StepInput make_prefill(const std::vector<std::vector<int32_t>>& prompts) {
  StepInput in;
  in.B = int(prompts.size());
  for (auto& p : prompts) in.T = std::max(in.T, int(p.size()));
  for (size_t b = 0; b < prompts.size(); ++b)
    if (prompts[b].empty()) fail("prompt {} of the batch is empty", b);
  in.ids.assign(size_t(in.B) * in.T, 0);
  in.pos.assign(in.ids.size(), 0);
  in.valid.assign(in.ids.size(), 0);
  for (int b = 0; b < in.B; ++b) {
    int n = int(prompts[size_t(b)].size()), pad = in.T - n;
    for (int i = 0; i < n; ++i) {
      size_t k = size_t(b) * in.T + pad + i;
      in.ids[k] = prompts[size_t(b)][size_t(i)];
      in.pos[k] = i;
      in.valid[k] = 1;
    }
  }
  return in;
}

uint64_t Model::forward_bytes(const ModelConfig& c, int B, int T, Logits mode, bool tape_layers) {
  const uint64_t N = uint64_t(std::max(B, 0)) * uint64_t(std::max(T, 0)), C = uint64_t(c.hidden_size),
                 F = uint64_t(c.ffn_hidden_size), H = uint64_t(c.num_heads);
  // x, xl, tmp (C each), act (F); per layer qkv, ctx, h, u (2F), lse (H), two inverse RMS.
  const uint64_t shared = N * (3 * C + F), layer = N * (uint64_t(c.qkv_dim()) + uint64_t(c.q_dim()) + C + 2 * F + H + 2);
  const uint64_t rows = mode == Logits::All ? N : mode == Logits::Last ? uint64_t(std::max(B, 0)) : 0;
  const uint64_t layers = tape_layers ? uint64_t(c.num_layers) : 1;
  return 4 * (shared + layer * layers + (tape_layers ? N * C * layers : 0) + rows * (uint64_t(c.vocab_size) + 1));
}

void Model::forward(Ops& ops, const StepInput& in, KVCache& cache, Logits mode, std::vector<float>& logits,
                    ForwardTape* tape) const {
  const ModelConfig& c = cfg_;
  const int B = in.B, T = in.T, P = cache.length();
  const int64_t N = int64_t(B) * T, C = c.hidden_size, V = c.vocab_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  if (B != cache.batch()) fail("forward: batch of {} sequences but the KV cache holds {}", B, cache.batch());
  if (in.ids.size() != size_t(N) || in.pos.size() != size_t(N) || in.valid.size() != size_t(N) ||
      (!in.segment.empty() && in.segment.size() != size_t(N)))
    fail("forward: input arrays must hold B·T = {} entries", N);
  if (P + T > cache.capacity())
    fail("forward: {} cached + {} new tokens exceed the KV cache capacity {}", P, T, cache.capacity());
  for (int64_t n = 0; n < N; ++n) {
    if (in.ids[size_t(n)] < 0 || in.ids[size_t(n)] >= V)
      fail("token id {} (sequence {}, position {}) is outside the vocabulary [0, {})", in.ids[size_t(n)], n / T,
           n % T, V);
    if (in.pos[size_t(n)] < 0 || in.pos[size_t(n)] >= c.seq_length)
      fail("position {} (sequence {}) is beyond the model's seq_length {}: the sequence is too long",
           in.pos[size_t(n)], n / T, c.seq_length);
  }

  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) cache.valid(b)[P + t] = in.valid[size_t(b) * T + t];
  if (!in.segment.empty()) {
    cache.use_segments();
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) cache.segment(b)[P + t] = in.segment[size_t(b) * T + t];
  }
  if (adapter_) adapter_->check_fits(c);
  // A large step (a huge batch, a long prompt) is checked before its buffers are allocated; small ones
  // skip the /proc read.
  if (uint64_t need = forward_bytes(c, B, T, mode, tape && tape->keep_layers); need >= (uint64_t(256) << 20))
    check_memory(need, fmt::format("the forward pass of {} × {} tokens (activations and logits)", B, T));

  auto attend = [&](int l, const float* qkv, float* ctx, float* lse) {
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        const float* row = qkv + (int64_t(b) * T + t) * QKV;
        cache.store(l, b, P + t, row + Qd, row + Qd + KVd);
      }
    ops.attention(qkv, QKV, cache.view(l), B, T, P, H, G, D, ctx, lse);
  };
  std::vector<float> x(size_t(N * C));
  ops.embedding(w_.embedding, in.ids.data(), N, x.data());
  run_layers(ops, in.pos.data(), N, x, tape, attend);
  cache.advance(T);
  if (tape) tape->final_x = x;

  if (mode == Logits::None) return;
  if (mode == Logits::All) return output_logits(ops, x.data(), N, nullptr, logits, tape);
  std::vector<int64_t> last(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) last[size_t(b)] = int64_t(b) * T + T - 1;
  output_logits(ops, x.data(), B, last.data(), logits, tape);
}

void Model::run_layers(Ops& ops, const int32_t* pos, int64_t N, std::vector<float>& x, ForwardTape* tape,
                       const AttendFn& attend) const {
  const ModelConfig& c = cfg_;
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim();
  const Adapter* ad = adapter_;
  // resize, not assign: a tape kept between calls (TrainWorkspace) reuses its layers' buffers.
  if (tape) tape->layers.resize(tape->keep_layers ? size_t(c.num_layers) : 0);
  std::vector<float> xl(size_t(N * C)), qkv_ws, ctx_ws, h_ws, u_ws, lse_ws, r1_ws, r2_ws;
  std::vector<float> tmp(size_t(N * C)), act(size_t(N * F));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w_.layers[size_t(l)];
    LayerTape* lt = tape && tape->keep_layers ? &tape->layers[size_t(l)] : nullptr;
    // With a tape every buffer is the tape's own; without, workspaces are reused across layers.
    auto& qkv = lt ? lt->qkv : qkv_ws;
    auto& ctx = lt ? lt->ctx : ctx_ws;
    auto& h = lt ? lt->h : h_ws;
    auto& u = lt ? lt->u : u_ws;
    auto& lse = lt ? lt->lse : lse_ws;
    auto& r1 = lt ? lt->inv_rms1 : r1_ws;
    auto& r2 = lt ? lt->inv_rms2 : r2_ws;
    qkv.resize(size_t(N * QKV));
    ctx.resize(size_t(N * Qd));
    h.resize(size_t(N * C));
    u.resize(size_t(N * 2 * F));
    lse.resize(size_t(N * H));
    r1.resize(size_t(N));
    r2.resize(size_t(N));
    if (lt) lt->x = x;

    // Attention block.
    ops.rmsnorm(x.data(), lw.input_norm.data(), N, C, c.layernorm_eps, xl.data(), r1.data());
    ops.matmul(xl.data(), N, lw.qkv, lw.qkv_bias.empty() ? nullptr : lw.qkv_bias.data(), qkv.data());
    if (ad) ad->forward(ops, l, Target::Qkv, xl.data(), N, qkv.data());
    ops.rope(qkv.data(), N, QKV, H + G, D, pos, c.rope_base());  // Q heads, then K heads
    attend(l, qkv.data(), ctx.data(), lse.data());
    ops.matmul(ctx.data(), N, lw.dense, nullptr, tmp.data());
    if (ad) ad->forward(ops, l, Target::Dense, ctx.data(), N, tmp.data());
    std::copy(x.begin(), x.end(), h.begin());
    ops.add(h.data(), tmp.data(), N * C);

    // MLP block.
    ops.rmsnorm(h.data(), lw.post_norm.data(), N, C, c.layernorm_eps, xl.data(), r2.data());
    ops.matmul(xl.data(), N, lw.h_to_4h, nullptr, u.data());
    if (ad) ad->forward(ops, l, Target::HTo4H, xl.data(), N, u.data());
    ops.swiglu(u.data(), N, F, act.data());
    ops.matmul(act.data(), N, lw.four_h_to_h, nullptr, tmp.data());
    if (ad) ad->forward(ops, l, Target::FourHToH, act.data(), N, tmp.data());
    std::copy(h.begin(), h.end(), x.begin());
    ops.add(x.data(), tmp.data(), N * C);
  }
}

void Model::output_logits(Ops& ops, const float* x, int64_t rows, const int64_t* pick, std::vector<float>& logits,
                          ForwardTape* tape) const {
  const int64_t C = cfg_.hidden_size, V = cfg_.vocab_size;
  std::vector<float> picked, xl(size_t(rows * C)), inv(static_cast<size_t>(rows));
  if (pick) {
    picked.resize(size_t(rows * C));
    for (int64_t r = 0; r < rows; ++r) std::copy(x + pick[r] * C, x + (pick[r] + 1) * C, picked.begin() + r * C);
    x = picked.data();
  }
  ops.rmsnorm(x, w_.final_norm.data(), rows, C, cfg_.layernorm_eps, xl.data(), inv.data());
  if (tape) tape->final_inv_rms = inv;
  logits.resize(size_t(rows * V));
  ops.matmul(xl.data(), rows, w_.output, nullptr, logits.data());
}

void Model::forward_ragged(Ops& ops, const RaggedStep& step, KVCache& cache, std::vector<float>& logits) const {
  const ModelConfig& c = cfg_;
  const int64_t N = int64_t(step.ids.size()), C = c.hidden_size, V = c.vocab_size;
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels;
  const int64_t QKV = c.qkv_dim(), Qd = c.q_dim(), KVd = c.kv_dim();
  // Checks before anything is written: runs cover the ids, fit their rows, and stay in the context.
  int64_t covered = 0, nlogits = 0;
  std::vector<int32_t> pos(static_cast<size_t>(N));
  std::vector<int64_t> pick;
  for (size_t r = 0; r < step.runs.size(); ++r) {
    const RaggedRun& u = step.runs[r];
    if (u.row < 0 || u.row >= cache.batch())
      fail("forward_ragged: run {} names cache row {} of {}", r, u.row, cache.batch());
    if (u.count <= 0 || u.cache_pos < 0 || int64_t(u.cache_pos) + u.count > cache.capacity())
      fail("forward_ragged: run {} ({} tokens at slot {}) does not fit the KV cache's {} slots", r, u.count,
           u.cache_pos, cache.capacity());
    if (int64_t(u.cache_pos) + u.count > c.seq_length)
      fail("forward_ragged: run {} reaches position {}, beyond the model's seq_length {}", r,
           int64_t(u.cache_pos) + u.count - 1, c.seq_length);
    if (covered + u.count > N) fail("forward_ragged: the runs hold more tokens than the step's {} ids", N);
    for (int t = 0; t < u.count; ++t) pos[size_t(covered + t)] = u.cache_pos + t;
    covered += u.count;
    if (u.logits) pick.push_back(covered - 1), ++nlogits;
  }
  if (covered != N) fail("forward_ragged: the runs hold {} tokens but the step has {} ids", covered, N);
  for (int64_t n = 0; n < N; ++n)
    if (step.ids[size_t(n)] < 0 || step.ids[size_t(n)] >= V)
      fail("token id {} (token {} of the step) is outside the vocabulary [0, {})", step.ids[size_t(n)], n, V);
  if (N == 0) {
    logits.clear();
    return;
  }
  if (adapter_) adapter_->check_fits(c);
  if (uint64_t need = forward_bytes(c, 1, int(N), Logits::All, false); need >= (uint64_t(256) << 20))
    check_memory(need, fmt::format("the forward pass of {} tokens (activations and logits)", N));
  for (const RaggedRun& u : step.runs)
    for (int t = 0; t < u.count; ++t) cache.valid(u.row)[u.cache_pos + t] = 1;

  // Each run attends to its own row, with its own cached length: one attention_seqs call per layer.
  std::vector<AttnSeq> seqs;
  for (int64_t n0 = 0; const RaggedRun& u : step.runs) {
    seqs.push_back(AttnSeq{u.row, u.cache_pos, u.count, n0});
    n0 += u.count;
  }
  auto attend = [&](int l, const float* qkv, float* ctx, float* lse) {
    for (const AttnSeq& sq : seqs)
      for (int t = 0; t < sq.T; ++t) {
        const float* row = qkv + (sq.first + t) * QKV;
        cache.store(l, sq.row, sq.P + t, row + Qd, row + Qd + KVd);
      }
    ops.attention_seqs(qkv, QKV, cache.view(l), seqs.data(), int(seqs.size()), H, G, D, ctx, lse);
  };
  std::vector<float> x(size_t(N * C));
  ops.embedding(w_.embedding, step.ids.data(), N, x.data());
  run_layers(ops, pos.data(), N, x, nullptr, attend);
  if (nlogits == 0) {
    logits.clear();
    return;
  }
  output_logits(ops, x.data(), nlogits, pick.data(), logits, nullptr);
}

}  // namespace glmlab
