// Reading the oracle's training goldens (tools/reference/train_golden.py: PyTorch autograd + PEFT on the
// tiny-f32 checkpoint): fp32 and int64 tensors, and a batch ("pad" or "pack") as a TrainBatch.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "model/backward.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "util/error.h"

namespace glmlab::test {

inline std::string train_golden_path(const std::string& rel) { return golden_path("train/" + rel); }

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

}  // namespace glmlab::test
