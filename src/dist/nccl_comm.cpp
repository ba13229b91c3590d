// The NCCL communicator (see nccl_comm.h).
#include "dist/nccl_comm.h"

#ifdef GLMLAB_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <vector>
#endif

namespace glmlab::dist {

#ifndef GLMLAB_HAVE_NCCL

bool nccl_available() { return false; }
std::unique_ptr<Communicator> make_nccl(Communicator&, int) {
  fail("this glmlab was built without NCCL (CUDA and the nvidia-nccl-cu13 wheel or a CUDA install with NCCL are "
       "needed; see docs/DISTRIBUTED.md)");
}

#else

namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("NCCL communicator: {} failed: {}", what, cudaGetErrorString(e));
}
void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL {} failed: {}", what, ncclGetErrorString(r));
}

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // a plain host pointer on older runtimes: clear the error
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

class NcclComm final : public Communicator {
 public:
  NcclComm(Communicator& boot, int device) : boot_(boot) {
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (count < 1) fail("NCCL communicator: no CUDA device is visible");
    device_ = device >= 0 ? device : boot.local_rank() % count;
    if (device_ >= count) fail("NCCL communicator: device {} asked for, {} visible", device_, count);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (boot.rank() == 0) nccl_check(ncclGetUniqueId(&id), "GetUniqueId");
    boot.broadcast(&id, sizeof id, 0);
    nccl_check(ncclCommInitRank(&comm_, boot.size(), id, boot.rank()), "CommInitRank");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclComm() override {
    for (auto& e : events_)
      if (e) cudaEventDestroy(e);
    if (stream_) cudaStreamDestroy(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return boot_.rank(); }
  int size() const override { return boot_.size(); }
  int local_size() const override { return boot_.local_size(); }
  int local_rank() const override { return boot_.local_rank(); }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(float* d, size_t n) override { reduce(d, n, ncclFloat, ncclSum); }
  void all_reduce_sum(double* d, size_t n) override { reduce(d, n, ncclDouble, ncclSum); }
  void all_reduce_sum(int64_t* d, size_t n) override { reduce(d, n, ncclInt64, ncclSum); }
  void all_reduce_max(double* d, size_t n) override { reduce(d, n, ncclDouble, ncclMax); }

  int start_all_reduce_sum(float* d, size_t n) override {
    if (!on_device(d)) return boot_.start_all_reduce_sum(d, n) | kHostBit;
    nccl_check(ncclAllReduce(d, d, n, ncclFloat, ncclSum, comm_, stream_), "AllReduce");
    cudaEvent_t ev;
    cuda_check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventRecord(ev, stream_), "cudaEventRecord");
    for (size_t i = 0; i < events_.size(); ++i)
      if (!events_[i]) {
        events_[i] = ev;
        return int(i);
      }
    events_.push_back(ev);
    return int(events_.size() - 1);
  }
  bool test(int h) override {
    if (h & kHostBit) return boot_.test(h & ~kHostBit);
    cudaEvent_t& ev = slot(h);
    if (!ev) return true;
    const cudaError_t e = cudaEventQuery(ev);
    if (e == cudaErrorNotReady) return false;
    cuda_check(e, "cudaEventQuery");
    cudaEventDestroy(ev);
    ev = nullptr;
    return true;
  }
  void wait(int h) override {
    if (h & kHostBit) return boot_.wait(h & ~kHostBit);
    cudaEvent_t& ev = slot(h);
    if (!ev) return;
    cuda_check(cudaEventSynchronize(ev), "cudaEventSynchronize");
    cudaEventDestroy(ev);
    ev = nullptr;
  }
  void broadcast(void* data, size_t bytes, int root) override {
    if (!on_device(data)) return boot_.broadcast(data, bytes, root);
    nccl_check(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "Broadcast");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  std::vector<std::string> all_gather(const std::string& mine) override { return boot_.all_gather(mine); }
  void barrier() override {
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    boot_.barrier();
  }
  [[noreturn]] void abort(int code) override {
    if (comm_) ncclCommAbort(comm_);
    boot_.abort(code);
    std::_Exit(code);  // not reached
  }

 private:
  static constexpr int kHostBit = 1 << 30;
  void reduce(void* d, size_t n, ncclDataType_t t, ncclRedOp_t op) {
    if (!on_device(d)) {  // host data: the bootstrap's MPI
      if (t == ncclFloat) return boot_.all_reduce_sum(static_cast<float*>(d), n);
      if (t == ncclInt64) return boot_.all_reduce_sum(static_cast<int64_t*>(d), n);
      if (op == ncclMax) return boot_.all_reduce_max(static_cast<double*>(d), n);
      return boot_.all_reduce_sum(static_cast<double*>(d), n);
    }
    nccl_check(ncclAllReduce(d, d, n, t, op, comm_, stream_), "AllReduce");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  cudaEvent_t& slot(int h) {
    if (h < 0 || size_t(h) >= events_.size()) fail("no non-blocking NCCL all-reduce with handle {}", h);
    return events_[size_t(h)];
  }

  Communicator& boot_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl(Communicator& boot, int device) {
  return std::make_unique<NcclComm>(boot, device);
}

#endif

}  // namespace glmlab::dist
