// Memory and execution services of a back end, for the inference engine (model/device_engine.h) that
// keeps the whole model in the back end's own memory: weights, KV cache and every activation are
// allocated once, inputs are copied in and logits (or greedy ids) out per step, and a step of fixed
// shape can be recorded once as a graph and replayed (CUDA graphs; the Gaudi recipe of static shapes,
// bucketing and replay). All pointers handed to ops() are pointers in this memory.
//
// The host device (cpu / cpu-ref ops on ordinary memory) implements the same interface, so the
// engine's logic is tested on every machine; the CUDA device differs only in its kernels and memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ops/ops.h"

namespace glmlab {

// The buffers a device engine, trainer or weight upload carves out of one allocation start at multiples
// of this (cudaMalloc's own alignment).
constexpr uint64_t kDeviceAlign = 256;
constexpr uint64_t device_aligned(uint64_t n) { return (n + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign; }

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string_view name() const = 0;  // "cpu", "cpu-ref", or the GPU's name ("NVIDIA H200")
  virtual bool host_memory() const { return false; }  // its pointers are host pointers (the host devices)
  virtual Ops& ops() = 0;                     // the kernels; every pointer they take is in this memory

  // Zeroed memory; an Error names the bytes asked for, `what` they are for, and the bytes still free.
  virtual void* alloc(size_t bytes, std::string_view what) = 0;
  virtual void free(void* p) = 0;
  virtual size_t free_bytes() const = 0;      // memory still available (host: MemAvailable)
  virtual size_t total_bytes() const = 0;

  // Copies in stream order: upload host → device, download device → host (returns when the data is
  // on the host), copy device → device; fill sets bytes to `value`.
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(void* dst, int value, size_t bytes) = 0;
  // `rows` pieces of `width` bytes, device → device: dst + r·dpitch ← src + r·spitch (a column block of a
  // row-major matrix). Default: one copy() a row.
  virtual void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
    for (size_t r = 0; r < rows; ++r)
      copy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  }
  virtual void sync() = 0;                    // waits for all work issued so far

  // Graphs: the kernels issued between begin_capture() and end_capture() are recorded (not run);
  // replay(g) runs them again with whatever the buffers hold then. A back end without graphs
  // returns false from graphs() and the engine issues the step directly.
  virtual bool graphs() const { return false; }
  virtual void begin_capture() {}
  virtual int end_capture() { return -1; }    // a handle for replay / drop
  virtual void replay(int graph) {}
  virtual void drop_graphs() {}               // frees every recorded graph

  // Timing in stream order (seconds between two marks, after sync); host: wall clock.
  virtual double now() = 0;

  // Memory bandwidth probe of this device (GB/s, counting bytes read + written of a large copy), for
  // the benchmark's "fraction of the possible".
  virtual double bandwidth_probe_gbs() = 0;
};

// "cpu" / "cpu-ref": host memory with those ops; "cuda": the GPU back end (Error when this build has
// none — naming nvcc at /usr/local/cuda — or when no GPU is visible, with CUDA's own reason).
std::unique_ptr<Device> make_device(Backend b, bool bf16_activations = true);

// RAII buffer of a Device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device& d, size_t bytes, std::string_view what) : dev_(&d), bytes_(bytes) {
    p_ = bytes ? d.alloc(bytes, what) : nullptr;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      dev_ = o.dev_;
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (p_ && dev_) dev_->free(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  template <class T = void>
  T* get() const { return static_cast<T*>(p_); }
  float* f() const { return static_cast<float*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  Device* dev_ = nullptr;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace glmlab
