// The ChatGLM3 forward pass over the op interface: prefill and incremental decode with a KV cache,
// for a batch of left-padded sequences. It can keep every activation the backward pass needs
// (ForwardTape), so fine-tuning builds on the same code.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "ops/ops.h"

namespace glmlab {

// Post-rotary keys and values of every layer, before group expansion: [L][B, S, G, D] each, fp32,
// plus which slots hold real tokens. Sequences of a batch share slot numbers (left padding).
class KVCache {
 public:
  KVCache(const ModelConfig& cfg, int batch, int capacity);
  static uint64_t bytes_needed(const ModelConfig& cfg, int batch, int capacity);
  int batch() const { return B_; }
  int capacity() const { return S_; }
  int length() const { return len_; }  // slots filled so far
  KVView view(int layer) const;
  float* k(int layer, int b, int slot);
  float* v(int layer, int b, int slot);
  uint8_t* valid(int b) { return valid_.data() + size_t(b) * S_; }
  int32_t* segment(int b) { return segment_.data() + size_t(b) * S_; }  // packed sequences (see KVView)
  void use_segments() { segments_ = true; }
  void advance(int n) { len_ += n; }
  void reset();

 private:
  int L_, B_, S_, G_, D_, len_ = 0;
  std::vector<float> k_, v_;
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

class Adapter;

class Model {
 public:
  Model(ModelConfig cfg, ModelWeights w) : cfg_(std::move(cfg)), w_(std::move(w)) {}
  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
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

 private:
  ModelConfig cfg_;
  ModelWeights w_;
  const Adapter* adapter_ = nullptr;
};

// Left-pads prompts into one StepInput (ids pad 0, position ids 0..n-1 for real tokens) as the
// ChatGLM3 tokenizer does. Errors for an empty prompt.
StepInput make_prefill(const std::vector<std::vector<int32_t>>& prompts);

}  // namespace glmlab
