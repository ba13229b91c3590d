// ChatGLM3 weights: views of every tensor the forward pass reads, loaded from a HuggingFace
// checkpoint (safetensors, memory-mapped: zero copy when the stored dtype is the dtype asked for)
// or made from a seed (random:PRESET). Matrices keep their storage dtype (fp32, fp16, bf16, or the
// int8/int4 quantized types for the four linears of each layer); norm weights and biases are always
// held in fp32 (they are small).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "util/dtype.h"
#include "util/matrix.h"

namespace glmlab {

class Ops;

struct LayerWeights {
  std::vector<float> input_norm;      // [C]
  Matrix qkv;                         // [Q + 2·KV, C]: Q rows, then K rows, then V rows
  std::vector<float> qkv_bias;        // [Q + 2·KV] (empty without add_qkv_bias)
  Matrix dense;                       // [C, Q]
  std::vector<float> post_norm;       // [C]
  Matrix h_to_4h;                     // [2F, C]: gate rows 0..F-1, up rows F..2F-1
  Matrix four_h_to_h;                 // [C, F]
};

struct ModelWeights {
  Matrix embedding;                   // [V, C]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;      // [C]
  Matrix output;                      // [V, C]
  DType dtype = DType::F32;           // the dtype of the layers' matrices (embedding/output: their own)
  std::shared_ptr<void> storage;      // keeps mappings / owned buffers alive

  uint64_t matrix_bytes() const;      // bytes of all matrices (what decode reads per token, + embedding)
};

// The checkpoint's name of each tensor, as in transformers' ChatGLM3.
namespace names {
std::string embedding();
std::string layer(int i, const char* suffix);  // "transformer.encoder.layers.I.<suffix>"
std::string final_norm();
std::string output();
}  // namespace names

// Default inputs per scale of Q8/Q4 matrices (0 = one group per row); see docs/QUANTIZATION.md.
constexpr int kDefaultGroupSize = 128;

// Bytes the weights of `cfg` take with matrices in `dtype` (norms/biases in fp32). For Q8/Q4 the
// four linears of each layer are quantized with `group_size` and the embedding and output stay fp16.
uint64_t weight_bytes(const ModelConfig& cfg, DType dtype, int group_size = kDefaultGroupSize);

// Seeded random weights of a sensible scale (matrices ~ U(±√3·σ) with σ = 1/√fan_in scaled for
// depth, norms ≈ 1): reproducible for the same (cfg, dtype, seed) on any thread count. Q8/Q4
// quantize the same fp32 numbers a block of rows at a time (never the whole model in 16-bit);
// embedding and output are then fp16.
ModelWeights random_weights(const ModelConfig& cfg, DType dtype, uint64_t seed, int group_size = kDefaultGroupSize);

// Loads a checkpoint folder (or one .safetensors file with the config beside it). dtype F32/F16/BF16
// converts the matrices; the stored dtype gives zero copy. Q8/Q4 quantize float linears (group_size;
// 0 = per row) or take quantized ones as stored (glmlab and THUDM layouts: zero copy; GPTQ: repacked);
// quantized linears load into float dtypes dequantized. Missing, extra or mis-shaped tensors are
// errors naming the tensor and both shapes. Checks memory before converting.
ModelWeights load_weights(const std::string& dir, const ModelConfig& cfg, DType dtype,
                          int group_size = kDefaultGroupSize);

// Repacks the layers' matrices for `ops`'s inference kernels where it has a faster layout
// (Ops::pack_weights; the fast CPU back end packs Q8/Q4 for VNNI), one matrix at a time, freeing each
// owned row-major buffer as its packed copy replaces it (a checkpoint's mapped bytes stay in the page
// cache, reclaimable). Returns the number of matrices repacked. For inference only: training, merging
// and writing checkpoints need the row-major layout.
int pack_weights(ModelWeights& w, const Ops& ops);

}  // namespace glmlab
