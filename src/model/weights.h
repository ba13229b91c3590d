// ChatGLM3 weights: views of every tensor the forward pass reads, loaded from a HuggingFace
// checkpoint (safetensors, memory-mapped: zero copy when the stored dtype is the dtype asked for)
// or made from a seed (random:PRESET). Matrices keep their storage dtype (fp32, fp16 or bf16);
// norm weights and biases are always held in fp32 (they are small).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "util/dtype.h"

namespace glmlab {

// A row-major [rows, cols] matrix; as in nn.Linear, rows are outputs and cols are inputs (y = x·Wᵀ).
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  size_t nbytes() const { return size_t(rows * cols) * dtype_size(dtype); }
  float at(int64_t r, int64_t c) const;  // scalar read, for references and tests
};

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
  DType dtype = DType::F32;           // the dtype of the matrices
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

// Bytes the weights of `cfg` take with matrices in `dtype` (norms/biases in fp32).
uint64_t weight_bytes(const ModelConfig& cfg, DType dtype);

// Seeded random weights of a sensible scale (matrices ~ U(±√3·σ) with σ = 1/√fan_in scaled for
// depth, norms ≈ 1): reproducible for the same (cfg, dtype, seed) on any thread count.
ModelWeights random_weights(const ModelConfig& cfg, DType dtype, uint64_t seed);

// Loads a checkpoint folder (or one .safetensors file with the config beside it). dtype F32/F16/BF16
// converts the matrices; the stored dtype gives zero copy. Missing, extra or mis-shaped tensors are
// errors naming the tensor and both shapes. Checks memory before converting.
ModelWeights load_weights(const std::string& dir, const ModelConfig& cfg, DType dtype);

}  // namespace glmlab
