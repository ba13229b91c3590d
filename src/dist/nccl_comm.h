// The NCCL communicator: sums and broadcasts of device buffers between GPUs, one GPU per rank, as
// llm.c's multi-GPU training does. The ranks come from a bootstrap communicator (the MPI world, or a
// world of one): rank 0 makes the NCCL unique id and broadcasts it over the bootstrap, every rank joins
// with ncclCommInitRank on its GPU (its local rank modulo the GPUs it sees, unless given).
//
// Buffers: all-reduce and broadcast take DEVICE pointers and run on the communicator's own stream (a
// side stream: a non-blocking all-reduce overlaps the compute stream's work; test() queries its event,
// wait() waits for it). A host pointer is passed to the bootstrap communicator instead, so the helpers
// of comm.h (broadcast_string, all_gather, agree) work unchanged. Headers and library: the
// nvidia-nccl-cu13 wheel (scripts/setup.sh puts it in .venv) or the CUDA install; without them this
// build has no NCCL and make_nccl() says so.
#pragma once
#include <memory>

#include "dist/comm.h"

namespace glmlab::dist {

bool nccl_available();
// `boot` must outlive the result. device < 0: boot.local_rank() % the number of visible GPUs.
std::unique_ptr<Communicator> make_nccl(Communicator& boot, int device = -1);

}  // namespace glmlab::dist
