// The MPI communicator (see mpi_comm.h).
#include "dist/mpi_comm.h"

#ifdef GLMLAB_HAVE_MPI
#include <mpi.h>

#include <cstdint>
#include <limits>
#include <vector>
#endif

namespace glmlab::dist {

#ifndef GLMLAB_HAVE_MPI

bool mpi_available() { return false; }
std::unique_ptr<Communicator> make_mpi_world() {
  fail("this glmlab was built without MPI (install libopenmpi-dev and rebuild)");
}
void mpi_finalize() {}

#else

namespace {

bool g_initialized = false;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI {} failed: {}", what, msg);
}

// MPI counts are int: a larger buffer goes in pieces of at most 2^30 elements.
constexpr size_t kMaxCount = size_t(1) << 30;

class MpiComm final : public Communicator {
 public:
  MpiComm() {
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "Comm_dup");
    check(MPI_Comm_rank(comm_, &rank_), "Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "Comm_size");
    MPI_Comm node;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
  }
  ~MpiComm() override {
    for (auto& r : requests_)
      if (r != MPI_REQUEST_NULL) MPI_Wait(&r, MPI_STATUS_IGNORE);
    MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(float* d, size_t n) override { reduce(d, n, MPI_FLOAT, MPI_SUM); }
  void all_reduce_sum(double* d, size_t n) override { reduce(d, n, MPI_DOUBLE, MPI_SUM); }
  void all_reduce_sum(int64_t* d, size_t n) override { reduce(d, n, MPI_INT64_T, MPI_SUM); }
  void all_reduce_max(double* d, size_t n) override { reduce(d, n, MPI_DOUBLE, MPI_MAX); }

  int start_all_reduce_sum(float* d, size_t n) override {
    if (n > kMaxCount) fail("non-blocking all-reduce of {} floats: at most {} per call", n, kMaxCount);
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, d, int(n), MPI_FLOAT, MPI_SUM, comm_, &req), "Iallreduce");
    for (size_t i = 0; i < requests_.size(); ++i)
      if (requests_[i] == MPI_REQUEST_NULL) {
        requests_[i] = req;
        return int(i);
      }
    requests_.push_back(req);
    return int(requests_.size() - 1);
  }
  bool test(int h) override {
    MPI_Request& r = slot(h);
    if (r == MPI_REQUEST_NULL) return true;
    int done = 0;
    check(MPI_Test(&r, &done, MPI_STATUS_IGNORE), "Test");
    return done != 0;
  }
  void wait(int h) override {
    MPI_Request& r = slot(h);
    if (r != MPI_REQUEST_NULL) check(MPI_Wait(&r, MPI_STATUS_IGNORE), "Wait");
  }

  void broadcast(void* data, size_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (size_t off = 0; off < bytes; off += kMaxCount)
      check(MPI_Bcast(p + off, int(std::min(kMaxCount, bytes - off)), MPI_BYTE, root, comm_), "Bcast");
  }
  std::vector<std::string> all_gather(const std::string& mine) override {
    if (mine.size() > size_t(std::numeric_limits<int>::max() / 2)) fail("all_gather: {} bytes is too long", mine.size());
    int len = int(mine.size());
    std::vector<int> lens(size_t(size_), 0), displs(size_t(size_), 0);
    check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_), "Allgather");
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[size_t(r)] = int(total);
      total += lens[size_t(r)];
    }
    if (total > std::numeric_limits<int>::max()) fail("all_gather: {} bytes in all is too long", total);
    std::string all(size_t(total), '\0');
    check(MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, comm_),
          "Allgatherv");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(size_t(displs[size_t(r)]), size_t(lens[size_t(r)])));
    return out;
  }
  void barrier() override { check(MPI_Barrier(comm_), "Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  void reduce(void* d, size_t n, MPI_Datatype t, MPI_Op op) {
    int sz = 0;
    MPI_Type_size(t, &sz);
    auto* p = static_cast<char*>(d);
    for (size_t off = 0; off < n; off += kMaxCount)
      check(MPI_Allreduce(MPI_IN_PLACE, p + off * size_t(sz), int(std::min(kMaxCount, n - off)), t, op, comm_),
            "Allreduce");
  }
  MPI_Request& slot(int h) {
    if (h < 0 || size_t(h) >= requests_.size()) fail("no non-blocking all-reduce with handle {}", h);
    return requests_[size_t(h)];
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::vector<MPI_Request> requests_;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_world() {
  if (!g_initialized) {
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "Init_thread");
    }
    g_initialized = true;
  }
  return std::make_unique<MpiComm>();
}

void mpi_finalize() {
  if (!g_initialized) return;
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
  g_initialized = false;
}

#endif

}  // namespace glmlab::dist
