// Data for the training tests: the oracle's goldens (tools/reference/train_golden.py: PyTorch autograd +
// PEFT on the tiny-f32 checkpoint) as fp32 and int64 tensors and a batch ("pad" or "pack") as a
// TrainBatch, and synthetic samples for the training loop.
#pragma once
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "lab/train/train_data.h"
#include "lab/train/train_loop.h"
#include "model/backward.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "util/error.h"

namespace glmlab::test {

inline std::string train_golden_path(const std::string& rel) { return golden_path("train/" + rel); }

// The oracle's adapter of `method` ("lora", "vera") copied into a fresh folder `name`, to be edited.
inline std::filesystem::path copy_adapter(const char* method, const std::string& name) {
  auto dir = temp_dir(name);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    std::filesystem::copy_file(train_golden_path(std::string(method) + "/" + f), dir / f);
  return dir;
}

inline std::vector<float> golden_floats(const SafetensorsFile& f, const std::string& name) {
  auto it = f.tensors().find(name);
  if (it == f.tensors().end() || it->second.dtype != DType::F32) throw Error("golden fp32 tensor missing: " + name);
  std::vector<float> v(size_t(it->second.numel()));
  std::memcpy(v.data(), it->second.data, v.size() * 4);
  return v;
}

inline std::vector<int64_t> golden_ints(const SafetensorsFile& f, const std::string& name,
                                        std::vector<int64_t>* shape = nullptr) {
  auto it = f.tensors().find(name);
  if (it == f.tensors().end() || it->second.dtype != DType::I64) throw Error("golden int64 tensor missing: " + name);
  if (shape) *shape = it->second.shape;
  std::vector<int64_t> v(size_t(it->second.numel()));
  std::memcpy(v.data(), it->second.data, v.size() * 8);
  return v;
}

// kind "pad": padded rows, one sequence each; "pack": packed rows with segment ids.
inline TrainBatch golden_train_batch(const SafetensorsFile& g, const std::string& kind) {
  std::vector<int64_t> shape;
  auto ids = golden_ints(g, kind + ".input_ids", &shape);
  auto pos = golden_ints(g, kind + ".position_ids"), mask = golden_ints(g, kind + ".attention_mask");
  auto labels = golden_ints(g, kind + ".labels");
  std::vector<int64_t> seg;
  if (kind == "pack") seg = golden_ints(g, kind + ".segment_ids");
  TrainBatch b;
  b.in.B = int(shape[0]);
  b.in.T = int(shape[1]);
  for (size_t i = 0; i < ids.size(); ++i) {
    b.in.ids.push_back(int32_t(ids[i]));
    b.in.pos.push_back(int32_t(pos[i]));
    b.in.valid.push_back(uint8_t(mask[i]));
    if (!seg.empty()) b.in.segment.push_back(int32_t(seg[i]));
    b.labels.push_back(int32_t(labels[i]));
  }
  return b;
}

// n samples of random ids below the tiny model's vocabulary of 512, of mixed lengths (6–19); the first
// third of each is input (label −100).
inline std::vector<lab::TrainSample> synthetic_samples(int n, uint32_t seed) {
  std::vector<lab::TrainSample> out;
  uint64_t x = seed;
  auto next = [&] { return (x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  for (int i = 0; i < n; ++i) {
    lab::TrainSample s;
    const int len = 6 + int(next() % 14);
    for (int t = 0; t < len; ++t) {
      s.ids.push_back(1 + int32_t(next() % 511));
      s.labels.push_back(t < len / 3 ? -100 : s.ids.back());
    }
    s.where = "synthetic:" + std::to_string(i);
    out.push_back(std::move(s));
  }
  return out;
}

// The training-loop tests' options: rank 4 LoRA (16 VeRA) on query_key_value and dense_4h_to_h, dropout
// 0.1, 6 steps of 2 × 3 samples with 2 warm-up steps, AdamW with weight decay.
inline lab::TrainOptions train_options(AdapterMethod m) {
  lab::TrainOptions o;
  o.adapter = m == AdapterMethod::Lora ? AdapterConfig::lora_defaults() : AdapterConfig::vera_defaults();
  o.adapter.rank = m == AdapterMethod::Lora ? 4 : 16;
  o.adapter.targets = {"query_key_value", "dense_4h_to_h"};
  o.adapter.dropout = 0.1f;
  o.adam.lr = 5e-3;
  o.adam.weight_decay = 0.01;
  o.steps = 6;
  o.warmup = 2;
  o.batch_size = 3;
  o.grad_accum = 2;
  o.seed = 5;
  return o;
}

}  // namespace glmlab::test
