// The communicator: what a data-parallel glmlab needs from the processes it runs in — world size,
// rank, all-reduce (blocking and non-blocking), broadcast, gather, barrier — with one implementation per
// transport, chosen at start-up (the model is llm.c's multi-GPU training: MPI bootstraps and reduces
// host buffers, NCCL reduces device buffers, its unique id broadcast over MPI):
//   single  one process: every collective is the identity. glmlab started without a launcher.
//   mpi     Open MPI / MPICH (host buffers), when started by mpirun, mpiexec or srun (see world()).
//   nccl    device buffers, one GPU per rank (dist/nccl_comm.h), bootstrapped on the MPI world.
// Nothing here is home-made transport: every byte moves through MPI or NCCL.
//
// Errors. A failure every rank can see at the same point (a bad record found while the ranks share
// out the tokenizing, a resume state that does not match) is agreed on collectively (agree(),
// run_on_root()) and every rank throws the same dist::CollectiveError. A failure one rank meets alone
// in the middle of collectives (out of memory in its micro-batch, say) cannot be agreed on: main()
// prints it with the rank and calls abort(), which ends every rank (MPI_Abort) within seconds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util/error.h"

namespace glmlab::dist {

// An error every rank raised together (same message on every rank): exit cleanly, print once (rank 0).
struct CollectiveError : Error {
  using Error::Error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "single", "mpi", "nccl"
  // Ranks of this job on this machine (for the default thread count) and this rank's index among them.
  virtual int local_size() const { return 1; }
  virtual int local_rank() const { return 0; }
  // The host name of each rank's machine (rank order): for reports.
  virtual std::string host() const;

  // Blocking element-wise sums over all ranks, in place; every rank gets the same result.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  virtual void all_reduce_sum(int64_t* data, size_t n) = 0;
  virtual void all_reduce_max(double* data, size_t n) = 0;

  // Non-blocking float sum: start returns a handle; test() advances it (MPI progresses a non-blocking
  // collective inside MPI calls: call test() between pieces of work) and says whether it is done;
  // wait() completes it. Until done the buffer belongs to the communicator.
  virtual int start_all_reduce_sum(float* data, size_t n) = 0;
  virtual bool test(int handle) = 0;
  virtual void wait(int handle) = 0;

  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank's string, in rank order, on every rank.
  virtual std::vector<std::string> all_gather(const std::string& mine) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job with this exit code (no return).
  [[noreturn]] virtual void abort(int code) = 0;

  // Conveniences over the primitives.
  void broadcast_string(std::string& s, int root);
  template <typename T>
  void broadcast_vector(std::vector<T>& v, int root) {
    uint64_t n = v.size();
    broadcast(&n, sizeof n, root);
    v.resize(size_t(n));
    if (n) broadcast(v.data(), size_t(n) * sizeof(T), root);
  }
  int64_t sum(int64_t x) {
    all_reduce_sum(&x, 1);
    return x;
  }
  double sum(double x) {
    all_reduce_sum(&x, 1);
    return x;
  }
};

// The process's world: MPI when the process was started by an MPI launcher (Open MPI's mpirun sets
// OMPI_COMM_WORLD_SIZE, PMIx launchers PMIX_RANK, MPICH's Hydra PMI_SIZE, Slurm's srun the PMIx/PMI2
// variables) and glmlab was built with MPI; otherwise a world of one. Initialised on first use; a launcher
// world larger than one in a build without MPI is an Error (it would silently run N copies).
Communicator& world();
// Ends MPI (if it was started); after it world() must not be used.
void finalize();
// True once world() has been initialised with more than one rank.
bool is_distributed();

// A world of one (rank 0 of 1): the same interface, for code that runs "one rank alone" inside a
// larger job (the scaling baseline of bench train) and for tests.
std::unique_ptr<Communicator> make_single();

// Runs fn on every rank; if it throws glmlab::Error on any rank, every rank throws the same
// CollectiveError, the message of the lowest failing rank (prefixed "rank R: " when the world has
// more than one rank). `what` names the phase in the message only if the error text is empty.
void agree(Communicator& comm, const std::function<void()>& fn);
// Runs fn on `root` only; its failure becomes the same CollectiveError on every rank.
void run_on_root(Communicator& comm, int root, const std::function<void()>& fn);

// Splits items 0..n-1 over the ranks: rank r owns [begin, end) (contiguous, sizes differ by ≤ 1).
struct Share {
  int64_t begin, end;
};
Share share_of(int64_t n, int rank, int size);

}  // namespace glmlab::dist
