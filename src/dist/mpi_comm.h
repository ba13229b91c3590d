// The MPI communicator (Open MPI from Debian, or any MPI-3 library): host buffers, one process per
// rank, started by mpirun / mpiexec / srun. In a build without MPI (GLMLAB_HAVE_MPI unset) these
// entry points exist and say so: mpi_available() is false and make_mpi_world() is an Error.
#pragma once
#include <memory>

#include "dist/comm.h"

namespace glmlab::dist {

bool mpi_available();  // built with MPI
// MPI_Init_thread (FUNNELED: only the main thread calls MPI; OpenMP workers never do) on first call,
// then a communicator over a duplicate of MPI_COMM_WORLD.
std::unique_ptr<Communicator> make_mpi_world();
void mpi_finalize();   // MPI_Finalize if MPI was initialised and not yet finalized

}  // namespace glmlab::dist
