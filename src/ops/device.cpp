// make_device and the host Device (ops/host_device.h): cpu / cpu-ref ops on host memory, with
// graph capture emulated by recording every op call (pointers and scalars) and replaying it.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ops/device.h"
#include "ops/host_device.h"
#include "util/error.h"
#include "util/file.h"

#ifdef GLMLAB_HAVE_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

namespace glmlab {
namespace {

using Recording = std::vector<std::function<void()>>;

// The ops of the host device: each call runs at once, or is recorded while a capture is open.
// Only the forward ops and the engine helpers can be recorded (they are all a step needs).
class CapturingOps final : public Ops {
 public:
  explicit CapturingOps(std::unique_ptr<Ops> inner) : in_(std::move(inner)) {}
  void set_recording(Recording* r) { rec_ = r; }
  std::string_view name() const override { return in_->name(); }

  void embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) override {
    run([=, this] { in_->embedding(table, ids, N, out); });
  }
  void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms) override {
    run([=, this] { in_->rmsnorm(x, w, N, C, eps, y, inv_rms); });
  }
  void matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) override {
    run([=, this] { in_->matmul(x, N, W, bias, y); });
  }
  void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) override {
    run([=, this] { in_->rope(x, N, stride, nheads, D, pos, base); });
  }
  void attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                 float* out, float* lse) override {
    run([=, this] { in_->attention(q, q_stride, kv, B, T, P, H, G, D, out, lse); });
  }
  void swiglu(const float* u, int64_t N, int64_t F, float* out) override {
    run([=, this] { in_->swiglu(u, N, F, out); });
  }
  void add(float* y, const float* x, int64_t count) override {
    run([=, this] { in_->add(y, x, count); });
  }
  void kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
                const int32_t* start) override {
    run([=, this] { in_->kv_store(src, stride, offset, B, T, W, dst, S, start); });
  }
  void argmax(const float* x, int64_t rows, int64_t V, int32_t* out) override {
    run([=, this] { in_->argmax(x, rows, V, out); });
  }

  void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) override {
    direct("matmul_backward_input");
    in_->matmul_backward_input(dy, N, W, dx);
  }
  void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) override {
    direct("matmul_backward_weight");
    in_->matmul_backward_weight(dy, x, N, M, K, dW);
  }
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                        float eps, float* dx) override {
    direct("rmsnorm_backward");
    in_->rmsnorm_backward(dy, x, w, inv_rms, N, C, eps, dx);
  }
  void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos,
                     float base) override {
    direct("rope_backward");
    in_->rope_backward(dx, N, stride, nheads, D, pos, base);
  }
  void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) override {
    direct("swiglu_backward");
    in_->swiglu_backward(dout, u, N, F, du);
  }
  void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                          int D, const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                          float* dk, float* dv) override {
    direct("attention_backward");
    in_->attention_backward(q, q_stride, kv, B, T, P, H, G, D, out, lse, dout, dq, dq_stride, dk, dv);
  }
  double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) override {
    direct("cross_entropy");
    return in_->cross_entropy(z, labels, N, V, scale);
  }

  void run(std::function<void()> f) {
    if (rec_)
      rec_->push_back(std::move(f));
    else
      f();
  }

 private:
  void direct(const char* op) const {
    if (rec_) fail("host device: {} cannot be recorded in a graph (only forward ops and kv_store/argmax)", op);
  }
  std::unique_ptr<Ops> in_;
  Recording* rec_ = nullptr;
};

class HostDevice final : public Device {
 public:
  HostDevice(Backend b, const HostDeviceOptions& o)
      : name_(b == Backend::CpuRef ? "cpu-ref" : "cpu"), opt_(o), ops_(make_ops(b, o.bf16_activations)) {}
  ~HostDevice() override {
    for (auto& [p, n] : sizes_) std::free(p);
  }
  std::string_view name() const override { return name_; }
  bool host_memory() const override { return true; }
  Ops& ops() override { return ops_; }

