// LoRA and VeRA adapters on the four linears of each layer, applied unmerged in the forward pass
// (Model calls forward() after each adapted matmul) and differentiated in the backward pass
// (backward() accumulates parameter gradients and the input gradient). PEFT semantics
// (../shared/docs/chatglm3.md §1.7):
//   LoRA  y = base(x) + s · B(A(dropout(x))),  A [r, in], B [out, r], s = alpha/r (rsLoRA: alpha/√r)
//   VeRA  y = base(x) + λb ⊙ (B_sl (λd ⊙ (A_sl dropout(x)))),  shared frozen vera_A [r, max_in] and
//         vera_B [max_out, r], sliced per layer: A_sl = vera_A[:, :in], B_sl = vera_B[:out, :];
//         trainable λb [out], λd [r] per adapted linear.
// Parameters carry PEFT's tensor names (adapter_model.safetensors), e.g.
//   base_model.model.transformer.encoder.layers.N.self_attention.query_key_value.lora_A.weight
//   base_model.model.transformer.encoder.layers.N.mlp.dense_h_to_4h.vera_lambda_b, base_model.vera_A
//
// Initialization (PEFT's distributions; the numbers cannot match torch's generator bit for bit, the
// oracle gets ours through the saved file): LoRA A ~ U(±1/√in) (kaiming_uniform, a = √5), B = 0;
// VeRA vera_A ~ U(±√(6/max_in)), vera_B ~ U(±√(6/r)) (kaiming_uniform, gain √2), λb = 0,
// λd = d_initial. Our RNG: std::mt19937_64 seeded with AdapterConfig::seed, drawn in parameter order
// (layer by layer, targets in the order of kTargets, A before B; VeRA: vera_A then vera_B), a uniform
// in [−b, b) from the top 53 bits of each draw. Dropout masks come from a counter-based hash of
// (dropout key, layer, target, element), so the backward recomputes the forward's mask exactly.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "ops/ops.h"

namespace glmlab {

enum class AdapterMethod { Lora, Vera };
std::string_view method_name(AdapterMethod m);  // "lora" | "vera"
AdapterMethod method_from_name(std::string_view s);  // Error otherwise

// The four linears of a layer, in PEFT's module names.
enum class Target : int { Qkv = 0, Dense = 1, HTo4H = 2, FourHToH = 3 };
constexpr int kNumTargets = 4;
constexpr Target kTargets[kNumTargets] = {Target::Qkv, Target::Dense, Target::HTo4H, Target::FourHToH};
std::string_view target_name(Target t);  // query_key_value | dense | dense_h_to_4h | dense_4h_to_h
Target target_from_name(std::string_view s);  // Error naming the expected names
// "transformer.encoder.layers.N.self_attention.query_key_value" (the module path in the checkpoint)
std::string target_path(int layer, Target t);
struct LinearDims {
  int64_t in, out;
};
LinearDims target_dims(const ModelConfig& c, Target t);

struct AdapterConfig {
  AdapterMethod method = AdapterMethod::Lora;
  int rank = 8;                    // LoRA r (PEFT default 8); VeRA r (default 256)
  float alpha = 32;                // LoRA lora_alpha
  float dropout = 0;               // LoRA lora_dropout / VeRA vera_dropout
  bool rslora = false;             // LoRA: scale alpha/√r instead of alpha/r
  std::vector<std::string> targets = {"query_key_value"};
  float d_initial = 0.1f;          // VeRA: initial λd
  int64_t projection_prng_key = 0; // VeRA: recorded in adapter_config.json (projections are always saved)
  uint64_t seed = 0;               // our initialization RNG (see the top of this file)

  static AdapterConfig lora_defaults();
  static AdapterConfig vera_defaults();  // r 256
  float scaling() const;           // LoRA s; 1 for VeRA
};

struct AdapterParam {
  std::string name;                // PEFT's tensor name
  std::vector<int64_t> shape;
  std::vector<float> value, grad;  // grad is empty for frozen parameters
  bool trainable = true;           // false for VeRA's shared vera_A / vera_B
  int layer = -1;                  // the layer it adapts (−1: shared across layers)
  int64_t numel() const;
};

class Adapter {
 public:
  // A fresh adapter with PEFT's initialization. Errors: rank ≤ 0, unknown or repeated target module,
  // dropout outside [0, 1), not enough memory; and, before anything is allocated, more values than
  // `max_values` (load_adapter: a bound from the values its file `source` holds, so that "r": 81426666
  // beside a 1 KB adapter_model.safetensors is refused instead of allocating gigabytes first).
  static Adapter create(const ModelConfig& model, const AdapterConfig& cfg, uint64_t max_values = UINT64_MAX,
                        std::string_view source = {});

  const AdapterConfig& config() const { return cfg_; }
  // Error unless the adapter was made for this model's shapes (layers and linear sizes).
  void check_fits(const ModelConfig& model) const;
  int num_layers() const { return L_; }
  LinearDims dims(Target t) const { return dims_[size_t(t)]; }  // of the model it was made for
  bool adapts(int layer, Target t) const { return slot(layer, t) >= 0; }
  // Index in params() of (layer, t)'s first parameter (LoRA: A, then B; VeRA: λb, then λd), −1 if not adapted.
  int param_index(int layer, Target t) const { return slot(layer, t); }
  int lowest_adapted_layer() const;  // num_layers() when nothing is adapted

  // y[N, out] += delta(x[N, in]) for an adapted (layer, t); nothing otherwise.
  void forward(Ops& ops, int layer, Target t, const float* x, int64_t N, float* y) const;
  // Given dy[N, out] and the same x as the forward: parameter gradients += and, when dx is not null,
  // dx[N, in] += the input gradient through the adapter.
  void backward(Ops& ops, int layer, Target t, const float* x, const float* dy, int64_t N, float* dx);

  std::vector<AdapterParam>& params() { return params_; }
  const std::vector<AdapterParam>& params() const { return params_; }
  AdapterParam* find(const std::string& name);  // nullptr when absent
  void zero_grad();
  int64_t trainable_count() const;

  // Dropout is active only while training; each micro-batch should get a new key.
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }
  void set_dropout_key(uint64_t key) { dropout_key_ = key; }
  uint64_t dropout_key() const { return dropout_key_; }
  // The key of (layer, t)'s mask under a micro-batch's dropout key: element i of that input is kept when
  // dropout_kept(dropout_stream(key, layer, t), i, p) (ops/ops.h).
  static uint64_t dropout_stream(uint64_t dropout_key, int layer, Target t);

 private:
  Adapter() = default;
  int slot(int layer, Target t) const { return slots_[size_t(layer) * kNumTargets + size_t(t)]; }
  // x with the dropout mask applied (scaled by 1/(1−p)), or x itself when dropout is off.
  const float* dropped(int layer, Target t, const float* x, int64_t N, int64_t in, std::vector<float>& buf) const;
  bool kept(int layer, Target t, int64_t i) const;  // dropout mask of element i of (layer, t)'s input

  AdapterConfig cfg_;
  int L_ = 0;
  std::vector<LinearDims> dims_;   // per target
  int64_t max_in_ = 0, max_out_ = 0;
  std::vector<AdapterParam> params_;
  std::vector<int> slots_;         // [L, 4]: index of the first parameter of (layer, target), or −1
  int vera_a_ = -1, vera_b_ = -1;  // VeRA: indices of the shared projections
  bool training_ = false;
  uint64_t dropout_key_ = 0;
};

}  // namespace glmlab
