// The CUDA back end's entry points (defined in src/kernels/cuda/*.cu, built when nvcc is found at
// /usr/local/cuda/bin/nvcc). Plain C++: no CUDA header is needed to include this.
#pragma once
#include <memory>
#include <string>

#include "ops/device.h"

namespace glmlab::cuda {

// True when a CUDA device is visible; otherwise false and *why says what CUDA reported.
bool device_available(std::string* why);

// The GPU (device 0) as a Device: its memory, one stream, CUDA graphs, and CudaOps kernels whose
// pointers are all device pointers. Errors (with CUDA's reason) when no GPU is visible.
std::unique_ptr<Device> make_device(bool bf16_activations);

}  // namespace glmlab::cuda
