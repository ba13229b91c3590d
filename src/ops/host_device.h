// The host Device: the cpu / cpu-ref kernels on ordinary memory behind the Device interface
// (ops/device.h), so the device-resident engine (model/device_engine.h) runs and is tested on every
// machine. It can emulate graphs the way CUDA stream capture works: between begin_capture() and
// end_capture() every op, copy and fill is RECORDED (with its pointers and scalar arguments, not run);
// replay() runs the recording again, reading whatever the buffers hold then. An engine that forgot to
// upload a step's inputs before a replay, or baked a host value into a recorded step, computes wrong
// logits here exactly as it would on a GPU.
#pragma once
#include <cstddef>
#include <memory>

#include "ops/device.h"

namespace glmlab {

struct HostDeviceOptions {
  bool graphs = true;        // emulate graph capture and replay (false: graphs() is false)
  size_t memory_limit = 0;   // > 0: pretend the device has this many bytes (tests of the memory check)
  bool bf16_activations = true;
};

// b: Backend::Cpu or Backend::CpuRef (Error otherwise).
std::unique_ptr<Device> make_host_device(Backend b, const HostDeviceOptions& o = {});

}  // namespace glmlab
