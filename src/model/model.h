// The ChatGLM3 forward pass over the op interface: prefill and incremental decode with a KV cache,
// for a batch of left-padded sequences. It can keep every activation the backward pass needs
// (ForwardTape), so fine-tuning builds on the same code.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "ops/ops.h"

namespace glmlab {

// Post-rotary keys and values of every layer, before group expansion: [L][B, S, G, D] each, fp32 or
// bf16 (inference: half the memory, rounded to nearest even on store), plus which slots hold real
// tokens. Sequences of a batch share slot numbers (left padding).
enum class KvDtype { F32, BF16 };
KvDtype kv_dtype_from_name(std::string_view s);  // "fp32" | "bf16"; Error otherwise
const char* kv_dtype_name(KvDtype d);

class KVCache {
 public:
  KVCache(const ModelConfig& cfg, int batch, int capacity, KvDtype dtype = KvDtype::F32);
  static uint64_t bytes_needed(const ModelConfig& cfg, int batch, int capacity, KvDtype dtype = KvDtype::F32);
  int batch() const { return B_; }
  int capacity() const { return S_; }
  int length() const { return len_; }  // slots filled so far
  KvDtype dtype() const { return dtype_; }
  KVView view(int layer) const;
  // Writes one token's keys and values (G·D floats each) at (layer, b, slot), rounding for bf16.
  void store(int layer, int b, int slot, const float* k, const float* v);
  uint8_t* valid(int b) { return valid_.data() + size_t(b) * S_; }
  int32_t* segment(int b) { return segment_.data() + size_t(b) * S_; }  // packed sequences (see KVView)
  void use_segments() { segments_ = true; }
  void advance(int n) { len_ += n; }
  void reset();
  // Continuous batching (Model::forward_ragged): row b is one sequence's slot with its own length,
  // kept by the caller; clear_row empties it for the next sequence.
  void clear_row(int b);
  KVView row_view(int layer, int b) const;  // the one row b of `layer` as a cache of batch 1

 private:
  size_t offset(int layer, int b, int slot) const { return ((size_t(layer) * B_ + b) * S_ + slot) * G_ * D_; }
  int L_, B_, S_, G_, D_, len_ = 0;
  KvDtype dtype_;
  std::vector<float> k_, v_;         // fp32
  std::vector<uint16_t> k16_, v16_;  // bf16
  std::vector<uint8_t> valid_;
  std::vector<int32_t> segment_;  // [B, S], all 0 unless packed sequences were given
  bool segments_ = false;
};

// One forward call's input: T new tokens for each of B sequences (row-major [B, T]).
struct StepInput {
  int B = 0, T = 0;
  std::vector<int32_t> ids;       // [B·T]
  std::vector<int32_t> pos;       // [B·T] position ids (pads: 0)
  std::vector<uint8_t> valid;     // [B·T] 1 = real token, 0 = padding
  std::vector<int32_t> segment;   // [B·T] or empty: packed samples; attention never crosses segments
};

// Activations of one layer that the backward pass reads (all [N, ·] with N = B·T).
struct LayerTape {
  std::vector<float> x;           // [N, C] layer input (residual stream)
  std::vector<float> inv_rms1;    // [N] 1/rms of x
  std::vector<float> qkv;         // [N, Q + 2KV] after bias and rotary
  std::vector<float> ctx;         // [N, Q] attention output before dense
  std::vector<float> lse;         // [N, H] attention log-sum-exp
  std::vector<float> h;           // [N, C] after the attention residual
  std::vector<float> inv_rms2;    // [N]
  std::vector<float> u;           // [N, 2F] dense_h_to_4h output (gate, up)
};
struct ForwardTape {
  bool keep_layers = true;        // false: only final_x (a loss without a backward pass)
  std::vector<LayerTape> layers;
  std::vector<float> final_x;     // [N, C] input of the final norm
  std::vector<float> final_inv_rms;
};

enum class Logits { None, Last, All };

// One forward call of a continuous batch (serve::Scheduler): runs of new tokens, each run belonging to
// one row of the KV cache and placed after what that row holds. Run r's tokens are the next `count`
// ids of `ids` (runs in order) at cache slots cache_pos .. cache_pos + count − 1 with position ids
// cache_pos + t (no left padding). A prefill chunk is a run of many tokens, a decode a run of one.
struct RaggedRun {
  int row = 0;
  int cache_pos = 0;
  int count = 0;
  bool logits = false;  // logits of the run's last token are wanted
};
struct RaggedStep {
  std::vector<int32_t> ids;
  std::vector<RaggedRun> runs;
};

class Adapter;

class Model {
 public:
  Model(ModelConfig cfg, ModelWeights w) : cfg_(std::move(cfg)), w_(std::move(w)) {}
  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  // Repacks the matrices for `ops`'s inference kernels (glmlab::pack_weights); before an engine is made.
  int pack_weights(const Ops& ops) { return glmlab::pack_weights(w_, ops); }
  // An adapter (LoRA / VeRA, model/adapters.h) applied unmerged by forward(); not owned, nullptr = none.
  void set_adapter(const Adapter* a) { adapter_ = a; }
  const Adapter* adapter() const { return adapter_; }

  // Runs `in` after what `cache` holds, appends its keys/values, and writes logits:
  // Last -> [B, V] for each sequence's last new token; All -> [B·T, V]. Checks ids and lengths.
  // With `tape`, keeps the activations the backward pass needs.
  void forward(Ops& ops, const StepInput& in, KVCache& cache, Logits mode, std::vector<float>& logits,
               ForwardTape* tape = nullptr) const;
  // Bytes of host memory forward() allocates for B × T tokens: activations (per layer with a tape that
  // keeps them) and the logits of `mode`. forward() checks them against free memory when they are large.
  static uint64_t forward_bytes(const ModelConfig& c, int B, int T, Logits mode, bool tape_layers = false);
  // Runs `step` against `cache` (rows = sequences, lengths kept by the caller) and writes logits
  // [runs with logits, V] in run order. Checks ids, rows, slots and positions. The result of a
  // sequence does not depend on the other runs of the step, up to the matmul's summation order.
  void forward_ragged(Ops& ops, const RaggedStep& step, KVCache& cache, std::vector<float>& logits) const;

 private:
  // Every layer over x [N, C] in place. attend(l, qkv, ctx, lse) stores layer l's keys and values from
  // the rotated qkv [N, QKV] into the cache and writes the attention output ctx [N, Q] (and lse).
  using AttendFn = std::function<void(int layer, const float* qkv, float* ctx, float* lse)>;
  void run_layers(Ops& ops, const int32_t* pos, int64_t N, std::vector<float>& x, ForwardTape* tape,
                  const AttendFn& attend) const;
  // Final norm and output layer on `rows` rows of x [·, C] picked by `pick` (nullptr: the first rows).
  void output_logits(Ops& ops, const float* x, int64_t rows, const int64_t* pick, std::vector<float>& logits,
                     ForwardTape* tape) const;

  ModelConfig cfg_;
  ModelWeights w_;
  const Adapter* adapter_ = nullptr;
};

// Left-pads prompts into one StepInput (ids pad 0, position ids 0..n-1 for real tokens) as the
// ChatGLM3 tokenizer does. Errors for an empty prompt.
StepInput make_prefill(const std::vector<std::vector<int32_t>>& prompts);

}  // namespace glmlab
