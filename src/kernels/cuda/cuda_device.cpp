// CudaDevice: the GPU behind ops/device.h (device 0; under mpirun, the rank's index on its machine modulo
// the GPUs it sees). Memory is cudaMalloc'ed and zeroed; all work goes
// on one non-blocking stream, in order; uploads and downloads return when the copy is done (the host
// buffer may be reused at once); graphs are CUDA graphs recorded by stream capture (thread-local mode,
// so another thread's CUDA calls cannot invalidate a capture). Plain C++ over the CUDA runtime API.
#include "kernels/cuda/cuda_device.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include <cuda_runtime_api.h>

#include "dist/comm.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "util/error.h"
#include "util/units.h"

namespace glmlab::cuda {

[[noreturn]] void cuda_fail(cudaError_t e, const char* expr, const char* file, int line) {
  fail("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(e), cudaGetErrorString(e), expr, file, line);
}

[[noreturn]] void kernel_fail(const std::string& msg) { throw Error(msg); }

namespace {


class CudaDevice final : public Device {
 public:
  explicit CudaDevice(bool bf16_activations) {
    // One GPU per rank under a launcher (docs/DISTRIBUTED.md): the rank's index on its machine picks it.
    int count = 1, dev = 0;
    GLMLAB_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (dist::is_distributed() && count > 0) dev = dist::world().local_rank() % count;
    GLMLAB_CUDA_CHECK(cudaSetDevice(dev));
    cudaDeviceProp prop{};
    GLMLAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    name_ = prop.name;
    GLMLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ops_ = std::make_unique<CudaOps>(stream_, bf16_activations);
  }
  ~CudaDevice() override {
    if (capturing_) abort_capture(stream_);
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    ops_.reset();
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  std::string_view name() const override { return name_; }
  Ops& ops() override { return *ops_; }

  void* alloc(size_t bytes, std::string_view what) override {
    if (capturing_) fail("{}: allocating {} inside a graph capture", name_, what);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail("{}: {} needs {:.3f} MiB but cudaMalloc failed ({}); the device has {:.3f} MiB free", name_, what,
           mib(bytes), cudaGetErrorString(e), mib(free_bytes()));
    }
    GLMLAB_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
    GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return p;
  }
  void free(void* p) override {
    if (p) cudaFree(p);  // no throw: called from destructors
  }
  size_t free_bytes() const override {
    size_t free = 0, total = 0;
    GLMLAB_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return free;
  }
  size_t total_bytes() const override {
    size_t free = 0, total = 0;
    GLMLAB_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return total;
  }

  void upload(void* dst, const void* src, size_t bytes) override {
    outside_capture("upload");
    if (!bytes) return;
    GLMLAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    outside_capture("download");
    if (!bytes) return;
    GLMLAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) GLMLAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) override {
    if (width && rows)
      GLMLAB_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill(void* dst, int value, size_t bytes) override {
    if (bytes) GLMLAB_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, stream_));
  }
  void sync() override { GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  bool graphs() const override { return true; }
  void begin_capture() override {
    if (capturing_) fail("{}: begin_capture while a capture is open", name_);
    GLMLAB_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
  }
  int end_capture() override {
    if (!capturing_) fail("{}: end_capture without begin_capture", name_);
    capturing_ = false;
    // The ops ended (and discarded) the capture, e.g. scratch growth during capture: they threw an Error
    // saying why, which the caller is handling now; no graph (replay(-1) is an Error).
    if (!is_capturing(stream_)) return -1;
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (e != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      fail("{}: graph capture failed: {} ({}); an op issued something that cannot be recorded", name_,
           cudaGetErrorName(e), cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (ie != cudaSuccess) cuda_fail(ie, "cudaGraphInstantiate", __FILE__, __LINE__);
    graphs_.push_back(exec);
    return int(graphs_.size()) - 1;
  }
  void replay(int g) override {
    if (capturing_) fail("{}: replay while a capture is open", name_);
    if (g < 0 || size_t(g) >= graphs_.size() || !graphs_[size_t(g)]) fail("{}: no graph {}", name_, g);
    GLMLAB_CUDA_CHECK(cudaGraphLaunch(graphs_[size_t(g)], stream_));
  }
  void drop_graphs() override {
    if (capturing_) fail("{}: drop_graphs while a capture is open", name_);
    cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
  }

  // Stream order: waits for the work issued so far, then reads the host clock.
  double now() override {
    outside_capture("now");
    GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // A device-to-device copy of 1 GiB (less when memory is short), timed with events: (read + written
  // bytes) / time, median of 5 after a warm-up.
  double bandwidth_probe_gbs() override {
    outside_capture("bandwidth_probe_gbs");
    size_t n = 1ull << 30;
    while (n > (16ull << 20) && 2 * n + (256ull << 20) > free_bytes()) n /= 2;
    void *a = nullptr, *b = nullptr;
    GLMLAB_CUDA_CHECK(cudaMalloc(&a, n));
    const cudaError_t eb = cudaMalloc(&b, n);
    if (eb != cudaSuccess) {
      cudaFree(a);
      cuda_fail(eb, "cudaMalloc (bandwidth probe)", __FILE__, __LINE__);
    }
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    std::vector<double> gbs;
    cudaError_t err = cudaMemsetAsync(a, 1, n, stream_);
    if (err == cudaSuccess) err = cudaEventCreate(&e0);
    if (err == cudaSuccess) err = cudaEventCreate(&e1);
    for (int r = 0; r <= 5 && err == cudaSuccess; ++r) {
      err = cudaEventRecord(e0, stream_);
      if (err == cudaSuccess) err = cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream_);
      if (err == cudaSuccess) err = cudaEventRecord(e1, stream_);
      if (err == cudaSuccess) err = cudaEventSynchronize(e1);
      float ms = 0;
      if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, e0, e1);
      if (err == cudaSuccess && r > 0) gbs.push_back(2.0 * double(n) / (double(ms) * 1e-3) / 1e9);
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    if (err != cudaSuccess) cuda_fail(err, "bandwidth probe", __FILE__, __LINE__);
    std::sort(gbs.begin(), gbs.end());
    return gbs[gbs.size() / 2];
  }

 private:
  void outside_capture(const char* what) const {
    if (capturing_) fail("{}: {} inside a graph capture", name_, what);
  }

  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CudaOps> ops_;
  std::vector<cudaGraphExec_t> graphs_;
  bool capturing_ = false;
};

}  // namespace

bool device_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
    return false;
  }
  if (n < 1) {
    if (why) *why = "cudaGetDeviceCount found no CUDA device";
    return false;
  }
  if (why) why->clear();
  return true;
}

std::unique_ptr<Device> make_device(bool bf16_activations) {
  std::string why;
  if (!device_available(&why)) fail("device cuda: no usable GPU: {}", why);
  return std::make_unique<CudaDevice>(bf16_activations);
}

}  // namespace glmlab::cuda