  void* alloc(size_t bytes, std::string_view what) override {
    if (opt_.memory_limit && bytes > free_bytes())
      fail("{}: {} needs {:.3f} MiB but the device has only {:.3f} MiB free", name_, what, double(bytes) / (1 << 20),
           double(free_bytes()) / (1 << 20));
    size_t n = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, n);
    if (!p) fail("{}: could not allocate {:.3f} MiB for {}", name_, double(bytes) / (1 << 20), what);
    std::memset(p, 0, n);
    sizes_[p] = bytes;
    used_ += bytes;
    return p;
  }
  void free(void* p) override {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    used_ -= it->second;
    sizes_.erase(it);
    std::free(p);
  }
  size_t free_bytes() const override {
    if (opt_.memory_limit) return opt_.memory_limit > used_ ? opt_.memory_limit - used_ : 0;
    return size_t(available_memory_bytes());
  }
  size_t total_bytes() const override { return opt_.memory_limit ? opt_.memory_limit : size_t(total_memory_bytes()); }

  void upload(void* dst, const void* src, size_t bytes) override { copy_now(dst, src, bytes, "upload"); }
  void download(void* dst, const void* src, size_t bytes) override { copy_now(dst, src, bytes, "download"); }
  void copy(void* dst, const void* src, size_t bytes) override {
    ops_.run([=] { std::memcpy(dst, src, bytes); });
  }
  void fill(void* dst, int value, size_t bytes) override {
    ops_.run([=] { std::memset(dst, value, bytes); });
  }
  void sync() override {}

  bool graphs() const override { return opt_.graphs; }
  void begin_capture() override {
    if (!opt_.graphs) fail("{}: this host device was made without graphs", name_);
    if (capturing_) fail("{}: begin_capture while a capture is open", name_);
    capturing_ = true;
    graphs_.emplace_back();
    ops_.set_recording(&graphs_.back());
  }
  int end_capture() override {
    if (!capturing_) fail("{}: end_capture without begin_capture", name_);
    capturing_ = false;
    ops_.set_recording(nullptr);
    return int(graphs_.size()) - 1;
  }
  void replay(int g) override {
    if (capturing_) fail("{}: replay while a capture is open", name_);
    if (g < 0 || size_t(g) >= graphs_.size()) fail("{}: no graph {}", name_, g);
    for (auto& f : graphs_[size_t(g)]) f();
    ++replays_;
  }
  void drop_graphs() override {
    if (capturing_) fail("{}: drop_graphs while a capture is open", name_);
    graphs_.clear();
  }

  double now() override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // A 256 MiB copy between two buffers, all threads; (read + written bytes) / time, median of 5.
  double bandwidth_probe_gbs() override {
    const size_t n = 256ull << 20;
    std::vector<uint8_t> a(n, 1), b(n, 0);
    std::vector<double> gbs;
    for (int r = 0; r <= 5; ++r) {
      double t0 = now();
#pragma omp parallel
      {
        size_t nth = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
        size_t per = (n + nth - 1) / nth, s = std::min(n, per * id), e = std::min(n, s + per);
        std::memcpy(b.data() + s, a.data() + s, e - s);
      }
      double s = now() - t0;
      if (r > 0) gbs.push_back(2.0 * double(n) / s / 1e9);
      a[size_t(r)] = b[size_t(r) + 1];  // keeps the copies observable
    }
    std::sort(gbs.begin(), gbs.end());
    return gbs[gbs.size() / 2];
  }

 private:
  void copy_now(void* dst, const void* src, size_t bytes, const char* what) {
    // Host ↔ device copies are not part of a graph (as with CUDA, where the engine copies outside it).
    if (capturing_) fail("{}: {} inside a graph capture", name_, what);
    std::memcpy(dst, src, bytes);
  }

  std::string name_;
  HostDeviceOptions opt_;
  CapturingOps ops_;
  std::unordered_map<void*, size_t> sizes_;
  size_t used_ = 0;
  bool capturing_ = false;
  std::vector<Recording> graphs_;
  int64_t replays_ = 0;
};

}  // namespace

std::unique_ptr<Device> make_host_device(Backend b, const HostDeviceOptions& o) {
  if (b == Backend::Cuda) fail("make_host_device: cuda is not a host back end (use make_device)");
  return std::make_unique<HostDevice>(b, o);
}

std::unique_ptr<Device> make_device(Backend b, bool bf16_activations) {
  if (b != Backend::Cuda) {
    HostDeviceOptions o;
    o.bf16_activations = bf16_activations;
    return make_host_device(b, o);
  }
#ifdef GLMLAB_HAVE_CUDA
  return cuda::make_device(bf16_activations);
#else
  fail("device cuda: this glmlab was built without the CUDA back end (CMake found no nvcc at "
       "/usr/local/cuda/bin/nvcc, or no src/kernels/cuda/*.cu); rebuild on a machine with the CUDA toolkit");
#endif
}

}  // namespace glmlab
