// The world of one, the choice of the world, and the collective error helpers (see comm.h).
#include "dist/comm.h"

#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <cstring>

#include "dist/mpi_comm.h"

namespace glmlab::dist {

namespace {

class SingleComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void all_reduce_sum(int64_t*, size_t) override {}
  void all_reduce_max(double*, size_t) override {}
  int start_all_reduce_sum(float*, size_t) override { return 0; }
  bool test(int) override { return true; }
  void wait(int) override {}
  void broadcast(void*, size_t, int root) override {
    if (root != 0) fail("broadcast from rank {} in a world of one", root);
  }
  std::vector<std::string> all_gather(const std::string& mine) override { return {mine}; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

// The size an MPI launcher announced in the environment (0: not started by one).
int launcher_size() {
  // Not SLURM_NTASKS: an sbatch script running one glmlab outside srun has it too (srun with PMIx or
  // PMI2 sets the PMI variables).
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* s = std::getenv(v);
    if (!s || !*s) continue;
    char* end = nullptr;
    long n = std::strtol(s, &end, 10);
    if (*end == '\0' && n >= 1 && n < (1 << 24)) return int(n);
  }
  // PMIx launchers that give no size still give a rank.
  if (std::getenv("PMIX_RANK")) return 2;
  return 0;
}

std::unique_ptr<Communicator>& world_slot() {
  static std::unique_ptr<Communicator> w;
  return w;
}
bool g_finalized = false;

}  // namespace

std::string Communicator::host() const {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

void Communicator::broadcast_string(std::string& s, int root) {
  uint64_t n = s.size();
  broadcast(&n, sizeof n, root);
  s.resize(size_t(n));
  if (n) broadcast(s.data(), size_t(n), root);
}

std::unique_ptr<Communicator> make_single() { return std::make_unique<SingleComm>(); }

Communicator& world() {
  auto& w = world_slot();
  if (w) return *w;
  if (g_finalized) fail("dist::world() after dist::finalize()");
  const int n = launcher_size();
  // Under a launcher a world of one still uses MPI only when built with it; a world of one without
  // MPI is simply the single-process glmlab.
  if (n >= 1 && mpi_available()) {
    w = make_mpi_world();
  } else if (n > 1) {
    fail("glmlab was started by an MPI launcher with {} ranks, but this build has no MPI (install libopenmpi-dev "
         "and rebuild: scripts/setup.sh does); refusing to run {} independent copies",
         n, n);
  } else {
    w = make_single();
  }
  return *w;
}

bool is_distributed() {
  auto& w = world_slot();
  return w && w->size() > 1;
}

void finalize() {
  auto& w = world_slot();
  w.reset();
  g_finalized = true;
  mpi_finalize();
}

void agree(Communicator& comm, const std::function<void()>& fn) {
  std::string err;
  try {
    fn();
  } catch (const CollectiveError&) {
    throw;  // already agreed on (a nested agree)
  } catch (const Error& e) {
    err = e.what();
    if (err.empty()) err = "unknown error";
  }
  if (comm.size() == 1) {
    if (!err.empty()) throw CollectiveError(err);
    return;
  }
  // One flag per rank first (cheap), the messages only when something failed.
  double failed = err.empty() ? 0.0 : 1.0;
  comm.all_reduce_max(&failed, 1);
  if (failed == 0.0) return;
  auto all = comm.all_gather(err);
  for (int r = 0; r < int(all.size()); ++r)
    if (!all[size_t(r)].empty()) throw CollectiveError(fmt::format("rank {}: {}", r, all[size_t(r)]));
  throw CollectiveError("a rank failed without a message");
}

void run_on_root(Communicator& comm, int root, const std::function<void()>& fn) {
  agree(comm, [&] {
    if (comm.rank() == root) fn();
  });
}

Share share_of(int64_t n, int rank, int size) {
  const int64_t q = n / size, r = n % size;
  const int64_t begin = rank * q + std::min<int64_t>(rank, r);
  return {begin, begin + q + (rank < r ? 1 : 0)};
}

}  // namespace glmlab::dist
