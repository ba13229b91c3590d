// The model's weights in a Device's memory (ops/device.h): every matrix (data + scales), norm and bias
// uploaded once into one allocation, as Matrix views whose pointers are device pointers. Shared by the
// device-resident inference engine (device_engine.h) and trainer (device_trainer.h).
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"
#include "ops/device.h"

namespace glmlab {

struct DeviceLayerWeights {
  const float* input_norm = nullptr;
  const float* qkv_bias = nullptr;  // nullptr when the model has none
  const float* post_norm = nullptr;
  Matrix qkv, dense, h_to_4h, four_h_to_h;
};

class DeviceWeights {
 public:
  // Bytes the upload takes (each piece 256-byte aligned), for a memory plan made before allocating.
  static uint64_t bytes(const ModelWeights& w);
  DeviceWeights() = default;
  DeviceWeights(Device& dev, const ModelWeights& w);  // allocates bytes(w) and uploads

  Matrix embedding, output;
  const float* final_norm = nullptr;
  std::vector<DeviceLayerWeights> layers;

 private:
  DeviceBuffer buf_;
};

}  // namespace glmlab
